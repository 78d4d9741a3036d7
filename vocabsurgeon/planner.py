"""Planning: from an Inventory and a token request to a finished Plan. Nothing here writes a file; every decision
of a surgery is made here (apply only carries the plan out)."""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from .backend import Backend, load_backend
from .errors import (
    InconsistentCheckpointError,
    NotEnoughSlotsError,
    PlanError,
    SourceChangedError,
    TokenRequestError,
    UnsupportedCheckpointError,
    VocabSurgeonError,
)
from .families import family_named
from .families.base import CONTEXT
from .formats import WEIGHT_FORMATS
from .free_slots import Slot, embedding_rows, find_slots, placeholder_ids
from .inits import DistillSettings, Init
from .inventory import MANIFEST, Inventory, WeightSet, require_tokenizer, taken_ids
from .plan import FileOp, Form, Mode, Operation, Placement, Plan, RowInit, Skip, SlotSource, TensorOp, WeightsFormat
from .render import render_config, render_index, render_tokenizer_documents
from .vocab_tensors import (
    VocabTable,
    config_vocab_size,
    find_vocab_tables,
    find_vocab_tensors,
    text_config,
    ties_embeddings,
    vocab_size_key,
)


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
    #: also place each word's sentence-initial form where it differs from the running-text one (byte-level BPE:
    #: ``hospitalization`` besides ``Ġhospitalization``), as a second entry with a row of its own
    sentence_initial: bool = False
    #: what ``init="distill"`` reads and how long it trains (its defaults when None)
    distill: DistillSettings | None = None


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


def plan_tokens(
    inventory: Inventory,
    requests: Sequence[TokenRequest],
    operation: Operation,
    options: Options = Options(),
    *,
    backend: Backend | None = None,
) -> Plan:
    """Place each requested token: free slots (remap), new ids after the last (append), or slots then new (auto),
    and decide everything that follows (tensor rows, files, config keys): the finished plan apply carries out."""
    placed = place_tokens(inventory, requests, operation, options, backend=backend)
    return _finish_plan(
        inventory, operation, list(placed.placements), list(placed.skipped), placed.rows_before, placed.rows_after,
        options, placed.notes,
    )  # fmt: skip


@dataclass(frozen=True)
class Placed:
    """Where each token of a request goes, and the rows before and after: a plan's first half (see
    :func:`place_tokens`)."""

    placements: tuple[Placement, ...]
    skipped: tuple[Skip, ...]
    rows_before: int | None
    rows_after: int | None
    notes: tuple[str, ...]


def place_tokens(
    inventory: Inventory,
    requests: Sequence[TokenRequest],
    operation: Operation,
    options: Options = Options(),
    *,
    backend: Backend | None = None,
) -> Placed:
    """The placements :func:`plan_tokens` makes, without the rest of the plan (tensor ops and rendered files):
    what ``suggest`` asks of the planner for each candidate word, the same answer at a fraction of the cost."""
    vocabulary = require_tokenizer(inventory)
    if operation == "resize":
        raise ValueError("use plan_resize for resize")
    require_consistent(inventory)
    if not requests:
        raise TokenRequestError("no tokens given; use --token, --special-token or --tokens-file")
    backend = backend or load_backend(inventory)
    family = family_named(vocabulary.family)
    _check_requests(requests)
    known = vocabulary.token_to_id

    placed: list[tuple[TokenRequest, str, Mode]] = []
    skipped: list[Skip] = []
    seen: dict[str, str] = {}
    forms: dict[str, Form] = {}  # contents that are word forms: the family's in-text (or initial) form of a word
    policy: tuple[bool, list[str]] | None = None  # whether words can be stored so, and what that changes besides
    for request in requests:
        content = request.text if request.special else backend.normalize(request.text)
        if not content.strip():
            raise TokenRequestError(f"token {request.text!r} normalizes to an empty string")
        form = None if request.special else family.word_form(inventory.tokenizer_json, backend, request.text)
        if form is not None:
            policy = policy or _word_policy(inventory, backend)
            form = form if policy[0] else None
        if form is not None:
            content = form
        if content in seen:
            raise TokenRequestError(f"tokens {seen[content]!r} and {request.text!r} both normalize to {content!r}")
        seen[content] = request.text
        if content in known:
            where = f"as id {known[content]}" + (f" ({content!r} in running text)" if form is not None else "")
            skipped.append(Skip(request.text, f"already in the vocabulary {where}"))
            continue
        if form is not None:
            forms[content] = "running-text"
            placed.append((request, content, "vocab"))
            initial = _initial_form(backend, request.text, form) if options.sentence_initial else None
            if initial is not None and initial not in known and initial not in seen:
                seen[initial] = request.text
                forms[initial] = "sentence-initial"
                placed.append((dataclasses.replace(request, slot=None), initial, "vocab"))  # a slot of its own
        else:
            limit = family.longest_word(inventory.tokenizer_json)
            whole = family.can_hold_whole_word() and (limit is None or len(content) <= limit)
            placed.append((request, content, _mode(request, content, backend, whole)))
    notes = policy[1] if policy is not None else []

    rows = embedding_rows(inventory)
    capacity = rows if rows is not None else config_vocab_size(inventory.config)
    report = find_slots(inventory)
    ids = _assign_ids(operation, [(r, m) for r, _, m in placed], report.slots, vocabulary.max_id, inventory)

    placements: list[Placement] = []
    id_to_token = vocabulary.id_to_token
    unk = vocabulary.special_tokens.get("unk_token")
    model_size = len(vocabulary.model_vocab)
    dense = model_size == max(vocabulary.model_vocab.values(), default=-1) + 1
    for (request, content, mode), (token_id, slot) in zip(placed, ids, strict=True):
        replaces = id_to_token.get(token_id) if slot == "placeholder" else None
        if mode == "vocab" and slot != "placeholder" and family.dense_vocabulary:
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
        pieces: tuple[int, ...] = ()
        stored = forms.get(content, "as-is")
        if init in ("subword-mean", "distill"):
            found, pieces = _subword_pieces(content, backend, id_to_token, unk, request.text, stored)
            init = init if found == "subword-mean" else found  # no known piece: the mean, not a learned row
        placements.append(Placement(request.text, content, token_id, mode, slot, replaces, init, pieces, stored))

    top = max([p.id for p in placements], default=-1) + 1
    rows_after = _round_up(max(capacity or 0, top), options.pad_to_multiple_of) if capacity is not None else None
    return Placed(tuple(placements), tuple(skipped), capacity, rows_after, tuple(notes))


#: the inconsistencies resize exists to repair
RESIZE_REPAIRS = ("tokenizer-exceeds-embeddings", "config-embedding-mismatch")


def require_consistent(inventory: Inventory, *, repairs: Sequence[str] = ()) -> None:
    """One rule for an inconsistent source, in every surgery: what audit reports as an error (but ``repairs``, the
    ones this surgery repairs) is refused before anything is written, with audit's message and the fix it names."""
    from .auditing import audit

    errors = [f for f in audit(inventory).findings if f.severity == "error" and f.code not in repairs]
    if errors:
        more = f" (and {len(errors) - 1} more: vocabsurgeon audit {inventory.source})" if len(errors) > 1 else ""
        raise InconsistentCheckpointError(
            f"inconsistent checkpoint ({errors[0].code}: {errors[0].message}){more}; nothing was written",
            path=inventory.root,
        )


def _subword_pieces(
    content: str, backend: Backend, id_to_token: dict[int, str], unk: str | None, word: str, form: Form
) -> tuple[Init, tuple[int, ...]]:
    """The pieces a subword-mean row averages: the ids the source splits the token into (a ``word`` stored in its
    running-text form: the ids it gets in running text; in its sentence-initial form: at a text's start);
    ``mean`` instead where it knows none of them (the neutral choice)."""
    if form == "running-text":
        pieces = tuple(_word_pieces(word, backend))
    elif form == "sentence-initial":
        pieces = tuple(backend.encode(word))
    else:
        pieces = tuple(backend.encode(_piece_text(content, backend)))
    if not pieces or all(id_to_token.get(p) == unk for p in pieces):
        return "mean", ()
    return "subword-mean", pieces


def plan_resize(inventory: Inventory, to: int | None = None, options: Options = Options()) -> Plan:
    """Bring config and weights in line with the tokenizer (``to=None``) or grow them to ``to`` rows."""
    vocabulary = require_tokenizer(inventory)
    require_consistent(inventory, repairs=RESIZE_REPAIRS)
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
    notes: tuple[str, ...] = (),
) -> Plan:
    vocabulary = require_tokenizer(inventory)
    if rows_after is not None and rows_before is not None and rows_after > rows_before and options.init == "keep":
        raise TokenRequestError("--init keep needs existing rows, but this surgery adds rows; choose another --init")
    untrained = set(placeholder_ids(vocabulary)) | taken_ids(inventory)
    if rows_before is not None:
        untrained |= set(range(vocabulary.max_id + 1, rows_before))
    config_rows = config_vocab_size(inventory.config)
    size_after = vocabulary.size + sum(1 for p in placements if p.slot != "placeholder")
    pad_init = _pad_init(options.init)
    config: dict[str, int] = {}
    if rows_after is not None and rows_after != config_rows and inventory.config is not None:
        config[vocab_size_key(inventory.config)] = rows_after
    elif rows_after is not None and rows_after != config_rows:
        config["vocab_size"] = rows_after  # no config.json: recorded, nothing to write it to
    tensors = tuple(
        op
        for weights in inventory.weights
        for op in plan_tensor_ops(inventory, weights, placements, rows_before, rows_after, pad_init)
    )
    for op in tensors:
        if op.table is not None and op.rows_after != op.rows_before:
            config[op.table] = op.rows_after  # a table that grows with the vocabulary (Gemma 4's per-layer one)
    rendered, documents = render_tokenizer_documents(inventory, vocabulary.family, tuple(placements))
    rendered.update(render_config(inventory, config))
    for weights in inventory.weights:
        converted = options.weights_format is not None and options.weights_format != weights.format
        if weights.index is not None and not converted and (index := render_index(inventory, weights, tensors)):
            rendered[weights.index] = index
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
        pad_init=pad_init,
        exclude_from_mean=tuple(sorted(untrained)),
        config=config,
        weights_format=options.weights_format,
        tensors=tensors,
        files=plan_files(inventory, tensors, rendered, options.weights_format),
        init_std=float(text_config(inventory.config).get("initializer_range", 0.02)),
        seed=options.seed,
        notes=notes,
        distill=(options.distill or DistillSettings()) if any(p.init == "distill" for p in placements) else None,
        rendered=rendered,
        documents=documents,
        origin=inventory,
    )


def plan_tensor_ops(
    inventory: Inventory,
    weights: WeightSet,
    placements: Sequence[Placement],
    rows_before: int | None,
    rows_after: int | None,
    pad_init: Init,
) -> list[TensorOp]:
    """The operation on every vocabulary-indexed tensor of one weight set: placed tokens by their init (in
    placement order), then every new row by ``pad_init``. None when no row changes."""
    changes = (
        rows_before is not None
        and rows_after is not None
        and (rows_after > rows_before or any(p.init != "keep" for p in placements))
    )
    if not changes:
        return []
    assert rows_before is not None
    assert rows_after is not None
    tensors = find_vocab_tensors(weights.specs, inventory.config)
    if tensors is None:
        raise UnsupportedCheckpointError(
            f"no input embedding among the tensors of {weights.files[0]}", path=inventory.root
        )
    if tensors.rows != rows_before:
        raise SourceChangedError(
            f"{tensors.input.name} has {tensors.rows} rows, the plan expected {rows_before}", path=inventory.root
        )
    ops = []
    tied = weights.format == "pytorch" and ties_embeddings(inventory.config)
    for spec in tensors.all:
        axis = tensors.axis(spec)
        view = spec.rows_view(axis)
        # a tied head saved under its own key is the input row: pytorch_model.bin keeps both names of one storage
        # (safetensors stores a tied tensor once, so a head there is untied)
        output = spec is not tensors.input and not (tied and spec.shape == tensors.input.shape)
        wanted: list[tuple[int, Init]] = [
            (p.id, _output_init(p.init) if output else p.init) for p in placements if p.init != "keep"
        ]
        covered = {idx for idx, _ in wanted}
        wanted += [(idx, pad_init) for idx in range(view.shape[0], rows_after) if idx not in covered]
        if len(view.shape) == 1:
            wanted = [(idx, "zeros" if init == "normal" else init) for idx, init in wanted]  # a bias is not drawn
        ops.append(_op(spec.name, weights.locations[spec.name], axis, view.shape[0], rows_after, wanted))
    for table in find_vocab_tables(weights.specs, inventory.config):
        ops += _table_op(weights, table, placements, rows_before, rows_after, pad_init)
    return ops


def _output_init(init: Init) -> Init:
    """A distilled word's rows in the output head and biases: the first piece's (its logit is what the source gives
    the word's first piece). Only the input row is learned."""
    return "first-piece" if init == "distill" else init


def _table_op(
    weights: WeightSet,
    table: VocabTable,
    placements: Sequence[Placement],
    rows_before: int,
    rows_after: int,
    pad_init: Init,
) -> list[TensorOp]:
    """The op of a table with a row count of its own (Gemma 3n's per-layer embedding): a placement's row is
    written where the table has it (a subword-mean row averages the pieces the table holds, the mean where it holds
    none). The table grows, and its config key with it, only for a model that fails on ids past it (Gemma 4) and
    only when it has every row the input embedding has; otherwise appended ids read what the model gives ids past
    the table (Gemma 3n: row 0), as the model's own multimodal ids do."""
    rows = table.rows
    grows = table.past_rows == "error" and rows == rows_before and rows_after > rows
    after = rows_after if grows else rows
    wanted: list[tuple[int, Init]] = []
    for p in placements:
        if p.init == "keep" or p.id >= after:
            continue
        init: Init = "subword-mean" if p.init == "distill" else p.init  # a per-layer table is not distilled
        if init == "subword-mean" and not any(piece < rows for piece in p.pieces):
            init = "mean"
        wanted.append((p.id, init))
    covered = {idx for idx, _ in wanted}
    wanted += [(idx, pad_init) for idx in range(rows, after) if idx not in covered]
    if not wanted:
        return []
    return [_op(table.spec.name, weights.locations[table.spec.name], 0, rows, after, wanted, table.dotted_key)]


def _op(
    name: str, file: str, axis: int, before: int, after: int, wanted: list[tuple[int, Init]], table: str | None = None
) -> TensorOp:
    groups: dict[Init, list[int]] = {}
    for idx, init in wanted:
        groups.setdefault(init, []).append(idx)
    return TensorOp(name, file, axis, before, after, tuple(RowInit(i, tuple(ids)) for i, ids in groups.items()), table)


def plan_files(
    inventory: Inventory, tensors: Sequence[TensorOp], rendered: dict[str, bytes], weights_format: str | None
) -> tuple[FileOp, ...]:
    """What happens to every file of the output, in the order of the source's files, then created files."""
    import hashlib

    edited = {op.file for op in tensors}
    by_file: dict[str, FileOp] = {}
    for weights in inventory.weights:
        if weights_format is not None and weights_format != weights.format:
            target = WEIGHT_FORMATS[weights_format]
            count = len(weights.files)
            for i, source in enumerate(weights.files, 1):
                name = target.single_file if count == 1 else target.shard_pattern.format(i=i, n=count)
                by_file[source] = FileOp(name, "convert", source)
            if weights.index is not None or count > 1:
                by_file[weights.index or WEIGHT_FORMATS[weights.format].index_file] = FileOp(
                    target.index_file, "convert", weights.index
                )
            continue
        for source in weights.files:
            by_file[source] = FileOp(source, "edit" if source in edited else "copy")
    files = []
    for name in inventory.files:
        if name == MANIFEST:
            continue
        if name in rendered:
            files.append(FileOp(name, "rewrite", sha256=hashlib.sha256(rendered[name]).hexdigest()))
        else:
            files.append(by_file.get(name, FileOp(name, "copy")))
    for name in sorted(set(rendered) - set(inventory.files)):
        files.append(FileOp(name, "create", sha256=hashlib.sha256(rendered[name]).hexdigest()))
    files.append(FileOp(MANIFEST, "rewrite" if inventory.has(MANIFEST) else "create"))
    return tuple(files)


def _check_requests(requests: Sequence[TokenRequest]) -> None:
    counts: dict[str, int] = {}
    for request in requests:
        if not request.text or not request.text.strip():
            raise TokenRequestError(f"empty or whitespace-only token {request.text!r}")
        if "\t" in request.text:
            raise TokenRequestError(f"token {request.text!r} contains a tab (normalizers turn it into a space)")
        if any(unicodedata.category(ch) in {"Cc", "Cs"} for ch in request.text):
            raise TokenRequestError(f"token {request.text!r} contains a control character")
        if not request.special and request.text != request.text.strip():
            raise TokenRequestError(
                f"token {request.text!r} begins or ends with whitespace; give the word alone (the space before a"
                " word in running text is part of how it is stored)"
            )
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


def _word_policy(inventory: Inventory, pipeline: Backend) -> tuple[bool, list[str]]:
    """Whether this tokenizer can hold words in their running-text form, and the notes on what that changes
    besides them (see ``Family.check_word_forms``); where it cannot (the change would reach other text), words
    stay added tokens, matched whole and not inside longer words, and the note says why."""
    family = family_named(require_tokenizer(inventory).family)
    try:
        return True, family.check_word_forms(inventory.tokenizer_json, inventory.tokenizer_config, pipeline)
    except UnsupportedCheckpointError as error:
        return False, [f"words are added tokens here (matched whole, not inside a longer word): {error.message}"]


def _decided_form(inventory: Inventory, pipeline: Backend, holds: bool, token: str, content: str) -> Form | None:
    """The form the planner gives a non-special ``token`` stored as ``content``: as-is where the family holds no
    word form for it (or, ``holds`` False, cannot hold words here), else running-text or sentence-initial; None for
    a content the planner never stores the word as."""
    family = family_named(require_tokenizer(inventory).family)
    running = family.word_form(inventory.tokenizer_json, pipeline, token)
    if running is None or not holds:
        return "as-is"
    if content == running:
        return "running-text"
    if content == _initial_form(pipeline, token, running):
        return "sentence-initial"
    return None


def _initial_form(backend: Backend, text: str, form: str) -> str | None:
    """The pre-token ``text`` is at a text's start, when it is one and differs from its running-text ``form``
    (byte-level BPE adds no prefix space: ``hospitalization``, not ``Ġhospitalization``)."""
    pieces = backend.pre_tokenize(backend.normalize(text))
    return pieces[0] if len(pieces) == 1 and pieces[0] != form and pieces[0] else None


def _word_pieces(text: str, backend: Backend) -> list[int]:
    """The ids the source gives ``text`` in running text (after a word and a space)."""
    context = backend.encode(CONTEXT)
    ids = backend.encode(f"{CONTEXT} {text}")
    return ids[len(context) :] if ids[: len(context)] == context else ids


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
    if init is None or (init == "distill" and request.special):  # a special token has no pieces to distil
        return "mean" if request.special else "subword-mean"
    if init == "keep" and slot == "new":
        raise TokenRequestError("--init keep needs an existing row; new ids have none")
    return init


def _pad_init(init: Init | None) -> Init:
    if init in (None, "subword-mean", "keep", "distill"):
        return "mean"
    return init


def _round_up(value: int, multiple: int | None) -> int:
    if not multiple:
        return value
    if multiple < 1:
        raise VocabSurgeonError(f"--pad-to-multiple-of must be positive, got {multiple}")
    return math.ceil(value / multiple) * multiple


def check_plan_fits(inventory: Inventory, plan: Plan) -> Plan:
    """Refuse (PlanError, naming the field) a plan, typically loaded from a file, that is not exactly what the
    planner decides for its placements on ``inventory``: another tokenizer family or row count, a placement on an id
    that is neither a free slot nor new, a ``slot`` or ``replaces`` that is not the source's, pieces that are not
    the token's, and any derived field (rows written, their init, files, config keys, the rows a mean averages, the
    standard deviation of normal rows ...) that differs. Fingerprints are checked by apply, against every byte.

    Returns the planner's own plan, equal to ``plan`` (with its rendered files, so apply renders nothing again)."""
    vocabulary = require_tokenizer(inventory)

    def fail(field: str, problem: str) -> PlanError:
        return PlanError(f"field {field} {problem}", path=inventory.root, hint="make a new plan")

    if plan.family != vocabulary.family:
        raise fail("family", f"is {plan.family!r} but the source's tokenizer is {vocabulary.family!r}")
    rows = embedding_rows(inventory)
    if rows is None:
        rows = config_vocab_size(inventory.config)
    if plan.rows_before != rows:
        raise fail("rows_before", f"is {plan.rows_before} but the source has {rows} rows")
    id_to_token = vocabulary.id_to_token
    unk = vocabulary.special_tokens.get("unk_token")
    free = {slot.id: slot.kind for slot in find_slots(inventory).slots}
    learned = ("subword-mean", "distill")  # rows that start from the pieces
    backend = load_backend(inventory) if any(p.init in learned for p in plan.placements) else None
    holds: bool | None = None  # whether words can be stored in their forms here (decided once, when asked)

    def pipeline() -> Backend:
        return backend or load_backend(inventory, model=False)  # normalizing and pre-tokenizing need no model

    for index, placement in enumerate(plan.placements):
        where = f"placements[{index}]"
        kind = free.get(placement.id) or ("new" if placement.id > vocabulary.max_id else None)
        if kind is None:
            raise fail(
                f"{where}.id", f"is {placement.id}, the id of {id_to_token.get(placement.id)!r}, not a free slot"
            )
        if placement.slot != kind:
            raise fail(f"{where}.slot", f"is {placement.slot!r} but id {placement.id} is {kind!r} in the source")
        replaces = id_to_token.get(placement.id) if kind == "placeholder" else None
        if placement.replaces != replaces:
            raise fail(
                f"{where}.replaces", f"is {placement.replaces!r} but the source has {replaces!r} at id {placement.id}"
            )
        if placement.mode != "special":
            if holds is None:
                holds = _word_policy(inventory, load_backend(inventory))[0]
            decided_form = _decided_form(inventory, pipeline(), holds, placement.token, placement.content)
            if decided_form is None:
                raise fail(f"{where}.content", f"is {placement.content!r}, not a form the planner stores the word in")
            if placement.form != decided_form:
                raise fail(f"{where}.form", f"is {placement.form!r} but the planner gives it {decided_form!r}")
        decided = None
        if backend is not None:
            decided = _subword_pieces(placement.content, backend, id_to_token, unk, placement.token, placement.form)
        if placement.init in learned and decided != ("subword-mean", placement.pieces):
            raise fail(f"{where}.pieces", "are not the pieces the source splits the token into")
    for index, placement in enumerate(plan.placements):
        takes = f"placements[{index}] takes {placement.slot} slot {placement.id}"
        if (plan.operation == "remap" and placement.slot == "new") or (
            plan.operation == "append" and placement.slot == "placeholder"
        ):
            raise fail("operation", f"is {plan.operation!r} but {takes}")
    if plan.operation == "resize" and plan.placements:
        raise fail("operation", "is 'resize' but the plan places tokens")
    options = Options(init=plan.pad_init, weights_format=plan.weights_format, seed=plan.seed, distill=plan.distill)
    notes: list[str] = []
    if any(p.form != "as-is" for p in plan.placements):
        notes = _word_policy(inventory, load_backend(inventory))[1]
    expected = _finish_plan(
        inventory,
        plan.operation,
        list(plan.placements),
        list(plan.skipped),
        plan.rows_before,
        plan.rows_after,
        options,
        tuple(notes),
    )
    for field in dataclasses.fields(Plan):
        # notes explain the decision, they are not part of it (a plan that falls back to added tokens has one)
        skip = ("source", "notes")
        if field.compare and field.name not in skip and getattr(expected, field.name) != getattr(plan, field.name):
            raise fail(field.name, "is not what its placements decide for the source")
    return dataclasses.replace(
        expected, source=plan.source, fingerprints=plan.fingerprints, notes=expected.notes or plan.notes
    )
