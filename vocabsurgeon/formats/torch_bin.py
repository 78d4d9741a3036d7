"""``pytorch_model.bin`` files (``torch.save`` zip archives): specs without torch, rows and edits with it.

Implements the weight-format interface described in :mod:`vocabsurgeon.formats.weights`.

A ``torch.save`` file is a zip archive ``<archive>/data.pkl`` (the pickled state dict), ``<archive>/data/<key>``
(one raw record per storage) and a few small records (``byteorder``, ``version``, ...). In the pickle each tensor
is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`` (or ``_v3`` with an
explicit dtype for dtypes that have no typed storage class, such as float8), and each storage is a persistent id
``("storage", <storage class>, key, location, numel)``. torch 2.13 still names the legacy typed classes
(``torch.FloatStorage``, ``torch.BFloat16Storage``, ...; ``numel`` in elements), and for float8/uint16/...
``torch.storage.UntypedStorage`` (``numel`` in bytes) plus a ``torch.<dtype>`` global.

:func:`read_tensor_specs` interprets that pickle with a restricted unpickler that maps those few globals to inert
stand-ins, so read-only commands never import torch (nor run code from the file). Every other function imports
torch lazily and loads with ``weights_only=True``; nothing here ever unpickles with arbitrary globals.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import shutil
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeGuard

import numpy as np

from vocabsurgeon.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    OutputExistsError,
    UnsupportedCheckpointError,
    VocabSurgeonError,
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
    grown_shape,
    rows_shape,
)

if TYPE_CHECKING:
    import torch

PathLike = str | os.PathLike[str]

#: the largest piece of a tensor handled at once while averaging rows.
CHUNK_BYTES = 64 << 20

#: what the first pickle of a legacy (pre torch 1.6, ``_use_new_zipfile_serialization=False``) file holds.
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C

_RESAVE_HINT = "re-save it with a recent torch: torch.save(torch.load(path, weights_only=True), new_path)"

#: legacy typed storage classes (``torch.<name>``) -> dtype; each element of such a storage is one tensor element.
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "F64",
    "FloatStorage": "F32",
    "HalfStorage": "F16",
    "BFloat16Storage": "BF16",
    "LongStorage": "I64",
    "IntStorage": "I32",
    "ShortStorage": "I16",
    "CharStorage": "I8",
    "ByteStorage": "U8",
    "BoolStorage": "BOOL",
}

#: typed storage classes torch can write whose dtype vocabsurgeon has no name for -> that torch dtype.
_UNSUPPORTED_STORAGES: dict[str, str] = {
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}

#: ``torch.<attribute>`` dtype globals (``_rebuild_tensor_v3``'s dtype argument) -> dtype.
_TORCH_DTYPES: dict[str, str] = {
    "float64": "F64",
    "double": "F64",
    "float32": "F32",
    "float": "F32",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "long": "I64",
    "int32": "I32",
    "int": "I32",
    "int16": "I16",
    "short": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}

#: dtype globals torch can write that vocabsurgeon has no name (or no element size) for.
_UNSUPPORTED_DTYPES = frozenset(
    {
        "uint16",
        "uint32",
        "uint64",
        "complex32",
        "complex64",
        "complex128",
        "chalf",
        "cfloat",
        "cdouble",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
        "float4_e2m1fn_x2",
        "qint8",
        "quint8",
        "qint32",
        "quint4x2",
        "quint2x4",
        "bits1x8",
        "bits2x4",
        "bits4x2",
        "bits8",
        "bits16",
    }
)


def read_tensor_specs(path: PathLike) -> dict[str, TensorSpec]:
    """Names, dtypes and shapes of every tensor in the state dict, in pickle order, without importing torch.

    Only ``data.pkl`` is read (and checked against the sizes of the data records in the zip directory); no tensor
    data is. Raises CheckpointFormatError for a truncated or corrupt file, for a pickle that uses anything but
    tensors in a dict, and UnsupportedCheckpointError for legacy (non-zip) files, TorchScript archives and dtypes
    without a safetensors name here (complex, uint16, ...).
    """
    path = Path(path)
    with _open_archive(path) as archive:
        prefix = _archive_prefix(archive, path)
        try:
            pickled = archive.read(f"{prefix}/data.pkl")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as error:
            raise CheckpointFormatError(f"cannot read data.pkl from the archive: {error}", path=path) from error
        state = _unpickle_state(pickled, path)
        specs: dict[str, TensorSpec] = {}
        for name, tensor in _state_items(state, path):
            specs[name] = _tensor_spec(name, tensor, path)
            _check_storage_record(archive, prefix, name, tensor, path)
    return specs


def load_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, memory-mapped on the CPU (tensors tied in the file share storage).

    The file must pass :func:`read_tensor_specs` first; then torch loads it with ``weights_only=True`` (never
    unsafe unpickling). Any torch failure becomes a CheckpointFormatError naming the file.
    """
    path = Path(path)
    read_tensor_specs(path)
    torch = _torch()
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointFormatError(f"refusing to unpickle: {_torch_refusal(error)}", path=path) from error
    except (RuntimeError, EOFError, ValueError, TypeError, KeyError, AttributeError, OSError) as error:
        raise CheckpointFormatError(f"torch cannot load the file: {_first_line(error)}", path=path) from error
    if not isinstance(loaded, Mapping) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in loaded.items()
    ):
        raise CheckpointFormatError("torch loaded something other than a dict of tensors", path=path)
    return loaded  # type: ignore[return-value]


def read_rows(path: PathLike, name: str, rows: Sequence[int], *, axis: int = 0) -> np.ndarray:
    """Rows ``rows`` (indices along dim 0, any order, repeats allowed) of tensor ``name`` as float32.

    The result has shape ``(len(rows), *shape[1:])``; with ``axis=1`` (a ``(1, V)`` buffer) the rows are its
    elements and the result has shape ``(len(rows),)``. The file is memory-mapped, so only the pages holding those
    rows are read.
    """
    torch = _torch()
    tensor = _row_tensor(load_state_dict(path), name, axis)
    index = np.asarray(rows, dtype=np.int64).reshape(-1)
    _check_rows(name, tensor.shape[0], index)
    picked = tensor.index_select(0, torch.from_numpy(index))
    return picked.to(torch.float32).numpy()


def read_row_mean(path: PathLike, name: str, exclude: Collection[int] = (), *, axis: int = 0) -> np.ndarray:
    """Float32 mean of the rows of tensor ``name`` not listed in ``exclude``, shape ``shape[1:]``.

    With ``axis=1`` (a ``(1, V)`` buffer) the rows are its elements and the mean is a 0-d array.

    The tensor is summed in float64 over chunks of about 64 MiB of the file, so memory stays bounded whatever its
    size. Raises ValueError if no row is left to average.
    """
    torch = _torch()
    tensor = _row_tensor(load_state_dict(path), name, axis)
    n_rows = tensor.shape[0]
    excluded = np.unique(np.asarray(list(exclude), dtype=np.int64))
    _check_rows(name, n_rows, excluded)
    kept = np.ones(n_rows, dtype=bool)
    kept[excluded] = False
    n_kept = int(kept.sum())
    if n_kept == 0:
        raise ValueError(f"{name}: no rows left to average")
    row_bytes = tensor[0].numel() * tensor.element_size()
    chunk_rows = max(1, CHUNK_BYTES // max(1, row_bytes))
    total = torch.zeros(tensor.shape[1:], dtype=torch.float64)
    for start in range(0, n_rows, chunk_rows):
        stop = min(n_rows, start + chunk_rows)
        block = tensor[start:stop]
        if not kept[start:stop].all():
            block = block[torch.from_numpy(kept[start:stop])]
        total += block.to(torch.float64).sum(dim=0)
    return (total / n_kept).to(torch.float32).numpy()


def write_edited(
    src: PathLike, dst: PathLike, edits: Mapping[str, TensorEdit], progress: Progress | None = None
) -> None:
    """Write ``dst`` as ``torch.save`` of the state dict in ``src`` with ``edits`` applied.

    An edited tensor grows along its vocabulary axis (``edit.axis``: dim 0, or dim 1 of a ``(1, V)`` buffer) to
    ``new_rows`` (old rows kept) and gets ``values`` at ``indices``, cast to its dtype by torch. Tensors tied in
    ``src`` (same storage, offset, shape and stride, like tied input and output embeddings) stay one shared tensor
    in ``dst``: an edit of one applies to all, and differing edits for tied names raise ValueError. A tensor that
    merely overlaps an edited one (another view of its storage) keeps the old values. Every other tensor is written
    unchanged. ``dst`` must not exist (nor be a symlink); ``progress`` receives the byte count of each written
    piece. A partly written ``dst`` is removed on failure.
    """
    src, dst = Path(src), Path(dst)
    specs = read_tensor_specs(src)
    check_edits(specs, edits)
    _check_destination(src, dst)
    tensors = load_state_dict(src)

    ties = _tie_groups(tensors)
    replaced: dict[str, torch.Tensor] = {}
    for name in edits:
        if name in replaced:
            continue
        group = ties.get(name, (name,))
        grown = apply_edit(tensors[name], _group_edit(group, edits))
        for member in group:
            replaced[member] = grown

    output: dict[str, torch.Tensor] = OrderedDict() if isinstance(tensors, OrderedDict) else {}
    for name, tensor in tensors.items():
        output[name] = replaced.get(name, tensor)
    metadata = getattr(tensors, "_metadata", None)
    if metadata is not None:
        # Module versions that nn.Module.load_state_dict passes to _load_from_state_dict.
        output._metadata = metadata  # type: ignore[attr-defined]
    _save(output, dst, progress)


def write_state_dict(tensors: Mapping[str, torch.Tensor], dst: PathLike, progress: Progress | None = None) -> None:
    """Write ``tensors`` to the new file ``dst`` with ``torch.save`` (as a plain dict).

    Tensors sharing storage are stored once, as torch always does. ``dst`` must not exist (nor be a symlink);
    ``progress`` receives the byte count of each written piece. A partly written ``dst`` is removed on failure.
    """
    torch = _torch()
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name!r}: a state dict maps tensor names to tensors")
    _check_destination(None, Path(dst))
    _save(dict(tensors), Path(dst), progress)


class TorchBin:
    """The :class:`~vocabsurgeon.formats.weights.WeightFormat` of ``pytorch_model.bin`` files. torch pickles whole
    tensors, so an edited file is loaded (memory-mapped) and saved anew, and rows cannot be written in place."""

    writes_rows_in_place = False

    def read_file(self, path: Path, relative: str) -> WeightFile:
        specs = {name: replace(spec, file=relative) for name, spec in read_tensor_specs(path).items()}
        return WeightFile(relative, specs)

    def read_rows(self, file: WeightFile, path: Path, name: str, rows: Sequence[int], *, axis: int = 0) -> np.ndarray:
        return read_rows(path, name, rows, axis=axis)

    def read_row_mean(
        self, file: WeightFile, path: Path, name: str, exclude: Collection[int] = (), *, axis: int = 0
    ) -> np.ndarray:
        return read_row_mean(path, name, exclude, axis=axis)

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
        if started is not None:
            started()  # torch.save runs in one call: nothing to wait for
        if edits:
            write_edited(src, dst, edits, progress)
            return
        _check_destination(src, dst)
        shutil.copyfile(src, dst)  # follows symlinks: a cache snapshot is copied by content
        if progress is not None:
            progress(dst.stat().st_size)

    def write_rows(self, path: Path, edits: Mapping[str, TensorEdit]) -> None:
        raise NotImplementedError("pytorch_model.bin rows cannot be written in place")

    @contextlib.contextmanager
    def row_bytes(self, file: WeightFile, path: Path, name: str) -> Iterator[RowBytes]:
        torch = _torch()
        tensor = load_state_dict(path)[name]
        yield _TensorRows(tensor.contiguous().view(-1).view(torch.uint8).numpy())


class _TensorRows:
    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def read(self, first: int, count: int, row_bytes: int) -> np.ndarray:
        return self.data[first * row_bytes : (first + count) * row_bytes].reshape(count, row_bytes)


FORMAT = TorchBin()


# --------------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _StorageClass:
    """Stand-in for a ``torch.*Storage`` class; only its name matters."""

    name: str


@dataclass(frozen=True)
class _DType:
    """Stand-in for a ``torch.<dtype>`` global."""

    torch_name: str


@dataclass(frozen=True)
class _Storage:
    """Stand-in for a storage: the data record it lives in, its element dtype and size."""

    key: str
    dtype: str | None  # None for untyped (byte) storages and unsupported typed ones
    kind: str  # the torch class name, for messages
    numel: int  # elements of ``dtype``, or bytes when untyped

    @property
    def nbytes(self) -> int:
        return self.numel if self.dtype is None else self.numel * DTYPE_SIZES[self.dtype]


@dataclass(frozen=True)
class _Tensor:
    """Stand-in for a tensor: where it lives and what it looks like; ``dtype`` is a torch name if unsupported."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str
    supported: bool


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    metadata: object = None,
) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise _BadPickle("a tensor without a storage")
    if storage.kind in _UNSUPPORTED_STORAGES:
        unsupported = f"torch.{_UNSUPPORTED_STORAGES[storage.kind]}"
        return _tensor(storage, storage_offset, size, stride, unsupported, supported=False)
    if storage.dtype is None:
        raise _BadPickle("an untyped storage rebuilt without a dtype")
    return _tensor(storage, storage_offset, size, stride, storage.dtype, supported=True)


def _rebuild_tensor_v3(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    dtype: object,
    metadata: object = None,
) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise _BadPickle("a tensor without a storage")
    if not isinstance(dtype, _DType):
        raise _BadPickle("a tensor without a dtype")
    name = _TORCH_DTYPES.get(dtype.torch_name)
    if name is None:
        return _tensor(storage, storage_offset, size, stride, f"torch.{dtype.torch_name}", supported=False)
    return _tensor(storage, storage_offset, size, stride, name, supported=True)


def _rebuild_parameter(data: object, requires_grad: object, backward_hooks: object, state: object = None) -> object:
    if not isinstance(data, _Tensor):
        raise _BadPickle("a parameter without a tensor")
    return data


def _tensor(storage: _Storage, offset: object, size: object, stride: object, dtype: str, *, supported: bool) -> _Tensor:
    if not _is_count(offset) or not _is_counts(size) or not _is_counts(stride) or len(size) != len(stride):
        raise _BadPickle("a tensor with a malformed offset, size or stride")
    return _Tensor(storage, offset, tuple(size), tuple(stride), dtype, supported)


def _is_count(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0


def _is_counts(value: object) -> TypeGuard[tuple[int, ...]]:
    return isinstance(value, tuple) and all(_is_count(item) for item in value)


class _BadPickle(Exception):
    """Raised inside the unpickler; becomes a CheckpointFormatError with the path."""


#: the only globals a zip-format state dict pickle uses (besides storage classes and dtypes).
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict into stand-ins; refuses every global outside the handful a state dict needs."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and (name in _STORAGE_DTYPES or name in _UNSUPPORTED_STORAGES):
            return _StorageClass(name)
        if (module, name) in {("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")}:
            return _StorageClass("UntypedStorage")
        if module == "torch" and (name in _TORCH_DTYPES or name in _UNSUPPORTED_DTYPES):
            return _DType(name)
        raise _BadPickle(f"refusing to unpickle {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _BadPickle(f"unknown persistent id {str(pid)[:80]}")
        _, storage_class, key, _location, numel = pid
        if not isinstance(storage_class, _StorageClass) or not isinstance(key, str) or not _is_count(numel):
            raise _BadPickle(f"malformed storage reference {str(pid)[:80]}")
        return _Storage(key, _STORAGE_DTYPES.get(storage_class.name), storage_class.name, numel)


class _NoGlobalsUnpickler(pickle.Unpickler):
    """For peeking at a legacy file's first pickle, which is a plain int."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent id")


def _open_archive(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError as error:
        raise CheckpointNotFoundError("no such file", path=path) from error
    except (zipfile.BadZipFile, EOFError, ValueError) as error:
        if _is_legacy(path):
            raise UnsupportedCheckpointError(
                "legacy (pre torch 1.6, non-zip) torch.save format is not supported", path=path, hint=_RESAVE_HINT
            ) from error
        raise CheckpointFormatError(
            "not a torch.save zip archive (truncated, corrupt, or not a PyTorch checkpoint)", path=path
        ) from error
    except OSError as error:
        raise CheckpointFormatError(f"cannot read the file: {error.strerror or error}", path=path) from error


def _is_legacy(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
        first = _NoGlobalsUnpickler(io.BytesIO(head)).load()
    except Exception:  # any failure to parse just means "not the legacy magic number"
        return False
    return type(first) is int and first == _LEGACY_MAGIC_NUMBER


def _archive_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    names = archive.namelist()
    # Like torch's reader: the archive's top directory is the one its first record lives in.
    prefix = names[0].split("/", 1)[0] if names and "/" in names[0] else ""
    if not prefix or f"{prefix}/data.pkl" not in names:
        raise CheckpointFormatError("zip archive has no data.pkl; not a torch.save checkpoint", path=path)
    if f"{prefix}/constants.pkl" in names:
        raise UnsupportedCheckpointError(
            "a TorchScript archive is not a state dict", path=path, hint="save model.state_dict() with torch.save"
        )
    if f"{prefix}/byteorder" in names and archive.read(f"{prefix}/byteorder").strip() not in (b"", b"little"):
        raise UnsupportedCheckpointError("big-endian torch.save files are not supported", path=path)
    return prefix


def _unpickle_state(pickled: bytes, path: Path) -> object:
    try:
        return _StateDictUnpickler(io.BytesIO(pickled)).load()
    except _BadPickle as error:
        raise CheckpointFormatError(str(error), path=path) from error
    except VocabSurgeonError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
    ) as error:
        raise CheckpointFormatError(f"data.pkl is not a valid state dict pickle: {error}", path=path) from error
    except RecursionError as error:
        raise CheckpointFormatError("data.pkl nests too deeply", path=path) from error


def _state_items(state: object, path: Path) -> list[tuple[str, _Tensor]]:
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(
            f"expected a state dict (tensor names to tensors), found a pickled {type(state).__name__}", path=path
        )
    items: list[tuple[str, _Tensor]] = []
    for name, value in state.items():
        if not isinstance(name, str):
            raise CheckpointFormatError(f"state dict key {name!r} is not a string", path=path)
        if isinstance(value, Mapping):
            raise CheckpointFormatError(
                f"expected a state dict, but {name!r} holds a nested dict",
                path=path,
                hint=f"save the state dict under {name!r} on its own with torch.save",
            )
        if not isinstance(value, _Tensor):
            raise CheckpointFormatError(
                f"state dict entry {name!r} is a {type(value).__name__}, not a tensor", path=path
            )
        items.append((name, value))
    return items


def _tensor_spec(name: str, tensor: _Tensor, path: Path) -> TensorSpec:
    if not tensor.supported:
        raise UnsupportedCheckpointError(f"tensor {name} has dtype {tensor.dtype}, which is not supported", path=path)
    size = DTYPE_SIZES[tensor.dtype]
    if tensor.storage.dtype is None:
        capacity = tensor.storage.numel // size
    elif DTYPE_SIZES[tensor.storage.dtype] == size:
        capacity = tensor.storage.numel
    else:
        raise CheckpointFormatError(f"tensor {name} is {tensor.dtype} on a {tensor.storage.kind}", path=path)
    if all(tensor.shape):
        end = tensor.offset + sum((dim - 1) * step for dim, step in zip(tensor.shape, tensor.stride, strict=True))
        if end >= capacity:
            raise CheckpointFormatError(f"tensor {name} reaches past the end of its storage", path=path)
    return TensorSpec(name, tensor.dtype, tensor.shape)


def _check_storage_record(archive: zipfile.ZipFile, prefix: str, name: str, tensor: _Tensor, path: Path) -> None:
    try:
        info = archive.getinfo(f"{prefix}/data/{tensor.storage.key}")
    except KeyError:
        raise CheckpointFormatError(
            f"tensor {name}: data record {tensor.storage.key} is missing from the archive", path=path
        ) from None
    if info.file_size < tensor.storage.nbytes:
        raise CheckpointFormatError(
            f"tensor {name}: data record {tensor.storage.key} holds {info.file_size} bytes, "
            f"its storage needs {tensor.storage.nbytes}",
            path=path,
        )


# --------------------------------------------------------------------------------------------------- with torch


def _torch() -> Any:
    # Imported lazily so that read-only commands never pay for (or need) torch.
    import torch

    return torch


def _torch_refusal(error: BaseException) -> str:
    # torch's message mostly explains how to load unsafely (weights_only=False); only its diagnosis is worth showing.
    text = str(error)
    match = re.search(r"WeightsUnpickler error: (.*?\.)(?:\s|$)", text)
    if match:
        return match.group(1)
    for paragraph in re.split(r"\n\s*\n", text):
        sentence = " ".join(paragraph.split())
        if sentence and "weights_only" not in sentence and "documentation" not in sentence:
            return sentence
    return "torch's weights_only unpickler refused the file"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _row_tensor(tensors: Mapping[str, torch.Tensor], name: str, axis: int = 0) -> torch.Tensor:
    """Tensor ``name`` as rows along its vocabulary ``axis`` (a ``(1, V)`` buffer as its ``V`` elements)."""
    if name not in tensors:
        raise KeyError(f"no tensor named {name!r}")
    tensor = tensors[name]
    if tensor.dim() == 0:
        raise ValueError(f"{name}: a scalar tensor has no rows")
    dtype = _TORCH_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: cannot read rows of dtype {tensor.dtype}")
    return tensor.reshape(rows_shape(tuple(tensor.shape), axis, name))


def _check_rows(name: str, n_rows: int, index: np.ndarray) -> None:
    if len(index) and (index.min() < 0 or index.max() >= n_rows):
        raise IndexError(f"{name}: a row index is outside 0..{n_rows - 1}")


def _tie_groups(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, ...]]:
    """Names of tensors that are the same view of the same storage, for each such name."""
    by_view: dict[tuple[object, ...], list[str]] = {}
    for name, tensor in tensors.items():
        storage = tensor.untyped_storage()
        if storage.nbytes() == 0:
            # Empty storages may all report data_ptr 0 without being shared.
            continue
        view = (storage.data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        by_view.setdefault(view, []).append(name)
    return {name: tuple(names) for names in by_view.values() for name in names}


def _group_edit(group: Sequence[str], edits: Mapping[str, TensorEdit]) -> TensorEdit:
    named = [(name, edits[name]) for name in group if name in edits]
    first_name, first = named[0]
    for name, edit in named[1:]:
        if not _same_edit(first, edit):
            raise ValueError(f"{first_name} and {name} share their storage (tied weights) but get different edits")
    return first


def _same_edit(a: TensorEdit, b: TensorEdit) -> bool:
    left, right = np.asarray(a.values, dtype=np.float32), np.asarray(b.values, dtype=np.float32)
    return a == b and left.shape == right.shape and left.tobytes() == right.tobytes()


def apply_edit(tensor: torch.Tensor, edit: TensorEdit) -> torch.Tensor:
    """A grown copy of ``tensor`` with the edit's rows set, cast with torch's own rounding (a Parameter stays one).

    The rows are taken along ``edit.axis``: a ``(1, V)`` buffer grows as its ``(V,)`` elements, then gets its
    ``(1, new_rows)`` shape back.
    """
    torch = _torch()
    shape = tuple(tensor.shape)
    rows = tensor.reshape(rows_shape(shape, edit.axis))
    grown = torch.empty((edit.new_rows, *rows.shape[1:]), dtype=tensor.dtype)
    grown[: rows.shape[0]] = rows
    if edit.indices:
        values = torch.from_numpy(np.array(edit.values, dtype=np.float32, copy=True))
        grown[torch.tensor(edit.indices, dtype=torch.long)] = values.to(tensor.dtype)
    grown = grown.reshape(grown_shape(shape, edit.new_rows, edit.axis))
    if isinstance(tensor, torch.nn.Parameter):
        return torch.nn.Parameter(grown, requires_grad=tensor.requires_grad)
    return grown


# --------------------------------------------------------------------------------------------------- writing


def _check_destination(src: Path | None, dst: Path) -> None:
    if os.path.islink(dst):
        raise OutputExistsError("output path is a symlink; refusing to write through it", path=dst)
    if os.path.lexists(dst):
        if src is not None and os.path.samefile(src, dst):
            raise OutputExistsError("output path is the source file itself", path=dst)
        raise OutputExistsError("output file already exists", path=dst)


class _CountingWriter:
    """The file object torch.save writes to, reporting each piece's size."""

    def __init__(self, file: IO[bytes], progress: Progress | None) -> None:
        self._file = file
        self._progress = progress

    def write(self, data: bytes | memoryview) -> int:
        written = self._file.write(data)
        if self._progress is not None:
            self._progress(len(data))
        return written

    def flush(self) -> None:
        self._file.flush()


def _save(state: Mapping[str, torch.Tensor], dst: Path, progress: Progress | None) -> None:
    torch = _torch()
    try:
        # "x" also refuses a symlink created since the check, even a dangling one. Not a with-block because a
        # failed save must delete the file, which only we may do, and only once we know we created it.
        output = open(dst, "xb")  # noqa: SIM115
    except FileExistsError as error:
        raise OutputExistsError("output file already exists", path=dst) from error
    except FileNotFoundError as error:
        raise CheckpointNotFoundError("output directory does not exist", path=dst.parent) from error
    try:
        with output:
            torch.save(state, _CountingWriter(output, progress))
            output.flush()
            os.fsync(output.fileno())
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
