"""WordPiece ``vocab.txt``: one token per line, the id is the line number."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointFormatError


def parse_vocab_txt(text: str) -> list[str]:
    """Tokens in id order. Only ``\\n`` separates lines: a token may contain other Unicode line breaks."""
    if not text:
        return []
    if text.endswith("\n"):
        text = text[:-1]  # "\n" alone is one empty token, as BertTokenizer reads it
    # BertTokenizer strips each line with rstrip("\n") only, so "\r" and other whitespace stay part of the token.
    return text.split("\n")


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


def write_vocab_txt(path: Path, tokens: list[str]) -> None:
    with open(path, "x", encoding="utf-8", newline="\n") as handle:
        handle.write(dump_vocab_txt(tokens))
