"""WordPiece ``vocab.txt``: one token per line, the id is the line number."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointFormatError


def parse_vocab_txt(text: str) -> list[str]:
    """Tokens in id order, read as transformers' ``load_vocab`` reads them: a text-mode file (universal newlines,
    so ``\\r\\n`` and ``\\r`` end lines too), each line stripped of its newline only. Other Unicode line breaks
    (U+2028, form feed ...) stay part of the token, and so does a byte-order mark at the start of the file: transformers
    opens vocab.txt as ``utf-8``, not ``utf-8-sig``, so its first token is ``"\\ufeff[PAD]"`` (see :func:`has_bom`)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        return []
    if text.endswith("\n"):
        text = text[:-1]  # "\n" alone is one empty token, as BertTokenizer reads it
    return text.split("\n")


BOM = "\ufeff"


def has_bom(tokens: list[str] | tuple[str, ...]) -> bool:
    """Whether the file these tokens were parsed from starts with a byte-order mark (kept in the first token)."""
    return bool(tokens) and tokens[0].startswith(BOM)


def dump_vocab_txt(tokens: list[str]) -> str:
    return "".join(f"{token}\n" for token in tokens)


def read_vocab_txt(path: str | Path) -> list[str]:
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise CheckpointFormatError(f"cannot read: {error.strerror}", path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CheckpointFormatError(f"not UTF-8 text (byte {error.start})", path=path) from None
    return parse_vocab_txt(text)
