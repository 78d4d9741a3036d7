"""Reading a text corpus: UTF-8 text files (one document per line), ``.jsonl`` records (one document per record's
``field``), either one gzip-compressed, directories of them (recursively, in name order) and ``-`` for stdin.

Streaming, with bounded memory whatever the corpus: files are read in blocks of ``BLOCK_BYTES`` and handed on as
text blocks of whole lines; a line longer than ``LONGEST_LINE`` characters is handed on in pieces cut at a space,
each piece after the first starting with that space, so that its first word still reads as running text. Every
refusal (a missing path, an empty corpus, a binary file, bytes that are not UTF-8, a bad record) is a
:class:`CorpusError` naming the file and the place.
"""

from __future__ import annotations

import codecs
import gzip
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import CorpusError, CorpusNotFoundError

BLOCK_BYTES = 1 << 20
LONGEST_LINE = 100_000
GZIP_MAGIC = b"\x1f\x8b"
JSONL_SUFFIXES = (".jsonl", ".ndjson")

#: called with the number of bytes read from disk since the last call
Progress = Callable[[int], None]


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus: ``name`` as the user gave it (or found it in a directory), ``None`` path for stdin."""

    name: str
    path: Path | None
    jsonl: bool
    size: int | None  # bytes on disk (None: stdin)


def find_corpus(paths: Sequence[str | os.PathLike[str]], field: str | None = None) -> list[CorpusFile]:
    """The files of a corpus given as paths (files, directories, ``-``), checked to exist, in a fixed order. A
    ``.jsonl`` file (also compressed: ``.jsonl.gz``) is read as records and needs ``field``."""
    if not paths:
        raise CorpusError("no corpus given: name text files, .jsonl files, directories or - for stdin")
    found: list[CorpusFile] = []
    for given in paths:
        name = os.fspath(given)
        if name == "-":
            found.append(CorpusFile("-", None, jsonl=field is not None, size=None))
            continue
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path)))
            if not files:
                raise CorpusError("is an empty directory", path=path)
            found += [_corpus_file(p, str(p), field) for p in files]
        elif path.is_file():
            found.append(_corpus_file(path, name, field))
        else:
            raise CorpusNotFoundError("does not exist", path=path)
    if field is not None and not any(file.jsonl for file in found):
        names = ", ".join(JSONL_SUFFIXES)
        raise CorpusError(f"--field {field} is for JSON Lines, and none of the corpus is ({names} files, or -)")
    return found


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _corpus_file(path: Path, name: str, field: str | None) -> CorpusFile:
    stem = path.name.removesuffix(".gz")
    jsonl = stem.endswith(JSONL_SUFFIXES)
    if jsonl and field is None:
        raise CorpusError("is a JSON Lines file: pass --field NAME to say which field holds the text", path=path)
    return CorpusFile(name, path, jsonl=jsonl, size=path.stat().st_size)


def read_blocks(
    files: Sequence[CorpusFile], field: str | None = None, progress: Progress | None = None
) -> Iterator[str]:
    """The text of ``files`` in blocks of whole lines joined by newlines (a line is a document; a record's field
    of a ``.jsonl`` file is one, or its lines are), nothing done per line, so that the reading process stays
    light. Blank lines stay in (whoever splits a block skips them). Raises CorpusError on the first unreadable
    byte or record, and when the whole corpus holds no text."""
    seen_text = False
    for file in files:
        for block in _read_file(file, field, progress):
            if not seen_text and block and not block.isspace():
                seen_text = True
            yield block
    if not seen_text:
        where = files[0].name if len(files) == 1 else f"{len(files)} files"
        raise CorpusError(f"{where}: the corpus is empty (no text in it)")


def _read_file(file: CorpusFile, field: str | None, progress: Progress | None) -> Iterator[str]:
    with _open(file) as (stream, raw):
        blocks = _blocks(stream, raw, file, progress, cut_long_lines=not file.jsonl)  # a record is parsed whole
        if not file.jsonl:
            for index, block in enumerate(blocks):
                if index == 0:
                    _refuse_records(block, file)
                yield block
            return
        number = 0
        for block in blocks:
            texts = []
            for line in block.split("\n"):
                number += 1
                if line.strip():
                    texts.append(_record_text(line, field or "", file, number))
            yield "\n".join(texts)


class _open:
    """``(stream, raw)`` of a corpus file: the decompressed byte stream, and the file on disk."""

    def __init__(self, file: CorpusFile) -> None:
        self.file = file
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> tuple[IO[bytes], IO[bytes]]:
        if self.file.path is None:
            raw: IO[bytes] = sys.stdin.buffer
        else:
            try:
                raw = self.handle = open(self.file.path, "rb")
            except OSError as error:
                raise CorpusError(f"cannot be read: {error.strerror}", path=self.file.path) from None
        head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
        if head == GZIP_MAGIC:
            return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
        return raw, raw

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.handle.close()


def _blocks(
    stream: IO[bytes], raw: IO[bytes], file: CorpusFile, progress: Progress | None, *, cut_long_lines: bool = True
) -> Iterator[str]:
    """Decoded blocks cut after their last newline (the rest is carried to the next); a line longer than
    ``LONGEST_LINE`` is cut before a space, so that the piece after it starts with that space."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    where = file.path if file.path is not None else "<stdin>"
    offset = 0  # of the decompressed bytes
    carry = ""
    position = 0
    while True:
        try:
            block = stream.read(BLOCK_BYTES)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            raise CorpusError(f"cannot be decompressed: {error}", path=where) from None
        if progress is not None and hasattr(raw, "tell"):
            try:
                now = raw.tell()
            except OSError:  # stdin: a pipe
                now = offset + len(block)
            progress(now - position)
            position = now
        if not block:
            break
        if b"\0" in block:
            raise CorpusError(f"is binary, not text (a NUL byte at byte {offset + block.index(0)})", path=where)
        try:
            text = decoder.decode(block)
        except UnicodeDecodeError as error:
            raise CorpusError(f"is not UTF-8 text (byte {offset + error.start})", path=where) from None
        offset += len(block)
        joined = carry + text
        if "\r" in joined:
            joined = joined.replace("\r\n", "\n")
        cut = joined.rfind("\n")
        if cut >= 0:
            yield joined[:cut]
            carry = joined[cut + 1 :]
        else:
            carry = joined
        while cut_long_lines and len(carry) > LONGEST_LINE:  # one enormous line: in pieces cut before a space
            space = carry.rfind(" ", 1, LONGEST_LINE)
            space = space if space > 0 else LONGEST_LINE
            yield carry[:space]
            carry = carry[space:]
    try:
        carry += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise CorpusError(f"is not UTF-8 text (it ends inside a character, byte {offset})", path=where) from None
    if carry:
        yield carry.removesuffix("\r")


def _refuse_records(block: str, file: CorpusFile) -> None:
    """A text file (or stdin without --field) whose first line is a JSON object is JSON Lines by mistake: read as
    prose, its keys and quotes would be counted as words."""
    line = next((line for line in block.split("\n", 20)[:20] if line.strip()), "")
    if not line.lstrip().startswith("{"):
        return
    try:
        record = json.loads(line)
    except ValueError:
        return
    if isinstance(record, dict):
        where = file.path if file.path is not None else "<stdin>"
        raise CorpusError("holds JSON records, not text: pass --field NAME (the field with the text)", path=where)


def _record_text(line: str, field: str, file: CorpusFile, number: int) -> str:
    where = file.path if file.path is not None else "<stdin>"
    try:
        record = json.loads(line)
    except ValueError:
        raise CorpusError(f"line {number} is not a JSON record", path=where) from None
    if not isinstance(record, dict):
        raise CorpusError(f"line {number} is not a JSON object", path=where)
    value = record.get(field)
    if not isinstance(value, str):
        found = "has no" if field not in record else f"has a {type(value).__name__}, not a string, in"
        raise CorpusError(f"line {number} {found} field {field!r}", path=where)
    return value
