"""Row initializations, in one registry: what each computes and which rows may use it.

A new initialization is one :class:`Initialization` here (and its arithmetic in :mod:`vocabsurgeon.rows`); the
CLI's ``--init`` choices and help text, the plan's checks and a saved plan's parser all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Init = Literal["subword-mean", "mean", "zeros", "normal", "keep"]


@dataclass(frozen=True)
class Initialization:
    name: Init
    help: str
    #: whether it keeps an existing row (so it cannot initialize a row that does not exist yet)
    needs_existing_row: bool = False
    #: whether it can initialize a row that no token takes (padding rows of append, resize)
    for_padding: bool = True


INITIALIZATIONS: dict[str, Initialization] = {
    i.name: i
    for i in (
        Initialization(
            "subword-mean",
            "the mean of the rows of the pieces the original tokenizer splits the token into (default for tokens)",
            for_padding=False,
        ),
        Initialization("mean", "the mean of all trained rows (default for special tokens and padding rows)"),
        Initialization("zeros", "zeros"),
        Initialization("normal", "N(0, initializer_range) draws, as transformers initializes embeddings"),
        Initialization(
            "keep", "leave the slot's row as it is (remap only)", needs_existing_row=True, for_padding=False
        ),
    )
}

INITS: tuple[Init, ...] = tuple(INITIALIZATIONS)  # type: ignore[arg-type]


def inits_for(operation: str) -> tuple[Init, ...]:
    """The ``--init`` choices of an operation: remap may keep a slot's row; append and resize create rows."""
    if operation == "remap":
        return INITS
    if operation == "resize":
        return tuple(i.name for i in INITIALIZATIONS.values() if i.for_padding)
    return tuple(i.name for i in INITIALIZATIONS.values() if not i.needs_existing_row)


def init_help(operation: str) -> str:
    """The ``--init`` help of an operation, from the registry."""
    return (
        "Row init: "
        + "; ".join(f"{INITIALIZATIONS[name].name}: {INITIALIZATIONS[name].help}" for name in inits_for(operation))
        + "."
    )
