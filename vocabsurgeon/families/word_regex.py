"""The regex group that keeps new words whole in a pre-tokenizer's ``Split`` step.

A word's running-text form must reach the model as one pre-token. Where the pre-tokenizer would not give it so
(SentencePiece BPE keeps the whole text one pre-token; byte-level BPE's regex cuts ``COVID-19`` at the hyphen),
the words become one group of alternatives, put first in the Split regex (``group|original``). It changes no
match of a text without the words: at each position the engine tries the group first, and where it fails the
original alternatives match exactly as before.

A word matches only where it ends as a word, so that what follows is cut as it was: a word ending in a letter,
mark or digit must not be followed by one (``COVID-190``, ``new yorker`` are not matched); a word ending in
punctuation (``C++``) must be followed by a separator, a digit or the end (``C+++``, ``C+x`` are not). ``avoid``:
texts the group must not match right before (see bpe_words). Longest words come first, since the first
alternative that matches wins; a later surgery merges its words into the same group (a second group in front would
let a shorter new word cut a longer old one short).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

#: a word that ends in a letter, mark or digit must not be followed by one
LETTER_END = r"(?![\p{L}\p{M}\p{N}])"
_SYMBOL_END = re.compile(r"\(\?!\[\^(?P<separators>[^\]]*)\\p\{N\}\]\|\[\\r\\n\]\)")


def symbol_end(separators: str) -> str:
    """A word that ends in punctuation or a symbol must be followed by a separator (not a line break, which the
    punctuation run of a byte-level regex takes along), a digit or nothing."""
    return rf"(?![^{separators}\p{{N}}]|[\r\n])"


def word_group(words: Sequence[str], *, separators: str, avoid: Sequence[str] = ()) -> str:
    """The group of alternatives for ``words`` (texts as the Split step sees them), longest first."""
    ordered = sorted(set(words), key=lambda w: (-len(w), w))
    ends = [LETTER_END if _wordlike(word[-1]) else symbol_end(separators) for word in ordered]
    alternatives = "|".join(re.escape(word) + end for word, end in zip(ordered, ends, strict=True))
    guard = f"(?!{'|'.join(re.escape(text) for text in sorted(set(avoid)))})" if avoid else ""
    return f"(?:{alternatives}){guard}"


def split_group(pattern: str) -> tuple[list[str], str | None]:
    """The words of the group a surgery put at the start of ``pattern``, and what follows it: ``(words, rest)``
    where ``rest`` is None for a pattern that is the group alone, the whole pattern when it has no group."""
    parts = _top_level(pattern, 0)
    head = parts[0]
    words = _group_words(head)
    if words is None:
        return [], pattern
    rest = pattern[len(head) + 1 :] if len(parts) > 1 else None
    return words, rest


def with_words(pattern: str | None, words: Sequence[str], *, separators: str, avoid: Sequence[str] = ()) -> str:
    """``pattern`` (None: no Split step yet) with ``words`` merged into its group (created in front if needed)."""
    if pattern is None:
        return word_group(words, separators=separators, avoid=avoid)
    old, rest = split_group(pattern)
    group = word_group([*old, *words], separators=separators, avoid=avoid)
    return group if rest is None else f"{group}|{rest}"


def _wordlike(char: str) -> bool:
    import unicodedata

    return unicodedata.category(char)[0] in "LMN"


def _group_words(head: str) -> list[str] | None:
    """The words of ``(?:w1LOOK|w2LOOK)GUARD`` as word_group writes it, None for anything else."""
    if not head.startswith("(?:"):
        return None
    close = _closing(head, 0)
    if close is None:
        return None
    guard = head[close + 1 :]
    if guard and not (guard.startswith("(?!") and _closing(guard, 0) == len(guard) - 1):
        return None
    words = []
    for alternative in _top_level(head[3:close], 0):
        for end in (LETTER_END, *(m.group(0) for m in _SYMBOL_END.finditer(alternative))):
            if alternative.endswith(end):
                words.append(_unescape(alternative[: -len(end)]))
                break
        else:
            return None
    return words


def _structure(pattern: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """``(index, char, depth)`` of each ``(``, ``)`` and ``|`` outside escapes and character classes, with the
    group depth after it."""
    depth, in_class, escaped = 0, False, False
    for index in range(start, len(pattern)):
        char = pattern[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char in "()|":
            depth += {"(": 1, ")": -1, "|": 0}[char]
            yield index, char, depth


def _top_level(pattern: str, start: int) -> list[str]:
    """``pattern`` cut at its ``|`` outside groups and classes."""
    parts, begin = [], start
    for index, char, depth in _structure(pattern, start):
        if char == "|" and depth == 0:
            parts.append(pattern[begin:index])
            begin = index + 1
    parts.append(pattern[begin:])
    return parts


def _closing(pattern: str, open_index: int) -> int | None:
    """The index of the ``)`` that closes the group opened at ``open_index``."""
    return next((i for i, char, depth in _structure(pattern, open_index) if char == ")" and depth == 0), None)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)
