"""Vocabulary surgery on Hugging Face checkpoints: fill free slots, append rows, audit and verify."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import VocabSurgeonError
from .inventory import Inventory, read_inventory

__all__ = ["Inventory", "VocabSurgeonError", "__version__", "read_inventory"]
