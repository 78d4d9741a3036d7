"""Pure planning: from an Inventory and a token request to a Plan. Nothing here writes or reads files."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .backend import Backend, load_backend
from .errors import NotEnoughSlotsError, TokenRequestError, UnsupportedCheckpointError, VocabSurgeonError
from .families import Mode, family_named
from .inventory import Inventory, require_tokenizer, taken_ids
from .plan import Init, Operation, Placement, Plan, Skip, SlotSource, WeightsFormat
from .slots import Slot, embedding_rows, find_slots, placeholder_ids
from .vocab_tensors import config_vocab_size


@dataclass(frozen=True)
class TokenRequest:
    """A token the user asked for; ``slot`` pins it to an id (from ``token<TAB>slot`` in a tokens file)."""

    text: str
    special: bool = False
    slot: int | None = None


@dataclass(frozen=True)
class Options:
    """How to place and initialize; defaults are those of the CLI."""

    init: Init | None = None  # None: mean for special tokens, subword-mean for others
    pad_to_multiple_of: int | None = None
    weights_format: WeightsFormat | None = None
    seed: int = 0


def parse_tokens_file(text: str, *, path: str, special: bool = False) -> list[TokenRequest]:
    """One token per line (UTF-8); ``token<TAB>id`` pins a token to a slot. Blank lines and ``#`` comments are
    skipped; a line that is only whitespace is an error, since a whitespace token is never what was meant."""
    requests = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line or line.startswith("#"):
            continue
        token, _, slot = line.partition("\t")
        if not token.strip():
            raise TokenRequestError(f"line {number} is whitespace only", path=path)
        pinned = None
        if slot.strip():
            try:
                pinned = int(slot.strip())
            except ValueError:
                raise TokenRequestError(
                    f"line {number}: slot {slot.strip()!r} is not an integer id", path=path
                ) from None
        requests.append(TokenRequest(token, special, pinned))
    return requests


def plan_surgery(
    inventory: Inventory,
    requests: Sequence[TokenRequest],
    operation: Operation,
    options: Options = Options(),
    *,
    backend: Backend | None = None,
    pieces: bool = True,
) -> Plan:
    """Place each requested token: free slots (remap), new ids after the last (append), or slots then new (auto).

    With ``pieces=False`` the result is a draft: the ids, modes and rows of the plan, without the pieces a
    ``subword-mean`` row averages (finding them needs the tokenizer's model, which takes a fraction of a second to
    load; a backend loaded with ``model=False`` is enough for a draft). A surgery starts copying the weights with
    a draft's rows while the plan is completed; a draft itself is never applied.
    """
    vocabulary = require_tokenizer(inventory)
    if operation == "resize":
        raise ValueError("use plan_resize for resize")
    if not requests:
        raise TokenRequestError("no tokens given; use --token, --special-token or --tokens-file")
    backend = backend or load_backend(inventory, model=pieces)
    family = family_named(vocabulary.family)
    _check_requests(requests)
    known = vocabulary.token_to_id

    placed: list[tuple[TokenRequest, str, Mode]] = []
    skipped: list[Skip] = []
    seen: dict[str, str] = {}
    for request in requests:
        content = request.text if request.special else backend.normalize(request.text)
        if not content.strip():
            raise TokenRequestError(f"token {request.text!r} normalizes to an empty string")
        if content in seen:
            raise TokenRequestError(f"tokens {seen[content]!r} and {request.text!r} both normalize to {content!r}")
        seen[content] = request.text
        if content in known:
            where = f"as id {known[content]}"
            skipped.append(Skip(request.text, f"already in the vocabulary {where}"))
            continue
        placed.append((request, content, _mode(request, content, backend, family.can_hold_whole_word())))

    rows = embedding_rows(inventory)
    capacity = rows if rows is not None else config_vocab_size(inventory.config)
    report = find_slots(inventory)
    ids = _assign_ids(operation, [(r, m) for r, _, m in placed], report.slots, vocabulary.max_id, inventory)

    placements: list[Placement] = []
    id_to_token = vocabulary.id_to_token
    model_size = len(vocabulary.model_vocab)
    dense = model_size == max(vocabulary.model_vocab.values(), default=-1) + 1
    for (request, content, mode), (token_id, slot) in zip(placed, ids, strict=True):
        replaces = id_to_token.get(token_id) if slot == "placeholder" else None
        if mode == "vocab" and slot != "placeholder":
            if dense and token_id == model_size:
                model_size += 1  # a new vocabulary entry right after the last one (vocab.txt stays gap-free)
            elif content.startswith(backend.continuing_prefix or "\0"):
                raise UnsupportedCheckpointError(
                    f"cannot place the subword piece {content!r} at new id {token_id}: the vocabulary file would have"
                    " a gap (the tokenizer has added tokens past its vocabulary)",
                    path=inventory.root,
                )
            else:
                mode = "added"
        init = _init_for(request, options.init, slot)
        placements.append(Placement(request.text, content, token_id, mode, slot, replaces, init, ()))

    top = max([p.id for p in placements], default=-1) + 1
    rows_after = _round_up(max(capacity or 0, top), options.pad_to_multiple_of) if capacity is not None else None
    draft = _finish_plan(inventory, operation, placements, skipped, capacity, rows_after, options)
    return complete_plan(inventory, draft, backend) if pieces else draft


def complete_plan(inventory: Inventory, draft: Plan, backend: Backend | None = None) -> Plan:
    """The draft with the pieces each ``subword-mean`` row averages: the ids the source tokenizer splits the token
    into (``mean`` instead where it knows none of them). Nothing else changes."""
    pending = [p for p in draft.placements if p.init == "subword-mean" and not p.pieces]
    if not pending:
        return draft  # nothing to look up: the tokenizer's model is not loaded
    vocabulary = require_tokenizer(inventory)
    backend = backend if backend is not None and backend.has_model else load_backend(inventory)
    unk = vocabulary.special_tokens.get("unk_token")
    id_to_token = vocabulary.id_to_token
    placements = []
    for placement in draft.placements:
        if placement.init == "subword-mean" and not placement.pieces:
            pieces = tuple(backend.encode(_piece_text(placement.content, backend)))
            if not pieces or all(id_to_token.get(p) == unk for p in pieces):
                placement = replace(placement, init="mean")  # nothing known to average: the neutral choice
            else:
                placement = replace(placement, pieces=pieces)
        placements.append(placement)
    return replace(draft, placements=tuple(placements))


def plan_resize(inventory: Inventory, to: int | None = None, options: Options = Options()) -> Plan:
    """Bring config and weights in line with the tokenizer (``to=None``) or grow them to ``to`` rows."""
    vocabulary = require_tokenizer(inventory)
    rows = embedding_rows(inventory)
    if rows is None:
        raise UnsupportedCheckpointError(
            "no input embedding found in the weights; nothing to resize", path=inventory.root
        )
    target = _round_up(to if to is not None else vocabulary.max_id + 1, options.pad_to_multiple_of)
    if target < rows:
        raise TokenRequestError(
            f"resizing to {target} rows would drop rows {target}-{rows - 1}; vocabsurgeon never shrinks a model"
        )
    if target < vocabulary.max_id + 1:
        raise TokenRequestError(f"{target} rows cannot hold the tokenizer's highest id {vocabulary.max_id}")
    return _finish_plan(inventory, "resize", [], [], rows, target, options)


def _finish_plan(
    inventory: Inventory,
    operation: Operation,
    placements: list[Placement],
    skipped: list[Skip],
    rows_before: int | None,
    rows_after: int | None,
    options: Options,
) -> Plan:
    vocabulary = require_tokenizer(inventory)
    if rows_after is not None and rows_before is not None and rows_after > rows_before and options.init == "keep":
        raise TokenRequestError("--init keep needs existing rows, but this surgery adds rows; choose another --init")
    untrained = set(placeholder_ids(vocabulary)) | taken_ids(inventory)
    if rows_before is not None:
        untrained |= set(range(vocabulary.max_id + 1, rows_before))
    config_rows = config_vocab_size(inventory.config)
    size_after = vocabulary.size + sum(1 for p in placements if p.slot != "placeholder")
    return Plan(
        operation=operation,
        source=str(inventory.root.absolute()),  # a saved plan is applied from anywhere
        fingerprints={},
        family=vocabulary.family,
        placements=tuple(placements),
        skipped=tuple(skipped),
        rows_before=rows_before,
        rows_after=rows_after,
        tokenizer_size_before=vocabulary.size,
        tokenizer_size_after=size_after,
        pad_init=_pad_init(options.init),
        exclude_from_mean=tuple(sorted(untrained)),
        config_vocab_size=rows_after if rows_after is not None and rows_after != config_rows else None,
        weights_format=options.weights_format,
        seed=options.seed,
    )


def _check_requests(requests: Sequence[TokenRequest]) -> None:
    counts: dict[str, int] = {}
    for request in requests:
        if not request.text or not request.text.strip():
            raise TokenRequestError(f"empty or whitespace-only token {request.text!r}")
        if (
            any(unicodedata.category(ch) in {"Cc", "Cs"} and ch not in "\t" for ch in request.text)
            or "\n" in request.text
        ):
            raise TokenRequestError(f"token {request.text!r} contains a control character")
        counts[request.text] = counts.get(request.text, 0) + 1
    duplicated = [text for text, count in counts.items() if count > 1]
    if duplicated:
        raise TokenRequestError(f"token {duplicated[0]!r} is given {counts[duplicated[0]]} times")


def _mode(request: TokenRequest, content: str, backend: Backend, whole_words: bool) -> Mode:
    if request.special:
        return "special"
    if not whole_words:
        return "added"
    prefix = backend.continuing_prefix
    if prefix and content.startswith(prefix) and len(content) > len(prefix):
        rest = content[len(prefix) :]
        if backend.pre_tokenize(rest) == [rest]:
            return "vocab"
        raise TokenRequestError(f"subword piece {request.text!r} would be split by the pre-tokenizer after {prefix!r}")
    return "vocab" if backend.pre_tokenize(content) == [content] else "added"


def _piece_text(content: str, backend: Backend) -> str:
    prefix = backend.continuing_prefix
    if prefix and content.startswith(prefix) and len(content) > len(prefix):
        return content[len(prefix) :]
    return content


def _assign_ids(
    operation: Operation,
    requests: list[tuple[TokenRequest, Mode]],
    slots: tuple[Slot, ...],
    max_id: int,
    inventory: Inventory,
) -> list[tuple[int, SlotSource]]:
    """Pinned tokens take their slot; the others the lowest free placeholder in request order; what is left gets
    ids after the last one (padding rows first), vocabulary entries before added tokens. That order keeps
    vocab.txt gap-free and gives every appended added token the id tokenizers itself assigns (model size + n)."""
    by_id = {slot.id: slot for slot in slots}
    pinned = [r.slot for r, _ in requests if r.slot is not None]
    for slot_id in pinned:
        if slot_id not in by_id:
            raise TokenRequestError(f"id {slot_id} is not a free slot (see `vocabsurgeon slots {inventory.source}`)")
    if len(set(pinned)) != len(pinned):
        raise TokenRequestError("two tokens are pinned to the same slot")
    usable = [] if operation == "append" else [slot for slot in slots if slot.id not in set(pinned)]
    unpinned = sum(1 for r, _ in requests if r.slot is None)
    if operation == "remap" and unpinned > len(usable):
        raise NotEnoughSlotsError(
            f"{len(requests)} new tokens but only {len(slots)} free slots",
            path=inventory.root,
            hint=f"`vocabsurgeon append` (or remap --allow-append) adds the other {len(requests) - len(slots)}",
        )
    assigned: dict[int, tuple[int, SlotSource]] = {}
    placeholders = iter([slot for slot in usable if slot.kind == "placeholder"])
    later: list[int] = []
    for index, (request, _) in enumerate(requests):
        if request.slot is not None:
            assigned[index] = (request.slot, by_id[request.slot].kind)
        elif (slot := next(placeholders, None)) is not None:
            assigned[index] = (slot.id, "placeholder")
        else:
            later.append(index)
    later.sort(key=lambda index: requests[index][1] != "vocab")
    padding = sorted(slot.id for slot in slots if slot.kind == "padding")
    next_id = max_id + 1
    taken = {token_id for token_id, _ in assigned.values()}
    for index in later:
        while next_id in taken:
            next_id += 1
        assigned[index] = (next_id, "padding" if next_id in padding else "new")
        next_id += 1
    pinned_padding = sorted(idx for idx, kind in assigned.values() if kind == "padding")
    if pinned_padding and pinned_padding != list(range(max_id + 1, max_id + 1 + len(pinned_padding))):
        raise TokenRequestError(f"padding slots must be filled in order from id {max_id + 1}")
    return [assigned[index] for index in range(len(requests))]


def _init_for(request: TokenRequest, init: Init | None, slot: SlotSource) -> Init:
    if init is None:
        return "mean" if request.special else "subword-mean"
    if init == "keep" and slot == "new":
        raise TokenRequestError("--init keep needs an existing row; new ids have none")
    return init


def _pad_init(init: Init | None) -> Init:
    if init in (None, "subword-mean", "keep"):
        return "mean"
    return init


def _round_up(value: int, multiple: int | None) -> int:
    if not multiple:
        return value
    if multiple < 1:
        raise VocabSurgeonError(f"--pad-to-multiple-of must be positive, got {multiple}")
    return math.ceil(value / multiple) * multiple
