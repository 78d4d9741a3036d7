"""The interface every tokenizer family implements, and the working copy of tokenizer files it edits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..inventory import Inventory


@dataclass(frozen=True)
class ModelEntry:
    """A model-vocabulary entry to write: ``token`` at ``id``, renaming ``replaces`` (a placeholder) if given;
    ``special`` when the token is a special added token (slow tokenizers look those up by their exact text)."""

    id: int
    token: str
    replaces: str | None = None
    special: bool = False


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

    Subclasses override the class attributes and the methods; everything about added tokens, special-token lists
    and configs is shared and lives in ``tokenizer_edit``. A family's side files are the vocabulary files of the
    transformers 4.x slow tokenizer (vocab.txt, vocab.json, a SentencePiece model): the family reads the ones it keeps
    in step into ``TokenizerDocs.side`` and renders the ones that changed, in their own format.
    """

    name: ClassVar[str]
    model_type: ClassVar[str]  # tokenizer.json model.type
    side_files: ClassVar[tuple[str, ...]] = ()  # the slow tokenizer's vocabulary files, by name

    def read_side_files(self, docs: TokenizerDocs, inventory: Inventory) -> None:
        """Load the side files this family edits (those the checkpoint has) into ``docs.side``."""

    def side_outputs(self, docs: TokenizerDocs, inventory: Inventory) -> dict[str, bytes]:
        """New bytes for each side file in ``docs.side`` that changed; unchanged files are left to the byte copy."""
        return {}

    def read_model_vocab(self, model: dict[str, Any]) -> dict[str, int]:
        vocab = model.get("vocab")
        if not isinstance(vocab, dict):
            raise ValueError("model.vocab is not an object")
        if all(type(idx) is int for idx in vocab.values()):  # as JSON gives it: keys are strings already
            return dict(vocab)
        return {str(token): int(idx) for token, idx in vocab.items()}

    def can_hold_whole_word(self) -> bool:
        """Whether a word the pre-tokenizer keeps whole is matched whole once it is a vocabulary entry."""
        return False

    def keep_whole(self, docs: TokenizerDocs, tokens: list[str]) -> None:
        """Make the pre-tokenizer keep ``tokens`` (vocabulary entries it would split) whole, for loaders that do not
        match added tokens already in the vocabulary. Families whose added tokens always match do nothing."""

    def set_model_entries(self, docs: TokenizerDocs, entries: list[ModelEntry]) -> None:
        """Write ``entries`` into the model vocabulary (a renamed entry keeps its position)."""
        if docs.tokenizer_json is not None:
            vocab = docs.tokenizer_json["model"]["vocab"]
            docs.tokenizer_json["model"]["vocab"] = replace_keys(vocab, entries)


def replace_keys(mapping: dict[str, int], entries: list[ModelEntry]) -> dict[str, int]:
    """A copy of ``mapping`` with each entry's placeholder renamed in place, other entries appended, in one pass."""
    renames = {e.replaces: e for e in entries if e.replaces is not None and e.replaces in mapping}
    out = {}
    for key, idx in mapping.items():
        entry = renames.get(key)
        if entry is None:
            out[key] = idx
        else:
            out[entry.token] = entry.id
    for entry in entries:
        if entry.replaces not in renames:
            out[entry.token] = entry.id
    return out
