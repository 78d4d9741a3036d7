"""A SentencePiece model beside tokenizer.json (``spiece.model`` of T5 and ALBERT, ``sentencepiece.bpe.model`` of
XLM-R, ``tokenizer.model`` of Llama 2), kept in step for transformers 4.x's slow tokenizers, which read it and not
tokenizer.json.

A slot placement renames the slot's piece in the .model too, in place (same id, same score), as a USER_DEFINED
piece: SentencePiece always extracts those whole. A special token keeps its exact text, since transformers 4.x
splits special tokens off itself and maps them with ``piece_to_id``. Any other token is stored as SentencePiece's
own normalizer turns it into before looking pieces up (``hospitalization`` -> ``▁hospitalization``, ``new york``
-> ``▁new▁york``), the only form in which ``sp_model.encode`` finds it as one piece: as the bare text it would come
out as ``▁`` + the piece, and a text with a space would never match.

The .model never grows: tokens appended past it live in added_tokens.json, where 4.x slow tokenizers learn them
(see tokenizer_edit), so that their ids stay those of tokenizer.json.
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

    def rename_model_pieces(self, docs: TokenizerDocs, entries: list[ModelEntry]) -> None:
        """Rename each renamed slot's piece in every SentencePiece model the checkpoint has."""
        for name in self.model_files:
            if name in docs.side:
                rename_slots(docs.side[name], entries)


def rename_slots(model: Any, entries: list[ModelEntry]) -> None:
    """Rename, in ``model`` (a ModelProto), the piece of each entry that renames a placeholder.

    Entries past the end of the model (appended tokens) are not its business. If the model does not hold an entry's
    placeholder at that entry's id, it does not share tokenizer.json's ids (XLM-R's pieces sit one id below their
    fairseq ids, or the file is stale): renaming by id would overwrite some other piece, so the file is left as it
    is, and transformers 4.x's slow tokenizer keeps its old view of those ids.
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
        candidates = [entry.token] if entry.special else [processor.normalize(entry.token), entry.token]
        # the normalized form may already be an ordinary piece (``▁hospital``): SentencePiece refuses a model with
        # a duplicated piece, so the exact text is the fallback (4.x then finds it after a ``▁`` piece)
        piece = next((c for c in candidates if c and c not in pieces), None)
        if piece is None:  # only a special token whose text is a piece elsewhere: no valid rename, it stays
            pieces[entry.replaces] = entry.id  # type: ignore[index]
            continue
        rename_piece(model, entry.id, piece, "USER_DEFINED", pieces=pieces)
