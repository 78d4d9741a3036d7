"""One module per file type: pure ``parse_*``/``dump_*`` plus thin ``read_*``/``write_*``.

Weight formats implement one protocol (:class:`~vocabsurgeon.formats.weights.WeightFormat`) and are registered in
:data:`WEIGHT_FORMATS`, in the order transformers prefers them: a new format is a new module and a line here. An
entry names the files transformers writes in the format and imports its module only when one is used, so a
checkpoint without ``pytorch_model.bin`` never imports ``torch_bin``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from .weights import WeightFile, WeightFormat


@dataclass(frozen=True)
class FormatEntry:
    """A registered weight format: its name, module and the file names transformers gives it."""

    name: Literal["safetensors", "pytorch"]
    module: str  # a module of this package whose ``FORMAT`` implements WeightFormat
    single_file: str
    shard_pattern: str  # with {i} and {n}
    index_file: str

    @cached_property
    def handler(self) -> WeightFormat:
        # __import__, not importlib.import_module: the import statement's path, which `python -X importtime` reports
        module = __import__(f"{__name__}.{self.module}", fromlist=["FORMAT"])
        return module.FORMAT  # type: ignore[no-any-return]


WEIGHT_FORMATS: dict[str, FormatEntry] = {
    entry.name: entry
    for entry in (
        FormatEntry(
            "safetensors",
            "safetensors_stream",
            "model.safetensors",
            "model-{i:05d}-of-{n:05d}.safetensors",
            "model.safetensors.index.json",
        ),
        FormatEntry(
            "pytorch",
            "torch_bin",
            "pytorch_model.bin",
            "pytorch_model-{i:05d}-of-{n:05d}.bin",
            "pytorch_model.bin.index.json",
        ),
    )
}

__all__ = ["WEIGHT_FORMATS", "FormatEntry", "WeightFile", "WeightFormat"]
