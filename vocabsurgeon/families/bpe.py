"""Byte-level BPE (GPT-2, RoBERTa, Llama 3, Qwen): a vocabulary entry is reachable only through merges, so new
tokens are always added tokens; vocab.json is kept in step where the checkpoint has one."""

from __future__ import annotations

from .base import Family, ModelEntry, TokenizerDocs, replace_keys


class BPE(Family):
    name = "bpe"
    model_type = "BPE"
    side_files = ("vocab.json",)

    def set_model_entries(self, docs: TokenizerDocs, entries: list[ModelEntry]) -> None:
        super().set_model_entries(docs, entries)
        if "vocab.json" in docs.side:
            docs.side["vocab.json"] = replace_keys(docs.side["vocab.json"], entries)
