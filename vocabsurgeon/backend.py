"""The source tokenizer's behaviour (normalize, pre-tokenize, encode), from the ``tokenizers`` library itself.

Normalization and splitting are never re-implemented: a token is stored as the checkpoint's own normalizer
produces it, so ``COVID`` becomes ``covid`` exactly when the checkpoint is uncased.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .errors import CheckpointFormatError, UnsupportedCheckpointError
from .families import family_named
from .inventory import Inventory, require_tokenizer
from .word_counts import PipelineSteps, pipeline_document

if TYPE_CHECKING:
    from tokenizers import Tokenizer


class Backend(PipelineSteps):
    """A ``tokenizers.Tokenizer`` of the source with padding and truncation off. Without ``has_model`` it only
    normalizes and pre-tokenizes (see :func:`load_backend`)."""

    def __init__(self, tokenizer: Tokenizer, continuing_prefix: str | None, *, has_model: bool = True) -> None:
        self.tokenizer = tokenizer
        self.continuing_prefix = continuing_prefix
        self.has_model = has_model
        tokenizer.no_padding()
        tokenizer.no_truncation()

    def model_tokens(self, piece: str) -> list[str]:
        """What the model alone (no normalizer, pre-tokenizer or added tokens) makes of one pre-token."""
        return [token.value for token in self.tokenizer.model.tokenize(piece)]

    def encode(self, text: str) -> list[int]:
        if not self.has_model:
            raise RuntimeError("this backend only normalizes and pre-tokenizes: load it with model=True to encode")
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)


#: the backends loaded last, by (id of the inventory, model): planning and verification share them. The
#: inventory is held too, so that its id is not reused while the entry lives.
_LOADED: dict[tuple[int, bool], tuple[Inventory, Backend]] = {}
_KEEP = 4


def load_backend(inventory: Inventory, *, model: bool = True) -> Backend:
    """Build the backend from tokenizer.json, or, without one, as the family rebuilds its slow tokenizer (vocab.txt
    for BERT, vocab.json and merges.txt for GPT-2).

    With ``model=False`` only the normalizer and pre-tokenizer of tokenizer.json are built, in about a
    millisecond instead of the fraction of a second a 128k-token BPE model takes: enough to decide where tokens go.
    The last few backends are kept, so loading one again for the same Inventory object is free.
    """
    key = (id(inventory), model)
    cached = _LOADED.get(key) or (_LOADED.get((id(inventory), True)) if not model else None)
    if cached is not None and cached[0] is inventory:
        return cached[1]
    backend = _load(inventory, model)
    _LOADED[key] = (inventory, backend)
    while len(_LOADED) > _KEEP:
        del _LOADED[next(iter(_LOADED))]
    return backend


def _load(inventory: Inventory, model: bool) -> Backend:
    from tokenizers import Tokenizer

    vocabulary = require_tokenizer(inventory)
    if inventory.tokenizer_json is not None:
        document = inventory.tokenizer_json
        if model:
            text = inventory.texts.get("tokenizer.json") or json.dumps(document)
        else:  # the same normalizer and pre-tokenizer around an empty model
            text = json.dumps(pipeline_document(document))
        try:
            tokenizer = Tokenizer.from_str(text)
        except Exception as error:  # the library raises a bare Exception for malformed documents
            raise CheckpointFormatError(
                f"the tokenizers library cannot load it: {error}", path=inventory.root / "tokenizer.json"
            ) from None
        spec = document.get("model", {})
        prefix = spec.get("continuing_subword_prefix") if spec.get("type") == "WordPiece" else None
        return Backend(tokenizer, prefix, has_model=model)
    family = family_named(vocabulary.family)
    slow = family.slow_tokenizer(inventory, vocabulary)
    if slow is None:
        raise UnsupportedCheckpointError("no tokenizer.json to read the tokenizer from", path=inventory.root)
    return Backend(slow, family.continuing_prefix)
