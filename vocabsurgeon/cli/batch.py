"""``batch``: one recipe over many checkpoint directories."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from ..batch import Outcome, expand_models, read_recipe, run_batch, slurm_task, summarize_reports, task_slice
from ..verification import Level
from . import main
from .output import emit_json, json_option, table
from .surgery import link_option, verify_choice, verify_options


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
@click.option(
    "--task-index",
    type=click.IntRange(min=0),
    default=None,
    help="Only this task's share of the directories (every N-th from I); default: the Slurm array task's.",
)
@click.option(
    "--task-count",
    type=click.IntRange(min=1),
    default=None,
    help="How many tasks share the directories; default: SLURM_ARRAY_TASK_COUNT.",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append one JSON line per directory to FILE (merge many tasks' with batch-report).",
)
@link_option
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
    task_index: int | None,
    task_count: int | None,
    report: Path | None,
    link_unchanged: bool,
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

    On a cluster, --task-index I --task-count N (default: from SLURM_ARRAY_TASK_ID, _MIN and _COUNT in an
    array job) takes every N-th directory from the I-th, the same share every run; --report FILE appends a
    JSON line per directory, and 'vocabsurgeon batch-report FILE...' merges the reports of all tasks
    (examples/slurm_array.sh, examples/ray_batch.py).

    \b
    Example:
      vocabsurgeon batch examples/recipe.toml 'models/*' --out-root patched/ --jobs 2
      vocabsurgeon batch recipe.toml @dirs.txt --out-root patched/ --task-index 3 --task-count 16 \\
          --report reports/task3.jsonl
    """
    parsed = read_recipe(recipe)
    all_directories = expand_models(models)
    task = _task(task_index, task_count)
    directories = task_slice(all_directories, *task) if task is not None else all_directories
    tty = sys.stderr.isatty()
    done = [0]

    def progress(outcome: Outcome) -> None:
        done[0] += 1
        if quiet or as_json:
            return
        detail = f": {outcome.reason}" if outcome.status == "failed" else ""
        prefix = "\r\x1b[2K" if tty else ""
        where = "" if detail else f" {outcome.model}"
        click.echo(f"{prefix}[{done[0]}/{len(directories)}] {outcome.status:<7}{where}{detail}", err=True)

    verify = verify_choice(verify_level, no_verify)
    outcomes = run_batch(
        parsed, all_directories, out_root, jobs=jobs, dry_run=dry_run, verify=verify, on_done=progress, task=task,
        report=report, link_unchanged=link_unchanged,
    )  # fmt: skip
    failed = [o for o in outcomes if o.status == "failed"]
    if as_json:
        emit_json(
            {
                "recipe": str(recipe),
                "dry_run": dry_run,
                "task": list(task) if task is not None else None,
                "failed": len(failed),
                "results": [asdict(o) for o in outcomes],
            }
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
        share = f" (task {task[0]} of {task[1]}: {len(outcomes)} of {len(all_directories)})" if task is not None else ""
        click.echo(
            f"\n{len(outcomes)} directories: {summary}{share}" + (" (dry run: nothing written)" if dry_run else "")
        )
    if failed:
        click.get_current_context().exit(1)


def _task(index: int | None, count: int | None) -> tuple[int, int] | None:
    """The task's ``(index, count)``: both options, else a Slurm array task's, else None (every directory)."""
    if (index is None) != (count is None):
        raise click.UsageError("--task-index and --task-count go together")
    if index is not None and count is not None:
        if index >= count:
            raise click.BadParameter(f"must be below --task-count {count}", param_hint="--task-index")
        return index, count
    return slurm_task()


@main.command("batch-report")
@click.argument("reports", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
def batch_report(reports: tuple[Path, ...], as_json: bool) -> None:
    """Merge the --report files of batch tasks: each directory's latest record, counts by status, the failures.

    Exit 0 when no directory's latest record failed, 1 otherwise.

    \b
    Example:
      vocabsurgeon batch-report reports/*.jsonl
    """
    summary = summarize_reports(reports)
    if as_json:
        emit_json(
            {
                "files": summary.files,
                "lines": summary.lines,
                "directories": len(summary.records),
                "counts": summary.counts,
                "failed": summary.failed,
                "seconds": round(sum(float(r.get("seconds", 0)) for r in summary.records), 3),
            }
        )
    else:
        if summary.failed:
            rows = [(Path(r["model"]).name, r.get("reason", "")) for r in summary.failed]
            click.echo(table(("failed directory", "reason"), rows))
            click.echo("")
        counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
        seconds = sum(float(r.get("seconds", 0)) for r in summary.records)
        click.echo(
            f"{len(summary.records)} directories in {summary.files} report file{'s' if summary.files != 1 else ''}"
            f" ({summary.lines} lines): {counts}; {seconds:,.1f} s of surgery"
        )
    if summary.failed:
        click.get_current_context().exit(1)
