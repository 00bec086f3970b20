"""Token labels for axes and escaped HTML for token highlighting."""
from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

# Tokenizer markers shown as readable characters.
_MARKERS = {"Ġ": "␣", "▁": "␣", "Ċ": "↵", "</w>": ""}


def clean_token(token: str) -> str:
    """Make a raw tokenizer piece readable: 'Ġthe' -> '␣the', '▁Haus' -> '␣Haus'."""
    for raw, shown in _MARKERS.items():
        token = token.replace(raw, shown)
    return token if token.strip() else repr(token)


def plot_label(token: str) -> str:
    """A token as plotly text: readable, with markup escaped (plotly interprets <a>, <b>, ...)."""
    return html.escape(clean_token(token), quote=False)


def plot_title(title: str) -> str:
    """A figure title with markup escaped (titles may quote user text; plotly renders tags)."""
    return html.escape(title, quote=False)


TITLE_CHARS = 60  # a title line of at most this many characters fits a half-width figure (two side by side)


def number_text(value: float, sign: str = "", decimals: int = 4) -> str:
    """A score people can read: 4 decimals, or 3 significant digits below 0.001 ('8.14e-05', not
    '0.0001' or '0.0000'); `decimals` more for finer digits. sign: '+' to always show the sign."""
    value = float(value)
    return f"{value:{sign}.{decimals}f}" if value == 0 or abs(value) >= 1e-3 else f"{value:{sign}.{decimals - 1}g}"


def distinct_texts(values: Sequence[float], most: int = 8) -> list[str]:
    """`number_text` of each value, with as many more decimals (up to `most`) as it takes for different
    values not to print alike: a ranked list whose numbers all read '0.0034' says nothing."""
    values = [float(v) for v in values]
    for decimals in range(4, most + 1):
        texts = [number_text(v, decimals=decimals) for v in values]
        if len(set(texts)) == len(set(values)):
            break
    return texts


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters with '…' (the full text goes in a hover or a caption)."""
    text = str(text)
    return text if len(text) <= limit else text[: max(1, limit - 1)].rstrip() + "…"


TITLE_LINE_PX = 22  # height of one title line at TITLE_FONT_PX
TITLE_FONT_PX = 16
TITLE_TOP_PX = 34  # space above a title: Gradio draws the plot's label badge in the top-left corner


def figure_title(title: str, chars: int = TITLE_CHARS) -> dict:
    """A plotly `title` that fits its figure: markup escaped, wrapped into lines of at most `chars`
    characters (plotly never wraps a title: a long one runs off the figure's edge). `fit_title`
    then places it and makes the top margin tall enough for its lines."""
    import textwrap

    lines = textwrap.wrap(str(title), width=chars, break_long_words=True, break_on_hyphens=False) or [""]
    return dict(text="<br>".join(html.escape(line, quote=False) for line in lines), font=dict(size=TITLE_FONT_PX))


def fit_title(fig, above: int = 0):
    """Make the top margin hold the title's lines plus `above` pixels of what sits between the title
    and the plot (a top x axis with its title, a legend row, subplot titles), so none of them overlap.
    Returns the figure."""
    text = fig.layout.title.text or ""
    lines = text.count("<br>") + 1 if text else 0
    # plotly centres a title of several lines on its anchor whatever `yanchor` says: so the anchor is
    # the middle of the title's block, placed in pixels from the figure's top (its height is known)
    height = fig.layout.height or 450  # plotly's default height
    middle = TITLE_TOP_PX + TITLE_LINE_PX * lines / 2
    fig.update_layout(title=dict(yref="container", y=1 - middle / height, yanchor="middle"),
                      margin=dict(t=TITLE_TOP_PX + TITLE_LINE_PX * lines + 6 + int(above)))
    return fig


def axis_labels(tokens: Sequence[str]) -> list[str]:
    """Unique axis labels 'i:token' (plotly merges equal category names, so indices are kept)."""
    return [f"{i}:{plot_label(t)}" for i, t in enumerate(tokens)]


def thinned_ticks(labels: Sequence[str], max_ticks: int = 48) -> tuple[list[str], list[str]]:
    """(tickvals, ticktext) showing at most `max_ticks` labels, evenly spaced, so long inputs stay readable."""
    step = max(1, int(np.ceil(len(labels) / max_ticks)))
    shown = list(labels[::step])
    return shown, shown


def token_range(n: int, start: int | None, end: int | None) -> slice:
    """A valid slice of `n` tokens from user-chosen bounds (clamped, end exclusive, never empty).

    `end` None or 0 means "to the last token"."""
    lo = 0 if start is None else max(0, min(int(start), n - 1))
    hi = n if not end else max(lo + 1, min(int(end), n))
    return slice(lo, hi)


# Token chips wrap inside their box: a run of pieces without spaces (emoji, a right-to-left script, a
# long word) would otherwise run past the page edge. Inline, so the views need no page CSS.
CHIPS_WRAP = "overflow-wrap:anywhere;word-break:break-word;max-width:100%"


def _colour(score: float, scale: float) -> str:
    """Green for positive, red for negative, alpha by magnitude relative to `scale`."""
    alpha = 0.0 if scale <= 0 else min(abs(score) / scale, 1.0) * 0.85
    rgb = "22,163,74" if score >= 0 else "220,38,38"
    return f"rgba({rgb},{alpha:.3f})"


def highlight_html(tokens: Sequence[str], scores: Sequence[float], title: str = "") -> str:
    """Tokens as HTML spans coloured by score (escaped: user text can never become markup).

    scores: (n,) aligned with tokens; colour scale is the largest magnitude.
    """
    values = np.asarray(scores, dtype=float)
    scale = float(np.abs(values).max()) if values.size else 0.0
    spans = [
        f'<span class="xray-tok" style="background:{_colour(s, scale)}" '
        f'title="{html.escape(f"{t}: {s:+.4f}", quote=True)}">{html.escape(clean_token(t))}</span>'
        for t, s in zip(tokens, values)
    ]
    head = f"<div class='xray-caption'>{html.escape(title)}</div>" if title else ""
    legend = (
        "<div class='xray-legend'><span style='background:rgba(22,163,74,.7)'>pushes toward</span> "
        "<span style='background:rgba(220,38,38,.7)'>pushes away</span></div>"
    )
    return (
        f"<div class='xray-highlight'>{head}"
        f"<div class='xray-tokens' style='{CHIPS_WRAP}'>{' '.join(spans)}</div>{legend}</div>"
    )


def span_html(text: str, start: int, end: int) -> str:
    """`text` with characters [start, end) marked (the QA answer span); all text escaped."""
    start = min(max(0, start), len(text))
    end = max(start, min(len(text), end))  # an empty mark when end < start, never repeated text
    return (
        f"<div class='xray-context'>{html.escape(text[:start])}"
        f"<mark class='xray-answer'>{html.escape(text[start:end])}</mark>{html.escape(text[end:])}</div>"
    )
