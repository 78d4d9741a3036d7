"""WordPiece (BERT): vocab.txt and tokenizer.json's model.vocab hold the same tokens at the same ids."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointFormatError
from ..vocabulary import AddedToken, Vocabulary
from .base import CheckpointFiles, Family, ModelEntry, TokenizerDocs, TokenizerFiles
from .bert_split import is_replaceable, kept_tokens, split_pre_tokenizer

if TYPE_CHECKING:
    from tokenizers import Tokenizer


class WordPiece(Family):
    name = "wordpiece"
    model_type = "WordPiece"
    side_files = ("vocab.txt",)
    continuing_prefix = "##"

    def longest_word(self, tokenizer_json: dict[str, Any] | None) -> int | None:
        """``max_input_chars_per_word``: WordPiece gives a longer word ``[UNK]`` (transformers' default 100, which
        the slow BertTokenizer also uses)."""
        model = (tokenizer_json or {}).get("model") or {}
        limit = model.get("max_input_chars_per_word", 100)
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else 100

    def detects(self, files: TokenizerFiles) -> bool:
        """A WordPiece tokenizer.json, or a slow-only BERT: vocab.txt alone."""
        return super().detects(files) or (files.tokenizer_json is None and files.vocab_txt is not None)

    def read_entries(self, files: TokenizerFiles) -> tuple[dict[str, int], tuple[AddedToken, ...]]:
        if files.tokenizer_json is not None or files.vocab_txt is None:
            return super().read_entries(files)
        model_vocab = {}
        for idx, token in enumerate(files.vocab_txt):
            model_vocab[token] = idx  # as BertTokenizer's load_vocab: the last duplicate wins (audit reports it)
        for token, idx in files.added_tokens_json.items():
            if type(idx) is not int or idx < 0:
                raise CheckpointFormatError(
                    f"{token!r} has id {json.dumps(idx)}, not a non-negative integer",
                    path=files.path("added_tokens.json"),
                )
        added = tuple(
            AddedToken(id=idx, content=str(token), special=False)
            for token, idx in sorted(files.added_tokens_json.items(), key=lambda item: item[1])
        )
        return model_vocab, added

    def slow_tokenizer(self, files: CheckpointFiles, vocabulary: Vocabulary) -> Tokenizer | None:
        """The pipeline BertTokenizer applies, per tokenizer_config.json (what transformers' converter builds)."""
        from tokenizers import Tokenizer, normalizers, pre_tokenizers
        from tokenizers.models import WordPiece

        config = files.tokenizer_config or {}
        unk = vocabulary.special_tokens.get("unk_token", "[UNK]")
        tokenizer = Tokenizer(WordPiece(dict(vocabulary.model_vocab), unk_token=unk, continuing_subword_prefix="##"))
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
            strip_accents=config.get("strip_accents"),
            lowercase=bool(config.get("do_lower_case", True)),
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        specials = [t.content for t in vocabulary.added if t.special] + sorted(vocabulary.all_special_tokens())
        tokenizer.add_special_tokens(list(dict.fromkeys(specials)))
        return tokenizer

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
