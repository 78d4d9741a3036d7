"""Termination signals handled as Ctrl-C: SIGTERM (what ``timeout``, Slurm, docker and systemd send) and SIGHUP (a
closed terminal) raise :class:`Interrupted` in the main thread, so that a surgery removes its staging directory
and the CLI prints one line, exiting 128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).

Cleanup runs to its end: a signal that arrives during a :func:`deferred` block (removing a staging directory,
putting an old output back) is held and raised after it. A second Ctrl-C must not cut a cleanup short, and a batch
worker whose parent dies gets SIGTERM more than once: the kernel sends the parent-death signal each time the
worker is handed from an exiting thread of its parent to the next.

A process killed with SIGKILL cannot clean up: its staging directory is found and removed by the next surgery to
the same output (see outputs).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """A termination signal, raised where Python next runs in the main thread; ``signum`` names it."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: the signals handled as an interruption besides SIGINT (raised as KeyboardInterrupt, as Python does)
SIGNALS = (signal.SIGTERM, signal.SIGHUP)


_installed = False
#: while a deferred block runs: how deep they nest, and the signals that arrived meanwhile
_depth = 0
_held: list[int] = []


def install() -> None:
    """Raise :class:`Interrupted` on SIGTERM and SIGHUP, and KeyboardInterrupt on SIGINT, from now on, except during
    :func:`deferred` blocks (the console command and batch workers, in their main thread)."""
    global _installed
    for signum in (signal.SIGINT, *SIGNALS):
        signal.signal(signum, _raise)
    _installed = True


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run the block to its end whatever signal arrives (with the handlers :func:`install` sets; Python's own SIGINT
    handler cannot wait). The first signal held meanwhile is raised when the outermost such block ends, in place of
    a failure under way, and dropped when the block ends in an interruption already."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _held:
            signum = _held[0]
            _held.clear()
            if not isinstance(sys.exc_info()[1], KeyboardInterrupt):
                raise _interruption(signum)


def finished() -> None:
    """The work is done (the output renamed into place): a signal from now on, while the result is printed and the
    interpreter exits, is ignored rather than reported as an interruption that wrote nothing. Only in the console
    command (after :func:`install`): a program calling the CLI keeps its own handlers."""
    if not _installed:
        return
    for signum in (signal.SIGINT, *SIGNALS):
        signal.signal(signum, signal.SIG_IGN)


def _raise(signum: int, frame: FrameType | None) -> None:
    if _depth:
        _held.append(signum)
        return
    raise _interruption(signum)


def _interruption(signum: int) -> KeyboardInterrupt:
    """SIGINT as Python raises it (KeyboardInterrupt); the others as :class:`Interrupted`."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)


def exit_code(error: KeyboardInterrupt) -> int:
    """What a process interrupted by ``error`` exits with."""
    return error.exit_code if isinstance(error, Interrupted) else 128 + signal.SIGINT


def describe(error: KeyboardInterrupt) -> str:
    return f"interrupted ({error.args[0]})" if isinstance(error, Interrupted) else "interrupted"
