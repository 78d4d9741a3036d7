"""Content hashes of a checkpoint's files: what a saved plan pins and a manifest records.

Every byte of every file is hashed (sha256, as the Hugging Face cache names its blobs), so a source changed
anywhere, not only at its ends, is told from the one a plan was made from. Files are hashed two at a time: hashlib
releases the GIL, so a surgery hashes beside its weight copy.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .inventory import MANIFEST, Inventory

CHUNK_BYTES = 16 << 20
PARALLEL_FILES = 2


class Cancelled(Exception):
    """Hashing stopped early on request (the surgery it was for is failing)."""


def fingerprint(path: Path, cancel: threading.Event | None = None) -> str:
    """``sha256:`` and the hex digest of the file's bytes (a symlink is followed: a cache snapshot is hashed by
    content, not trusted by its blob name). Once ``cancel`` is set, raises Cancelled at the next chunk."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(view):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"hashing {path} was cancelled")
            digest.update(view[:count])
    return f"sha256:{digest.hexdigest()}"


def fingerprint_files(inventory: Inventory, cancel: threading.Event | None = None) -> dict[str, str]:
    """The fingerprint of every file of the checkpoint but its manifest, by relative path."""
    names = [name for name in inventory.files if name != MANIFEST]
    with ThreadPoolExecutor(max_workers=PARALLEL_FILES, thread_name_prefix="vocabsurgeon-hash") as pool:
        hashes = pool.map(lambda name: fingerprint(inventory.path(name), cancel), names)
        return dict(zip(names, hashes, strict=True))
