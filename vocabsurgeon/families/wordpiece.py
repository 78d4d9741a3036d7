"""WordPiece (BERT): vocab.txt and tokenizer.json's model.vocab hold the same tokens at the same ids."""

from __future__ import annotations

from .base import Family, ModelEntry, TokenizerDocs


class WordPiece(Family):
    name = "wordpiece"
    model_type = "WordPiece"
    side_files = ("vocab.txt",)

    def can_hold_whole_word(self) -> bool:
        return True

    def set_model_entries(self, docs: TokenizerDocs, entries: list[ModelEntry]) -> None:
        super().set_model_entries(docs, entries)
        if docs.vocab_txt is None:
            return
        for entry in sorted(entries, key=lambda e: e.id):
            if entry.id < len(docs.vocab_txt):
                docs.vocab_txt[entry.id] = entry.token
            elif entry.id == len(docs.vocab_txt):
                docs.vocab_txt.append(entry.token)
            else:
                raise ValueError(f"vocab.txt has {len(docs.vocab_txt)} lines; id {entry.id} would leave a gap")
