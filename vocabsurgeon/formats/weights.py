"""What every weight format shares: tensor specs, row edits, dtype conversion and the :class:`WeightFormat`
protocol that each format module implements once, as its ``FORMAT`` (the registry is
:data:`vocabsurgeon.formats.WEIGHT_FORMATS`).

A format reads each file's header once (:meth:`WeightFormat.read_file`, a :class:`WeightFile` whose specs carry
their file and, where the format has them, byte offsets); every later operation on that file takes the
:class:`WeightFile`, so no header is parsed twice in a surgery:

- ``read_rows(file, path, name, rows, *, axis=0) -> np.ndarray``: the given rows of one tensor as float32, shape
  (len(rows), *rest).
- ``read_row_mean(file, path, name, exclude, *, axis=0) -> np.ndarray``: float32 mean over all rows not in
  ``exclude``, streamed.
- ``write_edited(file, src, dst, edits, progress=None, cancel=None) -> None``: ``dst`` is ``src`` with the
  ``edits`` applied; every tensor without an edit keeps its bytes.
- ``write_rows(path, edits)``, where ``writes_rows_in_place``: overwrite the edits' rows of an already written
  file in place. Such a format is written first with placeholder rows (the copy needs no source read and starts at
  once) and its rows are computed afterwards, when the source rows they average are in the page cache.
- ``row_bytes(file, path, name)``: a reader of one tensor's raw rows, for comparing outputs with sources.

Rows are slices along the vocabulary axis: dim 0, or (``axis=1``) the elements of a ``(1, V)`` vocabulary buffer
such as BART's ``final_logits_bias``, which is laid out like a ``(V,)`` tensor (see :func:`rows_shape`).

Dtype names are the safetensors ones (``F32``, ``BF16``, ...) whatever the file format, so plans never mention a
framework. numpy does the arithmetic; bfloat16 is handled bit-wise because numpy has no such type.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

#: bytes per element of each safetensors dtype.
DTYPE_SIZES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}

#: the dtypes whose rows we can compute (means, random init); others are copied but never initialized.
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})

_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16}

#: called with the number of bytes just written, for progress bars.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class TensorSpec:
    """One tensor as a header describes it; no data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    #: the weight file holding it (relative to the checkpoint) and the absolute offset of its first byte there, when
    #: the format stores tensors as contiguous bytes (safetensors); "" and -1 otherwise
    file: str = field(default="", compare=False)
    offset: int = field(default=-1, compare=False)

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * DTYPE_SIZES[self.dtype]

    @property
    def row_bytes(self) -> int:
        """Bytes of one slice along dim 0 (one vocabulary row)."""
        count = 1
        for dim in self.shape[1:]:
            count *= dim
        return count * DTYPE_SIZES[self.dtype]

    def rows_view(self, axis: int = 0) -> TensorSpec:
        """This tensor as rows along its vocabulary ``axis`` (see :func:`rows_shape`): itself for axis 0, a
        ``(1, V)`` buffer as the ``(V,)`` tensor its bytes are laid out like."""
        return replace(self, shape=rows_shape(self.shape, axis, self.name))


def rows_shape(shape: tuple[int, ...], axis: int = 0, name: str = "tensor") -> tuple[int, ...]:
    """``shape`` seen as rows along the vocabulary ``axis``, the first dimension of the result.

    Axis 0 is the usual case (embeddings, 1-D biases): ``shape`` itself. Axis 1 is only allowed for a ``(1, V)``
    vocabulary buffer such as BART's ``final_logits_bias``, whose bytes are laid out exactly like a ``(V,)``
    tensor's: its rows are its ``V`` elements, so reading, averaging and growing it is what it is for a 1-D bias.
    Raises ValueError for any other axis or shape (and for a scalar, which has no rows).
    """
    if axis == 0 and shape:
        return shape
    if axis == 1 and len(shape) == 2 and shape[0] == 1:
        return (shape[1],)
    raise ValueError(f"{name}: shape {list(shape)} has no vocabulary axis {axis}")


def grown_shape(shape: tuple[int, ...], rows: int, axis: int = 0, name: str = "tensor") -> tuple[int, ...]:
    """``shape`` with ``rows`` entries along the vocabulary ``axis`` (see :func:`rows_shape`)."""
    rows_shape(shape, axis, name)  # validates
    return (*shape[:axis], rows, *shape[axis + 1 :])


@dataclass(frozen=True)
class TensorEdit:
    """Grow a tensor along its vocabulary ``axis`` to ``new_rows`` and set the rows in ``indices`` to ``values``.

    ``axis`` is 0 (rows are slices along dim 0) or 1 for a ``(1, V)`` vocabulary buffer, whose rows are its
    elements (see :meth:`TensorSpec.rows_view`). ``values`` is float32 with shape ``(len(indices), *row_shape)``
    where ``row_shape`` is ``spec.rows_view(axis).shape[1:]`` (``shape[1:]`` for axis 0, ``()`` for a buffer).
    Indices below the old row count overwrite rows in place; every index from the old row count to
    ``new_rows - 1`` must be given, so no row is ever left uninitialized.
    """

    new_rows: int
    indices: tuple[int, ...] = ()
    values: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.float32), compare=False)
    axis: int = 0

    def check(self, spec: TensorSpec) -> None:
        if not spec.shape:
            raise ValueError(f"{spec.name}: a scalar tensor has no rows to edit")
        view = spec.rows_view(self.axis)
        old_rows = view.shape[0]
        if self.new_rows < old_rows:
            raise ValueError(f"{spec.name}: cannot shrink from {old_rows} to {self.new_rows} rows")
        if len(set(self.indices)) != len(self.indices):
            raise ValueError(f"{spec.name}: a row is set twice")
        if any(i < 0 or i >= self.new_rows for i in self.indices):
            raise ValueError(f"{spec.name}: a row index is outside 0..{self.new_rows - 1}")
        missing = set(range(old_rows, self.new_rows)) - set(self.indices)
        if missing:
            raise ValueError(f"{spec.name}: new rows {sorted(missing)[:5]}... have no values")
        expected = (len(self.indices), *view.shape[1:])
        if tuple(self.values.shape) != expected:
            raise ValueError(f"{spec.name}: values have shape {tuple(self.values.shape)}, expected {expected}")
        if self.indices and spec.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{spec.name}: cannot write rows of dtype {spec.dtype}")

    def grows(self, spec: TensorSpec) -> bool:
        """Whether this edit adds rows to ``spec``."""
        return self.new_rows != spec.rows_view(self.axis).shape[0]

    def new_shape(self, spec: TensorSpec) -> tuple[int, ...]:
        """The shape of ``spec`` after this edit."""
        return grown_shape(spec.shape, self.new_rows, self.axis, spec.name)


def decode(raw: bytes | bytearray | memoryview | np.ndarray, dtype: str) -> np.ndarray:
    """Little-endian bytes of a float dtype -> float32 array (flat)."""
    buffer = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.view(np.uint8)
    if dtype == "BF16":
        return (buffer.view("<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype in _NUMPY:
        return buffer.view(np.dtype(_NUMPY[dtype]).newbyteorder("<")).astype(np.float32)
    raise ValueError(f"cannot decode dtype {dtype}")


def encode(values: np.ndarray, dtype: str) -> bytes:
    """float32 array -> little-endian bytes of ``dtype`` (bfloat16 rounded to nearest even, as torch does)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "BF16":
        bits = values.view(np.uint32)
        rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
        out = ((bits + rounding) >> 16).astype("<u2")
        nan = np.isnan(values)
        if nan.any():
            out[nan] = 0x7FC0
        return out.tobytes()
    if dtype in _NUMPY:
        return values.astype(np.dtype(_NUMPY[dtype]).newbyteorder("<")).tobytes()
    raise ValueError(f"cannot encode dtype {dtype}")


def check_edits(specs: Mapping[str, TensorSpec], edits: Mapping[str, TensorEdit]) -> None:
    """Raise ValueError if an edit names an unknown tensor or does not fit its tensor."""
    for name, edit in edits.items():
        if name not in specs:
            raise ValueError(f"no tensor named {name}")
        edit.check(specs[name])


@dataclass(frozen=True)
class WeightFile:
    """One weight file as its header describes it, read once: its tensors' specs in file order, and the format's
    own parsed header (``raw``: a safetensors :class:`~vocabsurgeon.formats.safetensors_stream.Header`)."""

    relative: str
    specs: dict[str, TensorSpec] = field(compare=False)
    raw: Any = field(default=None, compare=False, repr=False)


class RowBytes(Protocol):
    """Raw bytes of consecutive rows of one tensor (see :meth:`WeightFormat.row_bytes`)."""

    def read(self, first: int, count: int, row_bytes: int) -> np.ndarray: ...


class WeightFormat(Protocol):
    """A weight file format. One module implements it once and is listed in ``formats.WEIGHT_FORMATS``."""

    #: whether :meth:`write_rows` can overwrite rows of a written file in place
    writes_rows_in_place: ClassVar[bool]

    def read_file(self, path: Path, relative: str) -> WeightFile: ...

    def read_rows(
        self, file: WeightFile, path: Path, name: str, rows: Sequence[int], *, axis: int = 0
    ) -> np.ndarray: ...

    def read_row_mean(
        self, file: WeightFile, path: Path, name: str, exclude: Collection[int] = (), *, axis: int = 0
    ) -> np.ndarray: ...

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
        """``started`` is called once every copy of the file is under way (the caller may then hold the GIL for a
        while without stalling them); once ``cancel`` is set no further range starts."""
        ...

    def write_rows(self, path: Path, edits: Mapping[str, TensorEdit]) -> None: ...

    def row_bytes(self, file: WeightFile, path: Path, name: str) -> AbstractContextManager[RowBytes]: ...
