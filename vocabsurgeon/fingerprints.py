"""Content hashes of a checkpoint's files: what a saved plan pins and a manifest records.

Every byte of every file is hashed (sha256, as the Hugging Face cache names its blobs), so a source changed
anywhere, not only at its ends, is told from the one a plan was made from. Files are hashed two at a time: hashlib
releases the GIL, so a surgery hashes beside its weight copy. A small checkpoint is hashed in the calling thread,
with a buffer no larger than its largest file: starting threads and zeroing a 16 MB buffer per file cost more than
hashing a tiny model, which is what a re-run of a batch over many small directories does.

A surgery begins hashing as soon as it has read the source (:func:`hashing_ahead`), in a background thread, while
it plans: planning is CPU work on the tokenizer, hashing reads the weights. By the time the weights are copied they
are in the page cache, so on a cold cache the disk reads no longer wait for the planning.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
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


def fingerprint_files(
    inventory: Inventory, cancel: threading.Event | None = None, linked: Collection[str] = ()
) -> dict[str, str]:
    """The fingerprint of every file of the checkpoint but its manifest, by relative path; those begun by
    :func:`hashing_ahead` for this very inventory when they were. ``linked``: files the output hard-links
    (``--link-unchanged``), left out: never read, they are recorded by the link made (:func:`linked_fingerprint`)."""
    names = [name for name in inventory.files if name != MANIFEST and name not in linked]
    known: dict[str, str] = {}
    ahead = _AHEAD.get(id(inventory))
    if ahead is not None and ahead.inventory is inventory:
        try:
            known = ahead.result(cancel)
        except Cancelled:
            if cancel is not None and cancel.is_set():
                raise
            known = {}  # stopped by the block that began it (another surgery of this inventory): hash here
    hashed = {**known, **fingerprint_paths(inventory.root, [name for name in names if name not in known], cancel)}
    return {name: hashed[name] for name in names}


def fingerprint_paths(root: Path, files: Iterable[str], cancel: threading.Event | None = None) -> dict[str, str]:
    """:func:`fingerprint_files` of the files ``files`` (relative to ``root``) without reading the checkpoint
    (batch's up-to-date check, which skips a directory before parsing anything of it)."""
    names = [name for name in files if name != MANIFEST]
    if sum((root / name).stat().st_size for name in names) < PARALLEL_ABOVE:
        return {name: fingerprint(root / name, cancel) for name in names}
    with ThreadPoolExecutor(max_workers=PARALLEL_FILES, thread_name_prefix="vocabsurgeon-hash") as pool:
        hashes = pool.map(lambda name: fingerprint(root / name, cancel), names)
        return dict(zip(names, hashes, strict=True))


def linked_fingerprint(path: Path) -> str:
    """What a manifest records for a source file the output shares (a hard link): ``linked:`` and its device,
    inode, size and modification time, not its content. Reading every byte of files a surgery does not change would
    cost more than the surgery; the output holds that very file, so its content is the source's by construction.
    Taken of the link once made (the inode the output holds, even if the source path was replaced meanwhile). A
    source file replaced (another inode) or written in place (another modification time) no longer matches."""
    status = os.stat(path)
    return f"{LINKED}{status.st_dev}:{status.st_ino}:{status.st_size}:{status.st_mtime_ns}"


LINKED = "linked:"


def unchanged_since(recorded: object, root: Path, files: Iterable[str]) -> bool:
    """Whether the files ``files`` of the checkpoint at ``root`` are those a manifest's ``source_files``
    (``recorded``) describe: the same names, each content hash and each :func:`linked_fingerprint` as recorded.
    Nothing is parsed (batch's up-to-date check)."""
    names = [name for name in files if name != MANIFEST]
    if not isinstance(recorded, dict) or set(recorded) != set(names):
        return False
    linked = {name for name in names if str(recorded[name]).startswith(LINKED)}
    if any(recorded[name] != linked_fingerprint(root / name) for name in linked):
        return False
    hashed = [name for name in names if name not in linked]
    return fingerprint_paths(root, hashed) == {name: recorded[name] for name in hashed}


@contextmanager
def hashing_ahead(inventory: Inventory, *, weights: bool = True) -> Iterator[None]:
    """Hash ``inventory``'s files in a background thread from now on; :func:`fingerprint_files` of it inside the
    block waits for that work instead of starting again. ``weights=False`` leaves the weight files to be hashed
    when the surgery knows which it hard-links (``--link-unchanged``: those are never read). Leaving the block
    stops hashing that is still under way (a surgery that failed does not read the rest of a large checkpoint)."""
    if _AHEAD.get(id(inventory)) is not None:
        yield  # already under way for this inventory (a nested or concurrent surgery): that job serves both
        return
    skip = {name for ws in inventory.weights for name in ws.files} if not weights else set()
    job = _Ahead(inventory, [name for name in inventory.files if name != MANIFEST and name not in skip])
    _AHEAD[id(inventory)] = job
    try:
        job.thread.start()
        yield
    finally:
        try:
            job.cancel.set()
            if job.thread.ident is not None:
                job.thread.join()
        finally:
            if _AHEAD.get(id(inventory)) is job:
                del _AHEAD[id(inventory)]


@dataclass
class _Ahead:
    """Hashing of ``names`` begun ahead of its use (see :func:`hashing_ahead`)."""

    inventory: Inventory
    names: list[str]
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    hashes: dict[str, str] = field(default_factory=dict)
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="vocabsurgeon-hash-ahead", daemon=True)

    def _run(self) -> None:
        try:
            self.hashes = fingerprint_paths(self.inventory.root, self.names, self.cancel)
        except BaseException as error:  # handed to the thread that waits for the result (Cancelled, OSError)
            self.error = error
        finally:
            self.done.set()

    def result(self, cancel: threading.Event | None) -> dict[str, str]:
        """The hashes, once done; Cancelled as soon as ``cancel`` is set (the hashing is stopped too)."""
        while not self.done.wait(0.05):
            if cancel is not None and cancel.is_set():
                self.cancel.set()
                raise Cancelled(f"hashing {self.inventory.root} was cancelled")
        error = self.error  # raised anew in the waiting thread (one exception object is not raised in two)
        if isinstance(error, Cancelled):
            raise Cancelled(str(error))
        if isinstance(error, OSError):
            raise OSError(error.errno, error.strerror, error.filename) from error
        if error is not None:
            raise RuntimeError(f"hashing {self.inventory.root} failed: {error}") from error
        return dict(self.hashes)


#: hashing begun ahead, by the id of its inventory (the job holds the inventory, so the id is not reused meanwhile)
_AHEAD: dict[int, _Ahead] = {}


def _size(handle: object) -> int:
    return os.fstat(handle.fileno()).st_size  # type: ignore[attr-defined]
