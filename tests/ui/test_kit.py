"""ui.kit's shared lines and views."""
from __future__ import annotations

import numpy as np

from core.results import Attribution
from ui.kit import attribution_summary


def test_an_attribution_summary_shows_its_steps_and_cost():
    attr = Attribution(["a", "b"], np.array([0.25, 0.5], dtype=np.float32), "POSITIVE", "integrated_gradients", 8,
                       delta=0.004, output_value=0.9, baseline_value=0.15, seconds=2.149, together=5)
    line = attribution_summary(attr)
    assert "8 steps · 2.1 s (one pass for 5 requests at once)" in line
    assert "sum of attributions +0.75 vs f(input) − f(baseline) = +0.75" in line
    alone = Attribution(["a"], np.array([0.1]), "POSITIVE", "gradient_x_input", 1, seconds=0.04)
    assert attribution_summary(alone).endswith("· 0.0 s") and "requests" not in attribution_summary(alone)
    untimed = Attribution(["a"], np.array([0.1]), "POSITIVE", "gradient_x_input", 1)
    assert attribution_summary(untimed) == "**Gradient × input** toward **POSITIVE**"
