"""Which tensors of a checkpoint are vocabulary-sized, found from config, names and shapes (not a BERT-only list).

The input embedding is found by name; every other tensor outside the numbered layer stack whose first dimension
equals the vocabulary rows (and whose second, if any, is the embedding width) is an output embedding or a
vocabulary bias and grows with it. So does a float ``(1, V)`` buffer whose last dimension equals the rows (BART,
mBART, Marian and Pegasus save ``final_logits_bias`` so): its vocabulary is axis 1, and since its bytes are laid out
like a ``(V,)`` bias it grows like one (see :func:`vocabsurgeon.formats.weights.rows_shape`).

A few models also index a table of their own by token id, with rows given by another config key: Gemma 3n's and
Gemma 4's per-layer embedding ``embed_tokens_per_layer`` (``vocab_size_per_layer_input`` rows). Such a table is
never an output embedding, whatever its shape: :func:`find_vocab_tables` finds it, :func:`find_vocab_tensors`
leaves it out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

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


def find_vocab_tensors(specs: Mapping[str, TensorSpec], config: Mapping[str, Any] | None = None) -> VocabTensors | None:
    """Every tensor that must grow with the vocabulary, or None when no input embedding is found.

    Vocabulary tables with a row count of their own (:func:`find_vocab_tables`) are never among them, even when
    their shape is the output embedding's: those saved under a known name (``embed_tokens_per_layer.weight``) are
    left out whether or not ``config`` is given, and with ``config`` so is every table found from its shape."""
    embedding = find_input_embedding(specs)
    if embedding is None:
        return None
    rows, width = embedding.shape
    own = {table.spec.name for table in find_vocab_tables(specs, config)} if config else set()
    outputs: list[TensorSpec] = []
    biases: list[TensorSpec] = []
    buffers: list[TensorSpec] = []
    for name, spec in specs.items():
        if name == embedding.name or _LAYER_STACK.search(name) or not spec.shape:
            continue
        if name in own or _named_like_own_rows_table(name):
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


#: what a model does with an id past a :class:`VocabTable`'s rows (see :class:`VocabTable`)
PastRows = Literal["row0", "error", "unknown"]


@dataclass(frozen=True)
class OwnRowsKind:
    """A kind of vocabulary table whose rows a config key other than ``vocab_size`` gives."""

    key: str  # the config key of its rows, in the text part of the config
    suffixes: tuple[str, ...]  # the names it is saved under
    width_keys: tuple[str, ...]  # its width is the product of these config values
    #: what the model does with an id >= the key's value, by the model_type of the config part holding the key
    past_rows: Mapping[str, Literal["row0", "error"]]


#: Gemma 3n (``Gemma3nTextModel.get_per_layer_inputs``) replaces every id outside
#: ``[0, vocab_size_per_layer_input)`` by 0 before the lookup, so such an id reads row 0 (the ``<pad>`` row,
#: ``padding_idx = pad_token_id = 0``: zeros in a model transformers initializes), times the table's scale
#: ``sqrt(hidden_size_per_layer_input)``; the real checkpoints rely on it for their 256 image and audio ids
#: 262144..262399. Gemma 4 (``Gemma4TextModel.get_per_layer_inputs``) has no such guard (its multimodal model
#: turns image/audio ids into ``pad_token_id`` first): a text id past the rows is an IndexError, and
#: transformers' ``resize_token_embeddings`` grows the table with ``vocab_size`` (huggingface/transformers#45324).
OWN_ROWS_KINDS: tuple[OwnRowsKind, ...] = (
    OwnRowsKind(
        key="vocab_size_per_layer_input",
        suffixes=("embed_tokens_per_layer.weight",),
        width_keys=("num_hidden_layers", "hidden_size_per_layer_input"),
        past_rows={"gemma3n": "row0", "gemma3n_text": "row0", "gemma4": "error", "gemma4_text": "error"},
    ),
)


@dataclass(frozen=True)
class VocabTable:
    """A table indexed by token id whose rows a config key other than ``vocab_size`` gives
    (``model.embed_tokens_per_layer.weight``, ``vocab_size_per_layer_input``).

    Token ``i < rows`` reads row ``i``; what the model does with an id ``>= value`` is :attr:`past_rows`:
    ``"row0"`` it reads row 0 instead (Gemma 3n: ids past the table are masked to 0, no error),
    ``"error"`` it fails (Gemma 4 indexes the table unguarded), ``"unknown"`` a model this module does not know.
    Its key does not follow an append (only ``vocab_size`` does), so the table keeps its rows through one, and
    appended ids read what :attr:`past_rows` says; with ``"error"`` such ids fail until the table grows and its
    key with it (transformers' resize sets ``vocab_size_per_layer_input = vocab_size`` for Gemma 4).
    """

    spec: TensorSpec
    config_path: tuple[str, ...]  # where its key is: ("vocab_size_per_layer_input",) or ("text_config", ...)
    value: int  # the key's value, the rows the model expects
    past_rows: PastRows = "unknown"

    @property
    def key(self) -> str:
        return self.config_path[-1]

    @property
    def dotted_key(self) -> str:
        """The key as :func:`vocab_size_key` spells one: ``vocab_size_per_layer_input`` or
        ``text_config.vocab_size_per_layer_input``."""
        return ".".join(self.config_path)

    @property
    def rows(self) -> int:
        """Rows the tensor holds (``value`` unless the checkpoint disagrees with its config)."""
        return self.spec.shape[0]


def find_vocab_tables(specs: Mapping[str, TensorSpec], config: Mapping[str, Any] | None) -> tuple[VocabTable, ...]:
    """The vocabulary tables with a row count of their own (see :class:`VocabTable`), from config keys and shapes.

    For each kind in :data:`OWN_ROWS_KINDS` whose key is an int in the text part of the config (top level, or
    ``text_config`` as in ``Gemma3nForConditionalGeneration``), a 2-D tensor outside the numbered layer stack is
    such a table when it is saved under one of the kind's names, or when, being neither the input embedding nor
    named like an output embedding, it is a float tensor of shape ``(value, width)`` with ``width`` the product of
    the kind's width keys. A key of 0 (Gemma 4 assistants) or a missing table (Gemma 4 without per-layer
    embeddings, ``hidden_size_per_layer_input`` 0) gives nothing. Pure: reads only names, shapes, dtypes and the
    config dict."""
    if not config:
        return ()
    embedding = find_input_embedding(specs)
    outputs = {spec.name for spec in find_output_embeddings(specs)}
    found: list[VocabTable] = []
    for kind in OWN_ROWS_KINDS:
        located = _config_key(config, kind.key)
        if located is None:
            continue
        path, section = located
        value = section[kind.key]
        width = _product(section, kind.width_keys)
        model_type = section.get("model_type", config.get("model_type"))
        past_rows: PastRows = kind.past_rows.get(model_type, "unknown") if isinstance(model_type, str) else "unknown"
        for name, spec in specs.items():
            if len(spec.shape) != 2 or _LAYER_STACK.search(name):
                continue
            named = any(name == s or name.endswith("." + s) for s in kind.suffixes)
            shaped = (
                width is not None
                and spec.shape == (value, width)
                and spec.dtype in FLOAT_DTYPES
                and name not in outputs
                and (embedding is None or name != embedding.name)
            )
            if named or shaped:
                found.append(VocabTable(spec, path, value, past_rows))
    return tuple(found)


def _config_key(config: Mapping[str, Any], key: str) -> tuple[tuple[str, ...], Mapping[str, Any]] | None:
    """Where a positive int ``key`` is: the text part of the config first (:func:`text_config`), then the other."""
    nested = config.get("text_config")
    sections: list[tuple[tuple[str, ...], Mapping[str, Any]]] = [((), config)]
    if isinstance(nested, dict):
        sections.append((("text_config",), nested))
        if text_config(config) is nested:
            sections.reverse()
    for prefix, section in sections:
        value = section.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return (*prefix, key), section
    return None


def _product(section: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    result = 1
    for key in keys:
        value = section.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        result *= value
    return result


def _named_like_own_rows_table(name: str) -> bool:
    return any(name == s or name.endswith("." + s) for kind in OWN_ROWS_KINDS for s in kind.suffixes)


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


def vocab_size_key(config: Mapping[str, Any] | None) -> str:
    """The config.json key that holds the vocabulary size, dotted: ``vocab_size`` or ``text_config.vocab_size``."""
    return "vocab_size" if text_config(config) is config or not config else "text_config.vocab_size"


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
