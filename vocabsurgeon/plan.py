"""The plan: a frozen, JSON-serializable value that is the whole decision of one surgery, made before anything is
written.

It says which token goes to which id (placements), what happens to every vocabulary-indexed tensor (its file, axis,
rows before and after, and which rows get which initialization), what happens to every output file (copied,
rewritten, streamed with edits, converted, created), which config keys are set, and the fingerprints of the source
files it was computed from. ``apply`` carries a finished plan out and decides nothing.

A saved plan is parsed back into these types by :func:`parse_plan`, which checks every field (types, known names,
ids within range, one placement per id) and raises :class:`~vocabsurgeon.errors.PlanError` naming the field, so a
hand-edited plan is either the plan it says or refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .errors import CheckpointFormatError, CheckpointNotFoundError, OutputExistsError, PlanError
from .inits import INITIALIZATIONS, INITS, POOLED_WEIGHT, DistillSettings, Init

Mode = Literal["vocab", "added", "special"]
Operation = Literal["remap", "append", "auto", "resize"]
SlotSource = Literal["placeholder", "padding", "new"]
WeightsFormat = Literal["safetensors", "pytorch"]
FileAction = Literal["copy", "rewrite", "edit", "convert", "create"]
Form = Literal["as-is", "running-text", "sentence-initial"]

OPERATIONS: tuple[str, ...] = get_args(Operation)
MODES: tuple[str, ...] = get_args(Mode)
SLOT_SOURCES: tuple[str, ...] = get_args(SlotSource)
FILE_ACTIONS: tuple[str, ...] = get_args(FileAction)
FORMS: tuple[str, ...] = get_args(Form)
PLAN_VERSION = 2


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
    #: "running-text": stored as the family's model produces the word mid-sentence (byte-level BPE: Ġword), so it is
    #: one id after a space; "sentence-initial": the word's form at the very start of a text where that differs (the
    #: bare word in byte-level BPE), a second entry asked for with ``sentence_initial``; "as-is": as the
    #: normalizer leaves it
    form: Form = "as-is"


@dataclass(frozen=True)
class Skip:
    token: str
    reason: str


@dataclass(frozen=True)
class RowInit:
    """Rows of one tensor set with one initialization, in the order they are computed (``normal`` draws in it)."""

    init: Init
    ids: tuple[int, ...]


@dataclass(frozen=True)
class TensorOp:
    """What happens to one vocabulary-indexed tensor: it has ``rows_before`` rows along ``axis`` (0, or 1 for a
    ``(1, V)`` buffer), gets ``rows_after``, and the rows in ``rows`` are written. ``table`` names the config key
    that gives the row count of a table with a count of its own (Gemma 3n's per-layer embedding), which never
    grows: ids past its rows are not its business."""

    name: str
    file: str
    axis: int
    rows_before: int
    rows_after: int
    rows: tuple[RowInit, ...]
    table: str | None = None

    @property
    def written(self) -> int:
        return sum(len(r.ids) for r in self.rows)


@dataclass(frozen=True)
class FileOp:
    """One output file: ``copy`` (the source's bytes), ``rewrite`` (a tokenizer, config or index file edited),
    ``edit`` (a weight file streamed with its tensor ops), ``convert`` (weights written in another format, from
    ``source``), ``create`` (a file the source lacks). ``sha256`` is the planned content of a tokenizer or config
    file, so that applying a saved plan is checked to write what was reviewed."""

    path: str
    action: FileAction
    source: str | None = None
    sha256: str | None = None


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
    config: dict[str, int]  # config.json keys set, dotted for nested sections ("text_config.vocab_size")
    weights_format: WeightsFormat | None  # None = as the source
    tensors: tuple[TensorOp, ...] = ()
    files: tuple[FileOp, ...] = ()
    init_std: float = 0.02  # the standard deviation of ``normal`` rows (the config's initializer_range)
    seed: int = 0
    notes: tuple[str, ...] = ()  # what the tokenizer family changes besides the placements (ignore_merges ...)
    #: what the distilled rows (``init == "distill"``) read and how long they train; None when none is
    distill: DistillSettings | None = None
    version: int = PLAN_VERSION
    #: the rendered tokenizer and config files (path -> bytes), kept from planning for apply; never serialized
    rendered: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    #: the rendered JSON tokenizer files as values (what parsing their bytes gives); never serialized
    documents: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: the Inventory the plan was made from (apply checks any other source against the plan); never serialized
    origin: Any = field(default=None, compare=False, repr=False)

    @property
    def grows(self) -> bool:
        return self.rows_before is not None and self.rows_after is not None and self.rows_after > self.rows_before

    @property
    def config_vocab_size(self) -> int | None:
        """The vocab_size config.json gets, None when unchanged."""
        return next((value for key, value in self.config.items() if key.split(".")[-1] == "vocab_size"), None)

    def file(self, path: str) -> FileOp | None:
        return next((f for f in self.files if f.path == path), None)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        del document["rendered"], document["documents"], document["origin"]
        document["placements"] = [asdict(p) for p in self.placements]
        document["skipped"] = [asdict(s) for s in self.skipped]
        document["tensors"] = [{**asdict(t), "rows": {r.init: list(r.ids) for r in t.rows}} for t in self.tensors]
        document["files"] = [{k: v for k, v in asdict(f).items() if v is not None} for f in self.files]
        document["distill"] = self.distill.to_json() if self.distill is not None else None
        return document


def save_plan(plan: Plan, path: Path, *, force: bool = False) -> None:
    """Write ``plan`` as JSON; an existing file is replaced only with ``force``."""
    from .formats.json_file import JsonStyle, dump_json

    if path.exists() and not force:
        raise OutputExistsError("already exists", path=path, hint="pass --force to replace it")
    if not plan.fingerprints:
        raise PlanError("a plan is saved with the fingerprints of its source files", path=path)
    document = {"vocabsurgeon_plan": PLAN_VERSION, **plan.to_json()}
    path.write_text(dump_json(document, JsonStyle(indent=2)), encoding="utf-8")


def load_plan(path: Path) -> Plan:
    """Read a plan saved by save_plan; anything else is a one-line error naming the file and the field."""
    from .formats.json_file import read_json_object

    if not path.is_file():
        raise CheckpointNotFoundError("plan file does not exist", path=path)
    document, _ = read_json_object(path)
    version = document.pop("vocabsurgeon_plan", None)
    if version != PLAN_VERSION:
        found = "no" if version is None else repr(version)
        raise CheckpointFormatError(
            f"not a vocabsurgeon plan of version {PLAN_VERSION} ({found} vocabsurgeon_plan)",
            path=path,
            hint="make the plan again with this version (--save-plan)",
        )
    return parse_plan(document, path=path)


# ------------------------------------------------------------------------------------------------ parsing


class _Fields:
    """Typed access to one JSON object of a plan; every failure names the field's path."""

    def __init__(self, data: Any, where: str, path: Path | None) -> None:
        if not isinstance(data, dict):
            raise PlanError(f"{where or 'the plan'} must be an object", path=path)
        self.data, self.where, self.path = data, where, path

    def fail(self, key: str, problem: str) -> PlanError:
        name = f"{self.where}.{key}" if self.where else key
        return PlanError(f"field {name} {problem}", path=self.path)

    def get(self, key: str, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(key, "is missing")
            return default
        return self.data[key]

    def string(self, key: str, *, optional: bool = False, default: Any = ...) -> Any:
        value = self.get(key, None if optional and default is ... else default)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, not {_kind(value)}")
        return value

    def integer(self, key: str, *, optional: bool = False, minimum: int | None = 0, default: Any = ...) -> Any:
        value = self.get(key, None if optional and default is ... else default)
        if value is None and optional:
            return None
        if type(value) is not int:
            raise self.fail(key, f"must be an integer, not {_kind(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be at least {minimum}, not {value}")
        return value

    def positive(self, key: str, default: float) -> float:
        value = self.get(key, default)
        if type(value) not in (int, float):
            raise self.fail(key, f"must be a number, not {_kind(value)}")
        if not math.isfinite(value) or value <= 0:
            raise self.fail(key, f"must be a positive finite number, not {value!r}")
        return float(value)

    def choice(self, key: str, choices: tuple[str | int, ...], *, optional: bool = False, default: Any = ...) -> Any:
        value = self.get(key, None if optional and default is ... else default)
        if value is None and optional:
            return None
        # exact types: 0.0 and True equal 0 and 1 but are not an axis
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            listed = ", ".join(str(choice) for choice in choices)
            raise self.fail(key, f"must be one of {listed}, not {value!r}")
        return value

    def items(self, key: str, *, default: Any = ...) -> list[Any]:
        value = self.get(key, default)
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, not {_kind(value)}")
        return value

    def ids(self, key: str, *, default: Any = ...) -> tuple[int, ...]:
        values = self.items(key, default=default)
        for index, value in enumerate(values):
            if type(value) is not int or value < 0:
                raise self.fail(f"{key}[{index}]", f"must be a non-negative integer id, not {value!r}")
        return tuple(values)

    def child(self, value: Any, key: str) -> _Fields:
        return _Fields(value, f"{self.where}.{key}" if self.where else key, self.path)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def parse_plan(document: dict[str, Any], *, path: Path | None = None) -> Plan:
    """The :class:`Plan` a JSON document describes, every field checked. Consistency with the source (ids within
    its rows, ``replaces`` its token at that id, fingerprints) is checked by :func:`check_plan_against`."""
    top = _Fields(document, "", path)
    fingerprints = top.get("fingerprints")
    if not isinstance(fingerprints, dict) or not fingerprints:
        raise top.fail("fingerprints", "must be a non-empty object of source files and their sha256")
    for name, value in fingerprints.items():
        if not isinstance(value, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
            raise top.fail(f"fingerprints[{name!r}]", "must be 'sha256:' and 64 hex digits")
    rows_before = top.integer("rows_before", optional=True)
    rows_after = top.integer("rows_after", optional=True)
    placements = []
    for index, item in enumerate(top.items("placements")):
        f = top.child(item, f"placements[{index}]")
        token_id = f.integer("id")
        if rows_after is not None and token_id >= rows_after:
            raise f.fail("id", f"is {token_id}, outside the {rows_after} rows of the plan")
        pieces = f.ids("pieces", default=[])
        placements.append(
            Placement(
                token=f.string("token"),
                content=f.string("content"),
                id=token_id,
                mode=f.choice("mode", MODES),
                slot=f.choice("slot", SLOT_SOURCES),
                replaces=f.string("replaces", optional=True),
                init=f.choice("init", tuple(i for i in INITS if INITIALIZATIONS[i].choosable)),
                pieces=pieces,
                form=f.choice("form", FORMS, default="as-is"),
            )
        )
    seen: dict[int, int] = {}
    for index, placement in enumerate(placements):
        if placement.id in seen:
            raise top.fail(
                f"placements[{index}].id", f"is {placement.id}, also the id of placements[{seen[placement.id]}]"
            )
        seen[placement.id] = index
        if placement.init in ("subword-mean", "distill") and not placement.pieces:
            raise top.fail(f"placements[{index}].pieces", f"must list the piece ids a {placement.init} row starts from")
    skipped = []
    for index, item in enumerate(top.items("skipped", default=[])):
        f = top.child(item, f"skipped[{index}]")
        skipped.append(Skip(f.string("token"), f.string("reason")))
    config: dict[str, int] = {}
    raw_config = top.get("config", {})
    if not isinstance(raw_config, dict):
        raise top.fail("config", "must be an object of config.json keys and values")
    for key, value in raw_config.items():
        if type(value) is not int or value < 1:
            raise top.fail(f"config[{key!r}]", f"must be a positive integer, not {value!r}")
        config[str(key)] = value
    tensors = []
    for index, item in enumerate(top.items("tensors", default=[])):
        f = top.child(item, f"tensors[{index}]")
        before, after = f.integer("rows_before"), f.integer("rows_after")
        if after < before:
            raise f.fail("rows_after", f"is {after}, below rows_before {before}: vocabsurgeon never shrinks")
        raw_rows = f.get("rows")
        if not isinstance(raw_rows, dict):
            raise f.fail("rows", "must be an object of initializations and row ids")
        groups = []
        for init, ids in raw_rows.items():
            if init not in INITS or init == "keep":
                raise f.fail("rows", f"names an unknown initialization {init!r} (known: {', '.join(INITS[:-1])})")
            ids = f.child(raw_rows, "rows").ids(init)
            if any(i >= after for i in ids):
                raise f.fail(f"rows.{init}", f"has an id outside the tensor's {after} rows")
            groups.append(RowInit(init, ids))
        written = [i for g in groups for i in g.ids]
        if len(set(written)) != len(written):
            raise f.fail("rows", "sets a row twice")
        if set(range(before, after)) - set(written):
            raise f.fail("rows", f"leaves new rows of {before}..{after - 1} without an initialization")
        tensors.append(
            TensorOp(
                name=f.string("name"),
                file=f.string("file"),
                axis=f.choice("axis", (0, 1)),  # type: ignore[arg-type]
                rows_before=before,
                rows_after=after,
                rows=tuple(groups),
                table=f.string("table", optional=True),
            )
        )
    files = []
    for index, item in enumerate(top.items("files", default=[])):
        f = top.child(item, f"files[{index}]")
        files.append(
            FileOp(
                f.string("path"),
                f.choice("action", FILE_ACTIONS),
                f.string("source", optional=True),
                f.string("sha256", optional=True),
            )
        )
    return Plan(
        operation=top.choice("operation", OPERATIONS),
        source=top.string("source"),
        fingerprints=dict(fingerprints),
        family=top.string("family"),
        placements=tuple(placements),
        skipped=tuple(skipped),
        rows_before=rows_before,
        rows_after=rows_after,
        tokenizer_size_before=top.integer("tokenizer_size_before"),
        tokenizer_size_after=top.integer("tokenizer_size_after"),
        pad_init=top.choice("pad_init", tuple(i for i in INITS if INITIALIZATIONS[i].for_padding)),
        exclude_from_mean=top.ids("exclude_from_mean", default=[]),
        config=config,
        weights_format=top.choice("weights_format", get_args(WeightsFormat), optional=True),
        tensors=tuple(tensors),
        files=tuple(files),
        init_std=top.positive("init_std", 0.02),
        seed=top.integer("seed", default=0),
        notes=tuple(_strings(top, "notes")),
        distill=_distill(top, placements),
        version=top.choice("version", (PLAN_VERSION,), default=PLAN_VERSION),
    )


def _distill(top: _Fields, placements: list[Placement]) -> DistillSettings | None:
    raw = top.get("distill", None)
    if raw is None:
        if any(p.init == "distill" for p in placements):
            raise top.fail("distill", "must give the settings of the distilled rows")
        return None
    f = top.child(raw, "distill")
    for key, value in (("pooled_weight", POOLED_WEIGHT), ("optimizer", "L-BFGS")):
        if key in f.data and f.data[key] != value:
            raise f.fail(key, f"is {f.data[key]!r}, but this version distils with {value!r}")
    return DistillSettings(
        corpus=tuple(_strings(f, "corpus")),
        field=f.string("field", optional=True),
        contexts=f.integer("contexts", minimum=1),
        steps=f.integer("steps", minimum=1),
    )


def _strings(fields: _Fields, key: str) -> list[str]:
    values = fields.items(key, default=[])
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise fields.fail(f"{key}[{index}]", f"must be a string, not {_kind(value)}")
    return values


def hash_document(document: Any) -> str:
    """A stable sha256 of a JSON-able value (recipes, plans)."""
    text = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
