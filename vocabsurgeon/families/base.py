"""The interface every tokenizer family implements, and the working copy of tokenizer files it edits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Mode = Literal["vocab", "added", "special"]


@dataclass
class TokenizerDocs:
    """Mutable working copies of the tokenizer files, edited in place by apply and the families."""

    tokenizer_json: dict[str, Any] | None = None
    tokenizer_config: dict[str, Any] | None = None
    special_tokens_map: dict[str, Any] | None = None
    added_tokens_json: dict[str, int] | None = None
    vocab_txt: list[str] | None = None
    side: dict[str, Any] = field(default_factory=dict)  # family-specific files (vocab.json, tokenizer.model ...)


class Family:
    """A tokenizer family: where its model vocabulary lives and which tokens it can hold as vocabulary entries.

    Subclasses override the class attributes and the three methods; everything about added tokens, special-token
    lists and configs is shared and lives in ``tokenizer_edit``.
    """

    name: ClassVar[str]
    model_type: ClassVar[str]  # tokenizer.json model.type
    side_files: ClassVar[tuple[str, ...]] = ()

    def read_model_vocab(self, model: dict[str, Any]) -> dict[str, int]:
        vocab = model.get("vocab")
        if not isinstance(vocab, dict):
            raise ValueError("model.vocab is not an object")
        return {str(token): int(idx) for token, idx in vocab.items()}

    def can_hold_whole_word(self) -> bool:
        """Whether a word the pre-tokenizer keeps whole is matched whole once it is a vocabulary entry."""
        return False

    def set_model_entry(self, docs: TokenizerDocs, token_id: int, token: str, replaces: str | None) -> None:
        """Make ``token`` the model-vocabulary entry with ``token_id``, replacing ``replaces`` if given."""
        if docs.tokenizer_json is not None:
            vocab = docs.tokenizer_json["model"]["vocab"]
            docs.tokenizer_json["model"]["vocab"] = replace_key(vocab, replaces, token, token_id)


def replace_key(mapping: dict[str, int], old: str | None, new: str, value: int) -> dict[str, int]:
    """A copy of ``mapping`` with ``old`` renamed to ``new`` in place (same position), or ``new`` appended."""
    if old is None or old not in mapping:
        out = dict(mapping)
        out[new] = value
        return out
    return {(new if key == old else key): (value if key == old else idx) for key, idx in mapping.items()}
