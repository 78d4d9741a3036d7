"""The plan: a frozen, JSON-serializable description of one surgery, computed before anything is written."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import CheckpointFormatError, CheckpointNotFoundError, OutputExistsError
from .families import Mode

Operation = Literal["remap", "append", "auto", "resize"]
Init = Literal["keep", "mean", "subword-mean", "zeros", "normal"]
SlotSource = Literal["placeholder", "padding", "new"]
WeightsFormat = Literal["safetensors", "pytorch"]

INITS: tuple[str, ...] = ("keep", "mean", "subword-mean", "zeros", "normal")
PLAN_VERSION = 1


@dataclass(frozen=True)
class Placement:
    """One new token: where it goes, how it is stored and how its rows are initialized."""

    token: str  # as requested
    content: str  # as stored (normalized by the tokenizer's own normalizer)
    id: int
    mode: Mode  # vocab entry, added token, or special added token
    slot: SlotSource
    replaces: str | None  # the placeholder it takes the place of
    init: Init
    pieces: tuple[int, ...] = ()  # what the original tokenizer split it into (for subword-mean)


@dataclass(frozen=True)
class Skip:
    token: str
    reason: str


@dataclass(frozen=True)
class Plan:
    operation: Operation
    source: str
    fingerprints: dict[str, str] = field(compare=False)
    family: str
    placements: tuple[Placement, ...]
    skipped: tuple[Skip, ...]
    rows_before: int | None
    rows_after: int | None
    tokenizer_size_before: int
    tokenizer_size_after: int
    pad_init: Init  # for rows that get no token (pad-to-multiple, resize)
    exclude_from_mean: tuple[int, ...]  # placeholder and padding ids: untrained rows
    config_vocab_size: int | None  # the value config.json gets, None = unchanged
    weights_format: WeightsFormat | None  # None = as the source
    seed: int = 0
    version: int = PLAN_VERSION

    @property
    def grows(self) -> bool:
        return self.rows_before is not None and self.rows_after is not None and self.rows_after > self.rows_before

    @property
    def changes_rows(self) -> bool:
        return self.grows or any(p.init != "keep" for p in self.placements)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["placements"] = [asdict(p) for p in self.placements]
        document["skipped"] = [asdict(s) for s in self.skipped]
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Plan:
        data = dict(document)
        data["placements"] = tuple(
            Placement(**{**p, "pieces": tuple(p.get("pieces", ()))}) for p in data.get("placements", [])
        )
        data["skipped"] = tuple(Skip(**s) for s in data.get("skipped", []))
        data["exclude_from_mean"] = tuple(data.get("exclude_from_mean", ()))
        return cls(**data)


def save_plan(plan: Plan, path: Path, *, force: bool = False) -> None:
    """Write ``plan`` as JSON; an existing file is replaced only with ``force``."""
    from .formats.json_file import JsonStyle, dump_json

    if path.exists() and not force:
        raise OutputExistsError("already exists", path=path, hint="pass --force to replace it")
    document = {"vocabsurgeon_plan": PLAN_VERSION, **plan.to_json()}
    path.write_text(dump_json(document, JsonStyle(indent=2)), encoding="utf-8")


def load_plan(path: Path) -> Plan:
    """Read a plan saved by save_plan; anything else is a one-line error naming the file."""
    from .formats.json_file import read_json_object

    if not path.is_file():
        raise CheckpointNotFoundError("plan file does not exist", path=path)
    document, _ = read_json_object(path)
    if document.pop("vocabsurgeon_plan", None) != PLAN_VERSION:
        raise CheckpointFormatError(f"not a vocabsurgeon plan (version {PLAN_VERSION})", path=path)
    try:
        return Plan.from_json(document)
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointFormatError(f"malformed plan: {error}", path=path) from None


def hash_document(document: Any) -> str:
    """A stable sha256 of a JSON-able value (recipes, plans)."""
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
