"""Vocabulary surgery on Hugging Face checkpoints: fill free slots, append rows, audit and verify.

The library API (:mod:`vocabsurgeon.api`) is the code path of the CLI: ``remap``, ``append``, ``resize``,
``slots``, ``audit``, ``verify``, ``suggest``, and ``plan_surgery`` / ``apply_plan`` / ``load_plan`` /
``save_plan`` for a plan reviewed before it is applied. The names are imported on first use, so ``import
vocabsurgeon`` (and a child process of a surgery) costs almost nothing. No module is named like a function
(``verify`` lives in ``verification``, ``audit`` in ``auditing``, ``slots`` in ``free_slots``, ``suggest`` in
``suggestions``), so importing a module never hides a function.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "append": "api",
    "apply_plan": "api",
    "audit": "api",
    "load_plan": "api",
    "plan_surgery": "api",
    "read_tokens_file": "api",
    "remap": "api",
    "resize": "api",
    "slots": "api",
    "token_requests": "api",
    "verify": "api",
    "Result": "apply",
    "AuditReport": "auditing",
    "VocabSurgeonError": "errors",
    "Inventory": "inventory",
    "read_inventory": "inventory",
    "Plan": "plan",
    "save_plan": "plan",
    "TokenRequest": "planner",
    "SlotReport": "free_slots",
    "Check": "checks",
    "suggest": "suggestions",
    "Suggestion": "suggestions",
}

__all__ = [
    "AuditReport",
    "Check",
    "Inventory",
    "Plan",
    "Result",
    "SlotReport",
    "Suggestion",
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
    "suggest",
    "token_requests",
    "verify",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vocabsurgeon' has no attribute {name!r}")
    imported = importlib.import_module(f".{module}", __name__)
    value = getattr(imported, name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
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
    from .auditing import AuditReport
    from .checks import Check
    from .errors import VocabSurgeonError
    from .free_slots import SlotReport
    from .inventory import Inventory, read_inventory
    from .plan import Plan, save_plan
    from .planner import TokenRequest
    from .suggestions import Suggestion, suggest
