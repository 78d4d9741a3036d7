"""BPE: byte-level (GPT-2, RoBERTa, Llama 3, Qwen) or SentencePiece BPE (Llama 2, Mistral). A vocabulary entry is
reachable only through merges, so new tokens are always added tokens; the slow tokenizer's vocabulary is kept in
step where the checkpoint has one: vocab.json, or a SentencePiece tokenizer.model (see sentencepiece).

A tokenizer.model that is no SentencePiece model is left as it is: Llama 3 repositories ship a tiktoken file
(a base64 token and its rank per line) under that name, which no transformers tokenizer reads beside tokenizer.json.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar

from ..errors import CheckpointFormatError
from .base import CheckpointFiles, ModelEntry, Note, TokenizerDocs, replace_keys
from .sentencepiece import SentencePieceFiles

_TIKTOKEN_LINE = re.compile(rb"[A-Za-z0-9+/]+={0,2} \d+")


class BPE(SentencePieceFiles):
    name = "bpe"
    model_type = "BPE"
    model_files: ClassVar[tuple[str, ...]] = ("tokenizer.model",)
    side_files: ClassVar[tuple[str, ...]] = ("vocab.json", *model_files)

    def read_side_files(self, docs: TokenizerDocs, files: CheckpointFiles) -> None:
        super().read_side_files(docs, files)
        if files.has("vocab.json"):
            from ..formats.json_file import read_json_object

            docs.side["vocab.json"] = read_json_object(files.path("vocab.json"))[0]

    def read_model_file(self, files: CheckpointFiles, name: str) -> Any:
        """A SentencePiece model, or None for anything else (a tiktoken file): not kept in step, see audit."""
        return None if _foreign_model(files, name) is not None else super().read_model_file(files, name)

    def audit(self, files: CheckpointFiles) -> Iterator[Note]:
        yield from super().audit(files)
        for name in self.model_files:
            what = _foreign_model(files, name) if files.has(name) else None
            if what is not None:
                yield Note(
                    "info" if what.startswith("a tiktoken") else "warning",
                    "foreign-tokenizer-model",
                    f"{name} is not a SentencePiece model ({what}): it is copied as it is, not kept in step"
                    " (transformers reads tokenizer.json)",
                )

    def side_outputs(self, docs: TokenizerDocs, files: CheckpointFiles) -> dict[str, bytes]:
        outputs = super().side_outputs(docs, files)
        if "vocab.json" in docs.side:
            from ..formats.json_file import dump_json, read_json_object, read_text

            path = files.path("vocab.json")
            text = dump_json(docs.side["vocab.json"], read_json_object(path)[1])
            if text != read_text(path):
                outputs["vocab.json"] = text.encode("utf-8")
        return outputs

    def set_model_entries(self, docs: TokenizerDocs, entries: list[ModelEntry]) -> None:
        super().set_model_entries(docs, entries)
        self.rename_model_pieces(docs, entries)
        if "vocab.json" in docs.side:
            docs.side["vocab.json"] = replace_keys(docs.side["vocab.json"], entries)


def _foreign_model(files: CheckpointFiles, name: str) -> str | None:
    """What ``name`` is when it is not a SentencePiece model ("a tiktoken BPE file", or the parse error); None for
    a SentencePiece model. A tiktoken file is recognized before parsing: protobuf may read text as unknown fields."""
    from ..formats.sentencepiece_model import parse_model

    path = files.path(name)
    try:
        data = path.read_bytes()
    except OSError:
        return None  # reading it again reports the error
    lines = data.splitlines()
    if lines and all(_TIKTOKEN_LINE.fullmatch(line) for line in lines[:1000] if line):
        return "a tiktoken BPE file"
    try:
        parse_model(data, path=path)
    except CheckpointFormatError as error:
        return error.message
    return None
