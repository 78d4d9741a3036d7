"""Small helpers shared by test modules (checkpoint builders live in checkpoints.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change a JSON file in place, as a user editing it by hand would (2-space indent, UTF-8)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    edit(document)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def error_codes(document: Any) -> set[str]:
    """Every error finding's code anywhere in an ``audit --json`` document."""
    codes: set[str] = set()
    if isinstance(document, dict):
        if document.get("severity") == "error" and isinstance(document.get("code"), str):
            codes.add(document["code"])
        for value in document.values():
            codes |= error_codes(value)
    elif isinstance(document, list):
        for value in document:
            codes |= error_codes(value)
    return codes
