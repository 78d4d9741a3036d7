"""The life of an output directory: claimed by one surgery at a time, built in a staging directory beside it, given
the source's permissions, renamed into place; what a killed surgery leaves is found and removed.

- **One writer.** A surgery holds an exclusive ``flock`` on ``.NAME.vocabsurgeon-lock`` beside the output from
  before it checks the output until it has renamed the result into place; a second surgery to the same output
  fails at once. The kernel releases the lock of a killed process. The final rename also refuses to replace a
  directory that appeared meanwhile (``renameat2`` with ``RENAME_NOREPLACE``), whoever made it.
- **Staging.** ``.NAME.PID-HEX.vocabsurgeon-tmp`` beside the output, with a marker naming the process and the boot
  that made it. Holding the lock, a surgery removes every staging directory of the same output whose process is
  gone (SIGKILL, a power cut); ``audit`` reports those beside a checkpoint.
- **--force** replaces only a directory vocabsurgeon wrote (it has a manifest) or an empty one.
- **Permissions.** Each output file gets the permission bits of the source file it comes from, a new file those of
  the strictest source file, and each directory those of the source's: a private checkpoint stays private.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OutputExistsError
from .interrupts import deferred

MANIFEST = "vocabsurgeon.json"
STAGING_SUFFIX = ".vocabsurgeon-tmp"
OLD_SUFFIX = ".vocabsurgeon-old"
MARKER = ".vocabsurgeon-staging"


class OutputBusyError(OutputExistsError):
    """Another surgery is writing the same output."""


@contextlib.contextmanager
def claimed(target: Path) -> Iterator[None]:
    """Hold the output's lock (see the module docstring) for the ``with`` block. The parent directories it has to
    create for it are removed again if the block fails: a failed surgery leaves nothing behind."""
    missing = [parent for parent in [target.parent, *target.parent.parents] if not parent.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.vocabsurgeon-lock"
    succeeded = False
    handle = _lock(path, target)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
        succeeded = True
    finally:
        with deferred():
            if not handle.closed:  # ours: a process that opened it before is refused by the lock, not by the file
                with contextlib.suppress(OSError):
                    path.unlink()
                handle.close()
            if not succeeded:
                for parent in missing:  # deepest first
                    with contextlib.suppress(OSError):
                        parent.rmdir()


def _lock(path: Path, target: Path) -> Any:
    """The lock file, opened and locked: a file its holder unlinked after we opened it is no lock, so the path must
    still name the file locked (else open it again)."""
    import fcntl

    for _ in range(100):
        handle = open(path, "a+")  # noqa: SIM115 - the caller closes it
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise OutputBusyError(
                f"another vocabsurgeon run (pid {holder}) is writing this output", path=target
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()
    raise OutputBusyError("cannot lock this output: its lock file keeps changing", path=target)


def check_replaceable(target: Path) -> None:
    """``--force`` replaces a directory vocabsurgeon wrote or an empty one, nothing else."""
    if not target.exists():
        return
    if not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise OutputExistsError(
            "exists and is not a vocabsurgeon output (it has no vocabsurgeon.json); --force only replaces those",
            path=target,
            hint="choose another --out or remove it yourself",
        )


def make_staging(target: Path) -> Path:
    """A new staging directory beside ``target``, marked with this process (see :func:`remove_stale`)."""
    for _ in range(100):
        staging = target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{STAGING_SUFFIX}"
        try:
            staging.mkdir()
            (staging / MARKER).write_text(json.dumps(_owner()), encoding="utf-8")
        except FileExistsError:
            continue  # another's name: not ours to remove
        except BaseException:  # interrupted right after the mkdir: nothing may stay behind
            with deferred():
                shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging
    raise FileExistsError(f"cannot create a staging directory beside {target}")


def own_staging(target: Path) -> list[Path]:
    """This process's staging directories beside ``target`` (it holds the lock: no other writer of ours)."""
    return sorted(target.parent.glob(f".{glob_escape(target.name)}.{os.getpid()}-*{STAGING_SUFFIX}"))


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


@dataclass(frozen=True)
class Leftover:
    """A staging directory whose process is gone."""

    path: Path
    bytes: int


def stale_leftovers(directory: Path, name: str | None = None) -> list[Leftover]:
    """The staging (and moved-aside) directories in ``directory`` whose process no longer runs; only those of the
    output ``name`` when given."""
    prefix = f".{name}." if name is not None else "."
    found = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(prefix) or not entry.name.endswith((STAGING_SUFFIX, OLD_SUFFIX)):
            continue
        if entry.is_symlink() or not entry.is_dir() or _owner_alive(entry):
            continue
        found.append(Leftover(entry, _size(entry)))
    return sorted(found, key=lambda leftover: leftover.path.name)


def remove_stale(target: Path) -> list[Leftover]:
    """Remove what killed surgeries to ``target`` left beside it (called holding its lock)."""
    leftovers = stale_leftovers(target.parent, target.name)
    for leftover in leftovers:
        shutil.rmtree(leftover.path, ignore_errors=True)
    return leftovers


def move_into_place(staging: Path, target: Path, *, replace: bool) -> None:
    """Rename ``staging`` to ``target``, atomically. Without ``replace`` an existing ``target`` is an error, even one
    that appeared a moment ago; with it, the old directory is moved aside first and removed after."""
    (staging / MARKER).unlink(missing_ok=True)
    if not replace or not target.exists():
        _rename_no_replace(staging, target)
        return
    old = target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{OLD_SUFFIX}"
    with deferred():  # between the two renames no output is in place: no signal may stop it there
        os.rename(target, old)
        try:
            _rename_no_replace(staging, target)
        except BaseException:
            os.rename(old, target)
            raise
    shutil.rmtree(old, ignore_errors=True)


def copy_permissions(source: Path, staging: Path) -> None:
    """Give each file of ``staging`` the permission bits of the source file of the same name, any other file (the
    manifest, converted weights) those of the strictest source file, and every directory those of the source's
    (with the owner's own rights kept, so that the output can be replaced or removed)."""
    source_modes = {}
    for path in source.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                source_modes[path.relative_to(source).as_posix()] = stat.S_IMODE(path.stat().st_mode)
    strictest = 0o7777
    for mode in source_modes.values():
        strictest &= mode
    strictest = strictest if source_modes else 0o644
    directory_mode = stat.S_IMODE(source.stat().st_mode) | 0o700
    for path in sorted(staging.rglob("*"), reverse=True):  # files before the directories holding them
        relative = path.relative_to(staging).as_posix()
        if path.is_dir():
            original = source / relative
            os.chmod(path, stat.S_IMODE(original.stat().st_mode) | 0o700 if original.is_dir() else directory_mode)
        else:
            os.chmod(path, source_modes.get(relative, strictest))
    os.chmod(staging, directory_mode)


def _owner() -> dict[str, object]:
    return {"pid": os.getpid(), "boot": _boot_id(), "start": _start_ticks(os.getpid())}


def _owner_alive(directory: Path) -> bool:
    """Whether the process that made ``directory`` still runs (the marker's pid, same boot, same start time; an
    unmarked directory by the pid in its name)."""
    try:
        owner = json.loads((directory / MARKER).read_text(encoding="utf-8"))
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        owner = None
        try:
            pid = int(directory.name.rsplit(".", 2)[-2].split("-")[0])
        except (ValueError, IndexError):
            return False  # not one of ours with a pid: an older version's, or a stranger's
    if owner is not None and owner.get("boot") != _boot_id():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    # a recorded start time that differs: the pid was reused by another process
    return owner is None or owner.get("start") is None or owner.get("start") == _start_ticks(pid)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _size(directory: Path) -> int:
    total = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _rename_no_replace(source: Path, target: Path) -> None:
    """rename(2) that fails if ``target`` exists (an empty directory included, which rename(2) would replace)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        result = renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):  # a filesystem without the flag: fall back
            if code == errno.EEXIST:
                raise OutputExistsError("appeared while this surgery ran; nothing was replaced", path=target)
            raise OSError(code, os.strerror(code), str(target))
    if target.exists():
        raise OutputExistsError("appeared while this surgery ran; nothing was replaced", path=target)
    os.rename(source, target)
