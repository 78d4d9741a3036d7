"""BPE: byte-level (GPT-2, RoBERTa, Llama 3, Qwen) or SentencePiece BPE (Llama 2, Mistral). A vocabulary entry is
reachable only through merges, so new tokens are always added tokens; the slow tokenizer's vocabulary is kept in
step where the checkpoint has one: vocab.json, or a SentencePiece tokenizer.model (see sentencepiece)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ModelEntry, TokenizerDocs, replace_keys
from .sentencepiece import SentencePieceFiles

if TYPE_CHECKING:
    from ..inventory import Inventory


class BPE(SentencePieceFiles):
    name = "bpe"
    model_type = "BPE"
    model_files = ("tokenizer.model",)
    side_files = ("vocab.json", *model_files)

    def read_side_files(self, docs: TokenizerDocs, inventory: Inventory) -> None:
        super().read_side_files(docs, inventory)
        if inventory.has("vocab.json"):
            from ..formats.json_file import read_json_object

            docs.side["vocab.json"] = read_json_object(inventory.path("vocab.json"))[0]

    def side_outputs(self, docs: TokenizerDocs, inventory: Inventory) -> dict[str, bytes]:
        outputs = super().side_outputs(docs, inventory)
        if "vocab.json" in docs.side:
            from ..formats.json_file import dump_json, read_json_object, read_text

            path = inventory.path("vocab.json")
            text = dump_json(docs.side["vocab.json"], read_json_object(path)[1])
            if text != read_text(path):
                outputs["vocab.json"] = text.encode("utf-8")
        return outputs

    def set_model_entries(self, docs: TokenizerDocs, entries: list[ModelEntry]) -> None:
        super().set_model_entries(docs, entries)
        self.rename_model_pieces(docs, entries)
        if "vocab.json" in docs.side:
            docs.side["vocab.json"] = replace_keys(docs.side["vocab.json"], entries)
