"""WordPiece (BERT): vocab.txt and tokenizer.json's model.vocab hold the same tokens at the same ids."""

from __future__ import annotations

from .base import Family, ModelEntry, TokenizerDocs
from .bert_split import is_replaceable, kept_tokens, split_pre_tokenizer


class WordPiece(Family):
    name = "wordpiece"
    model_type = "WordPiece"
    side_files = ("vocab.txt",)

    def can_hold_whole_word(self) -> bool:
        return True

    def keep_whole(self, docs: TokenizerDocs, tokens: list[str]) -> None:
        """tokenizers 0.13 (transformers 4.24's fast tokenizer) splits ``covid-19`` despite the added token; an
        exact rewrite of BertPreTokenizer that keeps it whole lets WordPiece find it (see bert_split)."""
        if docs.tokenizer_json is None or not tokens:
            return
        current = docs.tokenizer_json.get("pre_tokenizer")
        if not is_replaceable(current):
            return  # a custom pre-tokenizer: left as it is; 4.24's fast tokenizer will split these tokens
        earlier = kept_tokens(current) or []  # type: ignore[arg-type]
        docs.tokenizer_json["pre_tokenizer"] = split_pre_tokenizer([*earlier, *tokens])

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
