"""JSON files read with their style, so a rewrite changes only the values we meant to change."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointFormatError


@dataclass(frozen=True)
class JsonStyle:
    """How a JSON file was laid out: compact or indented, escaped or not, with or without a final newline."""

    indent: int | None = 2
    ensure_ascii: bool = False
    final_newline: bool = True

    @property
    def separators(self) -> tuple[str, str]:
        return (",", ":") if self.indent is None else (",", ": ")


def parse_style(text: str) -> JsonStyle:
    """Guess the style of ``text`` from its first lines and whether it escapes non-ASCII characters."""
    body = text.rstrip("\n")
    indent: int | None = None
    lines = body.split("\n", 2)
    if len(lines) > 1:
        second = lines[1]
        indent = len(second) - len(second.lstrip(" ")) or None
        if indent is None and second.startswith("\t"):
            indent = 2
    escaped = "\\u" in text and all(ord(ch) < 128 for ch in text)
    return JsonStyle(indent=indent, ensure_ascii=escaped, final_newline=text.endswith("\n"))


def dump_json(value: Any, style: JsonStyle = JsonStyle()) -> str:
    """Serialize ``value`` in ``style`` (key order as given)."""
    text = json.dumps(value, indent=style.indent, ensure_ascii=style.ensure_ascii, separators=style.separators)
    return text + "\n" if style.final_newline else text


def parse_json(text: str, path: str | Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointFormatError(
            f"not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})", path=path
        ) from None


def read_json(path: str | Path) -> tuple[Any, JsonStyle]:
    """Read a JSON file; a missing or malformed file is a one-line error naming it."""
    text = read_text(path)
    return parse_json(text, path), parse_style(text)


def read_json_object(path: str | Path) -> tuple[dict[str, Any], JsonStyle]:
    value, style = read_json(path)
    if not isinstance(value, dict):
        raise CheckpointFormatError(f"expected a JSON object, found {type(value).__name__}", path=path)
    return value, style


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointFormatError(f"not UTF-8 text (byte {error.start})", path=path) from None
    except OSError as error:
        raise CheckpointFormatError(f"cannot read: {error.strerror}", path=path) from None


def write_json(path: Path, value: Any, style: JsonStyle = JsonStyle()) -> None:
    """Write a new file (never through an existing file or symlink)."""
    with open(path, "x", encoding="utf-8", newline="\n") as handle:
        handle.write(dump_json(value, style))
