"""The ``vocabsurgeon`` command: a Click group whose commands parse, call one library function and print."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .. import __version__
from ..errors import VocabSurgeonError


class SurgeonGroup(click.Group):
    """Maps every error to one line on stderr and an exit code, in one place (tracebacks only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VocabSurgeonError as error:
            if _debug(ctx):
                raise
            click.echo(f"vocabsurgeon: error: {error}", err=True)
            ctx.exit(error.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except OSError as error:  # the machine said no: a full disk, a permission, a vanished file
            if _debug(ctx):
                raise
            where = f": {error.filename}" if error.filename else ""
            click.echo(f"vocabsurgeon: error: {error.strerror or error}{where}; nothing was written", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("vocabsurgeon: interrupted; nothing was written", err=True)
            ctx.exit(130)
        except Exception as error:  # a bug: still one line, with the way to the traceback
            if _debug(ctx):
                raise
            click.echo(
                f"vocabsurgeon: internal error: {type(error).__name__}: {error}"
                " (rerun with --debug for the traceback, and please report it)",
                err=True,
            )
            ctx.exit(1)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.params or {}).get("debug")) or os.environ.get("VOCABSURGEON_DEBUG") == "1"


@click.group(cls=SurgeonGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vocabsurgeon")
@click.option("--debug", is_flag=True, help="Show tracebacks (also VOCABSURGEON_DEBUG=1).")
def main(debug: bool) -> None:
    """Vocabulary surgery on Hugging Face checkpoints.

    Put new tokens into free vocabulary slots without a resize (remap), grow the vocabulary with a streaming
    weight rewrite (append, resize), and check that tokenizer, config and weights agree (slots, audit, verify).
    MODEL is a checkpoint directory or a model id already in the local Hugging Face cache; nothing is downloaded
    and the source is never modified.
    """


def run() -> None:  # pragma: no cover - console entry point
    main(prog_name="vocabsurgeon")


from . import batch as _batch  # noqa: E402,F401
from . import inspect as _inspect  # noqa: E402,F401  (registers the commands)
from . import surgery as _surgery  # noqa: E402,F401

__all__ = ["main", "sys"]
