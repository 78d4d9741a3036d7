"""Ask the kernel to start reading a checkpoint's weight files while we import, parse and plan.

Planning is CPU work and the weight copy is disk work; a read-ahead hint issued first lets the disk run during
the planning, so on a cold page cache the copy then runs at memory speed. Only a hint: nothing is read here, and
checkpoints too large to fit comfortably in free memory are left alone (prefetching them would only evict pages).
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin")
SHARE_OF_FREE_MEMORY = 0.25


def prefetch_weights(model: str | os.PathLike[str]) -> int:
    """Start read-ahead of the weight files directly in ``model`` (a directory); returns the bytes hinted."""
    directory = Path(model)
    if not directory.is_dir() or not hasattr(os, "posix_fadvise"):
        return 0
    files = [path for path in directory.iterdir() if path.suffix in WEIGHT_SUFFIXES and path.is_file()]
    total = sum(path.stat().st_size for path in files)
    if not files or total > SHARE_OF_FREE_MEMORY * _available_memory():
        return 0
    for path in files:
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # a hint the filesystem does not take
        finally:
            os.close(descriptor)
    return total


def _available_memory() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
