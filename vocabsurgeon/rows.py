"""The values of the rows a plan writes: each tensor op's rows, computed by their initialization (see
:mod:`vocabsurgeon.inits`), as the :class:`~vocabsurgeon.formats.weights.TensorEdit` a weight format applies.

Reads source rows through the weight set's headers (read once, with the inventory); writes nothing.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from .formats.weights import TensorEdit
from .inventory import Inventory, WeightSet
from .plan import Plan, TensorOp

#: subword-mean rows computed at once (their pieces' rows are gathered in float64)
SUBWORD_BATCH = 4096


def placeholder_edit(weights: WeightSet, op: TensorOp) -> TensorEdit:
    """The edit of ``op`` with zero rows of the right shape and no memory: what a format that writes rows in place
    is first written with, before the rows are computed."""
    shape = weights.specs[op.name].rows_view(op.axis).shape
    indices = tuple(i for group in op.rows for i in group.ids)
    return TensorEdit(op.rows_after, indices, np.broadcast_to(np.float32(0), (len(indices), *shape[1:])), op.axis)


def compute_edit(
    inventory: Inventory, weights: WeightSet, op: TensorOp, plan: Plan, learned: Mapping[int, np.ndarray] | None = None
) -> TensorEdit:
    """The edit of ``op``, its rows computed from the source: ``subword-mean`` the float64 mean of the rows of the
    placement's pieces (those within the tensor's rows), ``first-piece`` the row of the first of them, ``mean``
    the mean of all trained rows, ``zeros``, ``normal`` N(0, init_std) draws from a generator seeded by the plan's
    seed and the tensor's name, and ``distill`` the rows ``learned`` (see :mod:`vocabsurgeon.distill`)."""
    spec = weights.specs[op.name].rows_view(op.axis)
    path = inventory.path(op.file)
    header = weights.headers[op.file]
    handler = weights.handler
    indices = tuple(i for group in op.rows for i in group.ids)
    values = np.empty((len(indices), *spec.shape[1:]), dtype=np.float32)
    pieces_of = {p.id: p.pieces for p in plan.placements}
    rng = np.random.default_rng([plan.seed, zlib.crc32(op.name.encode())])
    position = 0
    for group in op.rows:
        span = slice(position, position + len(group.ids))
        position += len(group.ids)
        if group.init == "subword-mean":
            pieces = [tuple(i for i in pieces_of[idx] if i < spec.shape[0]) for idx in group.ids]
            values[span] = _subword_means(handler, header, path, op, pieces)
        elif group.init == "first-piece":
            first = [next(i for i in pieces_of[idx] if i < spec.shape[0]) for idx in group.ids]
            values[span] = handler.read_rows(header, path, op.name, first, axis=op.axis)  # type: ignore[attr-defined]
        elif group.init == "distill":
            if learned is None or any(idx not in learned for idx in group.ids):
                raise ValueError(f"{op.name}: distilled rows were not learned before writing")
            values[span] = np.stack([learned[idx] for idx in group.ids])
        elif group.init == "mean":
            exclude = [i for i in plan.exclude_from_mean if i < spec.shape[0]]
            values[span] = handler.read_row_mean(header, path, op.name, exclude, axis=op.axis)
        elif group.init == "zeros":
            values[span] = 0.0
        elif group.init == "normal":
            for k in range(span.start, span.stop):
                values[k] = rng.normal(0.0, plan.init_std, spec.shape[1:]).astype(np.float32)
        else:
            raise ValueError(f"{op.name}: rows cannot be initialized with {group.init!r}")
    return TensorEdit(op.rows_after, indices, values, op.axis)


def _subword_means(
    handler: object, header: object, path: object, op: TensorOp, pieces: list[tuple[int, ...]]
) -> np.ndarray:
    """For each tuple of piece ids, the float64 mean of those rows, as float32 (summed in order, as ``np.mean`` of
    the rows does): every row gathered in one read, and tokens with the same number of pieces summed at once (a
    Python loop of small means costs more than the reading)."""
    out = []
    for first in range(0, len(pieces), SUBWORD_BATCH):
        batch = pieces[first : first + SUBWORD_BATCH]
        if any(not ids for ids in batch):
            raise ValueError(f"{op.name}: a subword-mean row has no pieces within the tensor's rows")
        flat = [i for ids in batch for i in ids]
        gathered = handler.read_rows(header, path, op.name, flat, axis=op.axis)  # type: ignore[attr-defined]
        where = np.cumsum([0, *(len(ids) for ids in batch)])  # token k's rows are gathered[where[k]:where[k + 1]]
        result = np.empty((len(batch), *gathered.shape[1:]), dtype=np.float32)
        counts = np.diff(where)
        for count in np.unique(counts):
            tokens = np.flatnonzero(counts == count)
            rows = gathered[where[tokens][:, None] + np.arange(count)]  # (tokens, count, *row)
            result[tokens] = (rows.sum(axis=1, dtype=np.float64) / count).astype(np.float32)
        out.append(result)
    return np.concatenate(out) if out else np.empty((0,), dtype=np.float32)
