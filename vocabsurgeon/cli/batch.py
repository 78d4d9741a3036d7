"""``batch``: one recipe over many checkpoint directories."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from ..batch import Outcome, expand_models, read_recipe, run_batch
from ..verification import Level
from . import main
from .output import emit_json, json_option, table
from .surgery import verify_choice, verify_options


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--out-root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Each output goes to OUT_ROOT/<directory name>.",
)
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Parallel processes (default: CPUs).")
@click.option("--dry-run", is_flag=True, help="Plan every directory and write nothing.")
@verify_options[0]
@verify_options[1]
@click.option("-q", "--quiet", is_flag=True, help="No per-directory progress.")
@json_option
def batch(
    recipe: Path,
    models: tuple[str, ...],
    out_root: Path,
    jobs: int | None,
    dry_run: bool,
    verify_level: Level,
    no_verify: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Apply RECIPE to every MODEL directory, in parallel, failures isolated.

    RECIPE is a TOML (or YAML) file with tokens, special_tokens, tokens_file, special_tokens_file,
    strategy (remap, append, auto = free slots first, then append), init, pad_to_multiple_of and
    weights_format. MODELS may be globs or @file listing one directory per line. A directory that cannot
    be read, fails audit, or lacks slots under strategy remap is reported with its reason and leaves no
    output; the others go on. A directory whose output records the same recipe and source is skipped, so
    re-running a batch is a quick no-op. Exit 0 when all succeeded, 1 when any failed.

    \b
    Example:
      vocabsurgeon batch examples/recipe.toml 'models/*' --out-root patched/ --jobs 2
    """
    parsed = read_recipe(recipe)
    directories = expand_models(models)
    tty = sys.stderr.isatty()
    done = [0]

    def report(outcome: Outcome) -> None:
        done[0] += 1
        if quiet or as_json:
            return
        detail = f": {outcome.reason}" if outcome.status == "failed" else ""
        prefix = "\r\x1b[2K" if tty else ""
        where = "" if detail else f" {outcome.model}"
        click.echo(f"{prefix}[{done[0]}/{len(directories)}] {outcome.status:<7}{where}{detail}", err=True)

    verify = verify_choice(verify_level, no_verify)
    outcomes = run_batch(parsed, directories, out_root, jobs=jobs, dry_run=dry_run, verify=verify, on_done=report)
    failed = [o for o in outcomes if o.status == "failed"]
    if as_json:
        emit_json(
            {"recipe": str(recipe), "dry_run": dry_run, "failed": len(failed), "results": [asdict(o) for o in outcomes]}
        )
    else:
        rows = [
            (
                Path(o.model).name,
                o.status,
                o.tokens_placed,
                o.slots_used,
                o.rows_added,
                f"{o.seconds:.1f}",
                o.reason if o.status == "failed" else "",
            )
            for o in outcomes
        ]
        click.echo(
            table(
                ("directory", "status", "tokens", "slots", "rows added", "seconds", "reason"), rows, right=(2, 3, 4, 5)
            )
        )
        counts = {s: sum(1 for o in outcomes if o.status == s) for s in ("ok", "skipped", "planned", "failed")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        click.echo(f"\n{len(outcomes)} directories: {summary}" + (" (dry run: nothing written)" if dry_run else ""))
    if failed:
        click.get_current_context().exit(1)
