"""The checks of a tokenizer as a surgery left it, on the tokenizers library's own encoder, with no import heavier
than ``tokenizers``: so a surgery can run them in a child process (``python -m vocabsurgeon.checks``) that starts in
milliseconds while the weights are copied (see ``Verifier.start_tokenizer_checks``).

The child reads ``{"tokenizer_json", "tokens", "expected"}`` as JSON on stdin and prints the checks as a JSON list
(see ``verify.ChildCheck``); a plain subprocess, not multiprocessing, so nothing of the caller's main module is
imported again.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

CONTINUING_PREFIX = "##"  # WordPiece's: a manifest "vocab" token with it is a continuation piece
#: the text a word follows to be seen "in running text" (it, then a space)
CONTEXT = "a"
METASPACE = "\u2581"  # ▁: SentencePiece's form of a space
#: sentences a new word is checked in (mid-sentence, at the start, twice with punctuation): they must decode to
#: themselves wherever the source decodes them so
WORD_SENTENCES = ("The patient's {} was noted.", "{} was noted.", "a {}, {}.")


def after_context(context: list[str], pre_tokens: list[str]) -> list[str] | None:
    """The pre-tokens of what followed ``CONTEXT`` and a space, given the pre-tokens of the context alone and of
    the whole text. Two shapes of pipeline: one that splits words (the context's pre-tokens come first) and one
    that keeps the whole text one pre-token (Llama 2's normalizer, Metaspace without split: the first pre-token
    starts with the context). None: a normalizer joined the context to the text."""
    if pre_tokens[: len(context)] == context:
        return pre_tokens[len(context) :]
    if len(context) == 1 and pre_tokens and pre_tokens[0].startswith(context[0]):
        return [pre_tokens[0][len(context[0]) :], *pre_tokens[1:]]
    return None


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


class LibraryTokenizer:
    """A ``tokenizers.Tokenizer`` with the two methods of a transformers tokenizer the checks use."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        tokenizer.no_truncation()

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        assert not add_special_tokens
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int | None]:
        return [self.tokenizer.token_to_id(token) for token in tokens]

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=False))


def is_continuation(content: str) -> bool:
    return content.startswith(CONTINUING_PREFIX) and len(content) > len(CONTINUING_PREFIX)


def check_tokenizer(
    label: str,
    tokenizer: Any,
    tokens: list[dict[str, Any]],
    expected: list[tuple[str, list[int]]] | None,
    round_trips: list[str] | None = None,
) -> list[Check]:
    """``tokenizer`` (or the exception loading it raised) loads, each manifest token is one id, the ``expected``
    texts encode to their ids, and the ``round_trips`` texts (with new words) decode to themselves."""
    if isinstance(tokenizer, Exception):
        return [Check(f"{label} tokenizer loads", False, f"{type(tokenizer).__name__}: {tokenizer}")]
    checks = [Check(f"{label} tokenizer loads", True, type(tokenizer).__name__)]
    checks += list(check_new_tokens(label, tokenizer, tokens))
    if expected is not None:
        checks.append(check_encodings(label, tokenizer, expected))
    if round_trips:
        checks.append(check_round_trips(label, tokenizer, round_trips))
    return checks


def check_new_tokens(label: str, tokenizer: Any, tokens: list[dict[str, Any]]) -> Iterator[Check]:
    """Each token is one id: a word stored in its running-text form inside a sentence (after ``CONTEXT``), a
    continuation piece by lookup, anything else encoded alone."""
    wrong = []
    context = tokenizer.encode(CONTEXT, add_special_tokens=False) if tokens else []
    for entry in tokens:
        content = str(entry.get("content", entry["token"]))
        if entry.get("kind") == "vocab" and is_continuation(content):
            ids = tokenizer.convert_tokens_to_ids([content])  # "##vid" is never typed alone, only inside a word
        elif entry.get("form") == "running-text":  # Ġword: the word after a space
            ids = tokenizer.encode(f"{CONTEXT} {entry['token']}", add_special_tokens=False)
            ids = ids[len(context) :] if ids[: len(context)] == context else ids
            if ids == [entry["id"]] and entry.get("initial"):  # and at a text's start, where the family says so
                ids = tokenizer.encode(entry["token"], add_special_tokens=False)
        else:
            ids = tokenizer.encode(entry["token"], add_special_tokens=False)
        if ids != [entry["id"]]:
            wrong.append(f"{entry['token']!r} -> {ids}, expected [{entry['id']}]")
    detail = "; ".join(wrong[:3]) + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else "")
    yield Check(f"{label}: each new token is one id", not wrong, detail or f"{len(tokens)} tokens")


def check_encodings(label: str, tokenizer: Any, expected: list[tuple[str, list[int]]]) -> Check:
    """The output encodes texts without the new tokens as the source, loaded the same way, does."""
    differing = [text for text, ids in expected if list(tokenizer.encode(text, add_special_tokens=False)) != ids]
    return Check(
        f"{label}: texts without new tokens encode as before",
        not differing,
        f"{len(differing)} of {len(expected)} differ, e.g. {differing[0]!r}" if differing else f"{len(expected)} texts",
    )


def check_round_trips(label: str, tokenizer: Any, texts: list[str]) -> Check:
    """Each text decodes to itself: a new word comes back exactly, non-ASCII letters included."""
    wrong = []
    for text in texts:
        decoded = tokenizer.decode(tokenizer.encode(text, add_special_tokens=False))
        if decoded != text:
            wrong.append(f"{text!r} -> {decoded!r}")
    detail = "; ".join(wrong[:2]) + (f" (and {len(wrong) - 2} more)" if len(wrong) > 2 else "")
    return Check(f"{label}: texts with new words decode to themselves", not wrong, detail or f"{len(texts)} texts")


def main() -> None:
    from tokenizers import Tokenizer  # a failed import is the child's failure (exit 1), not a finding

    request = json.load(sys.stdin)
    try:
        tokenizer: Any = LibraryTokenizer(Tokenizer.from_file(request["tokenizer_json"]))
    except Exception as error:  # report, don't crash: a tokenizer that does not load is the finding
        tokenizer = error
    expected = [(text, ids) for text, ids in request["expected"]]
    checks = check_tokenizer("tokenizers", tokenizer, request["tokens"], expected, request.get("round_trips"))
    json.dump([asdict(check) for check in checks], sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
