"""Call a tab's event handler the way Gradio does: handlers return `{component: value}` dicts, and
these helpers give the values in the order of the event's outputs (failing when a handler leaves
an output out), plus the random-weights warning split off a notice."""
from __future__ import annotations

from typing import Any

from gradio.blocks import Block

from ui.kit import RANDOM_WARNING


def in_order(block_fn: Any, value: Any) -> list:
    """`value` returned by `block_fn.fn` as a list aligned with `block_fn.outputs`."""
    if isinstance(value, dict) and value and all(isinstance(k, Block) for k in value):
        missing = [getattr(c, "label", None) or type(c).__name__ for c in block_fn.outputs if c not in value]
        assert not missing, f"{block_fn.api_name}: no value for outputs {missing}"
        return [value[c] for c in block_fn.outputs]
    if len(block_fn.outputs) == 1:
        return [value]
    return list(value)


def call(block_fn: Any, *args: Any) -> list:
    """Run the handler of `block_fn` (a gradio BlockFunction) and return its outputs in order."""
    return in_order(block_fn, block_fn.fn(*args))


def split_notice(notice: str) -> tuple[bool, str]:
    """(whether the notice opens with the random-weights warning, the rest of the notice)."""
    if notice.startswith(RANDOM_WARNING):
        return True, notice[len(RANDOM_WARNING):].lstrip("\n")
    return False, notice
