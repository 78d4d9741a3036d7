"""Content hashes of a checkpoint's files: what a saved plan pins and a manifest records.

Every byte of every file is hashed (sha256, as the Hugging Face cache names its blobs), so a source changed
anywhere, not only at its ends, is told from the one a plan was made from. Files are hashed two at a time: hashlib
releases the GIL, so a surgery hashes beside its weight copy. A small checkpoint is hashed in the calling thread,
with a buffer no larger than its largest file: starting threads and zeroing a 16 MB buffer per file cost more than
hashing a tiny model, which is what a re-run of a batch over many small directories does.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .inventory import MANIFEST, Inventory

CHUNK_BYTES = 16 << 20
PARALLEL_FILES = 2
#: checkpoints smaller than this are hashed in the calling thread
PARALLEL_ABOVE = 64 << 20


class Cancelled(Exception):
    """Hashing stopped early on request (the surgery it was for is failing)."""


def fingerprint(path: Path, cancel: threading.Event | None = None) -> str:
    """``sha256:`` and the hex digest of the file's bytes (a symlink is followed: a cache snapshot is hashed by
    content, not trusted by its blob name). Once ``cancel`` is set, raises Cancelled at the next chunk."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        view = memoryview(bytearray(max(1, min(CHUNK_BYTES, _size(handle)))))
        while count := handle.readinto(view):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"hashing {path} was cancelled")
            digest.update(view[:count])
    return f"sha256:{digest.hexdigest()}"


def fingerprint_files(inventory: Inventory, cancel: threading.Event | None = None) -> dict[str, str]:
    """The fingerprint of every file of the checkpoint but its manifest, by relative path."""
    return fingerprint_paths(inventory.root, inventory.files, cancel)


def fingerprint_paths(root: Path, files: Iterable[str], cancel: threading.Event | None = None) -> dict[str, str]:
    """:func:`fingerprint_files` of the files ``files`` (relative to ``root``) without reading the checkpoint
    (batch's up-to-date check, which skips a directory before parsing anything of it)."""
    names = [name for name in files if name != MANIFEST]
    if sum((root / name).stat().st_size for name in names) < PARALLEL_ABOVE:
        return {name: fingerprint(root / name, cancel) for name in names}
    with ThreadPoolExecutor(max_workers=PARALLEL_FILES, thread_name_prefix="vocabsurgeon-hash") as pool:
        hashes = pool.map(lambda name: fingerprint(root / name, cancel), names)
        return dict(zip(names, hashes, strict=True))


def _size(handle: object) -> int:
    import os

    return os.fstat(handle.fileno()).st_size  # type: ignore[attr-defined]
