"""bertviz head view and model view as a self-contained, sandboxed iframe that works offline.

bertviz 1.4.1 computes the views; its HTML would load require.js, d3 and jQuery from cdnjs and stay
blank offline. Here the three libraries (assets/vendor/, fetched from npm by
scripts/fetch_vendor.sh) are INLINED into the frame's document: no network, no static route, no
URL prefix behind a proxy, no cookies needed (a sandboxed frame has an opaque origin, so requests
it made to the app would be cross-site). The price is ~410 kB of library code per view.

Exception to the viz rule "no torch": bertviz takes tuples of torch tensors (1, heads, q, k) per
layer, so the numpy weights are converted to torch here (torch is imported lazily).

Safety: bertviz writes its parameters, tokens included, into a <script> with json.dumps, which
leaves "</script>" intact (and pastes them twice, once into a comment). The parameters are taken
back out and re-serialised with <, >, & written as \\u003c..., then the whole document is
HTML-escaped into the srcdoc of an <iframe sandbox="allow-scripts"> (no allow-same-origin: the
frame cannot read the app page, its cookies or storage). Tokens are drawn by d3's .text().

Sizes: attention (layers, heads, q, k) becomes layers*heads*q*k numbers in the page, so inputs are
cut to `max_tokens` per side and to a budget of numbers by showing fewer (evenly spaced) layers;
the model view, which draws all of them at once, has smaller budgets and shows at most
`max_layers` x `max_heads` thumbnails. Each cut is told to the user in a note above the frame.
"""
from __future__ import annotations

import functools
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from core.results import AttentionMaps
from viz.tokens import clean_token

VENDOR = Path(__file__).resolve().parent.parent / "assets" / "vendor"
VENDOR_FILES = ("d3.min.js", "jquery.min.js", "require.js")  # globals first, then the AMD loader
# Budgets measured in headless Chromium on 2 CPU cores (software rendering): the head view of
# 12x12 heads and 50 tokens (360k numbers, 2.3 MB) drew in 4.5 s; the model view draws every
# thumbnail at once, about 10k attention lines a second (12x12 heads, 20 tokens: 5.6 s).
MAX_TOKENS = 100
MAX_VALUES = 400_000  # attention numbers in a head view page (~6 characters each: ~2.3 MB at most)
MODEL_MAX_TOKENS = 50
MODEL_MAX_VALUES = 80_000  # numbers (= lines drawn) in a model view
MAX_LAYERS = 12
MAX_HEADS = 12
DECIMALS = 3
_CDN_REQUIRE = '<script src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js"></script>'
_SCRIPT_OPEN, _SCRIPT_CLOSE = '\n<script type="text/javascript">\n', "\n</script>\n"
# After require.js: hand the already-loaded globals to bertviz's requirejs(['jquery', 'd3'], ...).
_AMD_SHIM = "define('d3',[],function(){return window.d3;});define('jquery',[],function(){return window.jQuery;});"

View = Literal["head", "model"]


@dataclass
class _Prepared:
    """bertviz keyword arguments (torch tensors, tokens, shown layers/heads) and notices for the user."""

    kwargs: dict
    notices: list[str] = field(default_factory=list)
    rows: int = 0  # longest token list shown (sets the frame height)


def static_paths() -> list[str]:
    """Folders the app must serve for these views: none, the libraries are inlined."""
    return []


def head_view_html(maps: AttentionMaps, *, sentence_b_start: int | None = None, max_tokens: int = MAX_TOKENS,
                   max_values: int = MAX_VALUES) -> str:
    """bertviz head view of one self-attention kind. maps.weights: (layers, heads, n, n)."""
    prep = _prepare({"attention": maps}, max_tokens, max_values, None, sentence_b_start)
    return _render("head", prep, f"bertviz head view: {maps.kind} attention")


def model_view_html(
    maps: AttentionMaps,
    *,
    sentence_b_start: int | None = None,
    max_tokens: int = MODEL_MAX_TOKENS,
    max_values: int = MODEL_MAX_VALUES,
    max_layers: int = MAX_LAYERS,
    max_heads: int = MAX_HEADS,
) -> str:
    """bertviz model view (all layers x heads as thumbnails). maps.weights: (layers, heads, n, n)."""
    prep = _prepare({"attention": maps}, max_tokens, max_values, (max_layers, max_heads), sentence_b_start)
    return _render("model", prep, f"bertviz model view: {maps.kind} attention")


def encoder_decoder_head_view_html(
    encoder: AttentionMaps | None = None,
    decoder: AttentionMaps | None = None,
    cross: AttentionMaps | None = None,
    *,
    max_tokens: int = MAX_TOKENS,
    max_values: int = MAX_VALUES,
) -> str:
    """Head view with a selector Encoder / Decoder / Cross.

    encoder: (L, H, S, S), decoder: (L, H, T, T), cross: (L, H, T, S) with S source, T target tokens.
    """
    prep = _prepare(_encdec(encoder, decoder, cross), max_tokens, max_values, None, None)
    return _render("head", prep, "bertviz head view: encoder, decoder and cross attention")


def encoder_decoder_model_view_html(
    encoder: AttentionMaps | None = None,
    decoder: AttentionMaps | None = None,
    cross: AttentionMaps | None = None,
    *,
    max_tokens: int = MODEL_MAX_TOKENS,
    max_values: int = MODEL_MAX_VALUES,
    max_layers: int = MAX_LAYERS,
    max_heads: int = MAX_HEADS,
) -> str:
    """Model view with a selector Encoder / Decoder / Cross (shapes as in the head view)."""
    prep = _prepare(_encdec(encoder, decoder, cross), max_tokens, max_values, (max_layers, max_heads), None)
    return _render("model", prep, "bertviz model view: encoder, decoder and cross attention")


def view_html(view: View, picked: dict) -> str:
    """Dispatch a `pick(result)` dict: {"self": maps[, "sentence_b_start": i]} or {"encoder", "decoder", "cross"}."""
    if picked.get("self") is not None:
        fn = head_view_html if view == "head" else model_view_html
        return fn(picked["self"], sentence_b_start=picked.get("sentence_b_start"))
    fn = encoder_decoder_head_view_html if view == "head" else encoder_decoder_model_view_html
    return fn(picked.get("encoder"), picked.get("decoder"), picked.get("cross"))


def _encdec(encoder, decoder, cross) -> dict:
    parts = {"encoder_attention": encoder, "decoder_attention": decoder, "cross_attention": cross}
    parts = {k: v for k, v in parts.items() if v is not None}
    if not parts:
        raise ValueError("No attention to show: give encoder, decoder or cross attention.")
    return parts


def _prepare(
    parts: dict[str, AttentionMaps],
    max_tokens: int,
    max_values: int,
    grid: tuple[int, int] | None,
    sentence_b_start: int | None,
) -> _Prepared:
    """Cut tokens, choose layers/heads within the budget, convert to torch; `parts` keyed by bertviz argument."""
    import torch

    notices: list[str] = []
    for maps in parts.values():
        w = np.asarray(maps.weights)
        if w.ndim != 4 or w.shape[2:] != (len(maps.query_tokens), len(maps.key_tokens)):
            raise ValueError(
                f"{maps.kind} attention of shape {w.shape} does not match "
                f"{len(maps.query_tokens)} x {len(maps.key_tokens)} tokens."
            )
    n_layers = min(m.n_layers for m in parts.values())
    n_heads = min(m.n_heads for m in parts.values())
    if len({(m.n_layers, m.n_heads) for m in parts.values()}) > 1:
        notices.append(
            f"The attention kinds differ in size; showing the {n_layers} layers x {n_heads} heads they share."
        )
    tokens: dict[str, list[str]] = {}
    cut = {}
    for name, maps in parts.items():
        q, k = min(len(maps.query_tokens), max_tokens), min(len(maps.key_tokens), max_tokens)
        if (q, k) != (len(maps.query_tokens), len(maps.key_tokens)):
            notices.append(
                f"{maps.kind.capitalize()} attention: showing the first {q} x {k} of "
                f"{len(maps.query_tokens)} x {len(maps.key_tokens)} tokens (the view gets slow beyond {max_tokens})."
            )
        cut[name] = np.round(np.asarray(maps.weights, dtype=np.float64)[:n_layers, :n_heads, :q, :k], DECIMALS)
        _put_tokens(
            tokens, name, [clean_token(t) for t in maps.query_tokens[:q]], [clean_token(t) for t in maps.key_tokens[:k]]
        )
    heads = _evenly(n_heads, grid[1]) if grid else list(range(n_heads))
    per_layer = sum(len(heads) * a.shape[2] * a.shape[3] for a in cut.values())
    layers = _evenly(n_layers, min(grid[0] if grid else n_layers, max(1, max_values // max(per_layer, 1))))
    shown = [
        f"{what} {_list(idx)} of {n}"
        for what, idx, n in (("layers", layers, n_layers), ("heads", heads, n_heads))
        if len(idx) < n
    ]
    if shown:
        notices.append(f"Showing {' and '.join(shown)} to keep the view responsive (fewer tokens leave room for more).")
    kwargs = {name: tuple(torch.from_numpy(a[layer][None]) for layer in range(n_layers)) for name, a in cut.items()}
    kwargs.update(tokens, include_layers=layers, prettify_tokens=False, html_action="return")
    if grid:
        kwargs["include_heads"] = heads
    if sentence_b_start is not None and 0 < sentence_b_start < len(tokens.get("tokens", [])):
        kwargs["sentence_b_start"] = int(sentence_b_start)
    rows = max(max(a.shape[2:]) for a in cut.values())
    return _Prepared(kwargs, notices, rows)


def _put_tokens(tokens: dict, name: str, query: list[str], key: list[str]) -> None:
    if name == "attention":
        tokens["tokens"] = query
    elif name == "encoder_attention":
        tokens["encoder_tokens"] = query
    elif name == "decoder_attention":
        tokens["decoder_tokens"] = query
    else:  # cross: decoder queries attend to encoder keys
        tokens.setdefault("decoder_tokens", query)
        tokens.setdefault("encoder_tokens", key)


def _evenly(n: int, cap: int) -> list[int]:
    """Up to `cap` indices of range(n), evenly spaced, first and last included."""
    if n <= cap:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max(cap, 1))})


def _list(indices: list[int]) -> str:
    return ", ".join(map(str, indices))


def _render(view: View, prep: _Prepared, title: str) -> str:
    """The view as `<div>notices<iframe sandbox="allow-scripts" srcdoc="...">` for gr.HTML."""
    from bertviz import head_view, model_view

    if view == "model":
        raw = model_view(display_mode="light", **prep.kwargs).data
        height = min(max(160 + 14 * prep.rows, 360), 820)
    else:
        prep.kwargs.pop("include_heads", None)
        raw = head_view(**prep.kwargs).data
        height = min(max(110 + 22.5 * prep.rows, 300), 820)
    body = _safe_body(raw, _template(view))
    doc = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{margin:8px;background:#fff;color:#000;"
        "font-family:'Helvetica Neue',Helvetica,Arial,sans-serif}</style>"
        f"{_vendor_scripts()}</head><body>{body}</body></html>"
    )
    notes = "".join(f'<p class="xray-notice">{html.escape(n)}</p>' for n in prep.notices)
    frame = (
        f'<iframe sandbox="allow-scripts" title="{html.escape(title, quote=True)}" '
        f'style="width:100%;height:{int(height)}px;border:1px solid #ddd;border-radius:6px;background:#fff" '
        f'srcdoc="{html.escape(doc, quote=True)}"></iframe>'
    )
    return f'<div class="xray-bertviz">{notes}{frame}</div>'


def _safe_body(raw: str, template: str) -> str:
    """bertviz's HTML without the CDN, with its parameters re-serialised so no token can end the script."""
    if not raw.startswith(_CDN_REQUIRE) or _SCRIPT_OPEN not in raw or not raw.endswith(_SCRIPT_CLOSE):
        raise RuntimeError("Unexpected bertviz output; this module supports bertviz 1.4.1.")
    vis_html, js = raw[len(_CDN_REQUIRE) : -len(_SCRIPT_CLOSE)].split(_SCRIPT_OPEN, 1)
    pieces = template.split("PYTHON_PARAMS")
    size, rest = divmod(len(js) - sum(map(len, pieces)), len(pieces) - 1)
    params_json = js[len(pieces[0]) : len(pieces[0]) + size]
    if rest or params_json.join(pieces) != js:
        raise RuntimeError("Unexpected bertviz script; this module supports bertviz 1.4.1.")
    params = json.loads(params_json)
    if "include_heads" in params:  # bertviz sizes thumbnails for all heads even when fewer are shown
        params["total_heads"] = len(params["include_heads"])
    safe = _script_json(params)
    code = re.sub(r"require\.config\(\{.*?\}\);\s*", "", template, count=1, flags=re.S)
    code = code.replace("// HACK: PYTHON_PARAMS", "// HACK: the params")
    if code.count("PYTHON_PARAMS") != 1 or "cdnjs" in code:
        raise RuntimeError("Unexpected bertviz script; this module supports bertviz 1.4.1.")
    return f"{vis_html}<script>{code.replace('PYTHON_PARAMS', safe)}</script>"


def _script_json(value) -> str:
    """JSON that is safe inside <script>: <, >, & and line separators as \\u escapes (only occur in strings)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for ch in "<>&\u2028\u2029":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


@functools.lru_cache(maxsize=2)
def _template(view: View) -> str:
    import bertviz

    return (Path(bertviz.__file__).parent / f"{view}_view.js").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _vendor_scripts() -> str:
    """The three libraries as inline <script>s (read once), then the AMD shim."""
    scripts = []
    for name in VENDOR_FILES:
        code = (VENDOR / name).read_text(encoding="utf-8")
        code = re.sub(r"^//# sourceMappingURL=.*$", "", code, flags=re.M)
        scripts.append("<script>" + re.sub(r"</(script)", r"<\\/\1", code, flags=re.I) + "</script>")
    return "".join(scripts) + f"<script>{_AMD_SHIM}</script>"
