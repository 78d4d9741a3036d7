"""Tokenizer families, registered by tokenizer.json ``model.type``. A new family is a new module listed here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointFormatError, UnsupportedCheckpointError
from ..plan import Mode
from .base import Family, ModelEntry, TokenizerDocs
from .bpe import BPE
from .unigram import Unigram
from .wordpiece import WordPiece

FAMILIES: dict[str, Family] = {family.model_type: family for family in (WordPiece(), BPE(), Unigram())}

__all__ = ["FAMILIES", "Family", "Mode", "ModelEntry", "TokenizerDocs", "family_named", "read_vocabulary"]


def family_named(name: str) -> Family:
    for family in FAMILIES.values():
        if family.name == name:
            return family
    raise KeyError(name)


def read_vocabulary(
    *,
    root: Path,
    files: tuple[str, ...],
    tokenizer_json: dict[str, Any] | None,
    tokenizer_config: dict[str, Any],
    special_tokens_map: dict[str, Any],
    added_tokens_json: dict[str, Any],
    vocab_txt: list[str] | None,
) -> Any:
    """Merge the tokenizer files into one Vocabulary, or None when the directory has no tokenizer."""
    from ..inventory import SPECIAL_TOKEN_ROLES, AddedToken, Vocabulary

    family: Family
    if tokenizer_json is not None:
        model = tokenizer_json.get("model")
        if not isinstance(model, dict) or "type" not in model:
            raise CheckpointFormatError("has no model.type", path=root / "tokenizer.json")
        if model["type"] not in FAMILIES:
            raise UnsupportedCheckpointError(
                f"tokenizer model type {model['type']!r} is not supported (supported: {', '.join(FAMILIES)})",
                path=root / "tokenizer.json",
            )
        family = FAMILIES[model["type"]]
        try:
            model_vocab = family.read_model_vocab(model)
        except (ValueError, TypeError, IndexError) as error:
            raise CheckpointFormatError(str(error), path=root / "tokenizer.json") from None
        added = tuple(_parse_added(entry, root / "tokenizer.json") for entry in tokenizer_json.get("added_tokens", []))
    elif vocab_txt is not None:
        family = FAMILIES["WordPiece"]
        model_vocab = {}
        for idx, token in enumerate(vocab_txt):
            model_vocab[token] = idx  # as BertTokenizer's load_vocab: the last duplicate wins (audit reports it)
        added = tuple(
            AddedToken(id=int(idx), content=str(token), special=False)
            for token, idx in sorted(added_tokens_json.items(), key=lambda item: item[1])
        )
    elif any(name.endswith(".model") and "/" not in name for name in files) or "vocab.json" in files:
        raise UnsupportedCheckpointError(
            "this checkpoint has no tokenizer.json; slow-only BPE and SentencePiece tokenizers are not supported yet",
            path=root,
            hint="save the tokenizer once with a fast tokenizer (AutoTokenizer.from_pretrained(...).save_pretrained)",
        )
    else:
        return None

    config_decoder = tokenizer_config.get("added_tokens_decoder")
    if isinstance(config_decoder, dict) and tokenizer_json is None:
        merged = {token.id: token for token in added}
        for idx, entry in config_decoder.items():
            merged[int(idx)] = _parse_added({**entry, "id": int(idx)}, root / "tokenizer_config.json")
        added = tuple(merged[idx] for idx in sorted(merged))

    special_tokens: dict[str, str] = {}
    for role in SPECIAL_TOKEN_ROLES:
        value = tokenizer_config.get(role, special_tokens_map.get(role))
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            special_tokens[role] = value
    additional: list[str] = []
    for source in (tokenizer_config, special_tokens_map):
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
        vocab_txt=tuple(vocab_txt) if vocab_txt is not None else None,
    )


def _parse_added(entry: Any, path: Path) -> Any:
    from ..inventory import AddedToken

    if not isinstance(entry, dict) or "content" not in entry or "id" not in entry:
        raise CheckpointFormatError("an added token has no 'id' or 'content'", path=path)
    return AddedToken(
        id=int(entry["id"]),
        content=str(entry["content"]),
        special=bool(entry.get("special", False)),
        normalized=bool(entry.get("normalized", not entry.get("special", False))),
        single_word=bool(entry.get("single_word", False)),
        lstrip=bool(entry.get("lstrip", False)),
        rstrip=bool(entry.get("rstrip", False)),
    )
