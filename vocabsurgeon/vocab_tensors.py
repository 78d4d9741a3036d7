"""Which tensors of a checkpoint are vocabulary-sized, found from config, names and shapes (not a BERT-only list).

The input embedding is found by name; every other tensor outside the numbered layer stack whose first dimension
equals the vocabulary rows (and whose second, if any, is the embedding width) is an output embedding or a
vocabulary bias and grows with it. So does a float ``(1, V)`` buffer whose last dimension equals the rows (BART,
mBART, Marian and Pegasus save ``final_logits_bias`` so): its vocabulary is axis 1, and since its bytes are laid out
like a ``(V,)`` bias it grows like one (see :func:`vocabsurgeon.formats.weights.rows_shape`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .formats.weights import FLOAT_DTYPES, TensorSpec

INPUT_EMBEDDING_SUFFIXES = (
    "word_embeddings.weight",
    "embed_tokens.weight",
    "tok_embeddings.weight",
    "wte.weight",
    "word_emb.weight",
    "embed_in.weight",
    "shared.weight",
    "token_embedding.weight",
    "embeddings.weight",
)
OUTPUT_EMBEDDING_SUFFIXES = (
    "lm_head.weight",
    "cls.predictions.decoder.weight",
    "embed_out.weight",
    "output.weight",
    "lm_head.decoder.weight",
    "generator_lm_head.weight",
    "pred_layer.proj.weight",
)
_LAYER_STACK = re.compile(r"\.\d+\.")
_CONFIG_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id")


@dataclass(frozen=True)
class VocabTensors:
    """The vocabulary-sized tensors of one weight set."""

    input: TensorSpec
    outputs: tuple[TensorSpec, ...]  # untied output embeddings (2-D)
    biases: tuple[TensorSpec, ...]  # vocabulary biases (1-D)
    buffers: tuple[TensorSpec, ...] = ()  # (1, V) vocabulary buffers such as final_logits_bias: vocabulary on axis 1

    @property
    def rows(self) -> int:
        return self.input.shape[0]

    @property
    def all(self) -> tuple[TensorSpec, ...]:
        return (self.input, *self.outputs, *self.biases, *self.buffers)

    def axis(self, spec: TensorSpec) -> int:
        """The dimension of ``spec`` (one of :attr:`all`) that runs over the vocabulary: 1 for a buffer, else 0."""
        return 1 if any(spec.name == buffer.name for buffer in self.buffers) else 0

    def vocab_rows(self, spec: TensorSpec) -> int:
        """How many vocabulary rows ``spec`` (one of :attr:`all`) holds, along its :meth:`axis`."""
        return spec.shape[self.axis(spec)]


def find_input_embedding(specs: Mapping[str, TensorSpec]) -> TensorSpec | None:
    """The input embedding: the first name (by suffix priority) outside the layer stack that is 2-D."""
    for suffix in INPUT_EMBEDDING_SUFFIXES:
        for name, spec in specs.items():
            named = name == suffix or name.endswith("." + suffix)
            outside = not _LAYER_STACK.search(name) and "position" not in name and "token_type" not in name
            if named and outside and len(spec.shape) == 2:
                return spec
    return None


def find_output_embeddings(specs: Mapping[str, TensorSpec]) -> tuple[TensorSpec, ...]:
    """Output embeddings found by name, whatever their size (so audit can report a mismatch)."""
    return tuple(
        spec
        for name, spec in specs.items()
        if any(name == s or name.endswith("." + s) for s in OUTPUT_EMBEDDING_SUFFIXES) and len(spec.shape) == 2
    )


def find_vocab_tensors(specs: Mapping[str, TensorSpec]) -> VocabTensors | None:
    """Every tensor that must grow with the vocabulary, or None when no input embedding is found."""
    embedding = find_input_embedding(specs)
    if embedding is None:
        return None
    rows, width = embedding.shape
    outputs: list[TensorSpec] = []
    biases: list[TensorSpec] = []
    buffers: list[TensorSpec] = []
    for name, spec in specs.items():
        if name == embedding.name or _LAYER_STACK.search(name) or not spec.shape:
            continue
        if _is_vocab_buffer(spec, rows):
            buffers.append(spec)
        elif spec.shape[0] != rows:
            continue
        elif len(spec.shape) == 2 and spec.shape[1] == width:
            outputs.append(spec)
        elif len(spec.shape) == 1:
            biases.append(spec)
    return VocabTensors(embedding, tuple(outputs), tuple(biases), tuple(buffers))


def _is_vocab_buffer(spec: TensorSpec, rows: int) -> bool:
    """A float ``(1, rows)`` tensor (rows > 1, so that it is not a row of its own): ``final_logits_bias``'s shape.

    Integer ``(1, N)`` buffers (``position_ids``, ``token_type_ids``) never are, whatever N is.
    """
    return len(spec.shape) == 2 and spec.shape[0] == 1 and spec.shape[1] == rows > 1 and spec.dtype in FLOAT_DTYPES


def find_vocab_biases(specs: Mapping[str, TensorSpec]) -> tuple[TensorSpec, ...]:
    """Tensors named like vocabulary biases, whatever their size (for audit): 1-D ``...predictions.bias``,
    ``...decoder.bias``, ``...lm_head.bias`` and ``(1, N)`` ``...logits_bias`` (BART's ``final_logits_bias``).
    Their vocabulary size is their last dimension."""
    return tuple(
        spec
        for name, spec in specs.items()
        if not _LAYER_STACK.search(name)
        and (
            (len(spec.shape) == 1 and name.endswith(("predictions.bias", "decoder.bias", "lm_head.bias")))
            or (len(spec.shape) == 2 and spec.shape[0] == 1 and name.endswith("logits_bias"))
        )
    )


def text_config(config: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The part of config.json that describes the language model (``text_config`` of multimodal configs)."""
    if not config:
        return {}
    nested = config.get("text_config")
    if isinstance(nested, dict) and "vocab_size" in nested and "vocab_size" not in config:
        return nested
    return config


def config_vocab_size(config: Mapping[str, Any] | None) -> int | None:
    value = text_config(config).get("vocab_size")
    return value if isinstance(value, int) else None


def ties_embeddings(config: Mapping[str, Any] | None) -> bool:
    """transformers' default: tied unless the config says otherwise."""
    value = text_config(config).get("tie_word_embeddings", (config or {}).get("tie_word_embeddings", True))
    return bool(value)


def config_token_ids(config: Mapping[str, Any] | None) -> dict[str, int]:
    """The token ids a config names (pad, bos, eos ...), flattening lists as in Llama 3's eos_token_id."""
    found: dict[str, int] = {}
    for key in _CONFIG_TOKEN_IDS:
        value = text_config(config).get(key)
        values = value if isinstance(value, list) else [value]
        for index, item in enumerate(values):
            if isinstance(item, int) and not isinstance(item, bool):
                found[key if len(values) == 1 else f"{key}[{index}]"] = item
    return found
