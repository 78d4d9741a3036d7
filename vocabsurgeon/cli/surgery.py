"""Commands that write a new checkpoint: ``remap``, ``append``, ``resize``; and ``verify``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import click

from ..api import apply_plan, plan_surgery, read_tokens_file
from ..apply import Result
from ..fingerprints import hashing_ahead
from ..inits import DEFAULT_CONTEXTS, DEFAULT_STEPS, DistillSettings, init_help, inits_for
from ..inventory import Inventory, read_inventory
from ..plan import Operation, Plan, load_plan, save_plan
from ..planner import TokenRequest
from ..verification import LEVELS, Level, verify_checkpoint
from . import main
from .output import emit_json, json_option, table


def token_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(
        [
            click.option("--token", "tokens", multiple=True, metavar="T", help="A token to add (repeatable)."),
            click.option(
                "--special-token", "special_tokens", multiple=True, metavar="T", help="A special token (repeatable)."
            ),
            click.option(
                "--tokens-file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="UTF-8 file, one token per line; 'token<TAB>id' pins a token to a slot; '#' starts a comment.",
            ),
            click.option(
                "--special-tokens-file",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Like --tokens-file, for special tokens.",
            ),
        ]
    ):
        function = decorator(function)
    return function


link_option = click.option(
    "--link-unchanged",
    is_flag=True,
    help="Hard-link the weight files the surgery does not change (shards without a vocabulary tensor) instead of"
    " cloning or copying them: instant, no space. The output must be on the source's filesystem, and the two then"
    " share those files: writing into one (an in-place edit, a training run saving over it) changes the other."
    " Linked files are not read: the manifest records them by device, inode, size and time, not sha256"
    " (--save-plan still hashes them: a plan pins content)."
    " Without it they are cloned where the filesystem can (a reflink: Btrfs, XFS) and copied elsewhere.",
)


def write_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(
        [
            click.option(
                "--out", type=click.Path(path_type=Path), help="Output directory (new); required unless --dry-run."
            ),
            click.option("--force", is_flag=True, help="Replace --out (and --save-plan's file) if it exists."),
            click.option("--dry-run", is_flag=True, help="Print the plan and write nothing."),
            click.option(
                "--save-plan",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Also save the plan as JSON (with fingerprints of the source) for `vocabsurgeon apply`.",
            ),
            *verify_options,
            link_option,
            click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
            json_option,
        ]
    ):
        function = decorator(function)
    return function


verify_options = [
    click.option(
        "--verify",
        "verify_level",
        type=click.Choice(LEVELS),
        default="quick",
        show_default=True,
        help="Check the output before renaming it into place. quick: encode with the tokenizers library "
        "(transformers' fast tokenizer engine), check sizes and ids, compare sampled bytes of every tensor. "
        "full: reload with transformers instead and compare every byte (as `vocabsurgeon verify --against`).",
    ),
    click.option("--no-verify", is_flag=True, help="Do not check the output."),
]


def verify_choice(verify_level: Level, no_verify: bool) -> Level | None:
    """The verification asked for; ``--verify LEVEL`` given with ``--no-verify`` is a usage error."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    if no_verify and ctx.get_parameter_source("verify_level") not in (ParameterSource.DEFAULT, None):
        raise click.UsageError(f"--verify {verify_level} and --no-verify contradict each other; give one")
    return None if no_verify else verify_level


def init_option(operation: str) -> Callable[..., Any]:
    """``--init``, its choices and help from the registry of initializations (vocabsurgeon.inits)."""
    return click.option("--init", type=click.Choice(inits_for(operation)), default=None, help=init_help(operation))


def initial_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--sentence-initial",
        is_flag=True,
        help="Also add each word's form at the very start of a text where it differs (byte-level BPE: the bare "
        "word besides Ġword; one more id and row per word). Without it a word that opens a text keeps its pieces.",
    )(function)


def distill_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """What ``--init distill`` reads and how long it trains (vocabsurgeon.distill)."""
    for option in reversed(
        [
            click.option(
                "--corpus",
                "corpus",
                multiple=True,
                metavar="PATH",
                help="With --init distill: text the words' contexts come from (files, .jsonl with --field, .gz,"
                " directories, - for stdin; repeatable). Words with fewer than 8 get generated sentences.",
            ),
            click.option("--field", default=None, metavar="NAME", help="The text field of .jsonl corpus files."),
            click.option(
                "--distill-contexts",
                type=click.IntRange(min=1),
                default=None,
                help=f"Contexts per word taken from --corpus (default {DEFAULT_CONTEXTS}).",
            ),
            click.option(
                "--distill-steps",
                type=click.IntRange(min=1),
                default=None,
                help=f"L-BFGS iterations of the distillation, per word (default {DEFAULT_STEPS}).",
            ),
        ]
    ):
        function = option(function)
    return function


def distill_settings(kw: dict[str, Any]) -> DistillSettings | None:
    """The settings of ``--init distill``; a distill option without it is a usage error. The corpus is checked
    now (a missing file is one line before any plan is saved), and kept as absolute paths (a saved plan runs
    anywhere)."""
    names = {"corpus": "--corpus", "field": "--field", "distill_contexts": "--distill-contexts"}
    names["distill_steps"] = "--distill-steps"
    given = [flag for key, flag in names.items() if kw.get(key) not in (None, ())]
    if kw.get("init") != "distill":
        if given:
            raise click.UsageError(f"{given[0]} is for --init distill")
        return None
    from ..corpus import find_corpus

    if kw["corpus"]:
        find_corpus(kw["corpus"], kw["field"])
    corpus = tuple(c if c == "-" else str(Path(c).absolute()) for c in kw["corpus"])
    contexts, steps = kw["distill_contexts"] or DEFAULT_CONTEXTS, kw["distill_steps"] or DEFAULT_STEPS
    return DistillSettings(corpus, kw["field"], contexts, steps)


def pad_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--pad-to-multiple-of", type=click.IntRange(min=1), default=None, help="Round the rows up to a multiple of N."
    )(function)


def format_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--weights-format",
        type=click.Choice(["safetensors", "pytorch"]),
        default=None,
        help="Output weights format (default: as the source). pytorch writes pytorch_model.bin for transformers<4.30.",
    )(function)


def collect_requests(
    tokens: tuple[str, ...], special: tuple[str, ...], tokens_file: Path | None, special_file: Path | None
) -> list[TokenRequest]:
    requests = [TokenRequest(t) for t in tokens] + [TokenRequest(t, special=True) for t in special]
    for path, is_special in ((tokens_file, False), (special_file, True)):
        if path is not None:
            requests += read_tokens_file(path, special=is_special)
    return requests


@main.command()
@click.argument("model")
@token_options
@write_options
@init_option("remap")
@click.option("--allow-append", is_flag=True, help="Append the tokens that do not fit in free slots.")
@initial_option
@distill_options
@pad_option
@format_option
def remap(model: str, **kwargs: Any) -> None:
    """Put new tokens into free slots of MODEL without a resize.

    Each token takes the lowest free slot ([unusedN] placeholders, then padding rows) unless pinned with
    'token<TAB>id'. Tokens are stored as the tokenizer's own normalizer produces them, and a word as the
    tokenizer's model produces it in running text (Ġword in byte-level BPE, ▁word in SentencePiece
    families), so that it is one id mid-sentence and every text without it encodes as before; a string no
    family form can hold (COVID-19 in BERT) is an added token matched whole, a special token a special added
    token. vocab.txt, tokenizer.json,
    tokenizer_config.json and special_tokens_map.json are rewritten consistently; the slot rows are
    re-initialized (subword-mean: the mean of the rows of the pieces the original tokenizer splits the token
    into) and every other byte of the weights is copied. The output is verified, then renamed into place.

    \b
    Example:
      vocabsurgeon remap ./all-MiniLM-L6-v2 --out ./minilm-bio \\
          --token COVID --token hospitalization --token COVID-19 --special-token '[special1]'
      vocabsurgeon remap ./all-MiniLM-L6-v2 --out ./minilm-bio \\
          --tokens-file terms.txt --init distill --corpus notes/
    """
    operation: Operation = "auto" if kwargs.pop("allow_append") else "remap"
    _surgery(model, operation, **kwargs)


@main.command()
@click.argument("model")
@token_options
@write_options
@init_option("append")
@initial_option
@distill_options
@pad_option
@format_option
def append(model: str, **kwargs: Any) -> None:
    """Append new tokens to MODEL, growing every vocabulary-sized tensor.

    New ids follow the last id. The input embedding, an untied output embedding / LM head and vocabulary
    biases grow together and config.vocab_size follows; weights are streamed (only vocabulary tensors are
    touched, other tensors are copied as bytes, shards without a vocabulary tensor are copied unchanged).

    \b
    Example:
      vocabsurgeon append ./llama --out ./llama-ext --tokens-file terms.txt --pad-to-multiple-of 64
    """
    _surgery(model, "append", **kwargs)


@main.command()
@click.argument("model")
@click.option("--to", "to", default="tokenizer", show_default=True, help="'tokenizer' or a row count N.")
@write_options
@init_option("resize")
@pad_option
@format_option
def resize(model: str, to: str, **kwargs: Any) -> None:
    """Bring config.vocab_size and the weights of MODEL in line with its tokenizer.

    The fix for 'the tokenizer grew, the model did not' (audit's tokenizer-exceeds-embeddings):
    vocabulary tensors grow to hold every token id (or to N rows), new rows are initialized, config follows.

    \b
    Example:
      vocabsurgeon resize ./my-bert --out ./my-bert-fixed
    """
    if to != "tokenizer" and not to.isdigit():
        raise click.BadParameter("expected 'tokenizer' or a number of rows", param_hint="--to")
    _surgery(model, "resize", resize_to=None if to == "tokenizer" else int(to), **kwargs)


def _surgery(model: str, operation: Operation, **kw: Any) -> None:
    if kw["out"] is None and not kw["dry_run"]:
        raise click.UsageError("--out is required (unless --dry-run)")
    inventory = read_inventory(model)
    if operation == "resize":
        requests = []
    else:
        requests = collect_requests(kw["tokens"], kw["special_tokens"], kw["tokens_file"], kw["special_tokens_file"])
    hashed = not kw["dry_run"] or kw["save_plan"] is not None  # the manifest or the saved plan records the hashes
    # with --link-unchanged the weight files wait until the surgery knows which it links (never read); a saved
    # plan pins every file's content, so then they are hashed ahead all the same
    weights = kw["save_plan"] is not None or not kw.get("link_unchanged", False)
    ahead = hashing_ahead(inventory, weights=weights) if hashed else nullcontext()
    with ahead:
        _plan_and_execute(inventory, operation, requests, kw)


def _plan_and_execute(inventory: Inventory, operation: Operation, requests: list[TokenRequest], kw: Any) -> None:
    plan = plan_surgery(
        inventory,
        operation,
        tokens=requests,
        init=kw.get("init"),
        pad_to_multiple_of=kw.get("pad_to_multiple_of"),
        weights_format=kw.get("weights_format"),
        resize_to=kw.get("resize_to"),
        sentence_initial=kw.get("sentence_initial", False),
        distill=distill_settings(kw),
        fingerprints=kw["save_plan"] is not None,
    )
    if kw["save_plan"] is not None:
        save_plan(plan, kw["save_plan"], force=kw["force"])
    if not kw["dry_run"]:
        _execute(inventory, plan, **kw)
    elif kw["as_json"]:
        emit_json({"dry_run": True, "plan": plan.to_json()})
    else:
        click.echo(render_plan(plan, details=True))
        saved = f"; plan saved to {kw['save_plan']}" if kw["save_plan"] else ""
        click.echo(f"\ndry run: nothing written{saved}")


def finished_if_main_thread() -> None:
    """See interrupts.finished (signal handlers can only be set from the main thread)."""
    import threading

    from ..interrupts import finished

    if threading.current_thread() is threading.main_thread():
        finished()


def _execute(inventory: Inventory, plan: Plan, **kw: Any) -> None:
    verify = verify_choice(kw["verify_level"], kw["no_verify"])
    quiet = kw["quiet"] or kw["as_json"]
    stage = stage_line(quiet=quiet)
    try:
        with progress_bar(inventory, quiet=quiet) as progress:
            result = apply_plan(
                plan, kw["out"], source=inventory, force=kw["force"], verify=verify, progress=progress,
                stage=stage, link_unchanged=kw.get("link_unchanged", False),
            )  # fmt: skip
    finally:
        if stage is not None:
            sys.stderr.write("\r\033[K")  # the stage line, cleared
    _fallback_note(result, quiet=kw["quiet"] or kw["as_json"])
    finished_if_main_thread()
    if kw["as_json"]:
        emit_json(result_json(result))
        return
    if not kw["quiet"]:
        click.echo(render_plan(result.plan) + "\n")
    for leftover in result.removed_leftovers:
        click.echo(f"removed {leftover}, left by a surgery that was killed")
    how = {None: "", "quick": " (verified)", "full": " (verified, reloaded with transformers)"}
    click.echo(f"wrote {result.output}{how[result.verification]}")


@main.command("apply")
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory (new).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@verify_options[0]
@verify_options[1]
@link_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@json_option
def apply_command(plan_file: Path, **kw: Any) -> None:
    """Apply a plan saved with --save-plan.

    The plan records fingerprints of every source file; if the source changed since, nothing is written.
    Review a plan (it is JSON), then apply it, here or in CI.

    \b
    Example:
      vocabsurgeon remap ./minilm --tokens-file terms.txt --dry-run --save-plan plan.json
      vocabsurgeon apply plan.json --out ./minilm-bio
    """
    plan = load_plan(plan_file)
    _execute(read_inventory(plan.source), plan, **kw)


def result_json(result: Result) -> dict[str, Any]:
    return {
        "output": str(result.output),
        "verified": result.verified,
        "verification": result.verification,
        "files_written": list(result.files_written),
        "files_copied": list(result.files_copied),
        "plan": result.plan.to_json(),
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def render_plan(plan: Plan, *, details: bool = False) -> str:
    """The plan as text; with ``details`` also every tensor operation and every output file (what --dry-run
    shows)."""
    sizes = f"rows {_n(plan.rows_before)} -> {_n(plan.rows_after)}"
    if plan.operation == "resize":
        lines = [f"resize: {sizes} (tokenizer {plan.tokenizer_size_before} ids)"]
    else:
        lines = [
            f"{plan.operation}: {_count(len(plan.placements), 'token')} placed, {len(plan.skipped)} skipped"
            f" (tokenizer {plan.tokenizer_size_before} -> {plan.tokenizer_size_after}, {sizes})"
        ]
    rows: list[tuple[Any, ...]]
    if plan.placements:
        rows = [
            (p.token, p.content, p.id, p.slot + (f" {p.replaces}" if p.replaces else ""), p.mode, p.init)
            for p in plan.placements
        ]
        lines += ["", table(("token", "stored as", "id", "slot", "mode", "init"), rows, right=(2,))]
    for skip in plan.skipped:
        lines.append(f"skipped {skip.token!r}: {skip.reason}")
    for key, value in plan.config.items():
        lines.append(f"config.{key} -> {value}")
    lines += plan.notes
    if details and plan.tensors:
        rows = [
            (
                op.name,
                op.file,
                op.axis,
                f"{op.rows_before} -> {op.rows_after}",
                ", ".join(f"{len(r.ids)} {r.init}" for r in op.rows) + (f" ({op.table} table)" if op.table else ""),
            )
            for op in plan.tensors
        ]
        lines += ["", table(("tensor", "file", "axis", "rows", "rows written"), rows, right=(2,))]
    if details and plan.files:
        rows = [
            (f.path, f.action + (f" from {f.source}" if f.source and f.source != f.path else "")) for f in plan.files
        ]
        lines += ["", table(("output file", "action"), rows)]
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _fallback_note(result: Result, *, quiet: bool) -> None:
    """A line on stderr per distilled word that kept the subword mean (no usable context)."""
    if quiet or result.plan.distill is None:
        return
    import json

    manifest = json.loads((result.output / "vocabsurgeon.json").read_text(encoding="utf-8"))
    for word in manifest.get("distill", {}).get("words", []):
        if word.get("fallback"):
            click.echo(
                f"note: {word['word']}: no context showed the word as the source splits it; its row is the"
                f" {word['fallback']}",
                err=True,
            )


def stage_line(*, quiet: bool) -> Callable[[str], None] | None:
    """A line on stderr that a long step before the writing rewrites as it goes (a terminal only)."""
    if quiet or not sys.stderr.isatty():
        return None

    def show(text: str) -> None:
        sys.stderr.write(f"\r\033[K{text}")
        sys.stderr.flush()

    return show


@contextmanager
def progress_bar(inventory: Inventory, *, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A byte progress bar on stderr, only for a terminal."""
    total = sum(inventory.path(f).stat().st_size for ws in inventory.weights for f in ws.files)
    if quiet or not sys.stderr.isatty() or total == 0:
        yield None
        return
    with click.progressbar(length=total, label="writing weights", file=sys.stderr, show_pos=False) as bar:
        yield bar.update


@main.command()
@click.argument("out")
@click.option("--against", "against", default=None, help="The source checkpoint, to check nothing else changed.")
@click.option("--fast-only", is_flag=True, help="Do not load the slow tokenizer.")
@click.option(
    "--quick",
    is_flag=True,
    help="The check a surgery runs by default: the tokenizers library instead of transformers, sampled bytes.",
)
@json_option
def verify(out: str, against: str | None, fast_only: bool, quick: bool, as_json: bool) -> None:
    """Reload OUT with transformers and check its invariants.

    Sizes agree (len(tokenizer), config.vocab_size, embedding and head rows); each token of the manifest
    encodes to exactly its id with the fast and the slow tokenizer. With --against SRC also: original tokens
    keep their ids, texts without new tokens encode as before, non-vocabulary tensors and untouched rows are
    bit-identical (every byte is compared). With --quick: the check a surgery runs by default (the tokenizers
    library, sampled rows). Exit 1 on any violation.

    \b
    Example:
      vocabsurgeon verify ./minilm-bio --against ./all-MiniLM-L6-v2
    """
    checks = verify_checkpoint(out, against, slow=not fast_only, level="quick" if quick else "full")
    failed = [c for c in checks if not c.ok]
    if as_json:
        emit_json({"output": out, "ok": not failed, "checks": [c.__dict__ for c in checks]})
    else:
        for check in checks:
            click.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name}" + (f": {check.detail}" if check.detail else ""))
        click.echo(f"\n{out}: {'ok' if not failed else f'{len(failed)} violations'}")
    if failed:
        click.get_current_context().exit(1)
