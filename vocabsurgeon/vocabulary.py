"""The vocabulary of a tokenizer, merged from the files that define it: plain values, importing nothing of the
package, so that the families (which build it) and the inventory (which holds it) both depend on it alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

SPECIAL_TOKEN_ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


@dataclass(frozen=True)
class AddedToken:
    """An entry of tokenizer.json's ``added_tokens`` (or tokenizer_config's ``added_tokens_decoder``)."""

    id: int
    content: str
    special: bool = False
    normalized: bool = True
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False


@dataclass(frozen=True)
class Vocabulary:
    """Every id the tokenizer knows, merged from the files that define them."""

    family: str
    model_vocab: dict[str, int] = field(compare=False)
    added: tuple[AddedToken, ...]
    special_tokens: dict[str, str] = field(compare=False)
    additional_special_tokens: tuple[str, ...]
    vocab_txt: tuple[str, ...] | None = None

    @cached_property
    def id_to_token(self) -> dict[int, str]:
        """The token of each id. An added token on an id the model vocabulary (or an earlier added token) already
        gives another token does not take it: the tokenizers library moves such a token to a new id (audit reports
        it as ``duplicate-id``)."""
        table = {idx: token for token, idx in self.model_vocab.items()}
        for token in self.added:
            table.setdefault(token.id, token.content)
        return table

    @cached_property
    def token_to_id(self) -> dict[str, int]:
        table = dict(self.model_vocab)
        for token in self.added:
            table[token.content] = token.id
        return table

    @cached_property
    def size(self) -> int:
        """``len(tokenizer)``: the number of distinct ids."""
        return len(set(self.model_vocab.values()) | {token.id for token in self.added})

    @cached_property
    def max_id(self) -> int:
        ids = list(self.model_vocab.values()) + [token.id for token in self.added]
        return max(ids) if ids else -1

    def all_special_tokens(self) -> set[str]:
        specials = set(self.special_tokens.values()) | set(self.additional_special_tokens)
        return specials | {token.content for token in self.added if token.special}
