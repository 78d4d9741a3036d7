"""Unigram (SentencePiece: T5, XLM-R, ALBERT): model.vocab is a list of [piece, score] where the id is the
position. A placed token is always an added token (Viterbi would not promise to keep it whole). The SentencePiece
model beside tokenizer.json is kept in step for transformers 4.x's slow tokenizers (see sentencepiece)."""

from __future__ import annotations

from typing import Any

from .base import ModelEntry, TokenizerDocs
from .sentencepiece import SentencePieceFiles


class Unigram(SentencePieceFiles):
    name = "unigram"
    model_type = "Unigram"
    model_files = ("spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
    side_files = model_files

    def read_model_vocab(self, model: dict[str, Any]) -> dict[str, int]:
        vocab = model.get("vocab")
        if not isinstance(vocab, list):
            raise ValueError("model.vocab is not a list of [piece, score]")
        return {str(entry[0]): idx for idx, entry in enumerate(vocab)}

    def set_model_entries(self, docs: TokenizerDocs, entries: list[ModelEntry]) -> None:
        self.rename_model_pieces(docs, entries)
        if docs.tokenizer_json is None:
            return
        vocab = list(docs.tokenizer_json["model"]["vocab"])
        lowest = min((entry[1] for entry in vocab), default=0.0)
        for entry in sorted(entries, key=lambda e: e.id):
            if entry.id < len(vocab):
                vocab[entry.id] = [entry.token, vocab[entry.id][1]]
            elif entry.id == len(vocab):
                # the lowest score of the vocabulary: the piece exists for the id, Viterbi will not prefer it
                vocab.append([entry.token, lowest])
            else:
                raise ValueError(f"the Unigram vocabulary has {len(vocab)} pieces; id {entry.id} would leave a gap")
        docs.tokenizer_json["model"]["vocab"] = vocab
