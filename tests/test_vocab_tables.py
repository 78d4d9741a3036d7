"""Vocabulary tables with a row count of their own: Gemma 3n's ``embed_tokens_per_layer``
(``vocab_size_per_layer_input`` rows, beside ``embed_tokens`` with ``vocab_size``), found by
:func:`find_vocab_tables` and never among the tensors :func:`find_vocab_tensors` grows.

The checkpoints are real: :func:`build_tiny_gemma3n` writes a ``Gemma3nForCausalLM`` (hidden 32, two layers) with a
Gemma-like tokenizer, and the ``Gemma3nForConditionalGeneration`` layout is its text model's tensors under
``model.language_model.`` next to the image and audio embedders, with the nested config transformers writes (the
vision tower needs timm, so no such model is built). Two tests pin the transformers behaviour the module documents
for ids past the table: Gemma 3n reads row 0, Gemma 4 fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from checkpoints import english_corpus
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3nConfig,
    Gemma3nForCausalLM,
    Gemma3nTextConfig,
    PreTrainedTokenizerFast,
)

from vocabsurgeon.formats import safetensors_stream
from vocabsurgeon.formats.weights import TensorSpec
from vocabsurgeon.inventory import read_inventory
from vocabsurgeon.vocab_tensors import VocabTable, find_vocab_tables, find_vocab_tensors

PER_LAYER = "model.embed_tokens_per_layer.weight"
EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"

#: Gemma's low ids: <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4, [multimodal] 5, then <unused0..> from 6
GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]")
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
FIRST_UNUSED = len(GEMMA_SPECIALS)


def tiny_gemma3n_config(
    *,
    vocab_size: int = 512,
    vocab_size_per_layer_input: int = 384,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    hidden_size_per_layer_input: int = 8,
    tie: bool = True,
) -> Gemma3nTextConfig:
    """A tiny ``Gemma3nTextConfig``: no KV-shared layers (the default 15 needs more layers than this), two AltUp
    inputs, one sliding and one full attention layer per two layers; the token ids are Gemma's."""
    return Gemma3nTextConfig(
        vocab_size=vocab_size,
        vocab_size_per_layer_input=vocab_size_per_layer_input,
        hidden_size=hidden_size,
        hidden_size_per_layer_input=hidden_size_per_layer_input,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        num_kv_shared_layers=0,
        laurel_rank=4,
        altup_num_inputs=2,
        max_position_embeddings=128,
        sliding_window=16,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_hidden_layers)],
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
        tie_word_embeddings=tie,
    )


def gemma_like_tokenizer(size: int, *, unused: int = 10) -> Tokenizer:
    """A SentencePiece-style BPE tokenizer (``▁`` word prefix, byte fallback) of exactly ``size`` entries laid out
    like Gemma's: :data:`GEMMA_SPECIALS` at 0-5, ``<unused0..unused-1>`` from 6, the 256 byte pieces
    ``<0x00>..<0xFF>``, then pieces trained on :func:`checkpoints.english_corpus`. The specials are special added
    tokens, the placeholders added tokens that are not special, as in Gemma's ``tokenizer.json``."""
    head = [*GEMMA_SPECIALS, *(f"<unused{i}>" for i in range(unused))]
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    trained = size - len(head) - len(byte_pieces)
    if trained < 64:
        raise ValueError(f"size {size} too small: need at least {len(head) + len(byte_pieces) + 64}")
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = metaspace
    trainer_tok.train_from_iterator(
        english_corpus(), trainers.BpeTrainer(vocab_size=trained, show_progress=False, min_frequency=1)
    )
    state = json.loads(trainer_tok.to_str())["model"]
    pieces = sorted(state["vocab"], key=state["vocab"].__getitem__)
    if len(pieces) != trained:
        raise RuntimeError(f"BPE training produced {len(pieces)} pieces instead of {trained}")
    vocab = {token: idx for idx, token in enumerate([*head, *byte_pieces, *pieces])}
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in state["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = metaspace
    tok.decoder = decoders.Sequence(
        [decoders.Metaspace(replacement="▁", prepend_scheme="first"), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in GEMMA_SPECIALS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in head[len(GEMMA_SPECIALS) :]])
    assert tok.get_vocab_size() == size
    return tok


def build_tiny_gemma3n(
    path: Path,
    *,
    vocab_size: int = 512,
    vocab_size_per_layer_input: int = 384,
    tokenizer_size: int | None = None,
    unused: int = 10,
    tie: bool = True,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    hidden_size_per_layer_input: int = 8,
) -> Path:
    """Write a complete tiny ``Gemma3nForCausalLM`` checkpoint into ``path`` and return it.

    ``config.json`` and ``model.safetensors`` come from ``save_pretrained`` (random weights, ``torch.manual_seed(0)``;
    ``lm_head.weight`` is saved only when ``tie`` is False), ``tokenizer.json`` from :func:`gemma_like_tokenizer`
    (``<unused0..unused-1>`` at ids 6.., ``tokenizer_size`` entries, by default ``vocab_size_per_layer_input``: as in
    Gemma 3n, the ids past the per-layer table are embedding rows no text token uses), plus
    ``tokenizer_config.json`` and ``special_tokens_map.json``.

    ``model.embed_tokens.weight`` has ``vocab_size`` rows, ``model.embed_tokens_per_layer.weight``
    ``vocab_size_per_layer_input`` rows of ``num_hidden_layers * hidden_size_per_layer_input`` values.
    """
    tokenizer_size = vocab_size_per_layer_input if tokenizer_size is None else tokenizer_size
    if tokenizer_size > vocab_size:
        raise ValueError(f"tokenizer_size {tokenizer_size} > vocab_size {vocab_size}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=gemma_like_tokenizer(tokenizer_size, unused=unused),
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    fast.save_pretrained(path)
    specials = {
        "pad_token": "<pad>",
        "eos_token": "<eos>",
        "bos_token": "<bos>",
        "unk_token": "<unk>",
        "mask_token": "<mask>",
    }
    (path / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")
    config = tiny_gemma3n_config(
        vocab_size=vocab_size,
        vocab_size_per_layer_input=vocab_size_per_layer_input,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        hidden_size_per_layer_input=hidden_size_per_layer_input,
        tie=tie,
    )
    torch.manual_seed(0)
    Gemma3nForCausalLM(config).eval().save_pretrained(path)
    return path


def conditional_generation_layout(
    causal: dict[str, TensorSpec], text_config: Gemma3nTextConfig
) -> tuple[dict[str, TensorSpec], dict[str, Any]]:
    """The specs and config.json of a ``Gemma3nForConditionalGeneration`` with this text model: its tensors under
    ``model.language_model.`` (``lm_head.weight`` stays), the image and audio embedders with their 128-row tables
    (``vocab_offset`` 262144 and 262272 in the real model), a tensor of each tower; the config is what
    ``Gemma3nConfig(text_config=...).to_dict()`` writes (text part nested, no top-level vocab_size)."""
    specs = {}
    for name, spec in causal.items():
        new = name if name == LM_HEAD else "model.language_model." + name.removeprefix("model.")
        specs[new] = TensorSpec(new, spec.dtype, spec.shape)
    hidden = text_config.hidden_size
    for tower, width in (("embed_vision", 48), ("embed_audio", 40)):
        extra = {
            f"model.{tower}.embedding.weight": (128, width),
            f"model.{tower}.hard_embedding_norm.weight": (width,),
            f"model.{tower}.soft_embedding_norm.weight": (width,),
            f"model.{tower}.embedding_projection.weight": (hidden, width),
        }
        specs.update({name: TensorSpec(name, "F32", shape) for name, shape in extra.items()})
    specs["model.vision_tower.timm_model.conv_stem.conv.weight"] = TensorSpec(
        "model.vision_tower.timm_model.conv_stem.conv.weight", "F32", (64, 3, 3, 3)
    )
    specs["model.audio_tower.conformer.0.norm.weight"] = TensorSpec(
        "model.audio_tower.conformer.0.norm.weight", "F32", (40,)
    )
    return specs, json.loads(json.dumps(Gemma3nConfig(text_config=text_config).to_dict()))


@pytest.fixture(scope="module")
def gemma3n(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma3n(tmp_path_factory.mktemp("gemma3n"))


def _read(path: Path) -> tuple[dict[str, TensorSpec], dict[str, Any]]:
    inventory = read_inventory(path)
    assert inventory.primary_weights is not None
    assert inventory.config is not None
    return dict(inventory.primary_weights.specs), inventory.config


def test_tiny_gemma3n_loads_with_every_key(gemma3n: Path) -> None:
    model, info = AutoModelForCausalLM.from_pretrained(gemma3n, output_loading_info=True)
    assert type(model).__name__ == "Gemma3nForCausalLM"
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    tok = AutoTokenizer.from_pretrained(gemma3n)
    assert len(tok) == 384 <= model.config.vocab_size
    assert [tok.convert_tokens_to_ids(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>")] == [0, 1, 2, 3]
    assert tok.convert_tokens_to_ids([f"<unused{i}>" for i in range(10)]) == list(range(6, 16))
    ids = tok("hello <unused0> world")["input_ids"]
    assert 6 in ids
    assert tok.decode(ids, skip_special_tokens=True).replace("<unused0>", "").split() == ["hello", "world"]


def test_per_layer_table_has_its_own_rows(gemma3n: Path) -> None:
    specs, config = _read(gemma3n)
    assert specs[EMBED].shape == (512, 32)
    assert specs[PER_LAYER].shape == (384, 2 * 8)
    assert specs == safetensors_stream.read_tensor_specs(gemma3n / "model.safetensors")
    (table,) = find_vocab_tables(specs, config)
    assert table == VocabTable(specs[PER_LAYER], ("vocab_size_per_layer_input",), 384, "row0")
    assert (table.key, table.value, table.rows) == ("vocab_size_per_layer_input", 384, 384)
    for cfg in (None, config):
        tensors = find_vocab_tensors(specs, cfg)
        assert tensors is not None
        assert tensors.input.name == EMBED
        assert tensors.rows == 512
        assert [spec.name for spec in tensors.all] == [EMBED]  # tied: no lm_head saved


def test_conditional_generation_layout() -> None:
    config = tiny_gemma3n_config(vocab_size=512, vocab_size_per_layer_input=384)
    causal = {
        EMBED: TensorSpec(EMBED, "F32", (512, 32)),
        PER_LAYER: TensorSpec(PER_LAYER, "F32", (384, 16)),
        "model.per_layer_model_projection.weight": TensorSpec(
            "model.per_layer_model_projection.weight", "F32", (16, 32)
        ),
        "model.norm.weight": TensorSpec("model.norm.weight", "F32", (32,)),
        "model.layers.0.per_layer_input_gate.weight": TensorSpec(
            "model.layers.0.per_layer_input_gate.weight", "F32", (8, 32)
        ),
        LM_HEAD: TensorSpec(LM_HEAD, "F32", (512, 32)),
    }
    specs, nested = conditional_generation_layout(causal, config)
    assert "vocab_size" not in nested
    assert nested["text_config"]["vocab_size_per_layer_input"] == 384
    name = "model.language_model.embed_tokens_per_layer.weight"
    (table,) = find_vocab_tables(specs, nested)
    assert (table.spec.name, table.config_path, table.value, table.past_rows) == (
        name,
        ("text_config", "vocab_size_per_layer_input"),
        384,
        "row0",
    )
    tensors = find_vocab_tensors(specs, nested)
    assert tensors is not None
    assert [s.name for s in tensors.all] == ["model.language_model.embed_tokens.weight", LM_HEAD]
    assert find_vocab_tensors(specs) == tensors


def test_equal_counts_and_widths_is_still_not_an_output(tmp_path: Path) -> None:
    """vocab_size_per_layer_input == vocab_size and num_layers * per-layer width == hidden: the table has the
    untied lm_head's very shape, and still is a table of its own that an append leaves alone."""
    path = build_tiny_gemma3n(
        tmp_path / "equal",
        vocab_size=512,
        vocab_size_per_layer_input=512,
        hidden_size=32,
        num_hidden_layers=2,
        hidden_size_per_layer_input=16,
        tie=False,
        tokenizer_size=500,
    )
    specs, config = _read(path)
    assert specs[PER_LAYER].shape == specs[LM_HEAD].shape == specs[EMBED].shape == (512, 32)
    (table,) = find_vocab_tables(specs, config)
    assert (table.spec.name, table.value, table.rows) == (PER_LAYER, 512, 512)
    for cfg in (None, config):
        tensors = find_vocab_tensors(specs, cfg)
        assert tensors is not None
        assert [s.name for s in tensors.all] == [EMBED, LM_HEAD]


def test_found_from_shape_under_another_name() -> None:
    """With the config, a float table of shape (vocab_size_per_layer_input, layers * per-layer width) is found
    whatever its name (and so left out of the vocabulary tensors); the embedding and lm_head never are."""
    config = {
        "model_type": "gemma3n_text",
        "vocab_size": 64,
        "vocab_size_per_layer_input": 64,
        "num_hidden_layers": 2,
        "hidden_size_per_layer_input": 4,
    }
    specs = {
        name: TensorSpec(name, "BF16", (64, 8))
        for name in ("model.embed_tokens.weight", "model.ple_table.weight", "lm_head.weight")
    }
    (table,) = find_vocab_tables(specs, config)
    assert table.spec.name == "model.ple_table.weight"
    tensors = find_vocab_tensors(specs, config)
    assert tensors is not None
    assert [s.name for s in tensors.all] == ["model.embed_tokens.weight", "lm_head.weight"]
    ints = {**specs, "model.ple_table.weight": TensorSpec("model.ple_table.weight", "I64", (64, 8))}
    assert find_vocab_tables(ints, config) == ()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, ()),
        ({"model_type": "llama", "vocab_size": 64}, ()),
        # Gemma 4 without per-layer embeddings: the key is there, the table is not
        (
            {
                "model_type": "gemma4_text",
                "vocab_size": 64,
                "vocab_size_per_layer_input": 64,
                "hidden_size_per_layer_input": 0,
                "num_hidden_layers": 2,
            },
            (),
        ),
        # the Gemma 4 assistant's key is 0
        ({"model_type": "gemma4_text", "vocab_size": 64, "vocab_size_per_layer_input": 0}, ()),
    ],
)
def test_no_table(config: dict[str, Any] | None, expected: tuple[VocabTable, ...]) -> None:
    specs = {n: TensorSpec(n, "F32", (64, 8)) for n in ("model.embed_tokens.weight", "lm_head.weight")}
    assert find_vocab_tables(specs, config) == expected
    tensors = find_vocab_tensors(specs, config)
    assert tensors is not None
    assert [s.name for s in tensors.all] == ["model.embed_tokens.weight", "lm_head.weight"]


def test_gemma4_table_fails_past_its_rows() -> None:
    """Gemma 4 names its table and key alike but indexes it unguarded: past_rows "error"."""
    config = {
        "model_type": "gemma4",
        "text_config": {
            "model_type": "gemma4_text",
            "vocab_size": 64,
            "vocab_size_per_layer_input": 64,
            "num_hidden_layers": 2,
            "hidden_size_per_layer_input": 4,
        },
    }
    specs = {
        n: TensorSpec(n, "BF16", shape)
        for n, shape in (
            ("model.language_model.embed_tokens.weight", (64, 16)),
            ("model.language_model.embed_tokens_per_layer.weight", (64, 8)),
        )
    }
    (table,) = find_vocab_tables(specs, config)
    assert (table.config_path, table.past_rows) == (("text_config", "vocab_size_per_layer_input"), "error")


def test_transformers_gemma3n_reads_row_0_past_the_table() -> None:
    """What VocabTable.past_rows "row0" stands for, in transformers itself: an id >= vocab_size_per_layer_input
    gets row 0's per-layer input (zeros here: row 0 is the padding_idx row transformers initializes to zero)."""
    torch.manual_seed(0)
    model = Gemma3nForCausalLM(tiny_gemma3n_config(vocab_size=512, vocab_size_per_layer_input=384)).eval()
    table = model.model.embed_tokens_per_layer
    with torch.no_grad():
        table.weight[0] = torch.randn(table.weight.shape[1])  # so that row 0 tells from zeros
        got = model.model.get_per_layer_inputs(torch.tensor([[0, 383, 384, 511]])).flatten(2)[0]
        assert torch.equal(got[2], got[0])
        assert torch.equal(got[3], got[0])
        assert torch.allclose(got[1], table.weight[383] * 8**0.5)
        assert model(torch.tensor([[2, 6, 500]])).logits.shape == (1, 3, 512)


def test_transformers_gemma4_fails_past_the_table() -> None:
    """What VocabTable.past_rows "error" stands for: Gemma 4 indexes its per-layer table unguarded."""
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    config = Gemma4TextConfig(
        vocab_size=128,
        vocab_size_per_layer_input=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        global_head_dim=16,
        hidden_size_per_layer_input=8,
        max_position_embeddings=64,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
    )
    torch.manual_seed(0)
    model = Gemma4ForCausalLM(config).eval()
    with torch.no_grad():
        assert model(torch.tensor([[2, 95]])).logits.shape == (1, 2, 128)
        with pytest.raises(IndexError):
            model(torch.tensor([[2, 96]]))


# ------------------------------------------------------------------------------------------------ surgery


def _surgery(*args: str | Path) -> None:
    from click.testing import CliRunner

    from vocabsurgeon.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def _table(path: Path, name: str) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))[name]


def test_remap_into_a_slot_writes_its_row_of_both_tables(gemma3n: Path, tmp_path: Path) -> None:
    """Row 6 (``<unused0>``) of embed_tokens and of embed_tokens_per_layer both get the word's subword mean; every
    other row of both is unchanged, and the output loads with no missing or unexpected keys."""
    out = tmp_path / "out"
    _surgery("remap", gemma3n, "--out", out, "--token", "hospitalization", "--verify", "full")
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert tokenizer.encode("The hospitalization", add_special_tokens=False)[-1] == 6  # the word in running text
    source = AutoTokenizer.from_pretrained(str(gemma3n))
    context = source.encode("a", add_special_tokens=False)
    pieces = source.encode("a hospitalization", add_special_tokens=False)[len(context) :]
    for name in (EMBED, PER_LAYER):
        before, after = _table(gemma3n, name), _table(out, name)
        assert after.shape == before.shape
        changed = (before != after).any(dim=1).nonzero().flatten().tolist()
        assert changed == [6], name
        expected = before[pieces].to(torch.float64).mean(dim=0).to(before.dtype)
        torch.testing.assert_close(after[6], expected, atol=1e-6, rtol=0)
    _, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())


def test_append_leaves_the_per_layer_table_and_its_key(gemma3n: Path, tmp_path: Path) -> None:
    """Gemma 3n reads row 0 of the per-layer table for ids past it: a token appended past the table (here into the
    first padding row, 384, of the 512-row embedding) writes embed_tokens only; table and key stay."""
    out = tmp_path / "out"
    _surgery("append", gemma3n, "--out", out, "--token", "zqxjvv", "--pad-to-multiple-of", "64")
    assert AutoTokenizer.from_pretrained(str(out)).encode("a zqxjvv", add_special_tokens=False)[-1] == 384
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    source = json.loads((gemma3n / "config.json").read_text(encoding="utf-8"))
    assert config["vocab_size_per_layer_input"] == source["vocab_size_per_layer_input"] == 384
    assert _table(out, PER_LAYER).shape == _table(gemma3n, PER_LAYER).shape
    assert torch.equal(_table(out, PER_LAYER), _table(gemma3n, PER_LAYER))  # the new id is past the table
    _, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
