"""Benchmark: batch over 1,000 tiny checkpoint directories, then the same batch again (a no-op: every output
records the recipe and the source's fingerprints, so every directory is skipped and nothing is rewritten).

The directories are copies of one tiny BERT MLM (tests/checkpoints.py's ``build_bert``: 2,000 tokens, hidden 32,
safetensors, 200 free slots); the recipe remaps 3 words. Each run is ``vocabsurgeon batch recipe.toml 'models/*'
--out-root out --jobs 2 --json`` in its own process; the re-run is timed ``--repeat`` times (median). Target: the
re-run takes at most 10% of the first run, and rewrites nothing (every output file's mtime is unchanged).

  /work/venv/bin/python benchmarks/batch_rerun.py --directories 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.10


def run(command: list[str]) -> tuple[float, dict[str, object]]:
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"batch failed: {completed.stderr[-2000:]}")
    return wall, json.loads(completed.stdout)


def mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--directories", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vs-batch-bench")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from checkpoints import build_bert

    shutil.rmtree(args.work, ignore_errors=True)
    models = args.work / "models"
    template = build_bert(args.work / "template")
    for index in range(args.directories):
        shutil.copytree(template, models / f"bert{index:04d}")
    recipe = args.work / "recipe.toml"
    recipe.write_text('tokens = ["hospitalization", "thrombocytopenia", "remdesivir"]\nstrategy = "remap"\n')
    out = args.work / "out"
    command = [sys.executable, "-P", "-m", "vocabsurgeon", "batch", str(recipe), str(models / "*"),
               "--out-root", str(out), "--jobs", "2", "--json"]  # fmt: skip
    first, report = run(command)
    statuses = {r["status"] for r in report["results"]}  # type: ignore[union-attr]
    before = mtimes(out)
    again = []
    for _ in range(args.repeat):
        wall, report = run(command)
        again.append(wall)
        assert {r["status"] for r in report["results"]} == {"skipped"}  # type: ignore[union-attr]
    unchanged = mtimes(out) == before
    rerun = statistics.median(again)
    ratio = rerun / first
    print(f"{args.directories:,} tiny directories, {os.cpu_count()} cores, --jobs 2\n")
    print("| run | wall s | per directory ms | statuses |")
    print("|---|---:|---:|---|")
    print(f"| first | {first:.1f} | {1000 * first / args.directories:.1f} | {', '.join(sorted(statuses))} |")
    print(f"| re-run (median of {args.repeat}) | {rerun:.1f} | {1000 * rerun / args.directories:.1f} | skipped |")
    print(f"\nre-run / first: {ratio:.3f} ({'met' if ratio <= TARGET_RATIO else 'MISSED'}: <= {TARGET_RATIO});"
          f" outputs rewritten: {'none' if unchanged else 'SOME'}")  # fmt: skip
    return 0 if ratio <= TARGET_RATIO and unchanged else 1


if __name__ == "__main__":
    raise SystemExit(main())
