"""The one place that writes: carry a finished plan out in a temporary directory beside the output, check it, and
rename it into place.

The plan decides everything; this module only writes what it says. The source is only ever opened for reading,
and files of a Hugging Face cache snapshot (symlinks into the blob store) are copied by content, never written
through. On any failure the temporary directory is removed and nothing appears at the output path.

The weights stream in a worker thread (``copy_file_range`` and file writes release the GIL) while this thread
writes the tokenizer files and the manifest and checks them. A format that writes rows in place (safetensors) is
first copied with zero rows where the plan writes rows, so the copy starts at once; the rows are computed
afterwards, when the source rows they average are in the page cache, and written over the zeros.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import LinkRefusedError, OutputExistsError, SourceChangedError
from .fingerprints import fingerprint_files, fingerprint_paths, linked_fingerprint
from .formats.json_file import JsonStyle, dump_json
from .formats.weights import Progress, TensorEdit
from .interrupts import deferred
from .inventory import MANIFEST, Inventory, WeightSet, known_documents, read_inventory, with_weights
from .outputs import (
    check_replaceable,
    claimed,
    copy_permissions,
    make_staging,
    move_into_place,
    own_staging,
    remove_stale,
)
from .plan import Plan
from .planner import check_plan_fits
from .rows import compute_edit, placeholder_edit
from .verification import Check, Level, PendingChecks, Verifier, raise_on_failures

#: weight files written at once (each in formats.safetensors_stream.COPY_STREAMS copy streams)
PARALLEL_FILES = 2
#: how long the tokenizer checks wait for the weight copies to get under way (they normally take milliseconds)
COPY_START_TIMEOUT_S = 2.0
#: how often a staging directory's removal is tried before it is left to the next surgery to the same output
REMOVE_ATTEMPTS = 5


@dataclass(frozen=True)
class Result:
    """What a surgery wrote."""

    output: Path
    plan: Plan
    files_written: tuple[str, ...]
    files_copied: tuple[str, ...]
    verification: Level | None
    #: staging directories of killed surgeries to the same output, removed before this one began
    removed_leftovers: tuple[Path, ...] = ()

    @property
    def verified(self) -> bool:
        return self.verification is not None


def execute_plan(
    inventory: Inventory,
    plan: Plan,
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    verify: Verifier | None = None,
    progress: Progress | None = None,
    extra_manifest: dict[str, Any] | None = None,
    stage: Callable[[str], None] | None = None,
    link_unchanged: bool = False,
) -> Result:
    """Write ``plan`` applied to ``inventory`` at ``out``, atomically; with ``verify``, only if every check of the
    output passes (VerificationError lists those that fail). ``stage`` hears what a long step before the writing
    is doing (distilling rows). A weight file the plan does not change is cloned (a reflink, where the
    filesystem can: the same bytes, no copy), else copied; ``link_unchanged`` hard-links it instead (the output
    must be on the source's filesystem; the two then share those files' inodes).

    A plan with fingerprints (a saved plan) is applied only to the source it was made from, byte for byte: every
    source file is hashed first, and the files the plan rewrites must render to the content it records."""
    target = Path(out).expanduser().absolute()
    with claimed(target):
        if link_unchanged:
            _check_linkable(inventory, target)
        return _execute_claimed(inventory, plan, target, force, verify, progress, extra_manifest, stage, link_unchanged)


def _execute_claimed(
    inventory: Inventory,
    plan: Plan,
    target: Path,
    force: bool,
    verify: Verifier | None,
    progress: Progress | None,
    extra_manifest: dict[str, Any] | None,
    stage: Callable[[str], None] | None = None,
    link_unchanged: bool = False,
) -> Result:
    """execute_plan holding the output's lock."""
    _check_output(inventory, target, force)
    leftovers = remove_stale(target)
    fingerprints = None
    if plan.fingerprints and plan.origin is inventory:
        fingerprints = plan.fingerprints  # taken of this very read of the source just now (--save-plan and apply)
    elif plan.fingerprints:
        fingerprints = fingerprint_files(inventory)
        changed = sorted(set(plan.fingerprints) ^ set(fingerprints)) or [
            name for name in plan.fingerprints if plan.fingerprints[name] != fingerprints[name]
        ]
        if changed:
            raise SourceChangedError(
                f"the source changed since this plan was made ({changed[0]}"
                + (f" and {len(changed) - 1} more files" if len(changed) > 1 else "")
                + ")",
                path=inventory.root,
                hint="make a new plan",
            )
    if plan.origin is not inventory:  # a plan loaded from a file, or made from another read of a source
        plan = check_plan_fits(inventory, plan)
    learned = None
    if plan.distill is not None:  # learned before anything is written (it loads the model: torch, transformers)
        from .distill import learn_for_plan, manifest_entry

        learned = learn_for_plan(inventory, plan, stage)
        extra_manifest = {**(extra_manifest or {}), "distill": manifest_entry(plan, learned)}
    rendered, documents = plan.rendered, plan.documents
    staging = target  # until it exists: removing nothing on the way out (target does not exist, or is kept)
    try:
        staging = make_staging(target)
        written, copied, checks = _build(
            inventory, plan, rendered, documents, staging, progress, fingerprints, extra_manifest, verify,
            learned.rows if learned is not None else None, link_unchanged,
        )  # fmt: skip
        raise_on_failures(checks, target)  # names the output the user asked for, not the staging directory
        copy_permissions(inventory.root, staging)
        move_into_place(staging, target, replace=force)
    except OSError as error:
        with deferred():
            _remove(staging, target)
        if error.filename is None:  # a write that failed (a full disk): name the output it was for
            raise OSError(error.errno, error.strerror or str(error), str(target)) from error
        raise
    except BaseException:
        with deferred():
            _remove(staging, target)
        raise
    verification = verify.level if verify is not None else None
    removed = tuple(leftover.path for leftover in leftovers)
    return Result(target, plan, tuple(written), tuple(copied), verification, removed)


def _remove(staging: Path, target: Path) -> None:
    """Remove this surgery's staging directory: the one it made, and any of this process's beside ``target`` (a
    signal can arrive after the directory exists but before its name is bound here). Nothing of this surgery
    writes any more (see :meth:`_WeightWriter.stop`); a removal that fails part-way (a file still open on a network
    filesystem) is tried again."""
    for path in {staging, *own_staging(target)} - {target}:
        for _ in range(REMOVE_ATTEMPTS):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                break
            time.sleep(0.05)


def _check_output(inventory: Inventory, target: Path, force: bool) -> None:
    source = inventory.root.resolve()
    resolved = target.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise OutputExistsError("the output must be outside the source checkpoint", path=target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputExistsError("exists and is not a directory", path=target)
    if target.exists() and not force:
        raise OutputExistsError("already exists", path=target, hint="pass --force to replace it")
    if force:
        check_replaceable(target)


def _build(
    inventory: Inventory,
    plan: Plan,
    rendered: dict[str, bytes],
    documents: dict[str, Any],
    staging: Path,
    progress: Progress | None,
    fingerprints: dict[str, str] | None,
    extra_manifest: dict[str, Any] | None,
    verify: Verifier | None,
    learned: dict[int, Any] | None = None,
    link_unchanged: bool = False,
) -> tuple[list[str], list[str], list[Check]]:
    checks: list[Check] = []
    report = _locked(progress) if progress is not None else None
    writer = _WeightWriter(inventory, plan, staging, report, learned, link_unchanged)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="vocabsurgeon-build") as pool:
        in_child: PendingChecks | None = None
        try:
            weights_done = pool.submit(writer.run)
            # the manifest records a content hash of every source file but those hard-linked (never read: recorded
            # by inode, see fingerprints.linked_fingerprint); hashing releases the GIL, so it runs beside the copy
            # (whose reads it shares through the page cache), unless it began while planning (hashing_ahead)
            linked = writer.will_link()
            hashed = None
            if fingerprints is None:
                hashed = pool.submit(fingerprint_files, inventory, writer.cancel, linked)
            written, copied = _write_other_files(inventory, plan, rendered, staging)
            output = None
            tokens = manifest_tokens(inventory, plan)
            if verify is not None:
                known = _written_documents(inventory, rendered, documents)
                output = read_inventory(staging, weights=False, known=known)
                in_child = verify.start_tokenizer_checks(output, inventory, tokens)  # a large tokenizer's
                if in_child is None:
                    # loading tokenizers holds the GIL in long library calls: let the copies get under way first
                    writer.copying.wait(timeout=COPY_START_TIMEOUT_S)
                    checks += verify.tokenizer_checks(output, inventory, tokens)
            written_weights = weights_done.result()
            if in_child is not None:
                checks += in_child.result()
            recorded = hashed.result() if hashed is not None else fingerprints or {}
            if hashed is not None and linked:
                recorded = _with_links(inventory, recorded, writer.linked, linked)
            manifest = build_manifest(inventory, plan, recorded, extra_manifest or {})
            (staging / MANIFEST).write_text(dump_json(manifest, JsonStyle(indent=2)), encoding="utf-8")
            for relative, changed in written_weights:
                (written.append(relative) if changed else copied.append(relative))
        except BaseException:
            with deferred():
                writer.stop()  # failing (or interrupted): the copy stops at its next range, and nothing writes after
                if in_child is not None:
                    in_child.cancel()
            raise
    if verify is not None and output is not None:
        checks += verify.weight_checks(with_weights(output), inventory, tokens)
    return sorted({*written, MANIFEST}), copied, checks


def _with_links(
    inventory: Inventory, hashed: dict[str, str], made: dict[str, str], predicted: frozenset[str]
) -> dict[str, str]:
    """The manifest's fingerprints in the source's file order: content hashes, and the links' records (see
    fingerprints.linked_fingerprint) for the files the writer hard-linked; a file predicted to be linked that was
    not (none, today) gets its content hash."""
    missing = sorted(predicted - set(made))
    recorded = {**hashed, **made, **(fingerprint_paths(inventory.root, missing) if missing else {})}
    return {name: recorded[name] for name in inventory.files if name in recorded}


def _written_documents(
    inventory: Inventory, rendered: dict[str, bytes], documents: dict[str, Any]
) -> dict[str, tuple[Any, JsonStyle, str]]:
    """The JSON files of the output as values, without parsing them again: the source's where they are byte
    copies, the rendered documents where they were rewritten (their bytes are what the checks load)."""
    known = {name: entry for name, entry in known_documents(inventory).items() if name not in rendered}
    source = known_documents(inventory)
    for name, value in documents.items():
        style = source[name][1] if name in source else JsonStyle(indent=2)
        known[name] = (value, style, rendered[name].decode("utf-8"))
    return known


def _locked(progress: Progress) -> Progress:
    lock = threading.Lock()

    def report(count: int) -> None:
        with lock:
            progress(count)

    return report


def _write_other_files(
    inventory: Inventory, plan: Plan, rendered: dict[str, bytes], staging: Path
) -> tuple[list[str], list[str]]:
    """The rendered files written, every other non-weight file copied."""
    weight_files = {name for ws in inventory.weights for name in (*ws.files, *([ws.index] if ws.index else []))}
    copied = []
    for relative in inventory.files:
        if relative in rendered or relative in weight_files or relative == MANIFEST:
            continue
        _copy(inventory.path(relative), _inside(staging, relative))
        copied.append(relative)
    weights_written = [name for name in rendered if name in weight_files]  # an index: the weight writer's
    for relative, content in rendered.items():
        if relative in weights_written:
            continue
        with open(_inside(staging, relative), "xb") as handle:
            handle.write(content)
    return sorted(set(rendered) - set(weights_written)), copied


def _inside(staging: Path, relative: str) -> Path:
    """``staging / relative``, with its folders made inside ``staging`` but never ``staging`` itself: a write that
    comes after the staging directory was removed fails rather than make it again."""
    folder = staging
    for part in Path(relative).parent.parts:
        folder = folder / part
        folder.mkdir(exist_ok=True)
    return staging / relative


def _copy(source: Path, destination: Path) -> None:
    shutil.copyfile(source, destination)  # follows symlinks: a cache snapshot is copied by content


#: the Linux ioctl that makes ``dst`` share ``src``'s extents (Btrfs, XFS, bcachefs, OCFS2; not ext4, tmpfs)
FICLONE = 0x40049409


def _clone(source: Path, destination: Path, link: bool) -> bool:
    """``destination`` as the same bytes as ``source`` without copying them: a hard link with ``link``, else a
    reflink where the filesystem makes one. False where it cannot (the caller copies); a symlink (a cache
    snapshot) is followed to its blob."""
    real = source.resolve()
    if link:
        os.link(real, destination)
        return True
    try:
        import fcntl
    except ImportError:  # not POSIX
        return False
    try:
        with open(real, "rb") as src, open(destination, "xb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
                return True
            except OSError:  # EOPNOTSUPP, EXDEV, EINVAL, ENOTTY: no reflinks here
                pass
    except OSError:
        destination.unlink(missing_ok=True)
        raise
    destination.unlink()  # the empty file: the caller's copy creates it again
    return False


def _check_linkable(inventory: Inventory, target: Path) -> None:
    """--link-unchanged needs the output on the source's filesystem (a hard link cannot cross one)."""
    parent = target
    while not parent.exists():
        parent = parent.parent
    weights = [inventory.path(f).resolve() for ws in inventory.weights for f in ws.files]
    devices = {os.stat(path).st_dev for path in weights}
    if devices and devices != {os.stat(parent).st_dev}:
        raise LinkRefusedError(
            "--link-unchanged needs the output on the filesystem of the source's weights (a hard link cannot"
            " cross filesystems); nothing was written",
            path=target,
            hint="write the output there, or leave --link-unchanged out (unchanged files are then copied)",
        )


@dataclass
class _WeightWriter:
    """Writes the weight files of a plan, in a worker thread. ``copying`` is set once the copies are under way (or
    nothing is left to start); once ``cancel`` is set, the copies stop at their next range. ``progress`` must be
    safe to call from several threads."""

    inventory: Inventory
    plan: Plan
    staging: Path
    progress: Progress | None
    learned: dict[int, Any] | None = None  # the distilled rows, by id
    link_unchanged: bool = False  # hard-link weight files the plan does not change (else: a reflink, or a copy)
    copying: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    linked: dict[str, str] = field(default_factory=dict)  # the files hard-linked so far, and their records
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> list[tuple[str, bool]]:
        """(relative path, changed) of every weight file and index written; nothing once cancelled."""
        self.started.set()
        try:
            if self.cancel.is_set():
                return []
            return [item for weights in self.inventory.weights for item in self._write_set(weights)]
        finally:
            self.copying.set()
            self.done.set()

    def will_link(self) -> frozenset[str]:
        """The weight files this writer hard-links: with ``link_unchanged``, those no tensor op changes, in a set
        the plan does not convert."""
        if not self.link_unchanged:
            return frozenset()
        changed = {op.file for op in self.plan.tensors}
        return frozenset(
            name
            for weights in self.inventory.weights
            if self.plan.weights_format in (None, weights.format)
            for name in weights.files
            if name not in changed
        )

    def stop(self) -> None:
        """Cancel, and wait until a run under way has ended. The thread pool's own join is not enough: a signal
        that lands inside ``Thread.start`` leaves a started thread the pool does not know, which would go on
        writing into a staging directory that is being removed (``started`` is set before ``cancel`` is read,
        and ``cancel`` before ``started`` is read here, so a run either is waited for or writes nothing)."""
        self.cancel.set()
        if self.started.is_set():
            self.done.wait()

    def _edits(self, weights: WeightSet, *, values: bool) -> dict[str, TensorEdit]:
        ops = [op for op in self.plan.tensors if op.file in weights.files]
        if values:
            return {op.name: compute_edit(self.inventory, weights, op, self.plan, self.learned) for op in ops}
        return {op.name: placeholder_edit(weights, op) for op in ops}

    def _write_set(self, weights: WeightSet) -> Iterable[tuple[str, bool]]:
        """Per file: an edited copy where a tensor op lives, a byte copy elsewhere; files in parallel."""
        inventory, staging, progress, plan = self.inventory, self.staging, self.progress, self.plan
        if plan.weights_format is not None and plan.weights_format != weights.format:
            from .convert import convert_weights

            self.copying.set()
            yield from convert_weights(inventory, weights, plan, staging, progress, self._edits(weights, values=True))
            return
        handler = weights.handler
        later = handler.writes_rows_in_place
        edits = self._edits(weights, values=not later)
        pending = [len(weights.files)]
        lock = threading.Lock()

        def started() -> None:
            with lock:
                pending[0] -= 1
                if pending[0] == 0:
                    self.copying.set()

        def mine(relative: str, edits: dict[str, TensorEdit]) -> dict[str, TensorEdit]:
            return {name: edit for name, edit in edits.items() if weights.locations[name] == relative}

        def write(relative: str) -> tuple[str, bool]:
            destination = _inside(staging, relative)
            own = mine(relative, edits)
            if (
                not own
                and not self.cancel.is_set()
                and _clone(inventory.path(relative), destination, self.link_unchanged)
            ):
                if self.link_unchanged:  # recorded by the link itself: the inode the output holds
                    self.linked[relative] = linked_fingerprint(destination)
                if progress is not None:
                    progress(destination.stat().st_size)
                started()
                return relative, False
            handler.write_edited(
                weights.headers[relative], inventory.path(relative), destination, own, progress, self.cancel, started
            )
            return relative, bool(own)

        with ThreadPoolExecutor(max_workers=PARALLEL_FILES, thread_name_prefix="vocabsurgeon-file") as pool:
            yield from list(pool.map(write, weights.files))
        if later and edits:
            filled = self._edits(weights, values=True)
            for relative in weights.files:
                if own := mine(relative, filled):
                    handler.write_rows(staging / relative, own)
        if weights.index is not None:
            index = plan.rendered.get(weights.index)  # rendered by the planner where a tensor op changes it
            if index is None:
                _copy(inventory.path(weights.index), _inside(staging, weights.index))
            else:
                _inside(staging, weights.index).write_bytes(index)
            yield weights.index, index is not None


def manifest_tokens(inventory: Inventory, plan: Plan) -> list[dict[str, Any]]:
    """The manifest's tokens after the plan: the earlier surgeries' and the plan's placements."""
    previous = inventory.manifest or {}
    tokens = [dict(t) for t in previous.get("tokens", []) if isinstance(t, dict)]
    for p in plan.placements:
        entry = {"token": p.token, "content": p.content, "id": p.id, "kind": p.mode, "slot": p.slot, "init": p.init}
        tokens.append(entry | ({"form": p.form} if p.form != "as-is" else {}))
    return tokens


def build_manifest(
    inventory: Inventory, plan: Plan, fingerprints: dict[str, str], extra: dict[str, Any]
) -> dict[str, Any]:
    """vocabsurgeon.json: what was done, from what, by which version. Earlier surgeries' tokens are kept so that
    their ids stay taken."""
    previous = inventory.manifest or {}
    tokens = manifest_tokens(inventory, plan)
    history = list(previous.get("history", []))
    entry = {
        "operation": plan.operation,
        "source": str(inventory.root),
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "rows_before": plan.rows_before,
        "rows_after": plan.rows_after,
        "tokens_placed": len(plan.placements),
        "skipped": [asdict(s) for s in plan.skipped],
    }
    history.append(entry)
    return {
        "tool": "vocabsurgeon",
        "version": __version__,
        "operation": plan.operation,
        "source": str(inventory.source),
        "source_files": fingerprints,
        **extra,
        "tokens": tokens,
        "history": history,
    }
