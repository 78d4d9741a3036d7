"""BPE: byte-level (GPT-2, RoBERTa, Llama 3, Qwen) or SentencePiece BPE (Llama 2, Mistral, Gemma); the slow
tokenizer's vocabulary is kept in step where the checkpoint has one: vocab.json, or a SentencePiece tokenizer.model
(see sentencepiece).

Words. A word becomes the vocabulary entry the model would produce for it in running text, with the family's
word-boundary marker: ``Ġhospitalization`` (byte-level: ``Ġ`` + its byte-level form), ``▁hospitalization``
(SentencePiece), with no merge added, and the model's ``ignore_merges`` on: the tokenizers library then looks each
pre-token up whole before merging. Where the pre-tokenizer would not give the word as one pre-token, a regex group
of the new words (see word_regex) makes it one: in byte-level BPE, in front of the regex of its Split step, for a
string the regex splits (``ĠCOVID-19``, ``ĠnewĠyork``); in SentencePiece BPE, whose whole text is one pre-token, in
a Split step after the others (``▁new▁york`` too).

Why text without the new words encodes as before: (1) the group changes no pre-token of such a text, and ends a
word only where the pre-tokenizer ends one too; (2) a new entry only changes a pre-token equal to it, and the
pre-tokenizer yields it only where the word is a pre-token of its own, after a space (``hospitalizations`` and
``prehospitalization`` are other pre-tokens); (3) turning ``ignore_merges`` on changes a pre-token only if it is a
vocabulary entry the merges do not produce whole. Such entries are found, entry by entry, before the flag is turned
on (Llama 3 has it on already). In byte-level BPE there must be none (Qwen3 has none of 151,643), since any entry
is some text's pre-token. In SentencePiece BPE they are the byte pieces ``<0xNN>`` and control pieces, which cannot
be a whole pre-token when the pipeline puts ``▁`` before every text (Llama 2's normalizer, Metaspace), and the group
does not isolate a word right before one; a pipeline that does not (Gemma's Replace alone) would turn the literal
text ``<0x41>`` into byte 0x41, so there words stay added tokens, and the plan says why. Merges appended after the
existing ones cannot do this: the first merge of a chain joins two pieces of the word, which also fires inside
other words. See bpe_words for the two pipelines.

tokenizers gives an added token that is not in ``model.vocab`` the next free id after the model vocabulary when it
loads a file, whatever id the file says; so once an entry is added to ``model.vocab``, the added tokens (Llama 3's
256 specials) are also written into ``model.vocab`` at their own ids, or every one of them would move. A
model-specific ``tokenizer_class`` becomes PreTrainedTokenizerFast: transformers 5 rebuilds ``Qwen2Tokenizer`` or
``LlamaTokenizer`` from vocabulary and merges with a pipeline of its own, dropping ``ignore_merges`` and the group.

The sentence-initial form: SentencePiece pipelines put ``▁`` before the first word too, so it is the same entry.
Byte-level BPE adds no prefix space: ``Hospitalization was`` at the very start of a text keeps its pieces, unless
the bare form is asked for as well (``sentence_initial``: a second entry, safe for the same reasons).

tokenizers 0.13 (transformers 4.24) has no ``ignore_merges``: there the words keep their pieces, and every text
without them encodes as in the source (a word the group keeps whole is one pre-token there, which 0.13's merges may
cut differently from the source's pieces).

A tokenizer.model that is no SentencePiece model is left as it is: Llama 3 repositories ship a tiktoken file
(a base64 token and its rank per line) under that name, which no transformers tokenizer reads beside tokenizer.json.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar

from ..errors import CheckpointFormatError, UnsupportedCheckpointError
from .base import CheckpointFiles, ModelEntry, Note, TextPipeline, TokenizerDocs, replace_keys
from .bpe_words import copy_pre_tokenizer, unreachable_entries, word_store
from .sentencepiece import SentencePieceFiles

_TIKTOKEN_LINE = re.compile(rb"[A-Za-z0-9+/]+={0,2} \d+")
#: tokenizer classes that transformers 5 loads from tokenizer.json as it is (a model's own class, Qwen2Tokenizer,
#: builds its pipeline anew from the vocabulary and merges and drops model options such as ignore_merges)
GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


class BPE(SentencePieceFiles):
    name = "bpe"
    model_type = "BPE"
    dense_vocabulary = False  # model.vocab maps tokens to ids: ids past the end may have gaps
    keeps_longer_words = True
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
        return word_store(tokenizer_json).form(tokenizer_json, pipeline, text) if tokenizer_json else None

    def check_word_forms(
        self, tokenizer_json: dict[str, Any] | None, tokenizer_config: dict[str, Any] | None, pipeline: TextPipeline
    ) -> list[str]:
        document = tokenizer_json or {}
        notes = []
        cls = (tokenizer_config or {}).get("tokenizer_class")
        if isinstance(cls, str) and cls not in GENERIC_CLASSES:
            notes.append(
                f"tokenizer_config.json: tokenizer_class {cls} -> PreTrainedTokenizerFast (transformers 5 builds {cls}"
                " anew from vocabulary and merges, without ignore_merges; the generic class loads tokenizer.json as"
                f" it is; a 4.x slow tokenizer loads by its class: {cls}.from_pretrained)"
            )
        if (document.get("model") or {}).get("ignore_merges"):
            return notes
        unreachable = unreachable_entries(document, pipeline)
        changed = word_store(document).changed_by_ignore_merges(unreachable, pipeline)
        if changed:
            raise UnsupportedCheckpointError(
                f"{len(changed)} entries of tokenizer.json's BPE vocabulary (first: {changed[0]!r}) are not produced"
                " whole by its merges and can be a whole pre-token, so turning ignore_merges on would change how"
                " text without the words encodes"
            )
        vocab = (document.get("model") or {}).get("vocab") or {}
        detail = (
            f"each of the {len(vocab)} entries encodes to itself"
            if not unreachable
            else f"the {len(unreachable)} entries the merges do not produce whole (such as {unreachable[0]!r})"
            " are never a whole pre-token"
        )
        return [*notes, f"tokenizer.json: model.ignore_merges -> true ({detail})"]

    def finish_edit(self, docs: TokenizerDocs, words: list[str], pipeline: TextPipeline | None) -> None:
        if not words or docs.tokenizer_json is None or pipeline is None:
            return
        document = docs.tokenizer_json
        model = document["model"]
        if not model.get("ignore_merges"):
            model["ignore_merges"] = True  # checked by check_word_forms; placed after the keys the model had
        vocab = model["vocab"]
        missing = {t["content"]: t["id"] for t in document.get("added_tokens", []) if t["content"] not in vocab}
        if missing:
            model["vocab"] = {**vocab, **missing}
        copy_pre_tokenizer(document)
        word_store(document).keep_whole(document, words, pipeline)
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
