"""The tokenizer and config files as a surgery leaves them, rendered in memory (pure: nothing is written here).

The planner renders them to know which files a surgery rewrites (and their content's sha256, which the plan
records); apply writes exactly these bytes, re-rendering only a plan loaded from a file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .families import family_named
from .formats.json_file import JsonStyle, dump_json, patch_json, read_json_object
from .formats.vocab_txt import dump_vocab_txt
from .inventory import Inventory, WeightSet
from .plan import Placement, TensorOp
from .tokenizer_edit import apply_placements, docs_from_inventory


def render_tokenizer_documents(
    inventory: Inventory, family: str, placements: tuple[Placement, ...]
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """New bytes for each tokenizer file the placements change (unchanged files are left to the byte copy), and the
    rewritten JSON documents as values (what parsing those bytes gives), so that checking the output need not
    parse a large tokenizer.json again."""
    if not placements:
        return {}, {}
    docs = docs_from_inventory(inventory)
    apply_placements(docs, family, placements, inventory)
    outputs: dict[str, bytes] = {}
    documents: dict[str, Any] = {}
    pairs: Iterable[tuple[str, Any, Any, JsonStyle | None]] = (
        ("tokenizer.json", docs.tokenizer_json, inventory.tokenizer_json, inventory.tokenizer_json_style),
        ("tokenizer_config.json", docs.tokenizer_config, inventory.tokenizer_config, inventory.tokenizer_config_style),
        (
            "special_tokens_map.json",
            docs.special_tokens_map,
            inventory.special_tokens_map,
            inventory.special_tokens_map_style,
        ),
        ("added_tokens.json", docs.added_tokens_json, inventory.added_tokens_json, None),
    )
    for name, new, old, style in pairs:
        if new is not None and new != old:
            outputs[name] = json_bytes(inventory, name, old, new, style)
            documents[name] = new
    vocabulary = inventory.vocabulary
    if docs.vocab_txt is not None and vocabulary is not None and tuple(docs.vocab_txt) != vocabulary.vocab_txt:
        outputs["vocab.txt"] = dump_vocab_txt(docs.vocab_txt).encode("utf-8")
    outputs.update(family_named(family).side_outputs(docs, inventory))  # vocab.json, a SentencePiece model
    return outputs, documents


def render_config(inventory: Inventory, keys: Mapping[str, int]) -> dict[str, bytes]:
    """config.json with ``keys`` set (dotted keys reach into a section: ``text_config.vocab_size``)."""
    if not keys or inventory.config is None:
        return {}
    config = dict(inventory.config)
    for dotted, value in keys.items():
        *sections, key = dotted.split(".")
        target = config
        for section in sections:
            target[section] = dict(target[section])  # copies: the inventory's document is never mutated
            target = target[section]
        target[key] = value
    return {"config.json": json_bytes(inventory, "config.json", inventory.config, config, inventory.config_style)}


def render_index(inventory: Inventory, weights: WeightSet, ops: Sequence[TensorOp]) -> bytes | None:
    """The shard index of ``weights`` after ``ops`` (None when no op touches its files: it is copied): totals grow
    by the new rows, counted along each tensor's vocabulary axis (a (1, V) buffer's rows are its elements)."""
    assert weights.index is not None
    mine = [op for op in ops if op.file in weights.files]
    if not mine:
        return None
    document, style = read_json_object(inventory.path(weights.index))
    views = {op.name: weights.specs[op.name].rows_view(op.axis) for op in mine}
    grown = sum((op.rows_after - op.rows_before) * views[op.name].row_bytes for op in mine)
    metadata = document.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("total_size"), int):
        document = {**document, "metadata": {**metadata, "total_size": metadata["total_size"] + grown}}
    # transformers 5 also records total_parameters (num_parameters(): registered buffers such as the (1, V)
    # final_logits_bias do not count); it grows by the new rows' elements of the other vocabulary tensors
    if isinstance(metadata, dict) and isinstance(metadata.get("total_parameters"), int):
        added = sum(
            (op.rows_after - op.rows_before) * math.prod(views[op.name].shape[1:]) for op in mine if op.axis == 0
        )
        document["metadata"] = {**document["metadata"], "total_parameters": metadata["total_parameters"] + added}
    return dump_json(document, style).encode("utf-8")


def json_bytes(inventory: Inventory, name: str, old: Any, new: Any, style: JsonStyle | None) -> bytes:
    """The new document in the source's own bytes wherever it did not change."""
    text = inventory.texts.get(name)
    if text is None or old is None:
        return dump_json(new, style or JsonStyle(indent=2)).encode("utf-8")
    return patch_json(text, old, new, style or JsonStyle(indent=2)).encode("utf-8")
