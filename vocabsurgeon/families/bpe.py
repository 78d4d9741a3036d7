"""BPE: byte-level (GPT-2, RoBERTa, Llama 3, Qwen) or SentencePiece BPE (Llama 2, Mistral); the slow tokenizer's
vocabulary is kept in step where the checkpoint has one: vocab.json, or a SentencePiece tokenizer.model (see
sentencepiece).

Words in byte-level BPE. A word becomes the vocabulary entry the model would produce for it in running text,
``Ġ`` + its byte-level form (``Ġhospitalization``), with no merge added, and the model's ``ignore_merges`` on (the
tokenizers library then looks each pre-token up whole before merging). Why text without the new words encodes as
before: (1) a new entry ``Ġword`` only changes a pre-token equal to it, and the byte-level pre-tokenizer yields
``Ġword`` only for the word standing alone after a space (``hospitalizations`` and ``prehospitalization`` are other
pre-tokens); (2) turning ``ignore_merges`` on changes a pre-token only if it is a vocabulary entry that the merges do
not produce whole; so when every existing entry encodes to itself (checked, entry by entry, before the flag is
turned on; Llama 3 has it on already) nothing else changes. Merges appended after the existing ones cannot do this:
the first merge of a chain joins two pieces of the word, which also fires inside other words.

tokenizers gives an added token that is not in ``model.vocab`` the next free id after the model vocabulary when it
loads a file, whatever id the file says; so once an entry is added to ``model.vocab``, the added tokens (Llama 3's
256 specials) are also written into ``model.vocab`` at their own ids, or every one of them would move.

The sentence-initial form (no ``Ġ``: byte-level BPE adds no prefix space) is not added: ``Hospitalization was``
at the very start of a text keeps its pieces.

A tokenizer.model that is no SentencePiece model is left as it is: Llama 3 repositories ship a tiktoken file
(a base64 token and its rank per line) under that name, which no transformers tokenizer reads beside tokenizer.json.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar

from ..errors import CheckpointFormatError, UnsupportedCheckpointError
from .base import CONTEXT, CheckpointFiles, ModelEntry, Note, TextPipeline, TokenizerDocs, replace_keys
from .sentencepiece import SentencePieceFiles

_TIKTOKEN_LINE = re.compile(rb"[A-Za-z0-9+/]+={0,2} \d+")
SPACE = "\u0120"  # Ġ: the byte-level form of a space
#: tokenizer classes that transformers 5 loads from tokenizer.json as it is (a model's own class, Qwen2Tokenizer,
#: builds its pipeline anew from the vocabulary and merges and drops model options such as ignore_merges)
GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def _byte_level(pre_tokenizer: Any) -> bool:
    """Whether a tokenizer.json pre-tokenizer is (or contains) ByteLevel."""
    if not isinstance(pre_tokenizer, dict):
        return False
    if pre_tokenizer.get("type") == "ByteLevel":
        return True
    return any(_byte_level(p) for p in pre_tokenizer.get("pretokenizers") or [])


class BPE(SentencePieceFiles):
    name = "bpe"
    model_type = "BPE"
    dense_vocabulary = False  # model.vocab maps tokens to ids: ids past the end may have gaps
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

    def word_form(self, tokenizer_json: dict[str, Any] | None, pipeline: TextPipeline, text: str) -> str | None:
        if tokenizer_json is None or not _byte_level(tokenizer_json.get("pre_tokenizer")):
            return None
        context = pipeline.pre_tokenize(pipeline.normalize(CONTEXT))
        pieces = pipeline.pre_tokenize(pipeline.normalize(f"{CONTEXT} {text}"))
        if len(pieces) == len(context) + 1 and pieces[:-1] == context and pieces[-1].startswith(SPACE):
            return pieces[-1]
        return None

    def check_word_forms(
        self, tokenizer_json: dict[str, Any] | None, tokenizer_config: dict[str, Any] | None, pipeline: TextPipeline
    ) -> list[str]:
        notes = []
        cls = (tokenizer_config or {}).get("tokenizer_class")
        if isinstance(cls, str) and cls not in GENERIC_CLASSES:
            notes.append(
                f"tokenizer_config.json: tokenizer_class {cls} -> PreTrainedTokenizerFast (transformers 5 builds {cls}"
                " anew from vocabulary and merges, without ignore_merges; the generic class loads tokenizer.json as"
                " it is)"
            )
        model = (tokenizer_json or {}).get("model") or {}
        if model.get("ignore_merges"):
            return notes
        vocab = model.get("vocab") or {}
        # added tokens are split off before the model sees the text: how the merges treat them does not matter
        added = {t.get("content") for t in (tokenizer_json or {}).get("added_tokens", [])}
        changed = [entry for entry in vocab if entry not in added and pipeline.model_tokens(entry) != [entry]]
        if changed:
            raise UnsupportedCheckpointError(
                f"cannot add words as vocabulary entries: {len(changed)} entries of tokenizer.json's BPE vocabulary"
                f" (first: {changed[0]!r}) are not produced whole by its merges, so turning ignore_merges on would"
                " change how text encodes",
                hint="add the tokens as special tokens (--special-token) instead",
            )
        return [
            *notes,
            f"tokenizer.json: model.ignore_merges -> true (each of the {len(vocab)} entries encodes to itself)",
        ]

    def finish_edit(self, docs: TokenizerDocs, words: list[str]) -> None:
        if not words or docs.tokenizer_json is None:
            return
        model = docs.tokenizer_json["model"]
        if not model.get("ignore_merges"):
            model["ignore_merges"] = True  # checked by check_word_forms; placed after the keys the model had
        vocab = model["vocab"]
        missing = {
            t["content"]: t["id"] for t in docs.tokenizer_json.get("added_tokens", []) if t["content"] not in vocab
        }
        if missing:
            model["vocab"] = {**vocab, **missing}
        cls = (docs.tokenizer_config or {}).get("tokenizer_class")
        if docs.tokenizer_config is not None and isinstance(cls, str) and cls not in GENERIC_CLASSES:
            docs.tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"

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
