"""Markdown tables of a benchmark result (the JSON written by bench.run)."""
from __future__ import annotations

from pathlib import Path


def _s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def _r(x: float | None, target: float | None = None) -> str:
    if x is None:
        return "–"
    mark = "" if target is None else (" ✓" if x <= target else " ✗")
    return f"{x:.2f}×{mark}"


def _mb(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def markdown(res: dict) -> str:
    """Every section as a markdown table, with the run's machine line and the skip notes."""
    m = res["meta"]
    out = [
        f"**Machine**: {m['machine']['cpu_count']} CPUs ({m['machine']['processor']}), torch {m['machine']['torch']} "
        f"({m['machine']['torch_threads']} threads), transformers {m['machine']['transformers']}, "
        f"{'GPU ' + str(m['machine']['gpu']) if m['machine']['cuda'] else 'no GPU'}; models: {m['models']}; "
        f"mode: {m['mode']}; load average {m['load_average_start']} → {m['load_average_end']}; "
        f"{m['duration_s']:.0f} s.",
        "",
        "### Answer latency: app compute path vs plain transformers (median, memo cleared)",
        _latency_table(res["latency"]),
        "",
        "### Attribution: app vs Captum with its defaults (same model, forward, baseline, steps)",
        _table(
            ["tab", "steps", "app", "Captum", "ratio (≤1.1)", "app |δ|", "Captum |δ|"],
            [
                [
                    k,
                    str(v["steps"]),
                    _s(v["app_s"]),
                    _s(v["captum_s"]),
                    _r(v["ratio"], v["target"]),
                    f"{v['app_delta']:.2e}",
                    f"{v['captum_delta']:.2e}",
                ]
                for k, v in res["attribution"].items()
            ],
        ),
        "",
        "### Attribution steps trade-off",
        _table(
            ["tab", "steps", "app", "Captum", "ratio", "app |δ|", "Captum |δ|"],
            [
                [
                    v["task"],
                    str(v["steps"]),
                    _s(v["app_s"]),
                    _s(v["captum_s"]),
                    _r(v["ratio"]),
                    f"{v['app_delta']:.2e}",
                    f"{v['captum_delta']:.2e}",
                ]
                for v in res["attribution_tradeoff"]
            ],
        ),
        "",
        "### Start-up: `python app.py` until GET / is 200 vs bare imports",
        _table(
            ["app.py", "import gradio, torch, transformers", "ratio (≤1.5)", "runs"],
            [
                [
                    _s(res["startup"]["app_s"]),
                    _s(res["startup"]["imports_s"]),
                    _r(res["startup"]["ratio"], res["startup"]["target"]),
                    str(res["startup"]["repeats"]),
                ]
            ]
            if res["startup"]
            else [],
        ),
        "",
        "### First request (model load), warm request, memo hit",
        _table(
            ["tab", "first (app)", "first (plain, pipeline built)", "warm", "memo hit"],
            [
                [k, _s(v["cold_s"]), _s(v["plain_cold_s"]), _s(v["warm_s"]), _s(v["memo_hit_s"])]
                for k, v in res["first_request"].items()
            ],
        ),
        "",
        "### Throughput: 8 concurrent clients vs sequential",
        _table(
            ["tab", "mode", "requests", "sequential req/s", "concurrent req/s", "speed-up", "failed"],
            [
                [
                    k.split(":")[0],
                    v["mode"],
                    str(v["requests"]),
                    f"{v['sequential_rps']:.2f}",
                    f"{v['concurrent_rps']:.2f}",
                    f"{v['speedup']:.2f}×",
                    str(v.get("failed_requests", 0)),
                ]
                for k, v in res["throughput"].items()
            ],
        ),
        "",
        "### Peak memory (MB, peak RSS; imports only: "
        + _mb(next(iter(res["memory"].values()), {}).get("imports_mb"))
        + " MB)",
        _table(
            ["tab", "method", "app answer", "app + attribution", "plain answer", "result + Captum default"],
            [
                [
                    k,
                    v["method"],
                    _mb(v["app"].get("answer_peak_mb")),
                    _mb(v["app"].get("attribution_peak_mb")),
                    _mb(v["plain"].get("answer_peak_mb")),
                    _mb(v.get("captum", {}).get("attribution_peak_mb")),
                ]
                for k, v in res["memory"].items()
            ],
        ),
        "",
        "### Latency against input length",
        _table(
            ["tab", "input", "app", "plain", "ratio", "app attribution"],
            [
                [
                    "sentiment",
                    f"{v['tokens']} tokens",
                    _s(v["app_s"]),
                    _s(v["plain_s"]),
                    _r(v["ratio"]),
                    f"{_s(v['attribution_s'])} ({v['attribution_steps']} steps)",
                ]
                for v in res["scaling"]["sentiment"]
            ]
            + [
                [
                    "speech",
                    f"{v['seconds']:g} s (model hears {v['processed_s']:g} s)",
                    _s(v["app_s"]),
                    _s(v["plain_s"]),
                    _r(v["ratio"]),
                    "–",
                ]
                for v in res["scaling"]["speech"]
            ],
        ),
    ]
    notes = [f"- {section}: {n}" for section, items in res["notes"].items() for n in items]
    if notes:
        out += ["", "**Notes**", *notes]
    return "\n".join(out) + "\n"


def write_results(out: str, payload: dict, table: str) -> Path:
    """Write a benchmark's raw figures (JSON at `out`) and its markdown table (beside it, .md);
    print the table. Returns the JSON path."""
    import json

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float))
    path.with_suffix(".md").write_text(table)
    print(table)
    return path


def _latency_table(rows: dict) -> str:
    """The answer-path table; with a busy run (`bench.run --busy`), its columns beside the quiet ones."""
    busy = any("busy_ratio" in v for v in rows.values())
    head = ["tab", "app", "plain", "ratio (≤1.1)", "CPU-time ratio", "same answer"]
    if busy:
        head += ["busy: app", "busy: plain", "busy ratio (≤1.2)", "busy: same answer"]
    body = []
    for k, v in rows.items():
        row = [k, _s(v["app_s"]), _s(v["plain_s"]), _r(v["ratio"], v["target"]), _r(v.get("cpu_ratio")),
               "yes" if v["same_answer"] else "NO"]
        if busy:
            row += [_s(v["busy_app_s"]), _s(v["busy_plain_s"]), _r(v["busy_ratio"], v["busy_target"]),
                    "yes" if v["busy_same_answer"] else "NO"]
        body.append(row + [v["plain_call"]])
    return _table(head + ["plain call"], body)

