"""Streaming access to single ``.safetensors`` files: header parsing, row reads and edited copies.

Implements the weight-format interface described in :mod:`vocabsurgeon.formats.weights` without loading a model
(and without torch): only the header is parsed, rows are read individually, means are streamed in bounded chunks,
and an edited copy moves every untouched byte range with ``os.copy_file_range``.

A safetensors file is ``<u64 little-endian header length N><N bytes of JSON header><data>``. The header maps each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the start of the data) and
may carry a ``"__metadata__"`` dict of strings. We parse it ourselves because the library does not expose offsets.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import mmap
import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from vocabsurgeon.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    OutputExistsError,
    UnsupportedCheckpointError,
)
from vocabsurgeon.formats.weights import (
    DTYPE_SIZES,
    FLOAT_DTYPES,
    Progress,
    RowBytes,
    TensorEdit,
    TensorSpec,
    WeightFile,
    check_edits,
    encode,
)

PathLike = str | os.PathLike[str]

METADATA_KEY = "__metadata__"

#: the safetensors library refuses headers above this size, so do we (it also bounds what we read).
MAX_HEADER_SIZE = 100_000_000

#: the largest piece handled at once: a mean's read chunk, an encoded batch of rows, one progress step.
CHUNK_BYTES = 64 << 20

#: concurrent copy streams of one file. One: on the 16 GB Llama-3-8B benchmark (cold cache, this virtual disk),
#: 4 streams per file took 50 s and 41 s of kernel CPU against 45 s and 34 s for one (``cp -r``: 43 s, 26 s); two
#: files are copied at once anyway (apply.PARALLEL_FILES). A networked filesystem may want more.
COPY_STREAMS = 1

#: the largest range one copy stream copies at once (and so one progress step).
COPY_JOB_BYTES = 256 << 20

#: buffer size of the plain read/write copy used when ``copy_file_range`` is unavailable.
FALLBACK_BUFFER_BYTES = 16 << 20

#: dtypes the safetensors library accepts but vocabsurgeon has no element size for (some are sub-byte).
_LIBRARY_ONLY_DTYPES = frozenset(
    {"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "U16", "U32", "U64", "C64"}
)

_NUMERIC = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


class Cancelled(Exception):
    """A write stopped early on request (its caller is failing for another reason)."""


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file: its spec and where its bytes lie, relative to the data section."""

    spec: TensorSpec
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    """A parsed and validated safetensors header."""

    entries: tuple[Entry, ...]
    metadata: dict[str, str] | None
    data_start: int
    file_size: int

    def specs(self) -> dict[str, TensorSpec]:
        """Every tensor's spec by name, in file order."""
        return {entry.spec.name: entry.spec for entry in self.entries}

    def entry(self, name: str) -> Entry:
        """The entry of tensor ``name``; KeyError if there is none."""
        for entry in self.entries:
            if entry.spec.name == name:
                return entry
        raise KeyError(f"no tensor named {name!r}")


# --------------------------------------------------------------------------------------------------- reading


def read_header(path: PathLike) -> Header:
    """Parse and validate the header of the safetensors file at ``path``, reading no tensor data.

    Validation follows the safetensors library: the length prefix fits the file, the header is UTF-8 JSON, every
    dtype is known, each tensor's byte range matches its shape and dtype, and the ranges tile the data section
    exactly (sorted by offset, no gap, no overlap, nothing missing or left over). Raises CheckpointFormatError
    naming the file for anything else.
    """
    path = Path(path)
    try:
        # unbuffered, so that not even a read-ahead buffer's worth of tensor data is read
        with open(path, "rb", buffering=0) as file:
            file_size = os.fstat(file.fileno()).st_size
            prefix = bytearray(8)
            if file_size < 8 or not _read_exact(file, prefix):
                raise CheckpointFormatError(
                    f"not a safetensors file: only {file_size} bytes, too short for the 8-byte header length",
                    path=path,
                )
            length = int.from_bytes(prefix, "little")
            if length > file_size - 8:
                raise CheckpointFormatError(
                    f"truncated or not a safetensors file: header length {length} exceeds the {file_size}-byte file",
                    path=path,
                )
            if length > MAX_HEADER_SIZE:
                raise CheckpointFormatError(
                    f"safetensors header of {length} bytes is larger than the {MAX_HEADER_SIZE}-byte limit", path=path
                )
            raw = bytearray(length)
            if not _read_exact(file, raw):
                raise CheckpointFormatError("file shrank while its header was read", path=path)
    except FileNotFoundError as error:
        raise CheckpointNotFoundError("no such file", path=path) from error
    return _parse_header(bytes(raw), path=path, file_size=file_size)


def read_tensor_specs(path: PathLike) -> dict[str, TensorSpec]:
    """Names, dtypes and shapes of every tensor in the file, in file order, from the header alone."""
    return read_header(path).specs()


def read_rows(
    path: PathLike, name: str, rows: Sequence[int], *, axis: int = 0, header: Header | None = None
) -> np.ndarray:
    """Rows ``rows`` (indices along dim 0, any order, repeats allowed) of tensor ``name`` as float32.

    The result has shape ``(len(rows), *shape[1:])``; with ``axis=1`` (a ``(1, V)`` buffer) the rows are its
    elements and the result has shape ``(len(rows),)``. The rows are gathered from a read-only memory map in one
    numpy call: no system call per row (thousands of small reads would each hand the GIL back and forth with
    other threads), and only the pages of the requested rows are touched. A surgery reads rows after the weight
    copy, when those pages are in the page cache. ``header``: the file's header, if already read.
    """
    path = Path(path)
    header = header or read_header(path)
    entry = header.entry(name)
    spec = _row_spec(entry.spec).rows_view(axis)
    index = np.asarray(rows, dtype=np.int64).reshape(-1)
    _check_rows(spec, index)
    out_shape = (len(index), *spec.shape[1:])
    if len(index) == 0 or spec.row_bytes == 0:
        return np.zeros(out_shape, dtype=np.float32)
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        if len(mapped) != header.file_size:
            raise CheckpointFormatError(f"file changed while reading tensor {name}", path=path)
        table = np.frombuffer(
            mapped, dtype=np.uint8, count=spec.shape[0] * spec.row_bytes, offset=header.data_start + entry.begin
        ).reshape(spec.shape[0], spec.row_bytes)
        picked = table[index]  # a copy: nothing refers to the map once it is closed
        del table
    return _numbers(picked, spec.dtype).astype(np.float32, copy=False).reshape(out_shape)


def read_row_mean(
    path: PathLike, name: str, exclude: Collection[int] = (), *, axis: int = 0, header: Header | None = None
) -> np.ndarray:
    """Float32 mean of the rows of tensor ``name`` not listed in ``exclude``, shape ``shape[1:]``.

    With ``axis=1`` (a ``(1, V)`` buffer) the rows are its elements and the mean is a 0-d array.

    The tensor is streamed in chunks of about 64 MiB and summed in float64, so memory stays bounded whatever its
    size. Raises ValueError if no row is left to average. ``header``: the file's header, if already read.
    """
    path = Path(path)
    header = header or read_header(path)
    entry = header.entry(name)
    spec = _row_spec(entry.spec).rows_view(axis)
    n_rows, row_bytes = spec.shape[0], spec.row_bytes
    excluded = np.unique(np.asarray(list(exclude), dtype=np.int64))
    _check_rows(spec, excluded)
    kept = n_rows - len(excluded)
    if kept == 0:
        raise ValueError(f"{name}: no rows left to average")
    total = np.zeros(row_bytes // DTYPE_SIZES[spec.dtype], dtype=np.float64)
    if row_bytes:
        # BF16 widens to 4-byte floats, so a chunk is sized by its decoded bytes, not its bytes on disk.
        chunk_rows = max(1, CHUNK_BYTES // max(row_bytes, 4 * len(total)))
        buffer = np.empty(min(chunk_rows, n_rows) * row_bytes, dtype=np.uint8)
        wide = np.zeros(2 * min(chunk_rows, n_rows) * len(total), dtype="<u2") if spec.dtype == "BF16" else None
        with open(path, "rb", buffering=0) as file:
            file.seek(header.data_start + entry.begin)
            for start in range(0, n_rows, chunk_rows):
                stop = min(n_rows, start + chunk_rows)
                view = buffer[: (stop - start) * row_bytes]
                if not _read_exact(file, view.data):
                    raise CheckpointFormatError(f"file ended while reading tensor {name}", path=path)
                block = _numbers(view, spec.dtype, wide).reshape(stop - start, -1)
                skip = excluded[np.searchsorted(excluded, start) : np.searchsorted(excluded, stop)]
                if len(skip):
                    # dropped, not subtracted afterwards: excluded rows may hold NaN or inf
                    block = np.delete(block, skip - start, axis=0)
                total += block.sum(axis=0, dtype=np.float64)
    return (total / kept).astype(np.float32).reshape(spec.shape[1:])


# --------------------------------------------------------------------------------------------------- writing


def dump_header(entries: Sequence[Entry], metadata: Mapping[str, str] | None) -> bytes:
    """Serialize a header as the safetensors library writes it: 8-byte length, then space-padded compact JSON.

    ``"__metadata__"`` comes first when ``metadata`` is not None, then the tensors in the order given, each as
    ``{"dtype", "shape", "data_offsets"}``. The JSON is padded with spaces to a multiple of 8 bytes. Pure.
    """
    document: dict[str, Any] = {}
    if metadata is not None:
        document[METADATA_KEY] = dict(metadata)
    for entry in entries:
        name = entry.spec.name
        if name == METADATA_KEY or name in document:
            raise ValueError(f"tensor name {name!r} is reserved or repeated")
        document[name] = {
            "dtype": entry.spec.dtype,
            "shape": list(entry.spec.shape),
            "data_offsets": [entry.begin, entry.end],
        }
    # serde_json (the library) writes non-ASCII characters as UTF-8, not as \u escapes.
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def write_edited(
    src: PathLike,
    dst: PathLike,
    edits: Mapping[str, TensorEdit],
    progress: Progress | None = None,
    *,
    copying: Callable[[], None] | None = None,
    cancel: threading.Event | None = None,
    header: Header | None = None,
) -> None:
    """Write ``dst`` as a copy of the safetensors file ``src`` with ``edits`` applied.

    An edited tensor keeps its old bytes except the rows it overwrites, then gets its new rows appended; its
    vocabulary axis (``edit.axis``: dim 0, or dim 1 of a ``(1, V)`` buffer, whose bytes are laid out like a
    ``(V,)`` tensor's) becomes ``new_rows`` long and later offsets shift. Tensor order and metadata are kept, and
    every other byte is copied unchanged: with no edits the copy is byte-identical, and when no tensor grows even
    the header bytes are. ``dst`` must not exist (nor be a symlink, nor be ``src``); ``progress`` receives the byte
    count of each written piece, ``copying`` is called once every copy is under way (the caller may then hold the
    GIL for a while without stalling the copy), and once ``cancel`` is set no further range is started (the
    write then raises :class:`Cancelled`). A partly written ``dst`` is removed on failure. ``header``: the
    source's header, if already read.
    """
    src, dst = Path(src), Path(dst)
    header = header or read_header(src)
    specs = header.specs()
    check_edits(specs, edits)
    _check_destination(src, dst)
    report: Progress = progress or (lambda _: None)
    grows = any(edit.grows(specs[name]) for name, edit in edits.items())

    try:
        with open(src, "rb", buffering=0) as source, open(dst, "xb", buffering=0) as output:
            try:
                _write_data(source.fileno(), output.fileno(), header, edits, grows, report, copying, cancel)
            except EOFError as error:
                _remove(dst)
                raise CheckpointFormatError(f"source file changed while it was copied: {error}", path=src) from error
            except BaseException:
                _remove(dst)
                raise
    except FileExistsError as error:
        raise OutputExistsError("output file already exists", path=dst) from error


def write_rows(path: PathLike, edits: Mapping[str, TensorEdit]) -> None:
    """Overwrite rows ``edit.indices`` of tensors in the safetensors file ``path`` with ``edit.values``, in place.

    The second half of a :func:`write_edited` given placeholder values: the file already has the edits' shapes,
    so this writes only the rows, at their offsets, and nothing else changes.
    """
    path = Path(path)
    header = read_header(path)
    with open(path, "r+b", buffering=0) as file:
        for name, edit in edits.items():
            entry = header.entry(name)
            spec = entry.spec.rows_view(edit.axis)
            if spec.shape[0] != edit.new_rows:
                raise ValueError(f"{name} has {spec.shape[0]} rows in {path}, the edit expects {edit.new_rows}")
            order = sorted(range(len(edit.indices)), key=lambda k: edit.indices[k])
            for run in _consecutive_runs(order, edit.indices):
                offset = header.data_start + entry.begin + edit.indices[run[0]] * spec.row_bytes
                for data in _encoded_rows(edit.values, run, spec):
                    _pwrite_all(file.fileno(), data, offset)
                    offset += len(data)


#: errnos with which copy_file_range says "not here", as opposed to a real failure
_NO_COPY_FILE_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM})


def copy_range(
    src_fd: int,
    dst_fd: int,
    offset: int,
    count: int,
    progress: Progress | None = None,
    *,
    dst_offset: int,
    step: int = CHUNK_BYTES,
) -> None:
    """Copy ``count`` bytes at ``offset`` of ``src_fd`` to ``dst_offset`` of ``dst_fd``, at disk speed; neither
    file's position moves, so several threads can copy ranges of the same pair of files at once.

    Uses ``os.copy_file_range`` (in-kernel, possibly reflinked) and falls back to a 16 MiB buffered read/write
    loop where it is unavailable. ``progress`` is called after each system call, which copies at most ``step``
    bytes. Raises EOFError if the source ends early.
    """
    report: Progress = progress or (lambda _: None)
    done = 0
    while done < count:
        try:
            piece = min(step, count - done)
            copied = os.copy_file_range(src_fd, dst_fd, piece, offset + done, dst_offset + done)
        except AttributeError:  # not Linux
            break
        except OSError as error:
            if error.errno not in _NO_COPY_FILE_RANGE:
                raise  # a full disk or an I/O error is not a reason to try another way
            break  # not for this pair of files (old kernel, some filesystems)
        if copied == 0:
            raise EOFError(f"source ended {count - done} bytes early")
        done += copied
        report(copied)
    if done < count:
        _copy_range_buffered(src_fd, dst_fd, offset + done, count - done, report, dst_offset + done)


# --------------------------------------------------------------------------------------------------- helpers


def _parse_header(raw: bytes, *, path: Path, file_size: int) -> Header:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointFormatError(f"safetensors header is not valid UTF-8: {error}", path=path) from error
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise CheckpointFormatError(f"safetensors header is not valid JSON: {error}", path=path) from error
    if not isinstance(document, dict):
        raise CheckpointFormatError("safetensors header is not a JSON object", path=path)

    metadata = document.pop(METADATA_KEY, None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(value, str) for value in metadata.values())
    ):
        raise CheckpointFormatError('safetensors "__metadata__" is not a dict of strings', path=path)

    entries = [_parse_entry(name, info, path=path) for name, info in document.items()]
    entries.sort(key=lambda entry: (entry.begin, entry.end))
    data_start = 8 + len(raw)
    position = 0
    for entry in entries:
        if entry.begin != position or entry.end < entry.begin:
            raise CheckpointFormatError(
                f"tensor {entry.spec.name} has data_offsets [{entry.begin}, {entry.end}] but the previous tensor "
                f"ends at {position}; the tensors must tile the data without gaps or overlap",
                path=path,
            )
        if entry.end - entry.begin != entry.spec.nbytes:
            raise CheckpointFormatError(
                f"tensor {entry.spec.name} spans {entry.end - entry.begin} bytes but its shape {list(entry.spec.shape)}"
                f" and dtype {entry.spec.dtype} need {entry.spec.nbytes}",
                path=path,
            )
        position = entry.end
    available = file_size - data_start
    if position > available:
        raise CheckpointFormatError(
            f"truncated safetensors file (its header describes {position} data bytes, the file has {available})",
            path=path,
        )
    if position < available:
        raise CheckpointFormatError(
            f"safetensors file has {available} data bytes but its header accounts for only {position}", path=path
        )
    return Header(entries=tuple(entries), metadata=metadata, data_start=data_start, file_size=file_size)


def _parse_entry(name: str, info: object, *, path: Path) -> Entry:
    def fail(problem: str) -> CheckpointFormatError:
        return CheckpointFormatError(f"tensor {name} in the safetensors header {problem}", path=path)

    if not isinstance(info, dict):
        raise fail("is not a JSON object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise fail('has no "dtype" string')
    if dtype not in DTYPE_SIZES:
        if dtype in _LIBRARY_ONLY_DTYPES:
            raise UnsupportedCheckpointError(f"tensor {name} has dtype {dtype}, which is not supported", path=path)
        raise fail(f"has unknown dtype {dtype!r}")
    if not _is_count_list(shape):
        raise fail('has no "shape" list of non-negative integers')
    if not (_is_count_list(offsets) and len(offsets) == 2):
        raise fail('has no "data_offsets" pair of non-negative integers')
    return Entry(spec=TensorSpec(name=name, dtype=dtype, shape=tuple(shape)), begin=offsets[0], end=offsets[1])


class Safetensors:
    """The :class:`~vocabsurgeon.formats.weights.WeightFormat` of ``.safetensors`` files."""

    writes_rows_in_place = True

    def read_file(self, path: Path, relative: str) -> WeightFile:
        header = read_header(path)
        specs = {
            e.spec.name: replace(e.spec, file=relative, offset=header.data_start + e.begin) for e in header.entries
        }
        return WeightFile(relative, specs, header)

    def read_rows(self, file: WeightFile, path: Path, name: str, rows: Sequence[int], *, axis: int = 0) -> np.ndarray:
        return read_rows(path, name, rows, axis=axis, header=file.raw)

    def read_row_mean(
        self, file: WeightFile, path: Path, name: str, exclude: Collection[int] = (), *, axis: int = 0
    ) -> np.ndarray:
        return read_row_mean(path, name, exclude, axis=axis, header=file.raw)

    def write_edited(
        self,
        file: WeightFile,
        src: Path,
        dst: Path,
        edits: Mapping[str, TensorEdit],
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        started: Callable[[], None] | None = None,
    ) -> None:
        write_edited(src, dst, edits, progress, copying=started, cancel=cancel, header=file.raw)

    def write_rows(self, path: Path, edits: Mapping[str, TensorEdit]) -> None:
        write_rows(path, edits)

    @contextlib.contextmanager
    def row_bytes(self, file: WeightFile, path: Path, name: str) -> Iterator[RowBytes]:
        with open(path, "rb", buffering=0) as handle:
            yield _FileRows(handle, file.specs[name].offset, path, name)


class _FileRows:
    """Rows of one tensor read straight from the file into a reused buffer."""

    def __init__(self, handle: io.RawIOBase, start: int, path: Path, name: str) -> None:
        self.handle, self.start, self.path, self.name = handle, start, path, name
        self.buffer = np.empty(0, dtype=np.uint8)

    def read(self, first: int, count: int, row_bytes: int) -> np.ndarray:
        length = count * row_bytes
        if self.buffer.size < length:
            self.buffer = np.empty(length, dtype=np.uint8)
        view = self.buffer[:length].data
        self.handle.seek(self.start + first * row_bytes)
        if not _read_exact(self.handle, view):
            raise CheckpointFormatError(f"the file ends inside tensor {self.name}", path=self.path)
        return self.buffer[:length].reshape(count, row_bytes)


FORMAT = Safetensors()


def _is_count_list(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(type(item) is int and item >= 0 for item in value)


def _reject_constant(constant: str) -> None:
    # Python's json accepts NaN and Infinity; JSON (and the library) does not.
    raise ValueError(f"invalid JSON constant {constant}")


def _row_spec(spec: TensorSpec) -> TensorSpec:
    if not spec.shape:
        raise ValueError(f"{spec.name}: a scalar tensor has no rows")
    if spec.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{spec.name}: cannot read rows of dtype {spec.dtype}")
    return spec


def _check_rows(spec: TensorSpec, index: np.ndarray) -> None:
    if len(index) and (index.min() < 0 or index.max() >= spec.shape[0]):
        raise IndexError(f"{spec.name}: a row index is outside 0..{spec.shape[0] - 1}")


def _numbers(raw: np.ndarray, dtype: str, wide: np.ndarray | None = None) -> np.ndarray:
    """The values of little-endian float bytes ``raw``, without a copy except for BF16 (same bits as ``decode``).

    Summing the file's own dtype keeps F64 precision and avoids a float32 copy per chunk. A BF16 value is the high
    half of a float32, so it is written into the odd halves of a zeroed ``'<u2'`` buffer, ``wide`` if given (at
    least twice as many halves as ``raw``, reused across chunks), which is far faster than widening integers.
    """
    flat = raw.reshape(-1)
    if dtype in _NUMERIC:
        return flat.view(_NUMERIC[dtype])
    if dtype != "BF16":
        raise ValueError(f"cannot decode dtype {dtype}")
    halves = flat.view("<u2")
    target = np.zeros(2 * halves.size, dtype="<u2") if wide is None else wide[: 2 * halves.size]
    target[1::2] = halves
    return target.view("<f4")


def _read_exact(file: io.RawIOBase, into: bytearray | memoryview) -> bool:
    """Fill ``into`` from ``file``'s position; False if the file ends first."""
    buffer = memoryview(into).cast("B")
    done = 0
    while done < len(buffer):
        count = file.readinto(buffer[done:])
        if not count:
            return False
        done += count
    return True


def _check_destination(src: Path, dst: Path) -> None:
    if os.path.islink(dst):
        raise OutputExistsError("output path is a symlink; refusing to write through it", path=dst)
    if os.path.lexists(dst):
        if os.path.samefile(src, dst):
            raise OutputExistsError("output path is the source file itself", path=dst)
        raise OutputExistsError("output file already exists", path=dst)


@dataclass(frozen=True)
class _Piece:
    """A range of the output: ``size`` bytes at ``src`` of the source, or ``data``; written at ``dst``."""

    dst: int
    size: int
    src: int | None = None
    data: bytes | None = None


def _layout(header: Header, edits: Mapping[str, TensorEdit], grows: bool) -> tuple[list[_Piece], int]:
    """Every range of the output file, in order, and the file's size. Pure."""
    pieces: list[_Piece] = []
    position = 0

    def copy(src: int, size: int) -> None:
        nonlocal position
        if size:
            pieces.append(_Piece(position, size, src=src))
            position += size

    def write(data: bytes) -> None:
        nonlocal position
        if data:
            pieces.append(_Piece(position, len(data), data=data))
            position += len(data)

    if grows:
        write(dump_header(_grown_entries(header, edits), header.metadata))
    else:
        copy(0, header.data_start)  # nothing in the header changes: its original bytes are kept, not re-serialized
    for entry in header.entries:
        offset = header.data_start + entry.begin
        edit = edits.get(entry.spec.name)
        if edit is None:
            copy(offset, entry.end - entry.begin)
            continue
        spec = entry.spec.rows_view(edit.axis)  # same bytes, rows along dim 0
        old_rows, row_bytes = spec.shape[0], spec.row_bytes
        order = sorted(range(len(edit.indices)), key=lambda k: edit.indices[k])
        in_place = [k for k in order if edit.indices[k] < old_rows]
        appended = [k for k in order if edit.indices[k] >= old_rows]
        row = 0
        for run in _consecutive_runs(in_place, edit.indices):
            first = edit.indices[run[0]]
            copy(offset + row * row_bytes, (first - row) * row_bytes)
            for data in _encoded_rows(edit.values, run, spec):
                write(data)
            row = first + len(run)
        copy(offset + row * row_bytes, (old_rows - row) * row_bytes)
        # check_edits guarantees the appended indices are exactly old_rows..new_rows-1: sorted order is file order
        for data in _encoded_rows(edit.values, appended, spec):
            write(data)
    return pieces, position


def _write_data(
    src_fd: int,
    dst_fd: int,
    header: Header,
    edits: Mapping[str, TensorEdit],
    grows: bool,
    report: Progress,
    copying: Callable[[], None] | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Write every piece of the layout, the copies split into jobs of at most :data:`COPY_JOB_BYTES` and run
    :data:`COPY_STREAMS` at a time. A job is one ``copy_file_range`` call, so the threads seldom need the GIL
    (a surgery checks the tokenizer files in the main thread meanwhile). Each piece goes to its own offset: the
    order in which they finish does not matter."""
    pieces, expected_size = _layout(header, edits, grows)
    jobs = [
        _Piece(piece.dst + start, min(COPY_JOB_BYTES, piece.size - start), src=piece.src + start)
        if piece.src is not None
        else piece
        for piece in pieces
        for start in (range(0, piece.size, COPY_JOB_BYTES) if piece.src is not None else (0,))
    ]
    lock = threading.Lock()

    def locked_report(count: int) -> None:
        with lock:
            report(count)

    def run(job: _Piece) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the write was cancelled")
        if job.data is not None:
            _pwrite_all(dst_fd, job.data, job.dst)
            locked_report(job.size)
        else:
            assert job.src is not None
            copy_range(src_fd, dst_fd, job.src, job.size, locked_report, dst_offset=job.dst, step=job.size)

    with ThreadPoolExecutor(max_workers=COPY_STREAMS, thread_name_prefix="vocabsurgeon-copy") as pool:
        results = pool.map(run, jobs)
        if copying is not None:
            copying()
        for _ in results:  # the first failure is raised; the pool then drains the rest
            pass
    written = os.fstat(dst_fd).st_size
    if written != expected_size:
        raise EOFError(f"wrote {written} bytes, expected {expected_size}")


def _grown_entries(header: Header, edits: Mapping[str, TensorEdit]) -> list[Entry]:
    entries: list[Entry] = []
    position = 0
    for entry in header.entries:
        spec = entry.spec
        edit = edits.get(spec.name)
        if edit is not None:
            spec = replace(spec, shape=edit.new_shape(spec))
        entries.append(Entry(spec=spec, begin=position, end=position + spec.nbytes))
        position += spec.nbytes
    return entries


def _consecutive_runs(order: list[int], indices: Sequence[int]) -> list[list[int]]:
    """Split value positions, sorted by row, into runs whose rows are consecutive (each written at once)."""
    runs: list[list[int]] = []
    for k in order:
        if runs and indices[runs[-1][-1]] + 1 == indices[k]:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


def _encoded_rows(values: np.ndarray, positions: list[int], spec: TensorSpec) -> Iterator[bytes]:
    """The rows ``values[positions]`` in the tensor's dtype, in pieces of at most :data:`CHUNK_BYTES`."""
    batch = max(1, CHUNK_BYTES // max(1, spec.row_bytes))
    for start in range(0, len(positions), batch):
        yield encode(values[positions[start : start + batch]], spec.dtype)


def _pwrite_all(dst_fd: int, data: bytes | memoryview, offset: int) -> None:
    """All of ``data`` at ``offset``."""
    view = memoryview(data)
    while view:
        written = os.pwrite(dst_fd, view, offset)
        view = view[written:]
        offset += written


def _copy_range_buffered(src_fd: int, dst_fd: int, offset: int, count: int, report: Progress, dst_offset: int) -> None:
    buffer = bytearray(min(FALLBACK_BUFFER_BYTES, count))
    done = 0
    while done < count:
        view = memoryview(buffer)[: min(len(buffer), count - done)]
        got = os.preadv(src_fd, [view], offset + done)
        if got == 0:
            raise EOFError(f"source ended {count - done} bytes early")
        _pwrite_all(dst_fd, view[:got], dst_offset + done)
        report(got)
        done += got


def _remove(path: PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


__all__ = [
    "FORMAT",
    "Cancelled",
    "Entry",
    "Header",
    "copy_range",
    "dump_header",
    "read_header",
    "read_row_mean",
    "read_rows",
    "read_tensor_specs",
    "write_edited",
    "write_rows",
]
