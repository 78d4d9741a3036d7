"""One exception hierarchy for everything vocabsurgeon refuses to do.

Each class is also the built-in a library caller would naturally catch (``FileNotFoundError``, ``ValueError``, ...).
``str(error)`` is the complete one-line message a user sees: what is wrong, where, and what to do next.
"""

from __future__ import annotations

from pathlib import Path


class VocabSurgeonError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with (1 failure, 2 usage)."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None) -> None:
        Exception.__init__(self, message)
        self.message = message
        self.path = Path(path) if path is not None else None
        self.hint = hint

    @property
    def code(self) -> str:
        """The error's kind for scripts (``--json``): the class name in kebab case, ``OutputExistsError`` ->
        ``output-exists``."""
        return kebab(type(self).__name__.removesuffix("Error"))

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path is not None else self.message
        if self.hint:
            text = f"{text}; {self.hint}"
        return text


def kebab(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


class CheckpointNotFoundError(VocabSurgeonError, FileNotFoundError):
    """The directory, model id or a required file does not exist."""


class CheckpointFormatError(VocabSurgeonError, ValueError):
    """A file exists but cannot be parsed: not JSON, truncated weights, an unknown tokenizer model."""


class UnsupportedCheckpointError(VocabSurgeonError, ValueError):
    """The checkpoint is valid but uses something this version cannot operate on."""


class InconsistentCheckpointError(VocabSurgeonError, ValueError):
    """Tokenizer, config and weights of the source disagree (what ``audit`` reports as an error): a surgery
    refuses it before writing anything, with the fix to run."""


class TokenRequestError(VocabSurgeonError, ValueError):
    """The tokens asked for are unusable: empty, duplicated, normalizing to the same string."""


class CorpusError(VocabSurgeonError, ValueError):
    """A text corpus cannot be used: empty, binary, not UTF-8, a bad JSON record."""


class CorpusNotFoundError(CorpusError, FileNotFoundError):
    """A corpus path does not exist."""


class WorkerDiedError(VocabSurgeonError):
    """A worker process of this command was killed (the OOM killer, a stray ``kill``)."""


class NotEnoughSlotsError(TokenRequestError):
    """More tokens than free slots under a strategy that does not append."""


class OutputExistsError(VocabSurgeonError, FileExistsError):
    """The output path exists and ``--force`` was not given, or it is the source itself."""


class LinkRefusedError(VocabSurgeonError, ValueError):
    """--link-unchanged where a hard link cannot be made (the output on another filesystem)."""


class SourceChangedError(VocabSurgeonError, ValueError):
    """A saved plan no longer matches the files it was computed from."""


class PlanError(VocabSurgeonError, ValueError):
    """A saved plan is malformed or does not fit its source: names the field."""


class VerificationError(VocabSurgeonError):
    """The written checkpoint violates an invariant; carries every violation found."""

    def __init__(self, violations: list[str], *, path: str | Path | None = None) -> None:
        first = violations[0] if violations else "unknown violation"
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        super().__init__(f"verification failed: {first}{more}", path=path)
        self.violations = list(violations)


class RecipeError(VocabSurgeonError, ValueError):
    """A batch recipe is malformed: unknown key, wrong type, unreadable file. Exit 1, as for a missing recipe and a
    bad tokens file: a file's content is wrong, not the command line."""
