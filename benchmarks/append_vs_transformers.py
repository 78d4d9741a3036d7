"""Benchmark: ``vocabsurgeon append`` vs. the transformers load/resize/save path vs. ``cp -r``.

What it measures
----------------
A synthetic Llama-3-style checkpoint is built locally (random bf16 weights, no download): 128,256-row vocabulary,
untied ``lm_head``, two safetensors shards + ``model.safetensors.index.json``, ``config.json`` and a byte-level BPE
``tokenizer.json`` with exactly 128,256 ids (128,000 BPE entries + 256 Llama-3-like special tokens). ``--size full``
is ~1.5 GB; ``--size small`` (32,000 ids, hidden 256, ~50 MB) is a quick smoke run. N pseudo-words that are not in
the vocabulary are written one per line to a tokens file, then three contenders add them, each in its own subprocess:

  (a) ``python -m vocabsurgeon append SRC --out OUT_A --tokens-file TOKENS --quiet``
  (b) a Python child doing ``AutoTokenizer.from_pretrained`` + ``add_tokens`` + ``AutoModelForCausalLM.from_pretrained``
      (bf16) + ``resize_token_embeddings(len(tok))`` + ``save_pretrained`` (same ``max_shard_size`` as the source, so 2
      shards) + ``tok.save_pretrained``. The plain call uses transformers' default ``mean_resizing=True`` (new rows
      sampled from the old rows' mean/covariance), which dominates its time and memory; ``--no-mean-resizing`` passes
      ``mean_resizing=False`` instead.
  (c) ``cp -r SRC OUT_C`` -- the I/O floor.

For each run the wall-clock seconds (including interpreter start-up and imports) and the child's peak RSS
(``ru_maxrss`` from ``os.wait4``, taken by a ~10 MiB launcher process so this process's memory does not leak into
the figure; a child's own reaped sub-processes count as a max, not a sum) are recorded. Outputs of (a) and (b) are
checked after the timed run (config, embed_tokens, lm_head and tokenizer must all have V + N ids) and removed between
repetitions.

Caching: dropping the page cache needs root, so instead one untimed warm-up ``cp -r`` of the source is done first and
all contenders read from a warm page cache alike; ``sync`` is called before every timed run so no pending write-back
overlaps it. The harness does not fsync the outputs; each tool writes as it does by default.

Targets (printed as PASS/FAIL): append wall <= 1.5x ``cp -r``, append >= 5x faster than transformers, append peak
RSS <= 1024 MiB, and the append output is valid. The exit code is 0 regardless, unless ``--check`` is given (then 1
on any FAIL).

How to run (from the repository root)
-------------------------------------
  /work/venv/bin/python benchmarks/append_vs_transformers.py --size small           # smoke run, ~10 s
  /work/venv/bin/python benchmarks/append_vs_transformers.py                        # full size, 1,000 tokens
  /work/venv/bin/python benchmarks/append_vs_transformers.py --repeat 3 --check     # median of 3, exit 1 on FAIL
  /work/venv/bin/python benchmarks/append_vs_transformers.py --workdir /tmp/vsb     # keep + reuse the checkpoint

Without ``--workdir`` a fresh temp dir is used and removed at the end unless ``--keep``. With ``--workdir`` the built
checkpoint is kept there and reused by later runs with the same ``--size``; outputs are removed, the contenders'
stdout/stderr logs stay in ``runs/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
N_SPECIAL = 256
SHARD_PATTERN = "model-{:05d}-of-{:05d}.safetensors"
INDEX_NAME = "model.safetensors.index.json"
TARGET_CP_RATIO = 1.5
TARGET_SPEEDUP = 5.0
TARGET_RSS_MIB = 1024.0
SHARD_GROWTH_MARGIN = 4096  # max_shard_size keeps 2 shards for outputs with up to this many new rows


@dataclasses.dataclass(frozen=True)
class Spec:
    """Shape of the synthetic checkpoint."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


SIZES = {
    # 2 * 128256 * 2048 * 2 B (embed + lm_head) + 4 layers * ~109 MB = ~1.49 GB
    "full": Spec(128_256, 2048, 7168, 4, 16, 4),
    # 2 * 32000 * 256 * 2 B + 4 layers * ~4.6 MB = ~51 MB
    "small": Spec(32_000, 256, 2752, 4, 16, 4),
}

# Measuring peak RSS with os.wait4 straight from this process would be wrong: at exec the kernel folds the
# pre-exec memory image (a copy of this torch-importing process, ~300+ MiB) into the child's ru_maxrss. So each
# contender is started by this tiny launcher (python -I -S, ~10 MiB) that spawns it, waits with os.wait4 and
# records wall time and ru_maxrss (KiB on Linux; max over the child and its reaped descendants, not a sum).
# The launcher's own size is thus a floor of ~10 MiB on the reported RSS.
LAUNCHER = """\
import json, os, sys, time
result_path, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
try:
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
except OSError as exc:
    print(f"cannot start {cmd[0]}: {exc}", file=sys.stderr)
    wall, rc, maxrss = time.perf_counter() - t0, 127, 0
else:
    _, status, usage = os.wait4(pid, 0)
    wall, rc, maxrss = time.perf_counter() - t0, os.waitstatus_to_exitcode(status), usage.ru_maxrss
with open(result_path, "w") as f:
    json.dump({"wall_s": wall, "returncode": rc, "maxrss_kib": maxrss}, f)
"""

# Child (b): the "just use transformers" way of adding tokens.
TRANSFORMERS_CHILD = """\
import sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

src, out, tokens_file, max_shard_size, mean_resizing = sys.argv[1:6]
with open(tokens_file, encoding="utf-8") as f:
    tokens = [line.rstrip("\\n") for line in f if line.strip()]
tok = AutoTokenizer.from_pretrained(src)
added = tok.add_tokens(tokens)
if added != len(tokens):
    sys.exit(f"add_tokens added {added} of {len(tokens)} tokens")
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
if mean_resizing == "default":
    model.resize_token_embeddings(len(tok))
else:
    model.resize_token_embeddings(len(tok), mean_resizing=False)
model.save_pretrained(out, max_shard_size=int(max_shard_size))
tok.save_pretrained(out)
"""

CORPUS_TEXT = """
the of and to in is was for on that with as by at from his her are were be this which have had not but they all
one their an has been would she there more when will other who into time can what some only about new first two
after most also over these many such may then them made its used where between three than during under through
people state world part year city system water number because while since house small large great little old
model token vocabulary weight layer tensor embedding matrix shard checkpoint stream memory surgery append merge
train language learning network attention head hidden size value key query output input batch sequence position
"""

SYLLABLE_ONSETS = "b c d f g h j k l m n p r s t v w z br dr fl gr kl pr sk st tr zh"
SYLLABLE_VOWELS = "a e i o u ai ea io ou"


# --------------------------------------------------------------------------------------------------------------------
# Building the synthetic checkpoint
# --------------------------------------------------------------------------------------------------------------------


def build_tokenizer(spec: Spec, out: Path, seed: int = 0) -> set[str]:
    """Write tokenizer.json / tokenizer_config.json / special_tokens_map.json; return the BPE vocabulary strings."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    n_bpe = spec.vocab_size - N_SPECIAL
    rng = random.Random(seed)

    # 1. Train a small, real byte-level BPE so the low ids look like a normal tokenizer.
    corpus = [" ".join(rng.choices(CORPUS_TEXT.split(), k=12)) for _ in range(5000)]
    small = Tokenizer(models.BPE())
    small.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=min(2000, n_bpe), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    small.train_from_iterator(corpus, trainer)
    model_json = json.loads(small.to_str())["model"]
    vocab: dict[str, int] = dict(model_json["vocab"])
    merges: list[tuple[str, str]] = [
        tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_json["merges"]
    ]
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise RuntimeError("trained BPE vocab ids are not contiguous")

    # 2. Extend to n_bpe entries: every new token is an existing token + one letter, with the matching merge
    #    appended after the merges producing both parts, so the merge table stays consistent.
    letters = "etaoinsrhldcum"
    queue = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t.lstrip("Ġ").isalpha()]
    i = 0
    while len(vocab) < n_bpe:
        left = queue[i]
        i += 1
        for c in letters:
            new = left + c
            if new in vocab:
                continue
            vocab[new] = len(vocab)
            merges.append((left, c))
            queue.append(new)
            if len(vocab) == n_bpe:
                break

    # 3. Assemble the final tokenizer, Llama 3 style, with 256 special tokens at ids n_bpe .. vocab_size-1.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"] + [
        f"<|reserved_special_token_{k}|>" for k in range(N_SPECIAL - 2)
    ]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    bos_id = tok.token_to_id(specials[0])
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{specials[0]} $A",
                pair=f"{specials[0]} $A {specials[0]} $B:1",
                special_tokens=[(specials[0], bos_id)],
            ),
        ]
    )
    tok.save(str(out / "tokenizer.json"))

    added_decoder = {
        str(n_bpe + k): {
            "content": s,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for k, s in enumerate(specials)
    }
    tokenizer_config = {
        "added_tokens_decoder": added_decoder,
        "bos_token": specials[0],
        "clean_up_tokenization_spaces": False,
        "eos_token": specials[1],
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    write_json(out / "tokenizer_config.json", tokenizer_config)
    write_json(out / "special_tokens_map.json", {"bos_token": specials[0], "eos_token": specials[1]})
    return set(vocab)


def validate_tokenizer(spec: Spec, src: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(src / "tokenizer.json"))
    if raw.get_vocab_size(with_added_tokens=True) != spec.vocab_size:
        raise RuntimeError(f"tokenizers: {raw.get_vocab_size(with_added_tokens=True)} ids != {spec.vocab_size}")
    if raw.token_to_id("<|begin_of_text|>") != spec.vocab_size - N_SPECIAL:
        raise RuntimeError("<|begin_of_text|> has the wrong id")
    hf = AutoTokenizer.from_pretrained(str(src))
    if len(hf) != spec.vocab_size:
        raise RuntimeError(f"AutoTokenizer: len {len(hf)} != {spec.vocab_size}")
    text = "The model streams weights into a new checkpoint."
    if hf.decode(hf(text)["input_ids"], skip_special_tokens=True) != text:
        raise RuntimeError("tokenizer round trip failed")


def tensor_shapes(spec: Spec) -> list[tuple[str, tuple[int, ...]]]:
    """LlamaForCausalLM state-dict names and shapes, in state-dict order."""
    h, i, v = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    kv = spec.num_key_value_heads * spec.head_dim
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for layer in range(spec.num_hidden_layers):
        p = f"model.layers.{layer}."
        shapes += [
            (p + "self_attn.q_proj.weight", (spec.num_attention_heads * spec.head_dim, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, spec.num_attention_heads * spec.head_dim)),
            (p + "mlp.gate_proj.weight", (i, h)),
            (p + "mlp.up_proj.weight", (i, h)),
            (p + "mlp.down_proj.weight", (h, i)),
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return shapes


def greedy_shards(tensors: list[tuple[str, tuple[int, ...]]], limit: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Split bf16 tensors into shards of at most `limit` bytes, in the given order (huggingface_hub's algorithm)."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    current = 0
    for name, shape in tensors:
        nbytes = 2 * prod(shape)
        if shards[-1] and current + nbytes > limit:
            shards.append([])
            current = 0
        shards[-1].append((name, shape))
        current += nbytes
    return shards


def natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]


def max_shard_size(spec: Spec) -> int:
    """Smallest shard limit (MB steps) giving exactly 2 shards for the source and for a grown copy.

    The source is written in state-dict order (embed_tokens first, lm_head last); transformers 5 save_pretrained
    writes in natural name order (lm_head first). The same limit is passed to save_pretrained in contender (b).
    """
    grown = dataclasses.replace(spec, vocab_size=spec.vocab_size + SHARD_GROWTH_MARGIN)
    layouts = [tensor_shapes(spec), tensor_shapes(grown), sorted(tensor_shapes(grown), key=lambda t: natural_key(t[0]))]
    total = sum(2 * prod(shape) for _, shape in layouts[1])
    limit = -(-total // 2_000_000) * 1_000_000
    while any(len(greedy_shards(layout, limit)) != 2 for layout in layouts):
        limit += 1_000_000
    return limit


def build_weights(spec: Spec, out: Path, seed: int = 0) -> None:
    """Write the shards (generated one shard at a time) and the index."""
    import torch
    from safetensors.torch import save_file

    shards = greedy_shards(tensor_shapes(spec), max_shard_size(spec))
    if len(shards) != 2:
        raise RuntimeError(f"expected 2 shards, the layout gives {len(shards)}")

    torch.manual_seed(seed)
    weight_map: dict[str, str] = {}
    total = 0
    for k, shard in enumerate(shards, start=1):
        filename = SHARD_PATTERN.format(k, len(shards))
        tensors = {}
        for name, shape in shard:
            if len(shape) == 1:
                tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
            else:
                tensors[name] = torch.empty(shape, dtype=torch.bfloat16).normal_(std=0.02)
            weight_map[name] = filename
            total += 2 * prod(shape)
        save_file(tensors, str(out / filename), metadata={"format": "pt"})
        del tensors
    write_json(out / INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map})


def build_config(spec: Spec, out: Path) -> None:
    from transformers import LlamaConfig

    bos = spec.vocab_size - N_SPECIAL
    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=bos,
        eos_token_id=bos + 1,
        architectures=["LlamaForCausalLM"],
        dtype="bfloat16",
    )
    data = config.to_dict()
    data["torch_dtype"] = "bfloat16"  # older readers look for this key; transformers 5 writes "dtype"
    write_json(out / "config.json", data)
    write_json(out / "generation_config.json", {"bos_token_id": bos, "eos_token_id": bos + 1})


def build_checkpoint(spec: Spec, src: Path) -> set[str]:
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    vocab = build_tokenizer(spec, src)
    validate_tokenizer(spec, src)
    build_config(spec, src)
    build_weights(spec, src)
    return vocab


def make_tokens(n: int, vocab: set[str], path: Path, seed: int = 1) -> list[str]:
    """N distinct pronounceable pseudo-words, none already a vocabulary entry (with or without the Ġ space marker)."""
    rng = random.Random(seed)
    onsets, vowels = SYLLABLE_ONSETS.split(), SYLLABLE_VOWELS.split()
    tokens: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(tokens) < n:
        attempts += 1
        n_syl = 3 + attempts // 200_000  # grow the word length if the space gets crowded
        word = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(n_syl))
        if word in seen or word in vocab or "Ġ" + word in vocab:
            continue
        seen.add(word)
        tokens.append(word)
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return tokens


# --------------------------------------------------------------------------------------------------------------------
# Running and checking the contenders
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    wall_s: float
    maxrss_mib: float
    returncode: int
    stderr: str
    valid: bool | None = None  # None: not checked (cp -r)
    note: str = ""


def run_timed(cmd: list[str], log_base: Path, env: dict[str, str]) -> Run:
    """Run cmd via the small launcher; wall seconds and the child's peak RSS as measured by the launcher."""
    os.sync()  # no pending write-back (from the build or a previous run) may overlap the timed run
    stdout_path, stderr_path = log_base.with_suffix(".stdout"), log_base.with_suffix(".stderr")
    result_path = log_base.with_suffix(".json")
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(result_path), *cmd]
    with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
        launched = subprocess.run(launcher, stdout=so, stderr=se, env=env, cwd=REPO_ROOT, check=False)
    stderr = stderr_path.read_text(encoding="utf-8", errors="replace")
    if launched.returncode != 0 or not result_path.exists():
        return Run(float("nan"), float("nan"), launched.returncode or -1, stderr)
    res = json.loads(result_path.read_text())
    return Run(res["wall_s"], res["maxrss_kib"] / 1024.0, res["returncode"], stderr)


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def verify_output(out: Path, expected: int) -> tuple[bool, str]:
    """Cheap structural check that out holds a checkpoint with `expected` vocabulary rows everywhere."""
    from tokenizers import Tokenizer

    try:
        if (out / INDEX_NAME).exists():
            files = sorted(set(json.loads((out / INDEX_NAME).read_text())["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        shapes: dict[str, list[int]] = {}
        for f in files:
            shapes.update(safetensors_shapes(out / f))
        problems = []
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            rows = shapes.get(name, [None])[0]
            if rows != expected:
                problems.append(f"{name} rows {rows}")
        config_vocab = json.loads((out / "config.json").read_text())["vocab_size"]
        if config_vocab != expected:
            problems.append(f"config vocab_size {config_vocab}")
        n_tok = Tokenizer.from_file(str(out / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
        if n_tok != expected:
            problems.append(f"tokenizer {n_tok} ids")
    except Exception as exc:  # any breakage of the output is a verification failure
        return False, f"output unreadable: {type(exc).__name__}: {exc}"
    if problems:
        return False, f"expected {expected}: " + ", ".join(problems)
    return True, f"{len(files)} shard(s), {expected} rows ok"


def contender_cmds(src: Path, out: Path, tokens_file: Path, spec: Spec, no_mean_resizing: bool) -> dict[str, list[str]]:
    return {
        "cp -r": ["cp", "-r", str(src), str(out / "out_c")],
        "vocabsurgeon append": [
            sys.executable,
            "-m",
            "vocabsurgeon",
            "append",
            str(src),
            "--out",
            str(out / "out_a"),
            "--tokens-file",
            str(tokens_file),
            "--quiet",
        ],
        "transformers resize": [
            sys.executable,
            "-c",
            TRANSFORMERS_CHILD,
            str(src),
            str(out / "out_b"),
            str(tokens_file),
            str(max_shard_size(spec)),
            "off" if no_mean_resizing else "default",
        ],
    }


OUT_DIRS = {"cp -r": "out_c", "vocabsurgeon append": "out_a", "transformers resize": "out_b"}


# --------------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------------


def machine_info() -> list[str]:
    import safetensors
    import tokenizers
    import torch
    import transformers

    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return [
        f"- nproc: {len(os.sched_getaffinity(0))} (cpu_count {os.cpu_count()}), RAM: {mem_kib / 1024**2:.1f} GiB",
        f"- platform: {platform.platform()}",
        "- load average (1/5/15 min) at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        f"- python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}, safetensors {safetensors.__version__}",
    ]


@dataclasses.dataclass
class Summary:
    failed: bool
    median: float = float("nan")
    best: float = float("nan")
    rss: float = float("nan")
    valid: bool = True
    note: str = ""


def summarize(runs: list[Run]) -> Summary:
    """Median and best wall time, max peak RSS; a contender failing any repetition counts as FAILED."""
    if any(r.returncode != 0 for r in runs):
        return Summary(failed=True)
    walls = [r.wall_s for r in runs]
    return Summary(
        failed=False,
        median=statistics.median(walls),
        best=min(walls),
        rss=max(r.maxrss_mib for r in runs),
        valid=all(r.valid is not False for r in runs),
        note=next((r.note for r in runs if r.valid is False), runs[-1].note),
    )


def print_report(results: dict[str, list[Run]], repeat: int) -> bool:
    """Print the table and the target checks; return True if every check passes."""
    s = {name: summarize(runs) for name, runs in results.items()}
    cp, a, b = s["cp -r"], s["vocabsurgeon append"], s["transformers resize"]
    print()
    wall_hdr = "wall s" if repeat == 1 else f"wall s (median of {repeat})"
    print(f"| contender | {wall_hdr} | best s | peak RSS MiB | vs cp -r | notes |")
    print("|---|---:|---:|---:|---:|---|")
    for name, row in s.items():
        if row.failed:
            rc = [r.returncode for r in results[name]]
            print(f"| {name} | FAILED | - | - | - | exit code(s) {rc} |")
            continue
        ratio = f"{row.median / cp.median:.2f}x" if not cp.failed and cp.median > 0 else "-"
        note = row.note if row.valid else f"INVALID OUTPUT: {row.note}"
        print(f"| {name} | {row.median:.2f} | {row.best:.2f} | {row.rss:.0f} | {ratio} | {note} |")

    cp_label = f"append wall <= {TARGET_CP_RATIO:g}x cp -r"
    speed_label = f"append >= {TARGET_SPEEDUP:g}x faster than transformers"
    rss_label = f"append peak RSS <= {TARGET_RSS_MIB:.0f} MiB"
    checks: list[tuple[str, bool, str]] = []
    if a.failed:
        checks += [
            (label, False, "append FAILED") for label in (cp_label, speed_label, rss_label, "append output valid")
        ]
    else:
        if cp.failed:
            checks.append((cp_label, False, "cp -r FAILED"))
        else:
            ratio_cp = a.median / cp.median
            checks.append((cp_label, ratio_cp <= TARGET_CP_RATIO, f"{ratio_cp:.2f}x"))
        if b.failed:
            checks.append((speed_label, False, "transformers FAILED"))
        else:
            speedup = b.median / a.median
            checks.append((speed_label, speedup >= TARGET_SPEEDUP, f"{speedup:.1f}x"))
        checks.append((rss_label, a.rss <= TARGET_RSS_MIB, f"{a.rss:.0f} MiB"))
        checks.append(("append output valid", a.valid, a.note))

    print()
    print("| target | result | measured |")
    print("|---|---|---|")
    for label, passed, measured in checks:
        print(f"| {label} | {'PASS' if passed else 'FAIL'} | {measured} |")
    return all(passed for _, passed, _ in checks)


# --------------------------------------------------------------------------------------------------------------------
# Helpers and main
# --------------------------------------------------------------------------------------------------------------------


def prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def dir_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `vocabsurgeon append` against transformers' load/resize/save and `cp -r` on a synthetic "
        "Llama-3-style bf16 checkpoint (built locally with random weights).",
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full: ~1.5 GB, small: ~50 MB smoke run")
    parser.add_argument("--tokens", type=int, default=1000, metavar="N", help="number of new tokens (default 1000)")
    parser.add_argument("--repeat", type=int, default=1, metavar="R", help="timed repetitions; median and best shown")
    parser.add_argument("--workdir", type=Path, help="work directory (default: fresh temp dir, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="do not remove the temp work directory")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target check FAILs")
    parser.add_argument(
        "--no-mean-resizing",
        action="store_true",
        help="call resize_token_embeddings(..., mean_resizing=False) in the transformers child (default: plain call, "
        "whose mean/covariance init of the new rows dominates its time and memory)",
    )
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.repeat < 1:
        parser.error("--tokens and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # keep our lines ordered with the libraries' stderr
    spec = SIZES[args.size]
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="vocabsurgeon-bench-")) if temp else args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return run_benchmark(args, spec, workdir)
    finally:
        if temp and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nwork directory kept: {workdir}")


def run_benchmark(args: argparse.Namespace, spec: Spec, workdir: Path) -> int:
    resize = "mean_resizing=False" if args.no_mean_resizing else "default mean_resizing"
    print(
        f"# vocabsurgeon append vs transformers vs cp -r ({args.size}, {args.tokens} tokens, repeat {args.repeat}, "
        f"transformers with {resize})"
    )
    print()
    print("Machine:")
    print("\n".join(machine_info()))
    print(f"- work directory: {workdir}")

    src = workdir / "src"
    stamp_path = workdir / f"src.{args.size}.stamp.json"
    stamp = dataclasses.asdict(spec) | {"max_shard_size": max_shard_size(spec), "script_version": 1}
    if src.is_dir() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        print("\nReusing the checkpoint built earlier in this work directory.")
        from tokenizers import Tokenizer

        vocab = set(Tokenizer.from_file(str(src / "tokenizer.json")).get_vocab(with_added_tokens=False))
    else:
        stamp_path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        vocab = build_checkpoint(spec, src)
        print(f"\nBuilt the checkpoint in {time.perf_counter() - t0:.1f} s.")
        write_json(stamp_path, stamp)
    size, n_files = dir_size(src)
    print(
        f"Checkpoint: {size / 1e9:.3f} GB ({size / 2**30:.3f} GiB), {n_files} files, vocab {spec.vocab_size}, "
        f"hidden {spec.hidden_size}, intermediate {spec.intermediate_size}, {spec.num_hidden_layers} layers, "
        f"untied lm_head, bf16, 2 shards (max_shard_size {max_shard_size(spec)} B)"
    )

    tokens_file = workdir / "tokens.txt"
    make_tokens(args.tokens, vocab, tokens_file)
    expected = spec.vocab_size + args.tokens
    print(f"New tokens: {args.tokens} pseudo-words, one per line, in {tokens_file}")

    out_root = workdir / "runs"
    shutil.rmtree(out_root, ignore_errors=True)
    out_root.mkdir()
    warm = out_root / "warmup"
    subprocess.run(["cp", "-r", str(src), str(warm)], check=True)
    shutil.rmtree(warm)
    print(
        "Page cache: not dropped (needs root); one untimed warm-up `cp -r` of the source was run so all contenders "
        "read from a warm cache alike; `sync` before every timed run."
    )

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")

    cmds = contender_cmds(src, out_root, tokens_file, spec, args.no_mean_resizing)
    results: dict[str, list[Run]] = {name: [] for name in cmds}
    for rep in range(1, args.repeat + 1):
        for name, cmd in cmds.items():
            out = out_root / OUT_DIRS[name]
            shutil.rmtree(out, ignore_errors=True)
            run = run_timed(cmd, out_root / f"{OUT_DIRS[name]}-rep{rep}", env)
            if run.returncode != 0:
                print(f"\n[{name}] FAILED (exit code {run.returncode}); stderr:\n{run.stderr.rstrip()[-4000:]}")
            elif name != "cp -r":
                run.valid, run.note = verify_output(out, expected)
            status = "ok" if run.returncode == 0 else "FAILED"
            print(f"  rep {rep}: {name:<20} {run.wall_s:7.2f} s  {run.maxrss_mib:7.0f} MiB  {status}")
            results[name].append(run)
            shutil.rmtree(out, ignore_errors=True)

    all_pass = print_report(results, args.repeat)
    return 1 if args.check and not all_pass else 0


if __name__ == "__main__":
    sys.exit(main())
