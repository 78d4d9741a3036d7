"""The library API: one function per command, the same code path the CLI and batch run.

>>> import vocabsurgeon
>>> plan = vocabsurgeon.plan_surgery("./all-MiniLM-L6-v2", "remap", tokens=["COVID", "hospitalization"])
>>> result = vocabsurgeon.apply_plan(plan, "./minilm-bio")          # or, in one step:
>>> result = vocabsurgeon.remap("./all-MiniLM-L6-v2", "./minilm-bio", tokens=["COVID"])

Every function raises a :class:`~vocabsurgeon.errors.VocabSurgeonError` (also a ``ValueError``,
``FileNotFoundError`` ... as fits) whose message is the one line the CLI prints; nothing is written when one is
raised.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .apply import Result, execute_plan
from .auditing import AuditReport
from .auditing import audit as _audit
from .errors import CheckpointNotFoundError, TokenRequestError
from .fingerprints import fingerprint_files, hashing_ahead
from .free_slots import SlotReport, find_slots
from .inits import DistillSettings, Init
from .inventory import Inventory, read_inventory, require_tokenizer
from .plan import Operation, Plan, WeightsFormat
from .plan import load_plan as load_plan
from .planner import Options, TokenRequest, parse_tokens_file, plan_resize, plan_tokens
from .verification import Check, Level, Verifier, verify_checkpoint

Model = str | os.PathLike[str] | Inventory
Tokens = Iterable[str | TokenRequest]


def _inventory(model: Model) -> Inventory:
    return model if isinstance(model, Inventory) else read_inventory(model)


def read_tokens_file(path: str | os.PathLike[str], *, special: bool = False) -> list[TokenRequest]:
    """The tokens of a tokens file: UTF-8, one per line, ``token<TAB>id`` pins a slot, ``#`` starts a comment."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointNotFoundError("tokens file does not exist", path=file)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise TokenRequestError(f"not UTF-8 (byte {error.start})", path=file) from None
    return parse_tokens_file(text, path=str(file), special=special)


def token_requests(tokens: Tokens = (), special_tokens: Tokens = ()) -> list[TokenRequest]:
    """Strings (or requests) as requests; ``special_tokens`` become special requests."""
    requests = [t if isinstance(t, TokenRequest) else TokenRequest(t) for t in tokens]
    requests += [t if isinstance(t, TokenRequest) else TokenRequest(t, special=True) for t in special_tokens]
    return requests


def plan_surgery(
    model: Model,
    operation: Operation,
    *,
    tokens: Tokens = (),
    special_tokens: Tokens = (),
    init: Init | None = None,
    pad_to_multiple_of: int | None = None,
    weights_format: WeightsFormat | None = None,
    resize_to: int | None = None,
    seed: int = 0,
    sentence_initial: bool = False,
    distill: DistillSettings | None = None,
    fingerprints: bool = False,
) -> Plan:
    """The whole decision of a surgery, nothing written: which token goes to which id, every tensor's rows, every
    output file, the config keys. ``operation`` is ``remap`` (free slots only), ``append`` (new ids), ``auto``
    (slots first, then append) or ``resize`` (``resize_to`` rows, or as many as the tokenizer has ids).
    ``sentence_initial=True`` also places each word's form at a text's start where it differs (byte-level BPE).
    ``distill``: what ``init="distill"`` reads (its corpus) and how long it trains. ``fingerprints=True`` pins
    the plan to the source's exact bytes (what a saved plan needs)."""
    inventory = _inventory(model)
    options = Options(
        init=init,
        pad_to_multiple_of=pad_to_multiple_of,
        weights_format=weights_format,
        seed=seed,
        sentence_initial=sentence_initial,
        distill=distill,
    )
    if operation == "resize":
        if list(tokens) or list(special_tokens):
            raise TokenRequestError("resize takes no tokens; use append to add tokens")
        plan = plan_resize(inventory, resize_to, options)
    else:
        plan = plan_tokens(inventory, token_requests(tokens, special_tokens), operation, options)
    if fingerprints:
        plan = replace(plan, fingerprints=fingerprint_files(inventory))
    return plan


def apply_plan(
    plan: Plan,
    out: str | os.PathLike[str],
    *,
    source: Model | None = None,
    force: bool = False,
    verify: Level | None = "quick",
    progress: Any = None,
    manifest_extra: dict[str, Any] | None = None,
    stage: Any = None,
    link_unchanged: bool = False,
) -> Result:
    """Carry ``plan`` out into the new directory ``out`` (atomically: it appears complete or not at all), checked
    at ``verify`` level (``quick``, ``full`` or None). ``source`` defaults to the plan's own source; a plan with
    fingerprints is refused if the source changed anywhere. ``progress`` is called with byte counts;
    ``manifest_extra``: more keys for the output's manifest; ``stage`` is called with a line on what a long
    step before the writing is doing (distilling rows). ``link_unchanged``: hard-link the weight files the plan
    does not change instead of cloning or copying them (the output then shares their inodes with the source:
    writing into one changes the other)."""
    inventory = _inventory(source if source is not None else plan.source)
    verifier = Verifier(verify) if verify is not None else None
    return execute_plan(
        inventory, plan, out, force=force, verify=verifier, progress=progress, extra_manifest=manifest_extra,
        stage=stage, link_unchanged=link_unchanged,
    )  # fmt: skip


def _surgery(
    model: Model,
    out: str | os.PathLike[str],
    operation: Operation,
    tokens: Tokens,
    special_tokens: Tokens,
    verify: Level | None,
    force: bool,
    progress: Any,
    **options: Any,
) -> Result:
    inventory = _inventory(model)
    with hashing_ahead(inventory):  # the manifest's hashes, read while planning (see vocabsurgeon.fingerprints)
        plan = plan_surgery(inventory, operation, tokens=tokens, special_tokens=special_tokens, **options)
        return apply_plan(plan, out, source=inventory, force=force, verify=verify, progress=progress)


def remap(
    model: Model,
    out: str | os.PathLike[str],
    *,
    tokens: Tokens = (),
    special_tokens: Tokens = (),
    init: Init | None = None,
    allow_append: bool = False,
    pad_to_multiple_of: int | None = None,
    weights_format: WeightsFormat | None = None,
    sentence_initial: bool = False,
    distill: DistillSettings | None = None,
    verify: Level | None = "quick",
    force: bool = False,
    progress: Any = None,
) -> Result:
    """Put ``tokens`` and ``special_tokens`` into free slots of ``model`` (no resize) and write the result to
    ``out``. More tokens than slots is an error unless ``allow_append``. ``init``: see :mod:`vocabsurgeon.inits`
    (default subword-mean for tokens, mean for special tokens); ``init="distill"`` learns the rows from the source
    model on contexts from ``distill.corpus`` (see :mod:`vocabsurgeon.distill`)."""
    operation: Operation = "auto" if allow_append else "remap"
    return _surgery(
        model, out, operation, tokens, special_tokens, verify, force, progress,
        init=init, pad_to_multiple_of=pad_to_multiple_of, weights_format=weights_format,
        sentence_initial=sentence_initial, distill=distill,
    )  # fmt: skip


def append(
    model: Model,
    out: str | os.PathLike[str],
    *,
    tokens: Tokens = (),
    special_tokens: Tokens = (),
    init: Init | None = None,
    pad_to_multiple_of: int | None = None,
    weights_format: WeightsFormat | None = None,
    sentence_initial: bool = False,
    distill: DistillSettings | None = None,
    verify: Level | None = "quick",
    force: bool = False,
    progress: Any = None,
) -> Result:
    """Append ``tokens`` and ``special_tokens`` to ``model`` after its last id, growing every vocabulary tensor
    (rounded up to ``pad_to_multiple_of`` rows), and write the result to ``out``. ``init`` and ``distill``: as for
    :func:`remap`."""
    return _surgery(
        model, out, "append", tokens, special_tokens, verify, force, progress,
        init=init, pad_to_multiple_of=pad_to_multiple_of, weights_format=weights_format,
        sentence_initial=sentence_initial, distill=distill,
    )  # fmt: skip


def resize(
    model: Model,
    out: str | os.PathLike[str],
    *,
    to: int | None = None,
    init: Init | None = None,
    pad_to_multiple_of: int | None = None,
    weights_format: WeightsFormat | None = None,
    verify: Level | None = "quick",
    force: bool = False,
    progress: Any = None,
) -> Result:
    """Grow config and weights of ``model`` to ``to`` rows (default: as many as its tokenizer has ids)."""
    return _surgery(
        model, out, "resize", (), (), verify, force, progress,
        init=init, pad_to_multiple_of=pad_to_multiple_of, weights_format=weights_format, resize_to=to,
    )  # fmt: skip


def slots(model: Model) -> SlotReport:
    """The free vocabulary slots of ``model``: named placeholders and padding rows."""
    return find_slots(_inventory(model))


def audit(model: Model) -> AuditReport:
    """Whether tokenizer, config and weights of ``model`` agree; a missing tokenizer is an error, not a finding."""
    inventory = _inventory(model)
    require_tokenizer(inventory)
    return _audit(inventory)


def verify(out: Model, against: Model | None = None, *, level: Level = "full", slow: bool = True) -> list[Check]:
    """Every check of ``out`` (against its source ``against``), passed or not; see :mod:`vocabsurgeon.verification`."""
    source = _inventory(against) if against is not None else None
    return verify_checkpoint(_inventory(out), source, slow=slow, level=level)


__all__: Sequence[str] = (
    "Result",
    "append",
    "apply_plan",
    "audit",
    "load_plan",
    "plan_surgery",
    "read_tokens_file",
    "remap",
    "resize",
    "slots",
    "token_requests",
    "verify",
)
