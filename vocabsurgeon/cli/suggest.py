"""``suggest``: the words of a domain corpus worth adding, with what they save (see vocabsurgeon.suggestions)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..api import read_tokens_file
from ..errors import CheckpointNotFoundError, OutputExistsError
from . import main
from .output import emit_json, json_option, table

SHOWN = 25  # words listed in the text output (all of them in --json and --out)


@main.command("suggest")
@click.argument("model")
@click.argument("corpus", nargs=-1, required=True)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    help="Spend up to N ids (N words; two per word with --sentence-initial), for append; default: --fit-slots.",
)
@click.option(
    "--fit-slots", is_flag=True, help="Choose as many words as MODEL has free slots (the default when it has some)."
)
@click.option("--min-count", type=click.IntRange(min=1), default=3, show_default=True, help="Occurrences a word needs.")
@click.option(
    "--max-pieces-per-word",
    type=click.FloatRange(min=0),
    default=3.0,
    show_default=True,
    help="Stop once the words the tokenizer splits average this many pieces or fewer (0: fill the budget).",
)
@click.option("--min-length", type=click.IntRange(min=1), default=3, show_default=True, help="Shortest word.")
@click.option("--keep-numbers", is_flag=True, help="Keep words without a letter (numbers, codes).")
@click.option("--keep-urls", is_flag=True, help="Keep URLs and e-mail addresses.")
@click.option("--exclude", "exclude_file", type=click.Path(dir_okay=False), help="A file of words never to suggest.")
@click.option("--field", help="The field holding the text in .jsonl corpus files.")
@click.option(
    "--sentence-initial",
    is_flag=True,
    help="Also add each word's form at a text's start, where it differs (byte-level BPE: a second id).",
)
@click.option(
    "--sample-size",
    type=click.IntRange(min=100_000),
    default=1_000_000,
    show_default=True,
    help="Characters of the corpus encoded to measure the saving.",
)
@click.option(
    "--held-out",
    "held_out",
    multiple=True,
    metavar="FILE",
    help="Text of the same domain not used to choose: the saving is measured on it too (as CORPUS; repeat the"
    " option for more files).",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the words as a tokens file.")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar; print the last line only.")
@json_option
def suggest_command(model: str, corpus: tuple[str, ...], **kw: Any) -> None:
    """Find the words of CORPUS worth adding to MODEL, and measure what they save.

    CORPUS: UTF-8 text files (a document per line), .jsonl files (with --field), .gz of either, directories
    (recursively), or - for stdin. A candidate is a word the checkpoint's own normalizer and pre-tokenizer make
    of the corpus that its model splits into pieces; it saves count x (pieces - 1) tokens. Words are chosen by
    tokens saved per id they take, up to MODEL's free slots (or --top N), and the saving is measured by encoding
    the corpus (or a fixed sample of it) with the tokenizer the surgery would write. Numbers, URLs, e-mail
    addresses and words shorter than 3 characters are left out unless asked for.

    \b
    Example:
      vocabsurgeon suggest ./all-MiniLM-L6-v2 papers/ --out terms.txt
      vocabsurgeon remap ./all-MiniLM-L6-v2 --out ./minilm-bio --tokens-file terms.txt
      vocabsurgeon suggest ./Llama-3-8B notes.jsonl.gz --field text --top 2000 --out terms.txt
    """
    from ..suggestions import Filters, suggest

    if kw["top"] is not None and kw["fit_slots"]:
        raise click.UsageError("--top and --fit-slots are exclusive: choose N words, or as many as the free slots")
    out = Path(kw["out"]) if kw["out"] else None
    if out is not None and out.exists() and not kw["force"]:
        raise OutputExistsError("already exists", path=out, hint="pass --force to replace it")
    if out is not None and not out.parent.is_dir():
        raise CheckpointNotFoundError("the directory for --out does not exist", path=out.parent)
    exclude = frozenset(r.text for r in read_tokens_file(kw["exclude_file"])) if kw["exclude_file"] else frozenset()
    filters = Filters(kw["min_count"], kw["min_length"], kw["keep_numbers"], exclude)
    quiet = kw["quiet"] or kw["as_json"]
    with _reading_progress(corpus, kw["field"], quiet=quiet) as progress:
        suggestion = suggest(
            model,
            corpus,
            field=kw["field"],
            top=kw["top"],
            filters=filters,
            max_pieces_per_word=kw["max_pieces_per_word"] or None,
            keep_urls=kw["keep_urls"],
            sentence_initial=kw["sentence_initial"],
            sample_chars=kw["sample_size"],
            held_out=kw["held_out"],
            progress=progress,
        )
    if out is not None and not suggestion.words:
        out = None  # a tokens file without tokens is refused by remap and append: none is written
        click.echo("no word is worth adding: no tokens file written", err=True)
    if out is not None:
        _write_atomically(out, suggestion.tokens_file(_command(model, corpus, kw)))
    if kw["as_json"]:
        emit_json({**suggestion.to_json(), "out": str(out) if out else None})
        return
    summary = _summary(suggestion, out)
    if kw["quiet"]:
        click.echo(summary[-1])
    else:
        click.echo("\n".join([*_render(suggestion), "", *summary]))


def _command(model: str, corpus: tuple[str, ...], kw: dict[str, Any]) -> str:
    """The command that made a tokens file, canonical (same options, same text), for its header."""
    parts = ["vocabsurgeon suggest", model, *corpus]
    parts += [f"--top {kw['top']}"] if kw["top"] is not None else ["--fit-slots"]
    parts += [f"--min-count {kw['min_count']}", f"--max-pieces-per-word {kw['max_pieces_per_word']:g}"]
    parts += [f"--min-length {kw['min_length']}"]
    parts += [f"--{flag.replace('_', '-')}" for flag in ("keep_numbers", "keep_urls", "sentence_initial") if kw[flag]]
    if kw["field"]:
        parts.append(f"--field {kw['field']}")
    if kw["exclude_file"]:
        parts.append(f"--exclude {kw['exclude_file']}")
    parts.append(f"--sample-size {kw['sample_size']}")
    return " ".join(parts)  # not shell-quoted: a header to read, not a command to paste blindly


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.vocabsurgeon-tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _render(suggestion: Any) -> list[str]:
    lines = []
    if suggestion.words:
        word_rows = [
            (i, w.word, f"{w.count:,}", w.pieces, w.cost, f"{w.saved:,}")
            for i, w in enumerate(suggestion.words[:SHOWN], start=1)
        ]
        lines.append(table(("#", "word", "count", "pieces", "ids", "tokens saved"), word_rows, right=(0, 2, 3, 4, 5)))
        if len(suggestion.words) > SHOWN:
            lines.append(f"... and {len(suggestion.words) - SHOWN} more (all of them in --out and --json)")
    p, h = suggestion.projection, suggestion.held_out
    if p is not None:
        where = (
            "the whole corpus" if p.whole_corpus else f"a sample: {p.documents:,} of {p.corpus_documents:,} documents"
        )
        lines += ["", f"measured on {where} ({p.characters:,} characters)"]
        if h is not None:
            lines.append(f"and on the held-out text ({h.documents:,} documents, {h.characters:,} characters)")
        headers: tuple[str, ...] = ("", "before", "after")
        measures = [p] if h is None else [p, h]
        if h is not None:
            headers = ("", "corpus before", "after", "held-out before", "after")

        def cells(get: Callable[[Any], str]) -> list[str]:
            return [value for m in measures for value in (get(m.before), get(m.after))]

        rows: list[tuple[str, ...]] = [
            ("tokens", *cells(lambda m: f"{m.tokens:,}")),
            ("pieces per word", *cells(lambda m: f"{m.pieces_per_word:.3f}")),
            ("pieces per split word", *cells(lambda m: f"{m.pieces_per_split_word:.3f}")),
            ("saved", *[value for m in measures for value in ("", f"{m.saved_percent:.2f}%")]),
        ]
        lines.append(table(headers, rows, right=tuple(range(1, len(headers)))))
    if suggestion.excluded:
        reasons = ", ".join(f"{count:,} {reason}" for reason, count in suggestion.excluded.items())
        lines.append(f"\noccurrences left out: {reasons}")
    if (unknown := suggestion.unknown) is not None:
        shown = ", ".join(f"{word} ({count:,})" for word, count in unknown.top[:5])
        lines.append(
            f"{unknown.words:,} words ({unknown.occurrences:,} occurrences) are the model's unknown token, one piece"
            f" that saves nothing, so never chosen; add them by hand if they matter: {shown}"
        )
    if suggestion.count_error:
        lines.append(
            f"\nthe corpus had too many distinct words to count them all: counts may be low by up to"
            f" {suggestion.count_error}"
        )
    return lines


def _summary(suggestion: Any, out: Path | None) -> list[str]:
    n = len(suggestion.words)
    p = suggestion.projection
    saved = f", {p.saved_percent:.2f}% fewer tokens" if p is not None else ""
    if p is not None and suggestion.held_out is not None:
        saved += f" ({suggestion.held_out.saved_percent:.2f}% on the held-out text)"
    where = f"; wrote {out}" if out is not None else ""
    words = f"{n} word{'s' if n != 1 else ''}"
    budget = f"--top {suggestion.budget}" if suggestion.budget_kind == "top" else f"{suggestion.budget} free slots"
    return [f"stopped: {suggestion.stopped}", f"{words} ({budget}){saved}{where}"]


@contextmanager
def _reading_progress(
    corpus: tuple[str, ...], field: str | None, *, quiet: bool
) -> Iterator[Callable[[int, Any], None] | None]:
    """A progress bar on stderr (bytes read, words per second), only for a terminal."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from ..corpus import find_corpus

    sizes = [file.size for file in find_corpus(corpus, field)] if "-" not in corpus else []
    total = sum(size for size in sizes if size is not None)  # 0 for stdin: a bar without an end
    start = time.monotonic()
    state: dict[str, Any] = {"counter": None}

    def show(_: Any) -> str:
        counter = state["counter"]
        elapsed = max(time.monotonic() - start, 1e-6)
        return f"{counter.chunks / elapsed:,.0f} words/s" if counter is not None else ""

    with click.progressbar(
        length=total or None, label="reading corpus", file=sys.stderr, show_pos=False, item_show_func=show
    ) as bar:

        def progress(count: int, counter: Any) -> None:
            state["counter"] = counter
            bar.update(count)

        yield progress
