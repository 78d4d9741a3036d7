"""Row initializations, in one registry: what each computes and which rows may use it.

A new initialization is one :class:`Initialization` here (and its arithmetic in :mod:`vocabsurgeon.rows`); the
CLI's ``--init`` choices and help text, the plan's checks and a saved plan's parser all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Init = Literal["subword-mean", "distill", "first-piece", "mean", "zeros", "normal", "keep"]


@dataclass(frozen=True)
class Initialization:
    name: Init
    help: str
    #: whether it keeps an existing row (so it cannot initialize a row that does not exist yet)
    needs_existing_row: bool = False
    #: whether it can initialize a row that no token takes (padding rows of append, resize)
    for_padding: bool = True
    #: whether ``--init`` offers it (``first-piece`` is the planner's, for distil's output rows)
    choosable: bool = True


INITIALIZATIONS: dict[str, Initialization] = {
    i.name: i
    for i in (
        Initialization(
            "subword-mean",
            "the mean of the rows of the pieces the original tokenizer splits the token into (default for tokens)",
            for_padding=False,
        ),
        Initialization(
            "distill",
            "learned: each new input row fitted so that the frozen source model gives the word as one id the hidden"
            " states it gives the word's pieces (Token Distillation), on contexts from --corpus (or generated);"
            " output rows copy the first piece's; needs torch and transformers",
            for_padding=False,
        ),
        Initialization(
            "first-piece",
            "the row of the first piece the original tokenizer splits the token into (distill's output rows: the"
            " new token's logit is what the source gives the word's first piece)",
            for_padding=False,
            choosable=False,
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
    offered = [i for i in INITIALIZATIONS.values() if i.choosable]
    if operation == "remap":
        return tuple(i.name for i in offered)
    if operation == "resize":
        return tuple(i.name for i in offered if i.for_padding)
    return tuple(i.name for i in offered if not i.needs_existing_row)


def init_help(operation: str) -> str:
    """The ``--init`` help of an operation, from the registry."""
    return (
        "Row init: "
        + "; ".join(f"{INITIALIZATIONS[name].name}: {INITIALIZATIONS[name].help}" for name in inits_for(operation))
        + "."
    )


#: distill: contexts per word taken from the corpus (the first ones, in corpus order)
DEFAULT_CONTEXTS = 12
#: distill: L-BFGS iterations
DEFAULT_STEPS = 14
#: distill: the weight of the mean of the states in the loss (see :mod:`vocabsurgeon.distill`)
POOLED_WEIGHT = 10.0


@dataclass(frozen=True)
class DistillSettings:
    """What ``--init distill`` reads and how long it trains (see :mod:`vocabsurgeon.distill`); part of the plan,
    and recorded in the manifest."""

    corpus: tuple[str, ...] = ()
    field: str | None = None
    contexts: int = DEFAULT_CONTEXTS
    steps: int = DEFAULT_STEPS

    def to_json(self) -> dict[str, Any]:
        return {
            "corpus": list(self.corpus),
            "field": self.field,
            "contexts": self.contexts,
            "steps": self.steps,
            "pooled_weight": POOLED_WEIGHT,
            "optimizer": "L-BFGS",
        }
