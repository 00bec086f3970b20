"""The guide's texts: each explainer's section says what the view alone would leave unsaid."""
from __future__ import annotations


def test_the_lens_reading_is_in_the_guide_and_said_once_in_the_view():
    """The view shows its help above the result's caption (how a row is read, how far to trust an early one), so
    its help does not repeat the caption; the guide has no result beside it, so its section says both."""
    from ui.explainer_tabs import guide_sections
    from ui.views import lens

    section = next(text for title, text, _ in guide_sections() if "lens" in title.lower())
    assert "watch in which layer the final answer appears" in section
    assert "early layers were not trained for the head" in section
    assert "trained" not in lens.LENS_HELP
