"""Free vocabulary slots: named placeholders (``[unused7]``) and padding rows past the tokenizer's highest id."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .inventory import Inventory, Vocabulary, require_tokenizer, taken_ids
from .vocab_tensors import config_vocab_size, find_input_embedding

#: placeholder names across model families; a match anywhere in the vocabulary is a slot, contiguous or not.
PLACEHOLDER_PATTERNS = (
    re.compile(r"\[unused\d+\]"),  # BERT
    re.compile(r"<unused\d+>"),  # Gemma
    re.compile(r"<\|reserved_special_token_\d+\|>"),  # Llama 3
    re.compile(r"<?madeupword\d+>?"),  # fairseq (RoBERTa, XGLM)
)

SlotKind = Literal["placeholder", "padding"]


@dataclass(frozen=True)
class Slot:
    id: int
    token: str | None
    kind: SlotKind


@dataclass(frozen=True)
class VocabSizes:
    tokenizer: int | None
    config: int | None
    embeddings: int | None


@dataclass(frozen=True)
class SlotReport:
    model: str
    vocab_size: VocabSizes
    slots: tuple[Slot, ...]
    taken: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "vocab_size": asdict(self.vocab_size),
            "free": len(self.slots),
            "placeholder": sum(1 for slot in self.slots if slot.kind == "placeholder"),
            "padding": sum(1 for slot in self.slots if slot.kind == "padding"),
            "taken": list(self.taken),
            "slots": [asdict(slot) for slot in self.slots],
        }


_ANY_PLACEHOLDER = re.compile("|".join(f"(?:{pattern.pattern})" for pattern in PLACEHOLDER_PATTERNS))


def is_placeholder(token: str) -> bool:
    return _ANY_PLACEHOLDER.fullmatch(token) is not None


def placeholder_ids(vocabulary: Vocabulary) -> list[int]:
    """Ids of every placeholder, ascending. One regex pass over all tokens joined by newlines (placeholders
    contain none) instead of a call per token: milliseconds for a 128k vocabulary."""
    table = vocabulary.id_to_token
    lines = "\n".join(token.replace("\n", " ") for token in table.values())
    found = {match.group(0) for match in re.finditer(f"^(?:{_ANY_PLACEHOLDER.pattern})$", lines, re.MULTILINE)}
    return sorted(idx for idx, token in table.items() if token in found)


def embedding_rows(inventory: Inventory) -> int | None:
    weights = inventory.primary_weights
    if weights is None:
        return None
    embedding = find_input_embedding(weights.specs)
    return embedding.shape[0] if embedding is not None else None


def find_slots(inventory: Inventory) -> SlotReport:
    """Every free slot, lowest id first. Ids an earlier surgery used (per its manifest) are not free."""
    vocabulary = require_tokenizer(inventory)
    taken = taken_ids(inventory)
    table = vocabulary.id_to_token
    slots = [Slot(idx, table[idx], "placeholder") for idx in placeholder_ids(vocabulary) if idx not in taken]
    rows = embedding_rows(inventory)
    config_rows = config_vocab_size(inventory.config)
    capacity = rows if rows is not None else config_rows
    if capacity is not None:
        slots.extend(Slot(idx, None, "padding") for idx in range(vocabulary.max_id + 1, capacity) if idx not in taken)
    return SlotReport(
        model=inventory.source,
        vocab_size=VocabSizes(tokenizer=vocabulary.size, config=config_rows, embeddings=rows),
        slots=tuple(slots),
        taken=tuple(sorted(taken)),
    )


def compress_ranges(ids: Iterable[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9, 10"`` (a run of two is written as two ids)."""
    ordered = sorted(set(ids))
    parts: list[str] = []
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        if end - start >= 2:
            parts.append(f"{ordered[start]}-{ordered[end]}")
        else:
            parts.extend(str(ordered[i]) for i in range(start, end + 1))
        start = end + 1
    return ", ".join(parts)
