"""Vocabulary surgery on Hugging Face checkpoints: fill free slots, append rows, audit and verify.

The library API (:mod:`vocabsurgeon.api`) is the code path of the CLI: ``remap``, ``append``, ``resize``,
``slots``, ``audit``, ``verify``, and ``plan_surgery`` / ``apply_plan`` / ``load_plan`` / ``save_plan`` for a plan
reviewed before it is applied.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import (
    append,
    apply_plan,
    audit,
    load_plan,
    plan_surgery,
    read_tokens_file,
    remap,
    resize,
    slots,
    token_requests,
    verify,
)
from .apply import Result
from .audit import AuditReport
from .errors import VocabSurgeonError
from .inventory import Inventory, read_inventory
from .plan import Plan, save_plan
from .planner import TokenRequest
from .slots import SlotReport
from .verify import Check

__all__ = [
    "AuditReport",
    "Check",
    "Inventory",
    "Plan",
    "Result",
    "SlotReport",
    "TokenRequest",
    "VocabSurgeonError",
    "__version__",
    "append",
    "apply_plan",
    "audit",
    "load_plan",
    "plan_surgery",
    "read_inventory",
    "read_tokens_file",
    "remap",
    "resize",
    "save_plan",
    "slots",
    "token_requests",
    "verify",
]
