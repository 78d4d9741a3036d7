"""A SentencePiece model beside tokenizer.json (``spiece.model`` of T5 and ALBERT, ``sentencepiece.bpe.model`` of
XLM-R, ``tokenizer.model`` of Llama 2), kept in step for transformers 4.x's slow tokenizers, which read it and not
tokenizer.json.

A slot placement renames the slot's piece in the .model too, in place (same id), and a word appended right after
the model's last piece is appended to it, so that the ids stay tokenizer.json's:
- a word (stored in its running-text form, ``▁hospitalization``, SentencePiece's own form of it): in Unigram a
  NORMAL piece with the score tokenizer.json gives it, so that SentencePiece's Viterbi decides as tokenizers' does;
  in BPE a USER_DEFINED piece (score 0), which SentencePiece always extracts whole. SentencePiece BPE has no
  whole-word lookup, so the slow tokenizer also takes the piece at the start of a longer word
  (``▁hospitalization`` + ``s``), where the fast one keeps the longer word's pieces;
- a special token keeps its exact text (4.x splits special tokens off itself and maps them with ``piece_to_id``);
- any other token is stored as SentencePiece's own normalizer turns it into (``new york`` -> ``▁new▁york``), a
  USER_DEFINED piece with the slot's score.

Other appended tokens live in added_tokens.json, where 4.x slow tokenizers learn them (see tokenizer_edit). A model
whose ids are not tokenizer.json's (XLM-R's sit one below) is left as it is.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import CheckpointFiles, Family, ModelEntry, TokenizerDocs


class SentencePieceFiles(Family):
    """Mixin of the families whose checkpoints may carry a SentencePiece model; ``model_files`` names them."""

    model_files: ClassVar[tuple[str, ...]] = ()

    def read_side_files(self, docs: TokenizerDocs, files: CheckpointFiles) -> None:
        super().read_side_files(docs, files)
        for name in self.model_files:
            if files.has(name):
                model = self.read_model_file(files, name)
                if model is not None:
                    docs.side[name] = model

    def read_model_file(self, files: CheckpointFiles, name: str) -> Any:
        """The ``ModelProto`` of ``name``, to keep in step; None leaves the file as it is (a family whose
        ``model_files`` may be another format). By default a file that is no SentencePiece model is an error."""
        from ..formats.sentencepiece_model import read_model

        return read_model(files.path(name))

    def side_outputs(self, docs: TokenizerDocs, files: CheckpointFiles) -> dict[str, bytes]:
        outputs = super().side_outputs(docs, files)
        from ..formats.sentencepiece_model import dump_model, parse_model

        for name in self.model_files:
            if name not in docs.side:
                continue
            data = dump_model(docs.side[name])
            original = files.path(name).read_bytes()
            # the second comparison: a file sentencepiece did not write itself may serialize differently unchanged
            if data != original and data != dump_model(parse_model(original, path=files.path(name))):
                outputs[name] = data
        return outputs

    #: the piece type a word's running-text form gets in the SentencePiece model (see the module docstring)
    word_piece_type: ClassVar[str] = "USER_DEFINED"

    def rename_model_pieces(
        self, docs: TokenizerDocs, entries: list[ModelEntry], scores: dict[str, float] | None = None
    ) -> None:
        """Rename each renamed slot's piece in every SentencePiece model the checkpoint has, and append the words
        placed right after its last piece; ``scores`` by word (Unigram), else a word keeps the slot's score."""
        for name in self.model_files:
            if name in docs.side:
                rename_slots(docs.side[name], entries, self.word_piece_type, scores or {})
                append_words(docs.side[name], entries, self.word_piece_type, scores or {})


def rename_slots(model: Any, entries: list[ModelEntry], word_type: str, scores: dict[str, float]) -> None:
    """Rename, in ``model`` (a ModelProto), the piece of each entry that renames a placeholder.

    Entries past the end of the model (appended tokens) are not its business here. If the model does not hold an
    entry's placeholder at that entry's id, it does not share tokenizer.json's ids (XLM-R's pieces sit one id below
    their fairseq ids, or the file is stale): renaming by id would overwrite some other piece, so the file is left
    as it is, and transformers 4.x's slow tokenizer keeps its old view of those ids.
    """
    from ..formats.sentencepiece_model import normalizer, piece_index, rename_piece

    renames = sorted(
        (e for e in entries if e.replaces is not None and 0 <= e.id < len(model.pieces)), key=lambda e: e.id
    )
    if not renames or any(model.pieces[e.id].piece != e.replaces for e in renames):
        return
    processor = normalizer(model)  # the normalizer as it was, before any piece of this surgery is in its matcher
    pieces = piece_index(model)
    for entry in renames:
        del pieces[entry.replaces]  # type: ignore[arg-type]  # replaces is set for every rename
    for entry in renames:
        # a word's running-text form is SentencePiece's own already; a special token keeps its exact text
        exact = entry.word or entry.special
        candidates = [entry.token] if exact else [processor.normalize(entry.token), entry.token]
        # the normalized form may already be an ordinary piece (``▁hospital``): SentencePiece refuses a model with
        # a duplicated piece, so the exact text is the fallback (4.x then finds it after a ``▁`` piece)
        piece = next((c for c in candidates if c and c not in pieces), None)
        if piece is None:  # only a special token whose text is a piece elsewhere: no valid rename, it stays
            pieces[entry.replaces] = entry.id  # type: ignore[index]
            continue
        rename_piece(model, entry.id, piece, word_type if entry.word else "USER_DEFINED", pieces=pieces)
        if entry.word and entry.token in scores:
            model.pieces[entry.id].score = scores[entry.token]


def append_words(model: Any, entries: list[ModelEntry], word_type: str, scores: dict[str, float]) -> None:
    """Append to ``model`` the words placed at the ids right after its last piece, in id order, as long as the
    ids follow on (a model whose ids are not tokenizer.json's, XLM-R's, is never reached: its ids lag behind)."""
    from ..formats.sentencepiece_model import append_piece, piece_index

    words = sorted((e for e in entries if e.word and e.replaces is None), key=lambda e: e.id)
    pieces = piece_index(model) if words else {}
    for entry in words:
        if entry.id != len(model.pieces) or entry.token in pieces:
            break
        append_piece(model, entry.token, scores.get(entry.token, 0.0), word_type, pieces=pieces)
