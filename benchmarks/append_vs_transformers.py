"""Benchmark: ``vocabsurgeon append`` vs. the transformers load/resize/save path vs. ``cp -r``.

What it measures
----------------
A synthetic Llama-3-style checkpoint is built locally (random bf16 weights, no download): 128,256-row vocabulary,
untied ``lm_head``, two safetensors shards + ``model.safetensors.index.json``, ``config.json`` and a byte-level BPE
``tokenizer.json`` with exactly 128,256 ids (128,000 BPE entries + 256 Llama-3-like special tokens). ``--size full``
is ~1.5 GB; ``--size small`` (32,000 ids, hidden 256, ~50 MB) is a quick smoke run. N pseudo-words that are not in
the vocabulary are written one per line to a tokens file, then five contenders run, each in its own subprocess,
interleaved in this order in every repetition (so drifting machine/disk state affects all alike):

  (c)  ``cp -r SRC OUT`` -- the I/O floor.
  (a)  ``python -m vocabsurgeon append SRC --out OUT --tokens-file TOKENS --quiet`` -- the default, which checks
       the output quickly (tokenizers library, headers, sampled rows) before renaming it into place.
  (a') the same with ``--no-verify``.
  (a") the same with ``--verify full`` (reloads the output with transformers and compares every byte); reported
       for information, no target.
  (b)  a Python child doing ``AutoTokenizer.from_pretrained`` + ``add_tokens`` +
       ``AutoModelForCausalLM.from_pretrained`` (bf16) + ``resize_token_embeddings(len(tok))`` + ``save_pretrained``
       (same ``max_shard_size`` as the source, so 2 shards) + ``tok.save_pretrained``, with transformers' default
       ``mean_resizing=True`` (new rows sampled from the old rows' mean/covariance, which dominates its time and
       memory).
  (b') the same with ``resize_token_embeddings(len(tok), mean_resizing=False)``.

For each run the wall-clock seconds (including interpreter start-up and imports) and the child's peak RSS
(``ru_maxrss`` from ``os.wait4``, taken by a ~10 MiB launcher process so this process's memory does not leak into
the figure; a child's own reaped sub-processes count as a max, not a sum) are recorded. Outputs of (a), (a'), (b)
and (b') are checked after the timed run, untimed and in a separate process (config, embed_tokens, lm_head and
tokenizer must all have V + N ids), and removed before the next run.

Page cache (``--cache``)
------------------------
  cold  (default when running as root with a writable /proc/sys/vm/drop_caches): before EVERY timed run of every
        contender, ``sync`` and then ``echo 3 > /proc/sys/vm/drop_caches``, so cp, append and transformers all read
        the checkpoint -- and their own Python packages -- from disk. This is how a first run after download
        behaves and what a disk-speed ``cp -r`` figure means. To keep that true, this process itself never imports
        torch, transformers, tokenizers or safetensors (memory-mapped shared libraries of a live process survive a
        cache drop and would warm the contenders' imports): the checkpoint is built and the outputs are checked in
        child processes. Only the Python interpreter (mapped by this process and the launcher) stays cached.
  warm  one untimed warm-up ``cp -r`` of the source first, then all contenders read from a warm page cache alike;
        ``sync`` only before every timed run. Contenders' imports are warm too, so start-up costs shrink.

The harness never fsyncs the outputs; each tool writes as it does by default (so writes end in the page cache).

Targets (printed as PASS/FAIL, separately for (a) and for (a')): wall <= 1.5x ``cp -r``, >= 5x faster than the
faster of (b)/(b') (the speed-up over (b) alone is reported as information), peak RSS <= 1024 MiB, and the output
is valid. Medians are compared. The exit code is 0 regardless, unless ``--check`` is given (then 1 on any FAIL of a
target row of (a) or (a')).

The report ends in Markdown (a caption line and two tables) that can be pasted into README.md.

How to run (from the repository root)
-------------------------------------
  /work/venv/bin/python benchmarks/append_vs_transformers.py --size small           # smoke run, ~30 s
  /work/venv/bin/python benchmarks/append_vs_transformers.py                        # full size, 1,000 tokens
  /work/venv/bin/python benchmarks/append_vs_transformers.py --repeat 3 --check     # median of 3, exit 1 on FAIL
  /work/venv/bin/python benchmarks/append_vs_transformers.py --cache warm           # page cache warm, no root needed
  /work/venv/bin/python benchmarks/append_vs_transformers.py --workdir /tmp/vsb     # keep + reuse the checkpoint

Without ``--workdir`` a fresh temp dir is used and removed at the end unless ``--keep``. With ``--workdir`` the built
checkpoint is kept there and reused by later runs with the same ``--size``; outputs are removed, the contenders'
stdout/stderr logs stay in ``runs/``. ``--no-mean-resizing`` is accepted for compatibility and ignored: (b') always
runs.
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
from collections.abc import Callable
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
    #: shard limit in bytes (huggingface_hub's greedy split); 0: the smallest limit giving exactly 2 shards
    shard_bytes: int = 0
    shards: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


SIZES = {
    # 2 * 128256 * 2048 * 2 B (embed + lm_head) + 4 layers * ~109 MB = ~1.49 GB
    "full": Spec(128_256, 2048, 7168, 4, 16, 4),
    # 2 * 32000 * 256 * 2 B + 4 layers * ~4.6 MB = ~51 MB
    "small": Spec(32_000, 256, 2752, 4, 16, 4),
    # Llama-3-8B: 2 * 128256 * 4096 * 2 B + 32 layers * ~436 MB = ~16.06 GB in 4 shards of at most 5 GB (the
    # published checkpoint's split: embed_tokens in the first, lm_head in the last, 1.17 GB, shard)
    "8b": Spec(128_256, 4096, 14336, 32, 32, 8, shard_bytes=5_000_000_000, shards=4),
}

# Measuring peak RSS with os.wait4 straight from this process would be wrong: at exec the kernel folds the
# pre-exec memory image of the parent into the child's ru_maxrss. So each contender is started by this tiny launcher
# (python -I -S, ~10 MiB) that spawns it, waits with os.wait4 and records wall time and ru_maxrss (KiB on Linux; max
# over the child and its reaped descendants, not a sum). The launcher's own size is thus a floor of ~10 MiB on the
# reported RSS. In cold mode the launcher does `sync` + drop_caches itself, right before starting the clock, so
# nothing (not even the launcher's own start-up) warms the cache between the drop and the timed run.
LAUNCHER = """\
import json, os, sys, time
result_path, cache, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
os.sync()
if cache == "cold":
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\\n")
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

# Runs one function of this file in a child process (argv: this file, function name, JSON list of arguments) and
# prints its JSON result as the last stdout line. Used for everything that imports torch / transformers / tokenizers,
# so that this process never maps their shared libraries (see "Page cache" in the module docstring).
CHILD_CALL = """\
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("vocabsurgeon_bench", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["vocabsurgeon_bench"] = module
spec.loader.exec_module(module)
result = getattr(module, sys.argv[2])(*json.loads(sys.argv[3]))
print(json.dumps(result))
"""

HEAVY_MODULES = ("torch", "transformers", "tokenizers", "safetensors", "numpy")
DROP_CACHES = Path("/proc/sys/vm/drop_caches")

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
    #    ignore_merges, as in Llama 3's tokenizer.json: the extension's entries are not all produced by the merges
    #    (a merge of higher rank can take a letter first), and a whole pre-token found in the vocabulary is one id
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
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
    if spec.shard_bytes:
        return spec.shard_bytes
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
    if len(shards) != spec.shards:
        raise RuntimeError(f"expected {spec.shards} shards, the layout gives {len(shards)}")

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
    load1: float = float("nan")  # 1-minute load average right after the run
    valid: bool | None = None  # None: not checked (cp -r)
    note: str = ""


def run_timed(cmd: list[str], log_base: Path, env: dict[str, str], cache: str) -> Run:
    """Run cmd via the small launcher (which syncs and, if cache == "cold", drops the page cache first)."""
    stdout_path, stderr_path = log_base.with_suffix(".stdout"), log_base.with_suffix(".stderr")
    result_path = log_base.with_suffix(".json")
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(result_path), cache, *cmd]
    with open(stdout_path, "wb") as so, open(stderr_path, "wb") as se:
        launched = subprocess.run(launcher, stdout=so, stderr=se, env=env, cwd=REPO_ROOT, check=False)
    load1 = os.getloadavg()[0]
    stderr = stderr_path.read_text(encoding="utf-8", errors="replace")
    if launched.returncode != 0 or not result_path.exists():
        return Run(float("nan"), float("nan"), launched.returncode or -1, stderr, load1)
    res = json.loads(result_path.read_text())
    return Run(res["wall_s"], res["maxrss_kib"] / 1024.0, res["returncode"], stderr, load1)


def run_child(func: str, args: list[object], env: dict[str, str]) -> object:
    """Call func(*args) of this file in a child process (keeps torch & co. out of this process); return its result."""
    cmd = [sys.executable, "-c", CHILD_CALL, str(Path(__file__).resolve()), func, json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{func}{tuple(args)} failed (exit code {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_build(size: str, src: str) -> None:
    """Entry point for run_child: build the synthetic checkpoint."""
    build_checkpoint(SIZES[size], Path(src))


def child_verify(out: str, expected: int) -> list[object]:
    """Entry point for run_child: check an output directory."""
    return list(verify_output(Path(out), expected))


def bpe_vocab(src: Path) -> set[str]:
    """The BPE model's vocabulary strings (without added tokens), read as JSON (no tokenizers import here)."""
    return set(json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"])


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


@dataclasses.dataclass(frozen=True)
class Contender:
    key: str  # "c", "a", "a'", 'a"', "b", "b'"
    label: str  # Markdown, for the tables
    short: str  # plain text, for the progress lines
    out_dir: str
    cmd: tuple[str, ...]

    @property
    def tag(self) -> str:
        return f"({self.key})"


def contenders(src: Path, out_root: Path, tokens_file: Path, spec: Spec) -> list[Contender]:
    """The contenders in the order they run in every repetition."""

    def append(out_dir: str, *extra: str) -> tuple[str, ...]:
        out = str(out_root / out_dir)
        return (
            sys.executable,
            "-m",
            "vocabsurgeon",
            "append",
            str(src),
            "--out",
            out,
            "--tokens-file",
            str(tokens_file),
            "--quiet",
            *extra,
        )

    def transformers(out_dir: str, mean_resizing: str) -> tuple[str, ...]:
        out = str(out_root / out_dir)
        return (
            sys.executable,
            "-c",
            TRANSFORMERS_CHILD,
            str(src),
            out,
            str(tokens_file),
            str(max_shard_size(spec)),
            mean_resizing,
        )

    return [
        Contender("c", "`cp -r`", "cp -r", "out_c", ("cp", "-r", str(src), str(out_root / "out_c"))),
        Contender(
            "a",
            "`vocabsurgeon append` (default: output checked with `--verify quick`)",
            "append (verify quick)",
            "out_a",
            append("out_a"),
        ),
        Contender(
            "a'", "`vocabsurgeon append --no-verify`", "append --no-verify", "out_a2", append("out_a2", "--no-verify")
        ),
        Contender(
            'a"',
            "`vocabsurgeon append --verify full` (information)",
            "append --verify full",
            "out_a3",
            append("out_a3", "--verify", "full"),
        ),
        Contender(
            "b",
            "transformers `from_pretrained` -> `resize_token_embeddings` -> `save_pretrained` (default "
            "`mean_resizing=True`)",
            "transformers (mean_resizing)",
            "out_b",
            transformers("out_b", "default"),
        ),
        Contender(
            "b'",
            "same, `resize_token_embeddings(..., mean_resizing=False)`",
            "transformers (no mean_resizing)",
            "out_b2",
            transformers("out_b2", "off"),
        ),
    ]


# --------------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------------


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev} (with uncommitted changes)" if dirty else rev


def disk_info(path: Path) -> str:
    """Device, file system and rotational flag of the mount holding path (best effort)."""
    best = ("?", "/", "?")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                if (path == Path(mnt) or Path(mnt) in path.parents) and len(mnt) >= len(best[1]):
                    best = (dev, mnt, fstype)
    except OSError:
        return "unknown"
    dev, mnt, fstype = best
    rot = Path("/sys/block") / Path(dev).name / "queue" / "rotational"
    rotational = rot.read_text().strip() if rot.exists() else "?"
    return f"{dev} on {mnt} ({fstype}, rotational={rotational})"


def load_str() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def machine_info(workdir: Path) -> list[str]:
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    versions = ", ".join(
        f"{name} {package_version(name)}" for name in ("torch", "transformers", "tokenizers", "safetensors", "numpy")
    )
    return [
        f"- nproc: {len(os.sched_getaffinity(0))} (cpu_count {os.cpu_count()}), RAM: {mem_kib / 1024**2:.1f} GiB",
        f"- platform: {platform.platform()}",
        f"- disk: {disk_info(workdir)}",
        f"- load average (1/5/15 min) at start: {load_str()}",
        f"- python {platform.python_version()}, {versions}",
        f"- vocabsurgeon {package_version('vocabsurgeon')}, git {git_revision()}",
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


def append_checks(
    variant: Contender, s: dict[str, Summary], by_key: dict[str, Contender]
) -> list[tuple[str, str, str, str]]:
    """(variant, check, result, measured) rows for one append variant; result is PASS, FAIL or info."""
    who = f"{variant.tag} {variant.short}"
    a, cp = s[variant.key], s["c"]
    cp_label = f"wall <= {TARGET_CP_RATIO:g}x (c) `cp -r`"
    speed_label = f">= {TARGET_SPEEDUP:g}x faster than the faster of (b)/(b') transformers"
    info_label = f"speed-up over (b) transformers default `mean_resizing` (info; target {TARGET_SPEEDUP:g}x)"
    rss_label = f"peak RSS <= {TARGET_RSS_MIB:.0f} MiB"
    valid_label = "output valid"
    if a.failed:
        return [(who, label, "FAIL", "append FAILED") for label in (cp_label, speed_label, rss_label, valid_label)]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rows: list[tuple[str, str, str, str]] = []
    if cp.failed:
        rows.append((who, cp_label, "FAIL", "cp -r FAILED"))
    else:
        ratio = a.median / cp.median
        rows.append(
            (who, cp_label, verdict(ratio <= TARGET_CP_RATIO), f"{ratio:.2f}x ({a.median:.2f} s vs {cp.median:.2f} s)")
        )
    ok_b = [k for k in ("b", "b'") if not s[k].failed]
    if not ok_b:
        rows.append((who, speed_label, "FAIL", "transformers FAILED"))
    else:
        fastest = min(ok_b, key=lambda k: s[k].median)
        speedup = s[fastest].median / a.median
        rows.append(
            (
                who,
                speed_label,
                verdict(speedup >= TARGET_SPEEDUP),
                f"{speedup:.1f}x ({by_key[fastest].tag} {s[fastest].median:.2f} s vs {a.median:.2f} s)",
            )
        )
    if s["b"].failed:
        rows.append((who, info_label, "info", "(b) FAILED"))
    else:
        speedup = s["b"].median / a.median
        met = "met" if speedup >= TARGET_SPEEDUP else "not met"
        rows.append((who, info_label, "info", f"{speedup:.1f}x ({met}; (b) {s['b'].median:.2f} s vs {a.median:.2f} s)"))
    rows.append((who, rss_label, verdict(a.rss <= TARGET_RSS_MIB), f"{a.rss:.0f} MiB"))
    rows.append((who, valid_label, verdict(a.valid), a.note))
    return rows


def print_report(
    results: dict[str, list[Run]], cons: list[Contender], args: argparse.Namespace, cache: str, load_start: str
) -> bool:
    """Print the Markdown tables and the target checks; return True if every target check passes."""
    s = {key: summarize(runs) for key, runs in results.items()}
    by_key = {c.key: c for c in cons}
    cp = s["c"]
    n_cpu = len(os.sched_getaffinity(0))
    cache_text = (
        "cold page cache (`sync` + `drop_caches` before every run)"
        if cache == "cold"
        else "warm page cache (untimed warm-up copy first)"
    )
    reps = "1 run" if args.repeat == 1 else f"median of {args.repeat} interleaved runs"
    print()
    print("## Markdown (paste into README.md)")
    print()
    print(
        f"{args.size} checkpoint, {args.tokens:,} new tokens, {cache_text}, {reps}; {n_cpu} cores, "
        f"load average (1/5/15 min) {load_start} at start, {load_str()} at end:"
    )
    print()
    wall_hdr = "wall s" if args.repeat == 1 else f"wall s (median of {args.repeat})"
    print(f"| | contender | {wall_hdr} | best s | peak RSS MiB | vs `cp -r` | output |")
    print("|---|---|---:|---:|---:|---:|---|")
    for c in cons:
        row = s[c.key]
        if row.failed:
            rc = [r.returncode for r in results[c.key]]
            print(f"| {c.tag} | {c.label} | FAILED | - | - | - | exit code(s) {rc} |")
            continue
        ratio = f"{row.median / cp.median:.2f}x" if not cp.failed and cp.median > 0 else "-"
        note = "-" if c.key == "c" else (row.note if row.valid else f"INVALID: {row.note}")
        print(f"| {c.tag} | {c.label} | {row.median:.2f} | {row.best:.2f} | {row.rss:.0f} | {ratio} | {note} |")

    rows = append_checks(by_key["a"], s, by_key) + append_checks(by_key["a'"], s, by_key)
    print()
    print("| append variant | target | result | measured (medians) |")
    print("|---|---|---|---|")
    for who, label, result, measured in rows:
        print(f"| {who} | {label} | {'**' + result + '**' if result == 'FAIL' else result} | {measured} |")
    print()
    verdicts = []
    for key in ("a", "a'"):
        ok = all(r[2] != "FAIL" for r in rows if r[0].startswith(f"({key})"))
        verdicts.append(f"{by_key[key].tag} {by_key[key].short}: {'all targets PASS' if ok else 'some targets FAIL'}")
    print("Verdict: " + "; ".join(verdicts) + ".")
    return all(r[2] != "FAIL" for r in rows)


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


def in_workdir(workdir: Path | None, keep: bool, prefix: str, run: Callable[[Path], int]) -> int:
    """``run(directory)`` in ``workdir`` (kept), or in a fresh temp directory removed afterwards unless ``keep``."""
    temp = workdir is None
    directory = workdir.resolve() if workdir is not None else Path(tempfile.mkdtemp(prefix=prefix))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return run(directory)
    finally:
        if temp and not keep:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(f"\nwork directory kept: {directory}")


SETTLE_S = 1.0


def settle() -> None:
    """After removing an output: flush and give the disk a moment (a filesystem mounted with ``discard`` trims the
    freed blocks in the background), so the next contender does not pay for the previous one's cleanup."""
    os.sync()
    time.sleep(SETTLE_S)


def drop_page_cache() -> None:
    os.sync()
    with open(DROP_CACHES, "w") as f:
        f.write("3\n")


def resolve_cache(requested: str | None) -> tuple[str, str]:
    """Return (mode, explanation). Cold needs root and a writable drop_caches; a trial drop proves it works."""
    reason = ""
    if os.geteuid() != 0:
        reason = "not running as root"
    elif not os.access(DROP_CACHES, os.W_OK):
        reason = f"{DROP_CACHES} is not writable"
    else:
        try:
            drop_page_cache()
        except OSError as exc:
            reason = f"writing {DROP_CACHES} failed: {exc}"
    if requested == "cold" and reason:
        sys.exit(f"--cache cold: cannot drop the page cache ({reason}); use --cache warm")
    if requested == "warm":
        return "warm", "warm (as requested)"
    if reason:
        return "warm", f"warm -- NOTE: cannot drop the page cache ({reason}), so cold mode is unavailable"
    return "cold", "cold (default: root and a writable drop_caches)" if requested is None else "cold (as requested)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `vocabsurgeon append` (with and without --no-verify) against transformers' "
        "load/resize/save (with and without mean_resizing) and `cp -r` on a synthetic Llama-3-style bf16 checkpoint "
        "(built locally with random weights).",
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full: ~1.5 GB, small: ~50 MB smoke run")
    parser.add_argument("--tokens", type=int, default=1000, metavar="N", help="number of new tokens (default 1000)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="R",
        help="timed repetitions, contenders interleaved within each; median and best shown",
    )
    parser.add_argument(
        "--cache",
        choices=("cold", "warm"),
        default=None,
        help="cold: sync + drop the page cache before every timed run (needs root; the default when possible); "
        "warm: one untimed warm-up copy, then everything reads from the page cache (the default otherwise)",
    )
    parser.add_argument("--workdir", type=Path, help="work directory (default: fresh temp dir, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="do not remove the temp work directory")
    parser.add_argument("--check", action="store_true", help="exit 1 if any target check FAILs")
    parser.add_argument(
        "--no-mean-resizing",
        action="store_true",
        help="ignored, kept for compatibility: the mean_resizing=False variant (b') always runs",
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
    return in_workdir(
        args.workdir, args.keep, "vocabsurgeon-bench-", lambda workdir: run_benchmark(args, spec, workdir)
    )


def run_benchmark(args: argparse.Namespace, spec: Spec, workdir: Path) -> int:
    cache, cache_note = resolve_cache(args.cache)
    load_start = load_str()
    print(
        f"# vocabsurgeon append vs transformers vs cp -r ({args.size}, {args.tokens} tokens, repeat {args.repeat}, "
        f"cache {cache})"
    )
    print()
    print(f"Page cache: {cache_note}.")
    if args.no_mean_resizing:
        print("Note: --no-mean-resizing is ignored; (b') with mean_resizing=False always runs next to (b).")
    print()
    print("Machine:")
    print("\n".join(machine_info(workdir)))
    print(f"- work directory: {workdir}")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")

    src = workdir / "src"
    stamp_path = workdir / f"src.{args.size}.stamp.json"
    stamp = dataclasses.asdict(spec) | {"max_shard_size": max_shard_size(spec), "script_version": 2}
    if src.is_dir() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        print("\nReusing the checkpoint built earlier in this work directory.")
    else:
        stamp_path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        run_child("child_build", [args.size, str(src)], env)
        print(f"\nBuilt the checkpoint in {time.perf_counter() - t0:.1f} s.")
        write_json(stamp_path, stamp)
    vocab = bpe_vocab(src)
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
    if cache == "warm":
        warm = out_root / "warmup"
        subprocess.run(["cp", "-r", str(src), str(warm)], check=True)
        shutil.rmtree(warm)
        print("Page cache: one untimed warm-up `cp -r` of the source done; `sync` before every timed run.")
    else:
        print("Page cache: `sync` + drop_caches before every timed run of every contender.")
    print()

    cons = contenders(src, out_root, tokens_file, spec)
    width = max(len(f"{c.tag} {c.short}") for c in cons)
    results: dict[str, list[Run]] = {c.key: [] for c in cons}
    for rep in range(1, args.repeat + 1):
        for c in cons:
            out = out_root / c.out_dir
            shutil.rmtree(out, ignore_errors=True)
            run = run_timed(list(c.cmd), out_root / f"{c.out_dir}-rep{rep}", env, cache)
            if run.returncode != 0:
                print(
                    f"\n{c.tag} {c.short} FAILED (exit code {run.returncode}); stderr:\n{run.stderr.rstrip()[-4000:]}"
                )
            elif c.key != "c":
                try:
                    run.valid, run.note = run_child("child_verify", [str(out), expected], env)
                except RuntimeError as exc:
                    run.valid, run.note = False, f"check crashed: {str(exc).splitlines()[0]}"
            status = "ok" if run.returncode == 0 else "FAILED"
            if run.valid is False:
                status = "INVALID OUTPUT"
            print(
                f"  rep {rep}: {c.tag + ' ' + c.short:<{width}} {run.wall_s:7.2f} s {run.maxrss_mib:7.0f} MiB  "
                f"load {run.load1:4.2f}  {status}"
            )
            results[c.key].append(run)
            shutil.rmtree(out, ignore_errors=True)
            settle()

    leaked = [m for m in HEAVY_MODULES if m in sys.modules]
    if leaked and cache == "cold":
        print(f"\nWARNING: the harness imported {leaked}; their mapped libraries stayed cached across drops.")
    all_pass = print_report(results, cons, args, cache, load_start)
    return 1 if args.check and not all_pass else 0


if __name__ == "__main__":
    sys.exit(main())
