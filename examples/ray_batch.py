"""One recipe over many checkpoint directories with Ray: one task per directory, each with a memory request,
calling the library API (``vocabsurgeon.batch.run_one``, which never raises: a failure is an Outcome with its
reason). Outcomes are appended to a JSON-lines report as they arrive (``vocabsurgeon batch-report`` reads it).

  python examples/ray_batch.py examples/recipe.toml 'models/*' --out-root patched --report reports/ray.jsonl
  python examples/ray_batch.py recipe.toml @dirs.txt --out-root patched --address auto   # a running cluster

Without ``--address`` it starts a local Ray with the machine's CPUs. ``--memory-gib`` is what each task asks the
scheduler for: about the size of the checkpoint's largest vocabulary tensor plus 1 GiB is plenty, since weights
are streamed and only vocabulary-sized tensors are held in memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ray

from vocabsurgeon.batch import Outcome, append_report, expand_models, outputs_for, read_recipe, run_one


@ray.remote(num_cpus=1)
def patch(model: str, output: str, recipe: object) -> Outcome:
    return run_one(model, output, recipe, dry_run=False)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("models", nargs="+", help="directories, globs or @file (one directory per line)")
    parser.add_argument("--out-root", required=True, type=Path)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--memory-gib", type=float, default=1.0, help="memory each task requests (default 1)")
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: start a local one)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    args = parser.parse_args()

    recipe = read_recipe(args.recipe)  # a bad recipe fails here, before any task starts
    models = expand_models(args.models)
    outputs = outputs_for(models, args.out_root)  # two directories with one name: refused before any write
    ray.init(address=args.address, num_cpus=args.num_cpus if args.address is None else None, log_to_driver=False)
    memory = int(args.memory_gib * 2**30)
    pending = {patch.options(memory=memory).remote(str(m), str(outputs[m]), recipe): m for m in models}
    failed = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        outcome: Outcome = ray.get(ready[0])
        pending.pop(ready[0])
        if args.report is not None:
            append_report(args.report, outcome, recipe, None)
        failed += outcome.status == "failed"
        detail = f": {outcome.reason}" if outcome.status == "failed" else ""
        print(f"{outcome.status:<7} {outcome.model}{detail}", flush=True)
    print(f"{len(models)} directories, {failed} failed")
    ray.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
