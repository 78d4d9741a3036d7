"""What every weight format module shares: tensor specs, row edits and dtype conversion.

A weight format module (``safetensors_stream``, ``torch_bin``) exposes the same functions:

- ``read_tensor_specs(path) -> dict[str, TensorSpec]``: names, dtypes and shapes from the header only.
- ``read_rows(path, name, rows) -> np.ndarray``: the given rows of one tensor as float32, shape (len(rows), *rest).
- ``read_row_mean(path, name, exclude) -> np.ndarray``: float32 mean over all rows not in ``exclude``, streamed.
- ``write_edited(src, dst, edits, progress=None) -> None``: ``dst`` is ``src`` with the ``edits`` applied; every
  tensor without an edit keeps its bytes.

Dtype names are the safetensors ones (``F32``, ``BF16``, ...) whatever the file format, so plans never mention a
framework. numpy does the arithmetic; bfloat16 is handled bit-wise because numpy has no such type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class TensorEdit:
    """Grow a tensor along dim 0 to ``new_rows`` and set the rows listed in ``indices`` to ``values``.

    ``values`` is float32 with shape ``(len(indices), *spec.shape[1:])``. Indices below the old row count overwrite
    rows in place; every index from the old row count to ``new_rows - 1`` must be given, so no row is ever
    left uninitialized.
    """

    new_rows: int
    indices: tuple[int, ...] = ()
    values: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.float32), compare=False)

    def check(self, spec: TensorSpec) -> None:
        old_rows = spec.shape[0]
        if self.new_rows < old_rows:
            raise ValueError(f"{spec.name}: cannot shrink from {old_rows} to {self.new_rows} rows")
        if len(set(self.indices)) != len(self.indices):
            raise ValueError(f"{spec.name}: a row is set twice")
        if any(i < 0 or i >= self.new_rows for i in self.indices):
            raise ValueError(f"{spec.name}: a row index is outside 0..{self.new_rows - 1}")
        missing = set(range(old_rows, self.new_rows)) - set(self.indices)
        if missing:
            raise ValueError(f"{spec.name}: new rows {sorted(missing)[:5]}... have no values")
        expected = (len(self.indices), *spec.shape[1:])
        if tuple(self.values.shape) != expected:
            raise ValueError(f"{spec.name}: values have shape {tuple(self.values.shape)}, expected {expected}")
        if self.indices and spec.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{spec.name}: cannot write rows of dtype {spec.dtype}")


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
