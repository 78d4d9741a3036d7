"""JSON files read with their style, so a rewrite changes only the values we meant to change."""

from __future__ import annotations

import json
import re
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
    spaced: bool = False  # single-line files: json.dumps' default ", " and ": " rather than "," and ":"

    @property
    def separators(self) -> tuple[str, str]:
        if self.indent is None and not self.spaced:
            return (",", ":")
        return (", " if self.indent is None else ",", ": ")


def parse_style(text: str) -> JsonStyle:
    """Guess the style of ``text`` from its first lines and whether it escapes non-ASCII characters."""
    body = text.rstrip("\n")
    indent: int | None = None
    lines = body.split("\n", 2)
    if len(lines) > 1:
        second = lines[1]
        indent = len(second) - len(second.lstrip(" "))  # 0: json.dumps(indent=0), newlines without indentation
        if indent == 0 and second.startswith("\t"):
            indent = 2
    escaped = "\\u" in text and all(ord(ch) < 128 for ch in text)
    spaced = indent is None and _first_separator_spaced(text)
    return JsonStyle(indent=indent, ensure_ascii=escaped, final_newline=text.endswith("\n"), spaced=spaced)


_STRING_OR_SEPARATOR = re.compile(r'"(?:[^"\\]|\\.)*"|([,:])( ?)')


def _first_separator_spaced(text: str) -> bool:
    """Whether the first ',' or ':' outside a string is followed by a space (json.dumps' default separators)."""
    for match in _STRING_OR_SEPARATOR.finditer(text):
        if match.group(1):
            return match.group(2) == " "
    return False


def dump_json(value: Any, style: JsonStyle = JsonStyle()) -> str:
    """Serialize ``value`` in ``style`` (key order as given)."""
    text = json.dumps(value, indent=style.indent, ensure_ascii=style.ensure_ascii, separators=style.separators)
    return text + "\n" if style.final_newline else text


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def patch_json(text: str, old: Any, new: Any, style: JsonStyle, *, levels: int = 3) -> str:
    """``new`` serialized like ``text`` (the serialization of ``old``): every object member whose value did not
    change keeps its original bytes, down to ``levels`` levels of nesting. A 9 MB tokenizer.json whose added_tokens
    changed is rewritten in milliseconds, and a diff of the two files shows only the change."""
    if old == new:
        return text
    start = _WHITESPACE.match(text).end()  # type: ignore[union-attr]
    end = len(text.rstrip())  # text is a valid document: its value ends where trailing whitespace begins
    try:
        return text[:start] + _patch(text, start, end, old, new, style, 0, levels) + text[end:]
    except (ValueError, KeyError, IndexError):  # text does not encode old as expected: serialize afresh
        return dump_json(new, style)


def _patch(text: str, start: int, end: int, old: Any, new: Any, style: JsonStyle, depth: int, levels: int) -> str:
    if old == new:
        return text[start:end]
    if not (levels and isinstance(old, dict) and isinstance(new, dict) and old):
        return _dump_at(new, style, depth)
    keys = list(old)
    ordered = list(new)
    if ordered[: len(keys)] != keys:
        return _dump_at(new, style, depth)  # members removed or reordered: serialized afresh
    added = ordered[len(keys) :]
    changed = [i for i, key in enumerate(keys) if old[key] != new[key]]
    # members after the last changed one keep their bytes as they are, unscanned: a big unchanged tail (the model
    # of a tokenizer.json whose added_tokens grew) is not parsed again
    spans = _member_spans(text, start, stop=changed[-1] + 1 if changed else 0)
    if list(spans) != keys[: len(spans)]:  # duplicate keys or a mismatch: do not guess
        return _dump_at(new, style, depth)
    pieces, cursor = [], start
    for key, (value_start, value_end) in spans.items():
        pieces.append(text[cursor:value_start])
        pieces.append(_patch(text, value_start, value_end, old[key], new[key], style, depth + 1, levels - 1))
        cursor = value_end
    tail = text[cursor:end]
    if added:  # members new at the end (a vocabulary that grew): written before the closing brace, the rest kept
        inside = len(tail[: len(tail.rstrip()) - 1].rstrip())
        pieces += [tail[:inside], _members(new, added, style, depth), tail[inside:]]
    else:
        pieces.append(tail)
    return "".join(pieces)


def _members(value: dict[str, Any], keys: list[str], style: JsonStyle, depth: int) -> str:
    """``keys`` of ``value`` as members following another one in an object ``depth`` levels deep."""
    item, colon = style.separators
    lead = item if style.indent is None else f"{item}\n{' ' * (style.indent * (depth + 1))}"
    return "".join(
        f"{lead}{json.dumps(key, ensure_ascii=style.ensure_ascii)}{colon}{_dump_at(value[key], style, depth + 1)}"
        for key in keys
    )


def _member_spans(text: str, start: int, stop: int | None = None) -> dict[str, tuple[int, int]]:
    """Where each member's value lies in the object starting at ``text[start] == "{"`` (only the first ``stop``
    members, if given)."""
    if text[start] != "{":
        raise ValueError("not an object")
    spans: dict[str, tuple[int, int]] = {}
    pos = _WHITESPACE.match(text, start + 1).end()  # type: ignore[union-attr]
    if text[pos] == "}" or stop == 0:
        return spans
    while True:
        if text[pos] != '"':
            raise ValueError("expected a key")
        key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
        pos = _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos] != ":":
            raise ValueError("expected ':'")
        pos = _WHITESPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
        _, end = _DECODER.raw_decode(text, pos)
        if key in spans:
            raise ValueError("duplicate key")
        spans[key] = (pos, end)
        if len(spans) == stop:
            return spans
        pos = _WHITESPACE.match(text, end).end()  # type: ignore[union-attr]
        if text[pos] == "}":
            return spans
        if text[pos] != ",":
            raise ValueError("expected ','")
        pos = _WHITESPACE.match(text, pos + 1).end()  # type: ignore[union-attr]


def _dump_at(value: Any, style: JsonStyle, depth: int) -> str:
    """``value`` serialized as it would appear ``depth`` levels deep in a file of ``style``."""
    text = json.dumps(value, indent=style.indent, ensure_ascii=style.ensure_ascii, separators=style.separators)
    if style.indent:
        text = text.replace("\n", "\n" + " " * (style.indent * depth))  # json.dumps escapes newlines in strings
    return text


def parse_json(text: str, path: str | Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointFormatError(
            f"not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})", path=path
        ) from None


def read_json(path: str | Path) -> tuple[Any, JsonStyle]:
    """Read a JSON file; a missing or malformed file is a one-line error naming it."""
    value, style, _ = read_json_text(path)
    return value, style


def read_json_text(path: str | Path) -> tuple[Any, JsonStyle, str]:
    """Like read_json, also returning the text (for patch_json)."""
    text = read_text(path)
    return parse_json(text, path), parse_style(text), text


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
