"""``readiness``: agreement between a patched checkpoint and its source on its new words (vocabsurgeon.readiness)."""

from __future__ import annotations

from typing import Any

import click

from ..inventory import read_inventory
from ..readiness import READINESS_CONTEXTS
from . import main
from .output import emit_json, json_option, table


@main.command("readiness")
@click.argument("out")
@click.option("--against", "against", required=True, help="The source checkpoint the output was made from.")
@click.option(
    "--corpus",
    "corpus",
    multiple=True,
    metavar="PATH",
    help="Text to take held-out contexts from (repeatable; those a distillation fitted on are skipped). Words with"
    " fewer get generated sentences that fitting never uses.",
)
@click.option("--field", default=None, metavar="NAME", help="The text field of .jsonl corpus files.")
@click.option(
    "--contexts", type=click.IntRange(min=1), default=READINESS_CONTEXTS, show_default=True, help="Contexts per word."
)
@click.option(
    "--skip",
    type=click.IntRange(min=0),
    default=None,
    help="Leave out each word's first N corpus contexts (default: those OUT's distillation fitted on, when it read"
    " this corpus). Compare initializations with the same --skip.",
)
@json_option
def readiness(
    out: str, against: str, corpus: tuple[str, ...], field: str | None, contexts: int, skip: int | None, as_json: bool
) -> None:
    """How well OUT already understands its new words, before any training.

    Per new word, on held-out contexts, the source reads the word as its pieces and OUT as its one new id; the
    last hidden states are compared where they must agree (states), and so are the pooled sentence embeddings
    (sentence; a sentence-transformers directory's own pooling, mean pooling for other encoders). Loads both
    models with transformers. The tool to compare initializations (--init subword-mean, distill ...).

    \b
    Example:
      vocabsurgeon readiness ./minilm-bio --against ./all-MiniLM-L6-v2 --corpus held-out.txt
    """
    from ..readiness import measure_readiness

    report = measure_readiness(read_inventory(out), read_inventory(against), corpus, field, contexts, skip)
    if as_json:
        emit_json(report.to_json())
        return
    rows = [
        (w.word, w.id, w.contexts, w.generated, _f(w.states), _f(w.sentence), _f(w.sentence_min)) for w in report.words
    ]
    click.echo(
        table(
            ("word", "id", "contexts", "generated", "states", "sentence", "sentence min"),
            rows,
            right=(1, 2, 3, 4, 5, 6),
        )
    )
    click.echo("")
    click.echo(_summary(report))


def _f(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def _summary(report: Any) -> str:
    words = len(report.words)
    parts = [f"readiness of {words} new word{'s' if words != 1 else ''}: states {_f(report.states_mean)}"]
    if report.sentence_mean is not None:
        parts.append(f"sentence {_f(report.sentence_mean)} mean, {_f(report.sentence_min)} min ({report.pooling})")
    scored = [w for w in report.words if (w.sentence if w.sentence is not None else w.states) is not None]
    if scored:
        lowest = min(scored, key=lambda w: w.sentence if w.sentence is not None else w.states)
        parts.append(f"lowest: {lowest.word}")
    return "; ".join(parts)
