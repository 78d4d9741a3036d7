"""Apply one recipe to many checkpoint directories, in parallel processes, each failure isolated.

A recipe is a TOML (or YAML) file; each directory gets its own plan, applied with the same atomic writer as the
single commands, so a failing directory leaves no output. A directory whose output already records the same
recipe hash and source fingerprints is skipped: re-running a batch rewrites nothing.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import CheckpointNotFoundError, OutputExistsError, RecipeError, VocabSurgeonError
from .inits import DistillSettings, inits_for
from .plan import hash_document

if TYPE_CHECKING:
    from .inventory import Inventory
    from .verification import Level

Status = Literal["ok", "skipped", "failed", "planned"]

_TYPE_NAMES = {list: "list", str: "string", int: "integer"}
_KEYS: dict[str, tuple[type, ...]] = {
    "tokens": (list,),
    "special_tokens": (list,),
    "tokens_file": (str,),
    "special_tokens_file": (str,),
    "strategy": (str,),
    "init": (str,),
    "pad_to_multiple_of": (int,),
    "weights_format": (str,),
    "sentence_initial": (bool,),
    "corpus": (list,),
    "field": (str,),
    "distill_contexts": (int,),
    "distill_steps": (int,),
}
_DISTILL_KEYS = ("corpus", "field", "distill_contexts", "distill_steps")
_CHOICES = {
    "strategy": ("remap", "append", "auto"),
    "init": inits_for("remap"),
    "weights_format": ("safetensors", "pytorch"),
}


@dataclass(frozen=True)
class Recipe:
    tokens: tuple[str, ...] = ()
    special_tokens: tuple[str, ...] = ()
    strategy: Literal["remap", "append", "auto"] = "auto"
    init: str | None = None
    pad_to_multiple_of: int | None = None
    weights_format: str | None = None
    sentence_initial: bool = False
    distill: DistillSettings | None = None  # with init "distill": its corpus (absolute paths) and settings

    @property
    def hash(self) -> str:
        document = asdict(self)
        for key in ("sentence_initial", "distill"):  # the recipes written before these keys keep their hash
            if not document[key]:
                del document[key]
        return hash_document(document)


@dataclass(frozen=True)
class Outcome:
    """One directory's result: the record of ``--json``."""

    model: str
    output: str
    status: Status
    tokens_placed: int = 0
    slots_used: int = 0
    rows_added: int = 0
    seconds: float = 0.0
    reason: str = ""


def read_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Parse and check a recipe; unknown keys and wrong types name the key and its line."""
    recipe_path = Path(path)
    if not recipe_path.is_file():
        raise CheckpointNotFoundError("recipe file does not exist", path=recipe_path)
    text = recipe_path.read_text(encoding="utf-8")
    data = _parse(text, recipe_path)
    for key, value in data.items():
        line = _line_of(text, key)
        if key not in _KEYS:
            raise RecipeError(f"line {line}: unknown key {key!r} (known: {', '.join(_KEYS)})", path=recipe_path)
        if not isinstance(value, _KEYS[key]) or isinstance(value, bool):
            expected = " or ".join(_TYPE_NAMES[t] for t in _KEYS[key])
            found = _TYPE_NAMES.get(type(value), type(value).__name__)
            raise RecipeError(f"line {line}: {key} must be a {expected}, not {found}", path=recipe_path)
        if key in _CHOICES and value not in _CHOICES[key]:
            raise RecipeError(f"line {line}: {key} must be one of {', '.join(_CHOICES[key])}", path=recipe_path)
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise RecipeError(f"line {line}: {key} must be a list of strings", path=recipe_path)
    tokens = list(data.get("tokens", []))
    special = list(data.get("special_tokens", []))
    for key, target in (("tokens_file", tokens), ("special_tokens_file", special)):
        if key in data:
            from .planner import parse_tokens_file

            file = (recipe_path.parent / data[key]).resolve()
            if not file.is_file():
                raise RecipeError(f"line {_line_of(text, key)}: {key} {data[key]!r} does not exist", path=recipe_path)
            target += [r.text for r in parse_tokens_file(file.read_text(encoding="utf-8"), path=str(file))]
    if not tokens and not special:
        raise RecipeError(
            "no tokens: give tokens, special_tokens, tokens_file or special_tokens_file", path=recipe_path
        )
    distill = None
    if data.get("init") == "distill":
        corpus = tuple(str((recipe_path.parent / c).resolve()) for c in data.get("corpus", []))
        defaults = DistillSettings()
        distill = DistillSettings(
            corpus, data.get("field"), data.get("distill_contexts", defaults.contexts),
            data.get("distill_steps", defaults.steps),
        )  # fmt: skip
        for key in ("distill_contexts", "distill_steps"):
            if key in data and data[key] < 1:
                raise RecipeError(f"line {_line_of(text, key)}: {key} must be at least 1", path=recipe_path)
        if corpus:
            from .corpus import find_corpus

            find_corpus(corpus, data.get("field"))  # a missing corpus: one line before any directory runs
    elif given := [key for key in _DISTILL_KEYS if key in data]:
        raise RecipeError(f'line {_line_of(text, given[0])}: {given[0]} is for init = "distill"', path=recipe_path)
    return Recipe(
        tokens=tuple(tokens),
        special_tokens=tuple(special),
        strategy=data.get("strategy", "auto"),
        init=data.get("init"),
        pad_to_multiple_of=data.get("pad_to_multiple_of"),
        weights_format=data.get("weights_format"),
        sentence_initial=bool(data.get("sentence_initial", False)),
        distill=distill,
    )


def _parse(text: str, path: Path) -> dict[str, Any]:
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise RecipeError("YAML recipes need PyYAML (pip install pyyaml); TOML needs nothing", path=path) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise RecipeError(f"not valid YAML: {error}".replace("\n", " "), path=path) from None
    else:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise RecipeError(f"not valid TOML: {error}", path=path) from None
    if not isinstance(data, dict):
        raise RecipeError("expected a table of keys", path=path)
    return data


def _line_of(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{re.escape(key)}\s*[=:]", line):
            return number
    return 0


def expand_models(arguments: Sequence[str]) -> list[Path]:
    """Globs and ``@list.txt`` files (one directory per line) to directories, in order, without repeats."""
    found: list[Path] = []
    for argument in arguments:
        if argument.startswith("@"):
            listing = Path(argument[1:])
            if not listing.is_file():
                raise CheckpointNotFoundError("directory list does not exist", path=listing)
            lines = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()]
            found += [Path(line) for line in lines if line and not line.startswith("#")]
        elif glob.has_magic(argument):
            matches = sorted(Path(p) for p in glob.glob(argument) if Path(p).is_dir())
            if not matches:
                raise CheckpointNotFoundError("the pattern matches no directory", path=argument)
            found += matches
        else:
            found.append(Path(argument))
    return list(dict.fromkeys(found))


def outputs_for(models: Sequence[Path], out_root: Path) -> dict[Path, Path]:
    """``out_root/<directory name>`` for each model; two models with one name is an error before any write."""
    outputs: dict[Path, Path] = {}
    names: dict[str, Path] = {}
    for model in models:
        name = model.resolve().name if model.name in ("", ".", "..") else model.name
        if name in names:
            raise OutputExistsError(
                f"{names[name]} and {model} would both be written to {out_root / name}",
                path=out_root,
                hint="rename one of them or run two batches",
            )
        names[name] = model
        outputs[model] = out_root / name
    return outputs


def task_slice(models: Sequence[Path], index: int, count: int) -> list[Path]:
    """The directories task ``index`` of ``count`` takes: every ``count``-th from its index (round robin, so that
    tasks get similar shares of a listing sorted by size or name), the same for every run of the same list."""
    if count < 1:
        raise RecipeError(f"--task-count must be at least 1, not {count}")
    if not 0 <= index < count:
        raise RecipeError(f"--task-index must be from 0 to {count - 1} (--task-count {count}), not {index}")
    return list(models[index::count])


def slurm_task() -> tuple[int, int] | None:
    """``(index, count)`` of a Slurm array task, from its environment: the index counts from the array's first id
    (``--array=1-8`` gives 0..7), None outside an array job."""
    task, total = os.environ.get("SLURM_ARRAY_TASK_ID"), os.environ.get("SLURM_ARRAY_TASK_COUNT")
    if task is None or total is None:
        return None
    try:
        first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(task) - first, int(total)
    except ValueError:
        raise RecipeError(f"SLURM_ARRAY_TASK_ID {task!r} / SLURM_ARRAY_TASK_COUNT {total!r} are not numbers") from None


def append_report(path: Path, outcome: Outcome, recipe: Recipe, task: tuple[int, int] | None) -> None:
    """One JSON line per directory appended to ``path``: the outcome, the recipe's hash, the task and the time.
    Each line is one ``write`` of a file opened for appending, so the lines of tasks writing one report on a
    local filesystem never interleave (on NFS, give each task its own file: batch-report merges them)."""
    import datetime as _dt

    record = {
        **asdict(outcome),
        "recipe_hash": recipe.hash,
        "task": list(task) if task is not None else None,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class ReportSummary:
    """The latest record of each directory across report files, and their counts by status."""

    records: tuple[dict[str, Any], ...]
    counts: dict[str, int]
    lines: int
    files: int

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "failed"]


def summarize_reports(paths: Sequence[str | os.PathLike[str]]) -> ReportSummary:
    """Merge the JSON-lines reports of many batch tasks: a directory's latest record wins (a re-run that
    succeeded after a failure counts as ok), in the order directories first appear. A line that is not a record
    is an error naming the file and the line."""
    latest: dict[str, dict[str, Any]] = {}
    lines = 0
    for given in paths:
        path = Path(given)
        if not path.is_file():
            raise CheckpointNotFoundError("report file does not exist", path=path)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise RecipeError(f"line {number} is not a JSON record", path=path) from None
            if not isinstance(record, dict) or not isinstance(record.get("model"), str) or "status" not in record:
                raise RecipeError(f"line {number} is not a batch record (no model and status)", path=path)
            lines += 1
            previous = latest.get(record["model"])
            if previous is None or str(record.get("finished", "")) >= str(previous.get("finished", "")):
                latest[record["model"]] = record  # a directory keeps the place where it first appeared
    records = tuple(latest.values())
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    return ReportSummary(records, counts, lines, len(paths))


def run_one(
    model: str, output: str, recipe: Recipe, dry_run: bool, verify: Level | None = "quick", link_unchanged: bool = False
) -> Outcome:
    """Plan and apply the recipe to one directory; every error becomes a failed Outcome (never raised).
    ``verify``: the verification level ("quick", "full") or None for none."""
    start = time.perf_counter()
    try:
        return _run_one(Path(model), Path(output), recipe, dry_run, verify, start, link_unchanged)
    except VocabSurgeonError as error:
        return Outcome(model, output, "failed", seconds=time.perf_counter() - start, reason=str(error))
    except OSError as error:  # the machine said no: a full disk, a permission (as the CLI reports it)
        where = f": {error.filename}" if error.filename else f": {output}"
        reason = f"{error.strerror or error}{where}; nothing was written"
        return Outcome(model, output, "failed", seconds=time.perf_counter() - start, reason=reason)
    except Exception as error:  # isolate a bug to its directory too
        reason = f"internal error: {type(error).__name__}: {error}"
        return Outcome(model, output, "failed", seconds=time.perf_counter() - start, reason=reason)


def _run_one(
    model: Path, output: Path, recipe: Recipe, dry_run: bool, verify: Level | None, start: float, link_unchanged: bool
) -> Outcome:
    from .fingerprints import hashing_ahead, unchanged_since
    from .inventory import MANIFEST, list_files, read_inventory

    force = False
    if output.exists():
        manifest_path = output / MANIFEST
        if not manifest_path.is_file():
            raise OutputExistsError("exists and was not written by vocabsurgeon", path=output)
        from .formats.json_file import read_json_object

        manifest, _ = read_json_object(manifest_path)
        # up to date: the same recipe, and every source byte as recorded (hashed without parsing the source: a
        # re-run over many directories costs little more than their hashing)
        if manifest.get("recipe_hash") == recipe.hash and model.is_dir():
            files = sorted(list_files(model))
            if unchanged_since(manifest.get("source_files"), model, files):
                return Outcome(
                    str(model), str(output), "skipped", seconds=time.perf_counter() - start, reason="up to date"
                )
        force = True
    inventory = read_inventory(model)  # an inconsistent one is refused by the planner, as in every surgery
    with nullcontext() if dry_run else hashing_ahead(inventory, weights=not link_unchanged):
        return _plan_and_apply(inventory, model, output, recipe, dry_run, verify, start, link_unchanged, force)


def _plan_and_apply(
    inventory: Inventory,
    model: Path,
    output: Path,
    recipe: Recipe,
    dry_run: bool,
    verify: Level | None,
    start: float,
    link_unchanged: bool,
    force: bool,
) -> Outcome:
    from .api import apply_plan, plan_surgery

    plan = plan_surgery(
        inventory,
        recipe.strategy,
        tokens=recipe.tokens,
        special_tokens=recipe.special_tokens,
        init=recipe.init,  # type: ignore[arg-type]  # checked against INITS by read_recipe
        pad_to_multiple_of=recipe.pad_to_multiple_of,
        weights_format=recipe.weights_format,  # type: ignore[arg-type]  # checked by read_recipe
        sentence_initial=recipe.sentence_initial,
        distill=recipe.distill,
    )
    outcome = Outcome(
        str(model),
        str(output),
        "planned" if dry_run else "ok",
        tokens_placed=len(plan.placements),
        slots_used=sum(1 for p in plan.placements if p.slot != "new"),
        rows_added=(plan.rows_after or 0) - (plan.rows_before or 0),
    )
    if not dry_run:
        apply_plan(
            plan, output, source=inventory, force=force, verify=verify, manifest_extra={"recipe_hash": recipe.hash},
            link_unchanged=link_unchanged,
        )  # fmt: skip
    return Outcome(**{**asdict(outcome), "seconds": time.perf_counter() - start})


def run_batch(
    recipe: Recipe,
    models: Sequence[Path],
    out_root: Path,
    *,
    jobs: int | None = None,
    dry_run: bool = False,
    verify: Level | None = "quick",
    on_done: Callable[[Outcome], None] | None = None,
    task: tuple[int, int] | None = None,
    report: Path | None = None,
    link_unchanged: bool = False,
) -> list[Outcome]:
    """Run every directory (in ``jobs`` processes); outcomes in the order of ``models``. ``task``: ``(index,
    count)``, only this task's share of ``models`` (see :func:`task_slice`; names are checked against the whole
    list, so that every task refuses the same clash); ``report``: a JSON-lines file each outcome is appended to
    (see :func:`append_report`); ``link_unchanged``: see :func:`vocabsurgeon.api.apply_plan`."""
    outputs = outputs_for(models, out_root)
    if task is not None:
        models = task_slice(models, *task)
    if not models:
        return []
    if report is not None:
        done = on_done

        def on_done(outcome: Outcome) -> None:
            append_report(report, outcome, recipe, task)
            if done is not None:
                done(outcome)

    jobs = max(1, min(jobs or os.cpu_count() or 1, len(models)))
    results: dict[Path, Outcome] = {}
    if jobs == 1:
        for model in models:
            results[model] = run_one(str(model), str(outputs[model]), recipe, dry_run, verify, link_unchanged)
            if on_done:
                on_done(results[model])
    else:
        import multiprocessing  # here, not at the top: every command imports this module
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: a forked child inherits locks held by the parent's threads (tokenizers' and torch's
        # thread pools, a caller's own) and can hang forever; spawned workers start clean.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_start, initargs=(os.getpid(),)) as pool:
            arguments = (recipe, dry_run, verify, link_unchanged)
            futures = {pool.submit(_work, str(m), str(outputs[m]), *arguments): m for m in models}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_done:
                    on_done(results[futures[future]])
    return [results[model] for model in models]


def _work(
    model: str, output: str, recipe: Recipe, dry_run: bool, verify: Level | None, link_unchanged: bool
) -> Outcome:
    """run_one in a worker: interrupted (its parent died, or SIGTERM), the surgery removes its staging directory and
    the worker exits, rather than wait for more work from a parent that is gone."""
    try:
        return run_one(model, output, recipe, dry_run, verify, link_unchanged)
    except KeyboardInterrupt as error:
        from .interrupts import exit_code

        os._exit(exit_code(error))


def _worker_start(parent: int) -> None:
    """In each batch worker: die with the parent (a SIGKILLed batch must not leave workers writing outputs), and
    treat SIGTERM as an interruption, so that the surgery under way removes its staging directory."""
    import ctypes
    import signal

    from .interrupts import install

    install()
    try:
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the check below and the pool's own broken-pipe handling remain
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
