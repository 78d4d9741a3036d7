"""Termination signals handled as Ctrl-C: SIGTERM (what ``timeout``, Slurm, docker and systemd send) and SIGHUP (a
closed terminal) raise :class:`Interrupted` in the main thread, so that a surgery removes its staging directory
and the CLI prints one line, exiting 128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).

A process killed with SIGKILL cannot clean up: its staging directory is found and removed by the next surgery to
the same output (see outputs).
"""

from __future__ import annotations

import signal
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """A termination signal, raised where Python next runs in the main thread; ``signum`` names it."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: the signals handled as an interruption besides SIGINT (which Python raises as KeyboardInterrupt itself)
SIGNALS = (signal.SIGTERM, signal.SIGHUP)


_installed = False


def install() -> None:
    """Raise :class:`Interrupted` on SIGTERM and SIGHUP from now on (the console command, in its main thread)."""
    global _installed
    for signum in SIGNALS:
        signal.signal(signum, _raise)
    _installed = True


def finished() -> None:
    """The work is done (the output renamed into place): a signal from now on, while the result is printed and the
    interpreter exits, is ignored rather than reported as an interruption that wrote nothing. Only in the console
    command (after :func:`install`): a program calling the CLI keeps its own handlers."""
    if not _installed:
        return
    for signum in (signal.SIGINT, *SIGNALS):
        signal.signal(signum, signal.SIG_IGN)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def exit_code(error: KeyboardInterrupt) -> int:
    """What a process interrupted by ``error`` exits with."""
    return error.exit_code if isinstance(error, Interrupted) else 128 + signal.SIGINT


def describe(error: KeyboardInterrupt) -> str:
    return f"interrupted ({error.args[0]})" if isinstance(error, Interrupted) else "interrupted"
