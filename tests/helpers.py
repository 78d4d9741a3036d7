"""Small helpers shared by test modules (checkpoint builders live in checkpoints.py)."""

from __future__ import annotations

from typing import Any


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
