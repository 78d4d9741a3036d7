"""The source tokenizer's behaviour (normalize, pre-tokenize, encode), from the ``tokenizers`` library itself.

Normalization and splitting are never re-implemented: a token is stored as the checkpoint's own normalizer
produces it, so ``COVID`` becomes ``covid`` exactly when the checkpoint is uncased.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import CheckpointFormatError, UnsupportedCheckpointError
from .inventory import Inventory, require_tokenizer


class Backend:
    """A ``tokenizers.Tokenizer`` of the source with padding and truncation off."""

    def __init__(self, tokenizer: Any, continuing_prefix: str | None) -> None:
        self.tokenizer = tokenizer
        self.continuing_prefix = continuing_prefix
        tokenizer.no_padding()
        tokenizer.no_truncation()

    def normalize(self, text: str) -> str:
        normalizer = self.tokenizer.normalizer
        return normalizer.normalize_str(text) if normalizer is not None else text

    def pre_tokenize(self, normalized: str) -> list[str]:
        pre = self.tokenizer.pre_tokenizer
        if pre is None:
            return [normalized]
        return [piece for piece, _ in pre.pre_tokenize_str(normalized)]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)


def load_backend(inventory: Inventory) -> Backend:
    """Build the backend from tokenizer.json, or from vocab.txt and tokenizer_config.json for slow-only BERT."""
    from tokenizers import Tokenizer

    vocabulary = require_tokenizer(inventory)
    if inventory.tokenizer_json is not None:
        try:
            tokenizer = Tokenizer.from_str(
                inventory.texts.get("tokenizer.json") or json.dumps(inventory.tokenizer_json)
            )
        except Exception as error:  # the library raises a bare Exception for malformed documents
            raise CheckpointFormatError(
                f"the tokenizers library cannot load it: {error}", path=inventory.root / "tokenizer.json"
            ) from None
        model = inventory.tokenizer_json.get("model", {})
        prefix = model.get("continuing_subword_prefix") if model.get("type") == "WordPiece" else None
        return Backend(tokenizer, prefix)
    if vocabulary.family != "wordpiece" or vocabulary.vocab_txt is None:
        raise UnsupportedCheckpointError("no tokenizer.json to read the tokenizer from", path=inventory.root)
    return Backend(_bert_from_vocab(inventory), "##")


def _bert_from_vocab(inventory: Inventory) -> Any:
    """The pipeline BertTokenizer applies, per tokenizer_config.json (what transformers' converter builds)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    vocabulary = require_tokenizer(inventory)
    config = inventory.tokenizer_config or {}
    unk = vocabulary.special_tokens.get("unk_token", "[UNK]")
    tokenizer = Tokenizer(WordPiece(dict(vocabulary.model_vocab), unk_token=unk, continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=config.get("strip_accents"),
        lowercase=bool(config.get("do_lower_case", True)),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = [t.content for t in vocabulary.added if t.special] + sorted(vocabulary.all_special_tokens())
    tokenizer.add_special_tokens(list(dict.fromkeys(specials)))
    return tokenizer
