"""Unigram (SentencePiece: T5, XLM-R, ALBERT): model.vocab is a list of [piece, score] where the id is the
position. The SentencePiece model beside tokenizer.json is kept in step for transformers 4.x's slow tokenizers (see
sentencepiece).

Words. A word the pre-tokenizer keeps whole becomes the piece of its running-text form (``▁hospitalization``),
with a score just above that of the word's best segmentation in the source (its Viterbi score + ``SCORE_MARGIN``):
Viterbi then picks the piece for the word, wherever it stands (T5 and XLM-R put ▁ before every word, so the
sentence-initial form is the same piece). Why text without the word encodes as before: a segmentation can only
use the new piece inside a pre-token that contains it, and every pre-token begins with ▁, so only a pre-token that
begins with the word (``▁hospitalizations``). There the piece wins only where the old best segmentation already
broke right after the word (to within the margin): such a longer word becomes the word's piece followed by the same
rest. No score can avoid that (a score high enough to win alone wins there too), and Unigram has no whole-word
lookup; it is documented, and shown in the plan. The slow tokenizer's SentencePiece model gets the same piece as a
NORMAL piece with the same score, so its Viterbi decides the same.

Any other token (a string the pre-tokenizer splits, ``new york``) is an added token.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import METASPACE, ModelEntry, TextPipeline, TokenizerDocs, running_text_form
from .sentencepiece import SentencePieceFiles

#: how far above the word's best segmentation its piece scores (a float32 .model keeps it: its scores are ~-50)
SCORE_MARGIN = 1e-3
#: what tokenizers (and SentencePiece) charge an unknown character: the lowest score minus this
UNK_PENALTY = 10.0


class Unigram(SentencePieceFiles):
    name = "unigram"
    model_type = "Unigram"
    model_files = ("spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
    side_files = model_files
    word_piece_type: ClassVar[str] = "NORMAL"

    def read_model_vocab(self, model: dict[str, Any]) -> dict[str, int]:
        vocab = model.get("vocab")
        if not isinstance(vocab, list):
            raise ValueError("model.vocab is not a list of [piece, score]")
        return {str(entry[0]): idx for idx, entry in enumerate(vocab)}

    def word_form(self, tokenizer_json: dict[str, Any] | None, pipeline: TextPipeline, text: str) -> str | None:
        return running_text_form(pipeline, text, METASPACE) if tokenizer_json is not None else None

    def check_word_forms(
        self, tokenizer_json: dict[str, Any] | None, tokenizer_config: dict[str, Any] | None, pipeline: TextPipeline
    ) -> list[str]:
        return [
            f"tokenizer.json: each word's piece scores {SCORE_MARGIN:g} above the word's best segmentation, so"
            " Viterbi picks it; a longer word that begins with it changes only where its best segmentation already"
            " broke right after it (it then starts with the new piece)"
        ]

    def set_model_entries(self, docs: TokenizerDocs, entries: list[ModelEntry]) -> None:
        scores = word_scores(docs, [e.token for e in entries if e.word])
        self.rename_model_pieces(docs, entries, scores)
        if docs.tokenizer_json is None:
            return
        vocab = list(docs.tokenizer_json["model"]["vocab"])
        lowest = min((entry[1] for entry in vocab), default=0.0)
        for entry in sorted(entries, key=lambda e: e.id):
            if entry.id < len(vocab):
                vocab[entry.id] = [entry.token, scores.get(entry.token, vocab[entry.id][1])]
            elif entry.id == len(vocab):
                # not a word: the lowest score of the vocabulary, Viterbi will not prefer it
                vocab.append([entry.token, scores.get(entry.token, lowest)])
            else:
                raise ValueError(f"the Unigram vocabulary has {len(vocab)} pieces; id {entry.id} would leave a gap")
        docs.tokenizer_json["model"]["vocab"] = vocab


def word_scores(docs: TokenizerDocs, words: list[str]) -> dict[str, float]:
    """The score of each word's piece: the Viterbi score of its best segmentation by the source's Unigram model
    (tokenizers' own), plus ``SCORE_MARGIN``."""
    if not words or docs.tokenizer_json is None:
        return {}
    from tokenizers.models import Unigram as UnigramModel

    spec = docs.tokenizer_json["model"]
    vocab = [(str(piece), float(score)) for piece, score in spec["vocab"]]
    model = UnigramModel(vocab, spec.get("unk_id"), bool(spec.get("byte_fallback", False)))
    unknown = min(score for _, score in vocab) - UNK_PENALTY
    scores = {}
    for word in words:
        spans: dict[tuple[int, int], float] = {}
        for token in model.tokenize(word):
            known = token.id != spec.get("unk_id") and not (spec.get("byte_fallback") and _is_byte(token.value))
            spans[token.offsets] = vocab[token.id][1] if known else unknown * (token.offsets[1] - token.offsets[0])
        scores[word] = round(sum(spans.values()) + SCORE_MARGIN, 6)
    return scores


def _is_byte(piece: str) -> bool:
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")
