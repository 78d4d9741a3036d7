"""Byte-level BPE (GPT-2, RoBERTa, Llama 3, Qwen): a vocabulary entry is reachable only through merges, so new
tokens are always added tokens; vocab.json is kept in step where the checkpoint has one."""

from __future__ import annotations

from .base import Family, TokenizerDocs, replace_key


class BPE(Family):
    name = "bpe"
    model_type = "BPE"
    side_files = ("vocab.json",)

    def set_model_entry(self, docs: TokenizerDocs, token_id: int, token: str, replaces: str | None) -> None:
        super().set_model_entry(docs, token_id, token, replaces)
        if "vocab.json" in docs.side:
            docs.side["vocab.json"] = replace_key(docs.side["vocab.json"], replaces, token, token_id)
