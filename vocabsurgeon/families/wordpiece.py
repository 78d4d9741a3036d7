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
        """Both transformers 4.x BERT tokenizers split ``covid-19`` despite the added token. The slow one splits
        punctuation before it looks words up: ``never_split`` keeps the word. The fast one (tokenizers 0.13) ignores
        added tokens already in the vocabulary: an exact rewrite of BertPreTokenizer keeps it (see bert_split)."""
        if not tokens:
            return
        if docs.tokenizer_config is not None:
            never_split = docs.tokenizer_config.get("never_split")
            kept = list(never_split) if isinstance(never_split, list) else []
            docs.tokenizer_config["never_split"] = kept + [t for t in tokens if t not in kept]
        if docs.tokenizer_json is None:
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
