"""Tokenizer families, one module each, behind the ``Family`` interface. A new family is a new module listed in
``FAMILIES``; the first family that recognizes a checkpoint's files reads its vocabulary."""

from __future__ import annotations

from typing import Any

from ..errors import CheckpointFormatError, UnsupportedCheckpointError
from ..plan import Mode
from ..vocabulary import SPECIAL_TOKEN_ROLES, Vocabulary
from .base import CheckpointFiles, Family, ModelEntry, Note, TokenizerDocs, TokenizerFiles, parse_added
from .bpe import BPE
from .byte_level_bpe import ByteLevelBPEFiles
from .unigram import Unigram
from .wordpiece import WordPiece

#: in detection order: the tokenizer.json families first, so that a slow tokenizer's files beside a tokenizer.json
#: are side files, not another tokenizer
FAMILIES: tuple[Family, ...] = (WordPiece(), BPE(), Unigram(), ByteLevelBPEFiles())

__all__ = [
    "FAMILIES",
    "CheckpointFiles",
    "Family",
    "Mode",
    "ModelEntry",
    "Note",
    "TokenizerDocs",
    "TokenizerFiles",
    "family_named",
    "read_vocabulary",
]


def family_named(name: str) -> Family:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(name)


def detect_family(files: TokenizerFiles) -> Family | None:
    """The family of these files; None when there is no tokenizer at all. Raises for a tokenizer no family reads."""
    if files.tokenizer_json is not None and files.model_type is None:
        raise CheckpointFormatError("has no model.type", path=files.path("tokenizer.json"))
    family = next((family for family in FAMILIES if family.detects(files)), None)
    if family is not None:
        return family
    if files.tokenizer_json is not None:
        supported = ", ".join(dict.fromkeys(f.model_type for f in FAMILIES))
        raise UnsupportedCheckpointError(
            f"tokenizer model type {files.model_type!r} is not supported (supported: {supported})",
            path=files.path("tokenizer.json"),
        )
    if any(name.endswith(".model") and "/" not in name for name in files.files) or files.has("vocab.json"):
        raise UnsupportedCheckpointError(
            "this checkpoint has no tokenizer.json; slow-only SentencePiece tokenizers (and vocab.json without"
            " merges.txt) are not supported yet",
            path=files.root,
            hint="save the tokenizer once with a fast tokenizer (AutoTokenizer.from_pretrained(...).save_pretrained)",
        )
    return None


def read_vocabulary(files: TokenizerFiles) -> Vocabulary | None:
    """Merge the tokenizer files into one Vocabulary, or None when the directory has no tokenizer."""
    family = detect_family(files)
    if family is None:
        return None
    model_vocab, added = family.read_entries(files)

    config_decoder = files.tokenizer_config.get("added_tokens_decoder")
    if isinstance(config_decoder, dict) and files.tokenizer_json is None:
        merged = {token.id: token for token in added}
        for idx, entry in _usable_decoder_entries(config_decoder):
            merged[idx] = parse_added({**entry, "id": idx}, files.path("tokenizer_config.json"))
        added = tuple(merged[idx] for idx in sorted(merged))

    special_tokens: dict[str, str] = {}
    for role in SPECIAL_TOKEN_ROLES:
        value = files.tokenizer_config.get(role, files.special_tokens_map.get(role))
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            special_tokens[role] = value
    additional: list[str] = []
    for source in (files.tokenizer_config, files.special_tokens_map):
        for key in ("additional_special_tokens", "extra_special_tokens"):
            values = source.get(key)
            if isinstance(values, dict):
                values = list(values.values())
            for value in values or []:
                text = value.get("content") if isinstance(value, dict) else value
                if isinstance(text, str) and text not in additional:
                    additional.append(text)
    return Vocabulary(
        family=family.name,
        model_vocab=model_vocab,
        added=added,
        special_tokens=special_tokens,
        additional_special_tokens=tuple(additional),
        vocab_txt=tuple(files.vocab_txt) if files.vocab_txt is not None else None,
    )


def _usable_decoder_entries(decoder: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The entries of tokenizer_config.json's ``added_tokens_decoder`` that name a token: a non-negative integer
    id and an object with a string ``content``. The others are left out here and reported by audit
    (``added-tokens-decoder-invalid``, ``added-token-no-content``), rather than failing the whole read."""
    usable = []
    for key, entry in decoder.items():
        try:
            idx = int(key)
        except ValueError:
            continue
        if idx >= 0 and isinstance(entry, dict) and isinstance(entry.get("content"), str):
            usable.append((idx, entry))
    return usable
