"""The ``vocabsurgeon`` console command, as light as a module can be: termination signals are handled (see
interrupts) before the command line interface is imported, so that Ctrl-C or SIGTERM in the first fraction of a
second, while click and the library load, is one line and not a traceback."""

from __future__ import annotations

import sys


def run(prog_name: str | None = "vocabsurgeon") -> None:  # pragma: no cover - tests call vocabsurgeon.cli.main
    from .interrupts import describe, exit_code, install

    install()
    try:
        from .cli import main
    except KeyboardInterrupt as error:
        sys.stderr.write(f"vocabsurgeon: {describe(error)}; nothing was written\n")
        sys.exit(exit_code(error))
    main(prog_name=prog_name)
