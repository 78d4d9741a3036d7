"""Apply a plan's placements to working copies of the tokenizer files, consistently across all of them.

The family decides where its model vocabulary lives (vocab.txt, model.vocab, vocab.json); this module keeps what
every family shares in step: tokenizer.json's ``added_tokens``, tokenizer_config.json's ``added_tokens_decoder``,
``added_tokens.json``, and the special-token lists in the forms transformers 4.x and 5.x both read.
"""

from __future__ import annotations

import copy
from typing import Any

from .backend import load_backend
from .families import ModelEntry, TokenizerDocs, family_named
from .inventory import Inventory
from .plan import Placement


def docs_from_inventory(inventory: Inventory) -> TokenizerDocs:
    """Deep copies of every tokenizer document, so the inventory is never mutated."""
    vocabulary = inventory.vocabulary
    docs = TokenizerDocs(
        tokenizer_json=_copy_tokenizer_json(inventory.tokenizer_json),
        tokenizer_config=copy.deepcopy(inventory.tokenizer_config),
        special_tokens_map=copy.deepcopy(inventory.special_tokens_map),
        added_tokens_json=copy.deepcopy(inventory.added_tokens_json),
        vocab_txt=list(vocabulary.vocab_txt) if vocabulary and vocabulary.vocab_txt is not None else None,
    )
    if vocabulary is not None:
        family_named(vocabulary.family).read_side_files(docs, inventory)
    return docs


def _copy_tokenizer_json(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """Copy only what placements edit (added_tokens, model.vocab): a deep copy of a 128k-token vocabulary with
    its merges costs seconds, and the rest of the document is never mutated."""
    if document is None:
        return None
    copied = dict(document)
    copied["added_tokens"] = [dict(token) for token in document.get("added_tokens", [])]
    model = document.get("model")
    if isinstance(model, dict):
        vocab = model.get("vocab")
        copied["model"] = {**model, "vocab": copy.copy(vocab)}
    return copied


def apply_placements(
    docs: TokenizerDocs, family_name: str, placements: tuple[Placement, ...], inventory: Inventory
) -> None:
    """Edit ``docs`` in place so that every placement's content has its id in every file.

    A slot's placeholder in the model vocabulary is renamed, whatever the mode, so the id keeps a model entry; a new
    id gets one only as a vocabulary entry: an appended added token lives in added_tokens alone, where every
    tokenizers version (0.13 included) gives it the id model size + n. Each file is edited once for all placements.
    """
    family = family_named(family_name)
    model_vocab = inventory.vocabulary.model_vocab if inventory.vocabulary else {}
    entries: list[ModelEntry] = []
    in_model: dict[int, bool] = {}
    for placement in placements:
        renamed = placement.replaces is not None and model_vocab.get(placement.replaces) == placement.id
        if placement.mode == "vocab" or renamed:
            replaces = placement.replaces if renamed else None
            special, word = placement.mode == "special", placement.form != "as-is"
            entries.append(ModelEntry(placement.id, placement.content, replaces, special, word))
        in_model[placement.id] = renamed or placement.mode == "vocab"
    if entries:
        family.set_model_entries(docs, entries)
    slow_vocabulary = any(inventory.has(name) for name in family.side_files)
    listed = {idx: not held or family.lists_renamed_added for idx, held in in_model.items()}
    _set_added_tokens(docs, placements, listed, slow_vocabulary)
    whole = [p.content for p in placements if p.mode == "added" and in_model[p.id]]
    family.keep_whole(docs, whole)
    words = [p.content for p in placements if p.form != "as-is"]
    family.finish_edit(docs, words, load_backend(inventory) if words else None)
    _add_special(docs, [p.content for p in placements if p.mode == "special"])


def added_entry(placement: Placement) -> dict[str, Any]:
    """The tokenizers-library form of an added token (the key order tokenizers itself writes). A word-like added
    token (``COVID-19``, ``new york``: it begins and ends with a letter or digit) is ``single_word``, matched only
    where no letter or digit touches it, so that it never matches inside a longer word (``COVID-190``)."""
    special = placement.mode == "special"
    content = placement.content
    return {
        "id": placement.id,
        "content": content,
        "single_word": not special and _word_char(content[0]) and _word_char(content[-1]),
        "lstrip": False,
        "rstrip": False,
        "normalized": not special,
        "special": special,
    }


def matched_inside_words(inventory: Inventory, placement: Placement) -> bool:
    """Whether the output matches the word of ``placement`` inside longer words too: an added token that
    tokenizer.json cannot mark ``single_word`` (see :func:`added_entry`), or any added token of a checkpoint with
    only the slow files (added_tokens.json has no such flag: transformers matches ``hosp`` in ``hospital``)."""
    if placement.mode != "added":
        return False
    return inventory.tokenizer_json is None or not added_entry(placement)["single_word"]


def _word_char(char: str) -> bool:
    """A character tokenizers' ``single_word`` treats as part of a word."""
    return char.isalnum() or char == "_"


def _set_added_tokens(
    docs: TokenizerDocs, placements: tuple[Placement, ...], listed: dict[int, bool], slow_vocabulary: bool
) -> None:
    """``listed``: by id, whether added_tokens.json lists the placement (a token outside the model vocabulary)."""
    ids = {p.id for p in placements}
    wanted = [p for p in placements if p.mode in ("added", "special")]
    if docs.tokenizer_json is not None:
        existing = docs.tokenizer_json.get("added_tokens", [])
        template = next(iter(existing), None)
        new = []
        for placement in wanted:
            entry = added_entry(placement)
            if template is not None:  # follow the file's own key order
                entry = {key: entry[key] for key in template if key in entry} | entry
            new.append(entry)
        tokens = [t for t in existing if t.get("id") not in ids] + new
        docs.tokenizer_json["added_tokens"] = sorted(tokens, key=lambda t: t["id"])
    decoder = (docs.tokenizer_config or {}).get("added_tokens_decoder")
    if isinstance(decoder, dict):
        kept = {key: value for key, value in decoder.items() if int(key) not in ids}
        for placement in wanted:
            kept[str(placement.id)] = {k: v for k, v in added_entry(placement).items() if k != "id"}
        docs.tokenizer_config["added_tokens_decoder"] = dict(sorted(kept.items(), key=lambda item: int(item[0])))  # type: ignore[index]
    # transformers 4.x's slow tokenizers learn tokens past their vocabulary file (vocab.txt, vocab.json, a
    # SentencePiece model) from added_tokens.json only
    outside = [p for p in wanted if listed[p.id]]
    if docs.added_tokens_json is None and outside and (slow_vocabulary or docs.vocab_txt is not None):
        docs.added_tokens_json = {}
    if docs.added_tokens_json is not None:
        docs.added_tokens_json = {k: v for k, v in docs.added_tokens_json.items() if v not in ids}
        for placement in outside:
            docs.added_tokens_json[placement.content] = placement.id


def _add_special(docs: TokenizerDocs, contents: list[str]) -> None:
    """transformers 4.x reads ``additional_special_tokens``; 5.x converts it to ``extra_special_tokens`` unless a
    list of those is already present, in which case that list is extended too. A list is never created under
    ``extra_special_tokens``: transformers 4.47-4.57 crash on one (they expect a dict there). All at once: one pass
    over each list, however many tokens (appending them one by one rescanned the list each time)."""
    if not contents:
        return
    for document in (docs.tokenizer_config, docs.special_tokens_map):
        if document is None:
            continue
        existing = document.get("additional_special_tokens")
        if existing is None:
            existing = []
        if isinstance(existing, list):
            document["additional_special_tokens"] = _append_tokens(existing, contents)
        extra = document.get("extra_special_tokens")
        if isinstance(extra, list):
            document["extra_special_tokens"] = _append_tokens(extra, contents)


def _append_tokens(values: list[Any], contents: list[str]) -> list[Any]:
    present = {v.get("content") if isinstance(v, dict) else v for v in values}
    new = [c for c in dict.fromkeys(contents) if c not in present]
    if not new:
        return values
    if values and isinstance(values[0], dict):
        template = dict(values[0])
        entries: list[Any] = []
        for content in new:
            entry = dict(template)
            entry.update(content=content, lstrip=False, rstrip=False, single_word=False, normalized=False)
            entries.append(entry)
        return [*values, *entries]
    return [*values, *new]
