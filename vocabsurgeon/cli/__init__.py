"""The ``vocabsurgeon`` command: a Click group whose commands parse, call one library function and print."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from .. import __version__
from ..errors import VocabSurgeonError


class SurgeonGroup(click.Group):
    """Maps every error to one line on stderr and an exit code, in one place (tracebacks only with --debug); with
    ``--json`` also to ``{"error": ..., "code": ...}`` on stdout."""

    def invoke(self, ctx: click.Context) -> Any:
        # read before invoking: a usage error can come before the option is parsed
        ctx.meta["json"] = "--json" in [*getattr(ctx, "_protected_args", ()), *ctx.args]
        try:
            return super().invoke(ctx)
        except VocabSurgeonError as error:
            if _debug(ctx):
                raise
            _fail(ctx, str(error), error.code, error.exit_code)
        except click.UsageError as error:
            if not _json(ctx):
                raise
            _fail(ctx, error.format_message(), "usage", error.exit_code, usage=error)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:  # whoever read stdout stopped (`| head`): the command's work is done, say nothing
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so that the exit's final flush does not fail again
            ctx.exit(128 + 13)  # as if killed by SIGPIPE, like other tools in a pipe
        except OSError as error:  # the machine said no: a full disk, a permission, a vanished file
            if _debug(ctx):
                raise
            where = f": {error.filename}" if error.filename else ""
            _fail(ctx, f"{error.strerror or error}{where}; nothing was written", "os-error", 1)
        except KeyboardInterrupt as error:  # Ctrl-C, and SIGTERM or SIGHUP (see interrupts)
            from ..interrupts import describe, exit_code

            _fail(ctx, f"{describe(error)}; nothing was written", "interrupted", exit_code(error), label=None)
        except Exception as error:  # a bug: still one line, with the way to the traceback
            if _debug(ctx):
                raise
            message = f"{type(error).__name__}: {error} (rerun with --debug for the traceback, and please report it)"
            _fail(ctx, message, "internal-error", 1, label="internal error")


def _fail(
    ctx: click.Context,
    message: str,
    code: str,
    exit_code: int,
    *,
    label: str | None = "error",
    usage: click.UsageError | None = None,
) -> None:
    if usage is not None:
        usage.show()
    else:
        click.echo(f"vocabsurgeon: {f'{label}: ' if label else ''}{message}", err=True)
    if _json(ctx):
        click.echo(json.dumps({"error": message, "code": code}, ensure_ascii=False))
    ctx.exit(exit_code)


def _json(ctx: click.Context) -> bool:
    """Whether the command line asked for --json."""
    return bool(ctx.meta.get("json"))


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


def run() -> None:  # pragma: no cover - the console entry point of earlier installs
    from ..entry import run as entry_run

    entry_run()


from . import batch as _batch  # noqa: E402,F401
from . import inspect as _inspect  # noqa: E402,F401  (registers the commands)
from . import readiness as _readiness  # noqa: E402,F401
from . import suggest as _suggest  # noqa: E402,F401
from . import surgery as _surgery  # noqa: E402,F401

__all__ = ["main", "sys"]
