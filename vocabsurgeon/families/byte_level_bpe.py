"""Slow-only byte-level BPE (GPT-2, RoBERTa as transformers 4.x slow tokenizers save them): vocab.json and
merges.txt, no tokenizer.json.

The vocabulary is vocab.json, with added_tokens.json and tokenizer_config's ``added_tokens_decoder`` for the added
tokens; the tokenizer is rebuilt as transformers' GPT-2 converter and GPT2Tokenizer build it (a byte-level BPE
model with no byte fallback, the ByteLevel pre-tokenizer with the config's ``add_prefix_space``). Tokens are
placed as in tokenizer.json's BPE: always added tokens, a slot's placeholder (RoBERTa's ``madeupword0``) renamed in
vocab.json in place, appended tokens in added_tokens.json (see tokenizer_edit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CheckpointFormatError
from ..vocabulary import AddedToken, Vocabulary
from .base import CheckpointFiles, TokenizerFiles
from .bpe import BPE

if TYPE_CHECKING:
    from tokenizers import Tokenizer


class ByteLevelBPEFiles(BPE):
    name = "byte-level-bpe"
    model_files = ()
    side_files = ("vocab.json",)
    lists_renamed_added = True  # a renamed madeupword0 is matched whole only as an added token

    def detects(self, files: TokenizerFiles) -> bool:
        return files.tokenizer_json is None and files.has("vocab.json") and files.has("merges.txt")

    def read_entries(self, files: TokenizerFiles) -> tuple[dict[str, int], tuple[AddedToken, ...]]:
        from ..formats.json_file import read_json_object

        path = files.path("vocab.json")
        vocab, _ = read_json_object(path)
        try:
            model_vocab = self.read_model_vocab({"vocab": vocab})
        except (ValueError, TypeError) as error:
            raise CheckpointFormatError(str(error), path=path) from None
        added = tuple(
            AddedToken(id=int(idx), content=str(token), special=False)
            for token, idx in sorted(files.added_tokens_json.items(), key=lambda item: item[1])
        )
        return model_vocab, added

    def slow_tokenizer(self, files: CheckpointFiles, vocabulary: Vocabulary) -> Tokenizer | None:
        from tokenizers import AddedToken as LibraryAddedToken
        from tokenizers import Tokenizer, decoders, pre_tokenizers
        from tokenizers.models import BPE as BPEModel

        config = files.tokenizer_config or {}
        merges = read_merges(files)
        model = BPEModel(
            dict(vocabulary.model_vocab),
            merges,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
        tokenizer = Tokenizer(model)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(config.get("add_prefix_space")))
        tokenizer.decoder = decoders.ByteLevel()
        specials = vocabulary.all_special_tokens()
        # in id order, so that tokens past vocab.json get the ids the files give them
        for token in sorted(vocabulary.added, key=lambda t: t.id):
            special = token.special or token.content in specials
            entry = LibraryAddedToken(
                token.content,
                single_word=token.single_word,
                lstrip=token.lstrip,
                rstrip=token.rstrip,
                normalized=token.normalized and not special,
                special=special,
            )
            tokenizer.add_tokens([entry])
        known = {t.content for t in vocabulary.added}
        tokenizer.add_special_tokens(sorted(t for t in specials if t not in known and t in vocabulary.model_vocab))
        return tokenizer


def read_merges(files: CheckpointFiles) -> list[tuple[str, str]]:
    """merges.txt as GPT2Tokenizer reads it: a ``#version`` first line skipped, one ``left right`` pair a line."""
    path = files.path("merges.txt")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointFormatError(f"cannot read: {error}", path=path) from None
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CheckpointFormatError(f"line {number} is not a pair of tokens", path=path)
        merges.append((parts[0], parts[1]))
    return merges
