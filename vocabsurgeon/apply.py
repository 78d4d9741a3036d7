"""The one place that writes: build the output in a temporary directory beside it, verify, rename into place.

The source is only ever opened for reading, and files of a Hugging Face cache snapshot (symlinks into the blob
store) are copied by content, never written through. On any failure the temporary directory is removed and
nothing appears at the output path.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import secrets
import shutil
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import OutputExistsError, SourceChangedError, UnsupportedCheckpointError
from .families import family_named
from .formats.json_file import JsonStyle, dump_json, patch_json, read_json_object
from .formats.vocab_txt import dump_vocab_txt
from .formats.weights import Progress, TensorEdit, TensorSpec
from .inventory import MANIFEST, Inventory, WeightSet, read_inventory, with_weights
from .plan import Init, Plan
from .tokenizer_edit import apply_placements, docs_from_inventory
from .verify import Check, Level, Verifier, raise_on_failures
from .vocab_tensors import find_vocab_tensors, text_config

QUICK_FINGERPRINT_ABOVE = 64 << 20
#: weight files written at once (each in several copy streams: see formats.safetensors_stream.COPY_STREAMS)
PARALLEL_FILES = 2
#: how long completing a plan waits for the weight copies to get under way (they normally take milliseconds)
COPY_START_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Result:
    """What a surgery wrote."""

    output: Path
    plan: Plan
    files_written: tuple[str, ...]
    files_copied: tuple[str, ...]
    verification: Level | None

    @property
    def verified(self) -> bool:
        return self.verification is not None


def apply_plan(
    inventory: Inventory,
    plan: Plan | Callable[[], Plan],
    out: str | os.PathLike[str],
    *,
    draft: Plan | None = None,
    force: bool = False,
    verify: Verifier | None = None,
    progress: Progress | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> Result:
    """Write ``plan`` applied to ``inventory`` at ``out``, atomically; with ``verify``, only if every check of the
    output passes (VerificationError lists those that fail).

    ``plan`` may also be a function that makes it, given with its ``draft`` (``plan_surgery(..., pieces=False)``):
    the weights are then copied with the draft's rows while the function runs, and the plan must have exactly
    those rows.
    """
    target = Path(out).expanduser().absolute()
    _check_output(inventory, target, force)
    planned: Future[Plan] = Future()
    if isinstance(plan, Plan):
        planned.set_result(plan)
        draft = plan
    elif draft is None:
        raise ValueError("a plan given as a function needs its draft")
    # a saved plan is checked against the source now; otherwise the fingerprints are taken while the weights stream
    fingerprints = source_fingerprints(inventory) if draft.fingerprints else None
    if fingerprints is not None and draft.fingerprints != fingerprints:
        raise SourceChangedError(
            "the source changed since this plan was made", path=inventory.root, hint="make a new plan"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _make_staging(target)
    try:
        written, copied, checks = _build(
            inventory, plan, draft, planned, staging, progress, fingerprints, extra_manifest or {}, verify
        )
        raise_on_failures(checks, target)  # names the output the user asked for, not the staging directory
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    verification = verify.level if verify is not None else None
    return Result(target, planned.result(), tuple(written), tuple(copied), verification)


def _make_staging(target: Path) -> Path:
    """A new hidden directory beside ``target`` with the permissions mkdir gives (mkdtemp's 0700 would make the
    renamed output private)."""
    for _ in range(100):
        staging = target.parent / f".{target.name}.{secrets.token_hex(4)}.vocabsurgeon-tmp"
        try:
            staging.mkdir()
        except FileExistsError:
            continue
        return staging
    raise FileExistsError(f"cannot create a temporary directory beside {target}")


def _check_output(inventory: Inventory, target: Path, force: bool) -> None:
    source = inventory.root.resolve()
    resolved = target.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise OutputExistsError("the output must be outside the source checkpoint", path=target)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputExistsError("exists and is not a directory", path=target)
    if target.exists() and not force:
        raise OutputExistsError("already exists", path=target, hint="pass --force to replace it")


def _move_into_place(staging: Path, target: Path) -> None:
    """rename(2) is atomic for the new directory; an old one is moved aside first and removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".vocabsurgeon-old", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build(
    inventory: Inventory,
    make_plan: Plan | Callable[[], Plan],
    draft: Plan,
    planned: Future[Plan],
    staging: Path,
    progress: Progress | None,
    fingerprints: dict[str, str] | None,
    extra_manifest: dict[str, Any],
    verify: Verifier | None,
) -> tuple[list[str], list[str], list[Check]]:
    # The weights stream in a worker thread (copy_file_range and file writes release the GIL) while this thread
    # completes the plan, renders the tokenizer files and the manifest, then checks them: the surgery then takes
    # about as long as the weight copy.
    checks: list[Check] = []
    writer = _WeightWriter(inventory, draft, planned, staging, _locked(progress) if progress is not None else None)
    with ThreadPoolExecutor(max_workers=1) as pool:
        weights_done = pool.submit(writer.run)
        try:
            if not planned.done():
                # completing the plan holds the GIL in long library calls: let the copies get under way first
                writer.copying.wait(timeout=COPY_START_TIMEOUT_S)
                try:
                    planned.set_result(make_plan() if callable(make_plan) else make_plan)
                except BaseException as error:
                    planned.set_exception(error)  # the weights thread stops at its next look at the plan
                    raise
            plan = planned.result()
            written, copied = _write_other_files(inventory, plan, staging)
            fingerprints = fingerprints if fingerprints is not None else source_fingerprints(inventory)
            manifest = build_manifest(inventory, plan, fingerprints, extra_manifest)
            (staging / MANIFEST).write_text(dump_json(manifest, JsonStyle(indent=2)), encoding="utf-8")
            output = read_inventory(staging, weights=False) if verify is not None else None
            if verify is not None and output is not None:
                checks += verify.tokenizer_checks(output, inventory)
            for relative, changed in weights_done.result():
                (written.setdefault(relative, None) if changed else copied.append(relative))
        except BaseException:
            writer.cancel.set()  # failing (or interrupted): stop the copy at its next range instead of finishing it
            raise
    if verify is not None and output is not None:
        checks += verify.weight_checks(with_weights(output), inventory)
    return sorted({*written, MANIFEST}), copied, checks


def _locked(progress: Progress) -> Progress:
    lock = threading.Lock()

    def report(count: int) -> None:
        with lock:
            progress(count)

    return report


def _write_other_files(inventory: Inventory, plan: Plan, staging: Path) -> tuple[dict[str, bytes | None], list[str]]:
    """Tokenizer files and config.json as edited, every other non-weight file copied."""
    written: dict[str, bytes | None] = {}  # relative path -> new content (None: written by a weight writer)
    written.update(_tokenizer_outputs(inventory, plan))
    written.update(_config_output(inventory, plan))
    weight_files = {name for ws in inventory.weights for name in (*ws.files, *([ws.index] if ws.index else []))}
    copied = []
    for relative in inventory.files:
        if relative in written or relative in weight_files or relative == MANIFEST:
            continue
        _copy(inventory.path(relative), staging / relative)
        copied.append(relative)
    for relative, content in written.items():
        if content is not None:
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with open(destination, "xb") as handle:
                handle.write(content)
    return written, copied


def _copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)  # follows symlinks: a cache snapshot is copied by content


def _tokenizer_outputs(inventory: Inventory, plan: Plan) -> dict[str, bytes]:
    """New bytes for each tokenizer file the plan changes; unchanged files are left to the byte copy."""
    if not plan.placements:
        return {}
    docs = docs_from_inventory(inventory)
    apply_placements(docs, plan, inventory)
    outputs: dict[str, bytes] = {}
    pairs: Iterable[tuple[str, Any, Any, JsonStyle | None]] = (
        ("tokenizer.json", docs.tokenizer_json, inventory.tokenizer_json, inventory.tokenizer_json_style),
        ("tokenizer_config.json", docs.tokenizer_config, inventory.tokenizer_config, inventory.tokenizer_config_style),
        (
            "special_tokens_map.json",
            docs.special_tokens_map,
            inventory.special_tokens_map,
            inventory.special_tokens_map_style,
        ),
        ("added_tokens.json", docs.added_tokens_json, inventory.added_tokens_json, None),
    )
    for name, new, old, style in pairs:
        if new is not None and new != old:
            outputs[name] = _json_bytes(inventory, name, old, new, style)
    vocabulary = inventory.vocabulary
    if docs.vocab_txt is not None and vocabulary is not None and tuple(docs.vocab_txt) != vocabulary.vocab_txt:
        outputs["vocab.txt"] = dump_vocab_txt(docs.vocab_txt).encode("utf-8")
    outputs.update(family_named(plan.family).side_outputs(docs, inventory))  # vocab.json, a SentencePiece model
    return outputs


def _json_bytes(inventory: Inventory, name: str, old: Any, new: Any, style: JsonStyle | None) -> bytes:
    """The new document in the source's own bytes wherever it did not change."""
    text = inventory.texts.get(name)
    if text is None or old is None:
        return dump_json(new, style or JsonStyle(indent=2)).encode("utf-8")
    return patch_json(text, old, new, style or JsonStyle(indent=2)).encode("utf-8")


def _config_output(inventory: Inventory, plan: Plan) -> dict[str, bytes]:
    if plan.config_vocab_size is None or inventory.config is None:
        return {}
    config = dict(inventory.config)
    section = text_config(config)
    if section is config:
        config["vocab_size"] = plan.config_vocab_size
    else:
        config["text_config"] = {**section, "vocab_size": plan.config_vocab_size}
    return {"config.json": _json_bytes(inventory, "config.json", inventory.config, config, inventory.config_style)}


def _weights_module(fmt: str) -> Any:
    if fmt == "safetensors":
        from .formats import safetensors_stream

        return safetensors_stream
    from .formats import torch_bin

    return torch_bin


@dataclass
class _WeightWriter:
    """Writes the weight files of a surgery, in a worker thread, while the main thread may still complete the plan.

    ``copying`` is set once the copies are under way (or nothing is left to start); once ``cancel`` is set, the
    copies stop at their next range. ``progress`` must be safe to call from several threads.
    """

    inventory: Inventory
    draft: Plan
    planned: Future[Plan]
    staging: Path
    progress: Progress | None
    copying: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)

    def run(self) -> list[tuple[str, bool]]:
        """(relative path, changed) of every weight file and index written."""
        try:
            return [item for weights in self.inventory.weights for item in self._write_set(weights)]
        finally:
            self.copying.set()

    def _write_set(self, weights: WeightSet) -> Iterable[tuple[str, bool]]:
        """Per file: an edited copy where a vocabulary tensor lives, a byte copy elsewhere; files in parallel.

        A format that can write rows in place (``write_rows``) is first written with the draft's rows as
        placeholders: that needs neither the finished plan nor a read of the source, so the copy starts at once.
        The rows are computed afterwards from the plan, when the source rows they average are in the page cache
        (the copy read them), and written over the placeholders.
        """
        inventory, staging, progress = self.inventory, self.staging, self.progress
        if self.draft.weights_format is not None and self.draft.weights_format != weights.format:
            from .convert import convert_weights

            self.copying.set()  # nothing starts before the plan is complete
            plan = self.planned.result()
            edits = _edits_for(inventory, weights, plan)
            yield from convert_weights(inventory, weights, plan, staging, progress, edits)
            return
        module = _weights_module(weights.format)
        later = hasattr(module, "write_rows")
        if not later:
            self.copying.set()  # nothing starts before the plan is complete
        edits = (
            _edits_for(inventory, weights, self.draft, values=False)
            if later
            else _edits_for(inventory, weights, self.planned.result())
        )
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
            source, destination = inventory.path(relative), staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            own = mine(relative, edits)
            if later:  # an unchanged safetensors file is copied in parallel streams too
                module.write_edited(source, destination, own, progress, copying=started, cancel=self.cancel)
            elif own:
                module.write_edited(source, destination, own, progress)
            else:
                _copy(source, destination)
                if progress is not None:
                    progress(destination.stat().st_size)
            return relative, bool(own)

        with ThreadPoolExecutor(max_workers=PARALLEL_FILES, thread_name_prefix="vocabsurgeon-file") as pool:
            yield from list(pool.map(write, weights.files))
        if later and edits:
            filled = _edits_for(inventory, weights, self.planned.result())
            if {name: (e.new_rows, e.indices) for name, e in filled.items()} != {
                name: (e.new_rows, e.indices) for name, e in edits.items()
            }:
                raise RuntimeError("internal error: the plan's rows differ from its draft's")
            for relative in weights.files:
                if own := mine(relative, filled):
                    module.write_rows(staging / relative, own)
        if weights.index is not None:
            yield weights.index, _write_index(inventory, weights, edits, staging)


def _write_index(inventory: Inventory, weights: WeightSet, edits: dict[str, TensorEdit], staging: Path) -> bool:
    assert weights.index is not None
    document, style = read_json_object(inventory.path(weights.index))
    if not edits:
        _copy(inventory.path(weights.index), staging / weights.index)
        return False
    # rows are counted along each edit's vocabulary axis (a (1, V) buffer's rows are its elements)
    views = {name: weights.specs[name].rows_view(edit.axis) for name, edit in edits.items()}
    grown = sum((edit.new_rows - views[name].shape[0]) * views[name].row_bytes for name, edit in edits.items())
    metadata = document.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("total_size"), int):
        document = {**document, "metadata": {**metadata, "total_size": metadata["total_size"] + grown}}
    # transformers 5 also records total_parameters (num_parameters(): registered buffers such as the (1, V)
    # final_logits_bias do not count); it grows by the new rows' elements of the other vocabulary tensors
    if isinstance(metadata, dict) and isinstance(metadata.get("total_parameters"), int):
        added = sum(
            (edit.new_rows - views[name].shape[0]) * math.prod(views[name].shape[1:])
            for name, edit in edits.items()
            if edit.axis == 0
        )
        document["metadata"] = {**document["metadata"], "total_parameters": metadata["total_parameters"] + added}
    (staging / weights.index).write_text(dump_json(document, style), encoding="utf-8")
    return True


def _edits_for(inventory: Inventory, weights: WeightSet, plan: Plan, *, values: bool = True) -> dict[str, TensorEdit]:
    """The rows each vocabulary tensor gets: placed tokens by their init, then every new row. With
    ``values=False`` the rows are zero placeholders and nothing is read from the source."""
    if plan.rows_before is None or plan.rows_after is None or not plan.changes_rows:
        return {}
    tensors = find_vocab_tensors(weights.specs)
    if tensors is None:
        raise UnsupportedCheckpointError(
            f"no input embedding among the tensors of {weights.files[0]}", path=inventory.root
        )
    if tensors.rows != plan.rows_before:
        raise SourceChangedError(
            f"{tensors.input.name} has {tensors.rows} rows, the plan expected {plan.rows_before}", path=inventory.root
        )
    module = _weights_module(weights.format)
    std = float(text_config(inventory.config).get("initializer_range", 0.02))
    edits = {}
    for spec in tensors.all:
        path = inventory.path(weights.locations[spec.name])
        edits[spec.name] = _edit_for(module, path, spec, plan, std, tensors.axis(spec), values=values)
    return edits


def _edit_for(
    module: Any, path: Path, spec: TensorSpec, plan: Plan, std: float, axis: int = 0, *, values: bool = True
) -> TensorEdit:
    """The edit of one vocabulary tensor whose vocabulary runs along ``axis``: a (1, V) buffer (axis 1) is handled
    as the (V,) bias its bytes are laid out like, so it gets what a 1-D bias gets."""
    spec = spec.rows_view(axis)
    rows_before, rows_after = spec.shape[0], plan.rows_after
    assert rows_after is not None
    wanted: list[tuple[int, Init, tuple[int, ...]]] = [
        (p.id, p.init, p.pieces) for p in plan.placements if p.init != "keep"
    ]
    covered = {idx for idx, _, _ in wanted}
    wanted += [(idx, plan.pad_init, ()) for idx in range(rows_before, rows_after) if idx not in covered]
    if not wanted:
        return TensorEdit(rows_after, axis=axis)
    indices = tuple(idx for idx, _, _ in wanted)
    if not values:  # placeholders of the right shape, without memory
        return TensorEdit(rows_after, indices, np.broadcast_to(np.float32(0), (len(wanted), *spec.shape[1:])), axis)
    rows = np.empty((len(wanted), *spec.shape[1:]), dtype=np.float32)
    subword = [k for k, (_, init, _) in enumerate(wanted) if init == "subword-mean"]
    for first in range(0, len(subword), SUBWORD_BATCH):
        batch = subword[first : first + SUBWORD_BATCH]
        rows[batch] = _subword_means(module, path, spec, [wanted[k][2] for k in batch], axis)
    mean: np.ndarray | None = None
    rng = np.random.default_rng([plan.seed, zlib.crc32(spec.name.encode())])
    for k, (_, init, _) in enumerate(wanted):
        if init == "subword-mean":
            continue
        if init == "mean":
            if mean is None:
                exclude = [i for i in plan.exclude_from_mean if i < rows_before]
                mean = module.read_row_mean(path, spec.name, exclude, axis=axis)
            rows[k] = mean
        elif init == "zeros" or len(spec.shape) == 1:
            rows[k] = 0.0
        else:  # normal, as transformers initializes embeddings: N(0, initializer_range)
            rows[k] = rng.normal(0.0, std, spec.shape[1:]).astype(np.float32)
    return TensorEdit(rows_after, indices, rows, axis=axis)


#: subword-mean rows computed at once (their pieces' rows are gathered in float64)
SUBWORD_BATCH = 4096


def _subword_means(module: Any, path: Path, spec: TensorSpec, pieces: list[tuple[int, ...]], axis: int) -> np.ndarray:
    """For each tuple of piece ids, the float64 mean of those rows, as float32 (summed in order, as ``np.mean`` of
    the rows does): every row gathered in one read, and tokens with the same number of pieces summed at once (a
    Python loop of small means costs more than the reading)."""
    if any(not ids for ids in pieces):
        raise ValueError("a draft plan (without pieces) cannot be applied")
    flat = [i for ids in pieces for i in ids]
    gathered = module.read_rows(path, spec.name, flat, axis=axis)
    where = np.cumsum([0, *(len(ids) for ids in pieces)])  # token k's rows are gathered[where[k]:where[k + 1]]
    out = np.empty((len(pieces), *gathered.shape[1:]), dtype=np.float32)
    counts = np.diff(where)
    for count in np.unique(counts):
        tokens = np.flatnonzero(counts == count)
        rows = gathered[where[tokens][:, None] + np.arange(count)]  # (tokens, count, *row)
        out[tokens] = (rows.sum(axis=1, dtype=np.float64) / count).astype(np.float32)
    return out


def source_fingerprints(inventory: Inventory) -> dict[str, str]:
    """sha256 of every file a surgery reads. Weight files above 64 MiB get a quick fingerprint (size, head and
    tail) unless they sit in a Hugging Face cache, whose blob names are their sha256."""
    import hashlib

    names = [n for n in inventory.files if n != MANIFEST]
    out = {}
    for name in names:
        path = inventory.path(name)
        if path.is_symlink():
            blob = Path(os.readlink(path)).name
            if len(blob) == 64 and all(c in "0123456789abcdef" for c in blob):
                out[name] = f"sha256:{blob}"
                continue
        size = path.stat().st_size
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            if size <= QUICK_FINGERPRINT_ABOVE:
                while block := handle.read(1 << 24):
                    digest.update(block)
                out[name] = f"sha256:{digest.hexdigest()}"
            else:
                digest.update(str(size).encode())
                digest.update(handle.read(1 << 20))
                handle.seek(size - (1 << 20))
                digest.update(handle.read(1 << 20))
                out[name] = f"quick:{digest.hexdigest()}"
    return out


def build_manifest(
    inventory: Inventory, plan: Plan, fingerprints: dict[str, str], extra: dict[str, Any]
) -> dict[str, Any]:
    """vocabsurgeon.json: what was done, from what, by which version. Earlier surgeries' tokens are kept so that
    their ids stay taken."""
    previous = inventory.manifest or {}
    tokens = [dict(t) for t in previous.get("tokens", []) if isinstance(t, dict)]
    tokens += [
        {"token": p.token, "content": p.content, "id": p.id, "kind": p.mode, "slot": p.slot, "init": p.init}
        for p in plan.placements
    ]
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
