"""Result types of activation patching and steering (demos.explain.patching): plain numpy arrays and
strings, so viz/ and ui/ read them without torch.

Patching runs the model on a CLEAN input and on a CORRUPTED one (a word swapped, a region blurred),
copies one activation of the clean run into the corrupted run, and measures how much of the clean
answer comes back: 0 = the corrupted run's metric, 1 = the clean run's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

GRIDS = ("residual", "attention", "mlp")  # the three grids, in the order they are shown
GRID_TITLES = {
    "residual": "Residual stream: copy one position's state after a layer from the clean run",
    "attention": "Attention heads: copy one head's output (every position) from the clean run",
    "mlp": "MLP: copy one position's MLP output in a layer from the clean run",
}


@dataclass
class PatchGrid:
    """One grid of patched runs. kind: "residual" | "attention" | "mlp".

    restored: (layers, columns) (metric - corrupted) / (clean - corrupted): 1 = the clean answer back,
    0 = no effect; NaN where nothing was patched (a corrupted position without a clean partner).
    metric: (layers, columns) the raw metric of each patched run. columns: position labels
    (residual, mlp) or head labels (attention); layers: "L0", "L1", ... (block outputs).
    """

    kind: str
    layers: list[str]
    columns: list[str]
    restored: np.ndarray
    metric: np.ndarray
    changed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (columns,) the inputs differ there
    available: str = ""  # why the grid could not be computed ('' = it was)

    @property
    def title(self) -> str:
        return GRID_TITLES[self.kind]


@dataclass
class PatchingResult:
    """Clean vs corrupted, and the grids of patched runs.

    clean_tokens / corrupted_tokens: the two inputs' units (tokens, or [CLS] + patches); alignment:
    (n_corrupted,) for each corrupted position the clean position copied into it (-1 = none);
    changed: (n_corrupted,) the unit differs between the two inputs. metric_name: what is measured,
    in words; a / b: the clean and the corrupted answer (b = '' when the metric is one score);
    clean_metric / corrupted_metric: the metric on the unpatched runs. stack: which stack is patched.
    picture: (H, W, 3) uint8 the corrupted image (image task), else None.
    """

    task: str
    clean_input: str
    corrupted_input: str
    clean_tokens: list[str]
    corrupted_tokens: list[str]
    alignment: np.ndarray
    changed: np.ndarray
    metric_name: str
    a: str
    b: str
    clean_metric: float
    corrupted_metric: float
    stack: str
    grids: list[PatchGrid]
    notes: list[str] = field(default_factory=list)
    picture: np.ndarray | None = None
    b_runner_up: bool = False  # the corrupted run's top answer is A too: B is its runner-up

    @property
    def gap(self) -> float:
        """clean - corrupted: what a patch can bring back."""
        return self.clean_metric - self.corrupted_metric

    def grid(self, kind: str) -> PatchGrid | None:
        return next((g for g in self.grids if g.kind == kind), None)


@dataclass
class SteerResult:
    """A generation steered by a push added to the residual stream after block `layer` at every position, beside
    the same greedy generation without it.

    direction = mean state after `layer` of `toward` - mean state of `away` (norm: its length); the push is the
    direction scaled to `strength` x `typical`, the length of a typical state after that layer.
    plain / steered: (steps,) generated pieces; lens_layers: "L0".. block outputs; lens_plain /
    lens_steered: (layers,) top next token after the prompt read from each block's output (the logit
    lens), lens_plain_probs / lens_steered_probs: (layers,) their probabilities.
    """

    prompt: str
    toward: str
    away: str
    layer: int
    strength: float
    norm: float
    plain: list[str]
    steered: list[str]
    lens_layers: list[str]
    lens_plain: list[str]
    lens_steered: list[str]
    lens_plain_probs: np.ndarray
    lens_steered_probs: np.ndarray
    typical: float = 0.0

    @property
    def plain_text(self) -> str:
        return "".join(self.plain)

    @property
    def steered_text(self) -> str:
        return "".join(self.steered)
