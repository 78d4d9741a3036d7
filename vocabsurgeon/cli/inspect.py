"""Read-only commands: ``slots`` and ``audit``. They read headers only and never import torch."""

from __future__ import annotations

import click

from ..auditing import AuditReport, audit
from ..errors import VocabSurgeonError
from ..free_slots import SlotReport, compress_ranges, find_slots
from ..inventory import read_inventory, require_tokenizer
from . import main
from .output import emit_json, json_option, table


@main.command()
@click.argument("model")
@json_option
def slots(model: str, as_json: bool) -> None:
    """List the free vocabulary slots of MODEL.

    A slot is a named placeholder found anywhere in the vocabulary ([unusedN], <unusedN>,
    <|reserved_special_token_N|>, madeupwordNNNN) or a padding row: an embedding row past the tokenizer's
    highest id. Ids an earlier vocabsurgeon surgery used are not free.

    \b
    Example:
      vocabsurgeon slots ./all-MiniLM-L6-v2
      vocabsurgeon slots bert-base-cased --json
    """
    report = find_slots(read_inventory(model))
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(render_slots(report))


def render_slots(report: SlotReport) -> str:
    sizes = report.vocab_size
    lines = [
        f"{report.model}: {len(report.slots)} free slots",
        f"vocab size: tokenizer {_n(sizes.tokenizer)}, config {_n(sizes.config)}, embeddings {_n(sizes.embeddings)}",
    ]
    rows = []
    for kind in ("placeholder", "padding"):
        ids = [slot.id for slot in report.slots if slot.kind == kind]
        if ids:
            rows.append((kind, len(ids), compress_ranges(ids)))
    if rows:
        lines += ["", table(("kind", "count", "ids"), rows, right=(1,))]
    if report.taken:
        lines.append(f"\ntaken by earlier surgery: {len(report.taken)} ids ({compress_ranges(report.taken)})")
    if not report.slots:
        lines.append("\nno free slots: `vocabsurgeon append` adds tokens by growing the vocabulary")
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


@main.command("audit")
@click.argument("models", nargs=-1, required=True)
@json_option
@click.option("--strict", is_flag=True, help="Treat warnings as errors for the exit code.")
def audit_command(models: tuple[str, ...], as_json: bool, strict: bool) -> None:
    """Check that tokenizer, config and weights of each MODEL agree on the vocabulary.

    Compares config.vocab_size, len(tokenizer), input and output embedding rows and vocabulary biases; finds
    ids that would crash with 'index out of range in self', vocab.txt and tokenizer.json disagreeing, missing
    special tokens, duplicated vocab.txt lines, out-of-range config token ids and untied heads that the config
    does not expect. Exit 0 when no model has an error, 1 otherwise (so it can gate CI), 2 for usage errors.

    \b
    Example:
      vocabsurgeon audit ./my-bert
      vocabsurgeon audit models/* --json
    """
    reports: list[AuditReport] = []
    failures: list[tuple[str, VocabSurgeonError]] = []
    for model in models:
        try:
            inventory = read_inventory(model)
            require_tokenizer(inventory)  # no tokenizer at all is bad input, not a finding about one
            reports.append(audit(inventory))
        except VocabSurgeonError as error:
            if len(models) == 1:
                raise
            failures.append((model, error))
    bad = sum(1 for report in reports if not report.ok or (strict and report.warnings)) + len(failures)
    if as_json:
        emit_json(
            {
                "models": [report.to_json() for report in reports]
                + [{"model": model, "ok": False, "unreadable": str(failure)} for model, failure in failures],
                "failed": bad,
            }
        )
    else:
        for report in reports:
            click.echo(render_audit(report))
        for model, failure in failures:
            click.echo(f"{model}: unreadable: {failure}", err=True)
        if len(models) > 1:
            click.echo(f"\n{len(models)} checkpoints: {len(models) - bad} ok, {bad} with errors")
    if bad:
        click.get_current_context().exit(1)


def render_audit(report: AuditReport) -> str:
    verdict = "ok" if report.ok else f"{report.errors} error{'s' if report.errors != 1 else ''}"
    lines = [f"{report.model}: {verdict}, {report.warnings} warning{'s' if report.warnings != 1 else ''}"]
    for finding in report.findings:
        lines.append(f"  {finding.severity:<7} {finding.code}: {finding.message}")
    return "\n".join(lines)
