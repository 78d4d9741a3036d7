"""BertPreTokenizer, rewritten as one ``Split`` regex that also keeps chosen vocabulary entries whole.

Why: a word the BERT pre-tokenizer splits (``covid-19``) is placed in a slot as a vocabulary entry plus an added
token. tokenizers >= 0.14 matches that added token, but tokenizers 0.13 (the fast tokenizer of transformers 4.24)
ignores a non-special added token that is already in the vocabulary, so it splits the word. A pre-tokenizer that
keeps the word whole lets WordPiece find it in the vocabulary, in every version.

Exactness: the regex has one alternative per kept token, then one punctuation character, then a run of characters
that are neither whitespace nor punctuation; whitespace is dropped. The punctuation and whitespace classes are not
taken from the regex engine's Unicode tables (they differ from Rust's on ~100 code points) but enumerated from the
installed BertPreTokenizer itself, code point by code point, so on any text without a kept token the result is
BertPreTokenizer's (tests check every code point).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_OURS = re.compile(r"\(\?:((?:\\x\{[0-9A-F]+\}|\|)+)\)\|\[")


def is_replaceable(pre_tokenizer: Any) -> bool:
    """BertPreTokenizer itself, or a Split this module wrote."""
    if not isinstance(pre_tokenizer, dict):
        return False
    return pre_tokenizer.get("type") == "BertPreTokenizer" or kept_tokens(pre_tokenizer) is not None


def kept_tokens(pre_tokenizer: dict[str, Any]) -> list[str] | None:
    """The tokens a Split written by this module keeps whole, or None for any other pre-tokenizer."""
    if pre_tokenizer.get("type") != "Split" or not pre_tokenizer.get("invert"):
        return None
    pattern = (pre_tokenizer.get("pattern") or {}).get("Regex")
    match = _OURS.match(pattern or "")
    if match is None:
        return None
    return [
        "".join(chr(int(code, 16)) for code in re.findall(r"\\x\{([0-9A-F]+)\}", alternative))
        for alternative in match.group(1).split("|")
    ]


def split_pre_tokenizer(keep: list[str]) -> dict[str, Any]:
    """The tokenizer.json form of the pre-tokenizer; longer tokens first, so ``new york`` wins over ``new``."""
    punctuation, whitespace = _bert_classes()
    ordered = sorted(dict.fromkeys(keep), key=lambda token: (-len(token), token))
    alternatives = "|".join("".join(f"\\x{{{ord(ch):X}}}" for ch in token) for token in ordered)
    pattern = f"(?:{alternatives})|[{punctuation}]|[^{whitespace}{punctuation}]+"
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Removed", "invert": True}


@lru_cache(maxsize=1)
def _bert_classes() -> tuple[str, str]:
    """Regex classes of BertPreTokenizer's punctuation and whitespace, asked of the library for every code point.

    All code points in one string: whitespace is what no piece covers; punctuation is always a piece of its own,
    so only the one-character pieces are candidates, each confirmed between two letters."""
    from tokenizers.pre_tokenizers import BertPreTokenizer

    bert = BertPreTokenizer()
    points = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
    covered = bytearray(len(points))
    candidates = []
    for piece, (start, end) in bert.pre_tokenize_str("".join(map(chr, points))):
        covered[start:end] = b"\x01" * (end - start)
        if end - start == 1:
            candidates.append(piece)
    punctuation = [ord(ch) for ch in candidates if len(bert.pre_tokenize_str(f"a{ch}a")) == 3]
    whitespace = [points[k] for k, flag in enumerate(covered) if not flag]
    return _char_class(punctuation), _char_class(whitespace)


def _char_class(points: list[int]) -> str:
    ordered = sorted(points)
    parts = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(f"\\x{{{ordered[i]:X}}}" + (f"-\\x{{{ordered[j]:X}}}" if j > i else ""))
        i = j + 1
    return "".join(parts)
