"""WordPiece (BERT): vocab.txt and tokenizer.json's model.vocab hold the same tokens at the same ids."""

from __future__ import annotations

from .base import Family, TokenizerDocs


class WordPiece(Family):
    name = "wordpiece"
    model_type = "WordPiece"
    side_files = ("vocab.txt",)

    def can_hold_whole_word(self) -> bool:
        return True

    def set_model_entry(self, docs: TokenizerDocs, token_id: int, token: str, replaces: str | None) -> None:
        super().set_model_entry(docs, token_id, token, replaces)
        if docs.vocab_txt is not None:
            if token_id < len(docs.vocab_txt):
                docs.vocab_txt[token_id] = token
            elif token_id == len(docs.vocab_txt):
                docs.vocab_txt.append(token)
            else:
                raise ValueError(f"vocab.txt has {len(docs.vocab_txt)} lines; id {token_id} would leave a gap")
