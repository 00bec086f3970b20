"""Numbers behind the views as files: CSV for tables, JSON for whole results.

Pure functions: result dataclasses / arrays in, text out (the UI writes the text to a file).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_JSON_ARRAY = 200_000  # larger arrays (e.g. all attention of a long input) are summarised


def _plain(value: Any) -> Any:
    """Dataclasses, numpy arrays and scalars -> JSON-compatible Python values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        if value.size > MAX_JSON_ARRAY:
            return {"shape": list(value.shape), "omitted": "too large for JSON; export it from its view as CSV"}
        if value.dtype.kind not in "biuf":
            return value.tolist()
        return np.round(value.astype(float), 6).tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def result_json(result: Any) -> str:
    """The whole result (answer, attentions, embeddings, ...) as indented JSON."""
    return json.dumps(_plain(result), indent=1, ensure_ascii=False)


def _cell(value: Any) -> Any:
    """Guard spreadsheet users against formula injection: a TEXT cell '=cmd()' is written as
    "'=cmd()". Numbers are left as numbers (a negative score stays -0.25, not the text '-0.25)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _num(value: Any) -> float | int:
    """A number rounded to 6 significant digits, kept a number (so `_cell` never guards it);
    whole values are written without '.0' ('11', not '11.0')."""
    x = float(f"{float(value):.6g}")
    return int(x) if x.is_integer() and abs(x) < 1e15 else x


def _csv(header: Sequence[str], rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([_cell(c) for c in row] for row in rows)
    return buf.getvalue()


def matrix_csv(
    matrix: np.ndarray, row_tokens: Sequence[str], col_tokens: Sequence[str], rows: slice, cols: slice
) -> str:
    """The matrix a heatmap shows, as a table: first column the row token, then one column per
    column token (headers 'index:token'). matrix: (q, k); rows/cols: the part shown."""
    q_idx, k_idx = range(*rows.indices(matrix.shape[0])), range(*cols.indices(matrix.shape[1]))
    header = ["query \\ key", *[f"{j}:{col_tokens[j]}" for j in k_idx]]
    body = ([f"{i}:{row_tokens[i]}", *[_num(matrix[i, j]) for j in k_idx]] for i in q_idx)
    return _csv(header, body)


def points_csv(points: np.ndarray, labels: Sequence[str], groups: Sequence[str] | None = None) -> str:
    """One row per projected point: index, label, group, x, y. points: (n, 2)."""
    groups = list(groups) if groups else [""] * len(labels)
    rows = ((i, labels[i], groups[i], _num(points[i, 0]), _num(points[i, 1])) for i in range(len(labels)))
    return _csv(["index", "label", "group", "x", "y"], rows)


def scores_csv(tokens: Sequence[str], scores: Sequence[float], name: str = "attribution") -> str:
    """One row per token: index, token, score."""
    return _csv(["index", "token", name], ((i, t, _num(s)) for i, (t, s) in enumerate(zip(tokens, scores))))


def attributions_csv(attributions: Sequence[Any]) -> str:
    """One row per input unit of each attribution: target, method, index, unit, score.
    Token attributions list their tokens; pixel attributions (H, W) list 'row r col c'."""
    rows = []
    for attr in attributions:
        scores = np.asarray(attr.scores, dtype=float)
        if scores.ndim == 2:
            units = [f"row {r} col {c}" for r in range(scores.shape[0]) for c in range(scores.shape[1])]
        else:
            units = list(attr.tokens)
        rows += [(attr.target, attr.method, i, u, _num(v)) for i, (u, v) in enumerate(zip(units, scores.ravel()))]
    return _csv(["target", "method", "index", "unit", "score"], rows)
