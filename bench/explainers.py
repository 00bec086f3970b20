"""Explainer costs against one forward pass: `python -m bench.explainers [--size full] [--quick]`.

    python -m bench.explainers --size full --tabs speech --explainers ablate head_map \\
        --heads "decoder self-attention L0H0"      # what a knockout of one decoder head costs
    python -m bench.explainers --size full --quick --explainers head_map --map-method gradient   # quick maps

For every tab and every explainer registered for its task (`demos.explain.catalog.for_task`), the
median time of `explainer.run(task, result, **params)` with cheap, sensible parameters (below),
memo cleared before each call, against the median time of the tab's answer function (its whole
compute path, memo cleared): the same inputs as `bench.run` (bench.tasks / bench.inputs).

A cell whose projected time exceeds `--budget` seconds is not run to the end: explainers that
report progress (head importance, contrast, faithfulness) are stopped after their first batch
and the time is extrapolated from the fraction done; the row says "estimate".
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from bench.env import begin_local_run, local_run_parser
from bench.report import write_results
from core.explainers import HEAD_MAP_METHODS

PARAMS: dict[str, dict[str, Any]] = {
    "lens": {},
    "attention_steps": {"layer": 0, "head": 0, "query": -1},
    "ablate": {"heads": "L0H0"},
    "head_map": {},
    "contrast": {"steps": 8},
    "branch": {"step": 0},
    "faithfulness": {"steps": 8, "points": 5},
}
TABS = ("sentiment", "qa", "translation", "generation", "image", "speech", "clip", "explorer")


class _Stop(Exception):
    """Raised from a progress callback once the projected time is known to exceed the budget."""

    def __init__(self, projected: float, frac: float) -> None:
        super().__init__(f"projected {projected:.0f} s")
        self.projected, self.frac = projected, frac


def _accepts_progress(explainer) -> bool:
    return explainer.takes_progress


def time_explainer(explainer, task: str, result: Any, params: dict, repeats: int, budget: float) -> dict:
    """Median seconds of explainer.run (memo cleared before each call), or a labelled estimate."""
    from demos.runtime import cache

    times: list[float] = []
    for _ in range(repeats):
        cache.clear_all()
        kwargs = dict(params)
        t0 = time.perf_counter()
        if _accepts_progress(explainer):
            def progress(frac: float, *_: Any, t0: float = t0) -> None:
                elapsed = time.perf_counter() - t0
                if 0 < frac < 1 and elapsed / frac > budget:
                    raise _Stop(elapsed / frac, frac)

            kwargs["progress"] = progress
        try:
            explainer.run(task, result, **kwargs)
        except _Stop as stop:
            return {"s": stop.projected, "estimate": True, "fraction_run": stop.frac, "repeats": 1}
        times.append(time.perf_counter() - t0)
        if times[-1] > budget:  # one long run is enough
            break
    times.sort()
    return {"s": times[len(times) // 2], "estimate": False, "repeats": len(times)}


def measure(
    tabs: list[str], quick: bool, repeats: int, budget: float, only: list[str] | None = None, heads: str = "L0H0",
    map_method: str = "knockout",
) -> tuple[list[dict], list[str]]:
    from bench import tasks
    from demos.explain import catalog
    from demos.runtime import cache

    rows, notes = [], []
    for name in tabs:
        spec = tasks.spec(name, quick)
        key = tasks.key(name)
        spec.app()  # warm-up (model load)
        fwd = []
        for _ in range(repeats):
            cache.clear_all()
            t0 = time.perf_counter()
            result = spec.app()
            fwd.append(time.perf_counter() - t0)
        fwd.sort()
        forward_s = fwd[len(fwd) // 2]
        for explainer in catalog.for_task(key):
            if only and explainer.name not in only:
                continue
            params = {"heads": heads} if explainer.name == "ablate" else PARAMS.get(explainer.name)
            if explainer.name == "head_map":
                params = {"method": map_method}
            if params is None:
                notes.append(f"{key}/{explainer.name}: no benchmark parameters, not run")
                continue
            print(f"[explainers] {key} {explainer.name}…", flush=True)
            try:
                explainer.run(key, result, **params) if not _accepts_progress(explainer) else None  # warm-up
                got = time_explainer(explainer, key, result, params, repeats, budget)
            except Exception as exc:  # a failing explainer is a finding, reported
                notes.append(f"{key}/{explainer.name}: failed: {type(exc).__name__}: {exc}")
                continue
            rows.append({"task": key, "explainer": explainer.name, "params": params, "forward_s": forward_s,
                         **got, "ratio": got["s"] / forward_s})
    return rows, notes


def _t(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def markdown(rows: list[dict], notes: list[str]) -> str:
    out = ["| task | explainer | params | time | forward pass | × forward |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        est = f" (estimate: {r['fraction_run']:.0%} run)" if r["estimate"] else ""
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        out.append(
            f"| {r['task']} | {r['explainer']} | {params} | {_t(r['s'])}{est} | "
            f"{_t(r['forward_s'])} | {r['ratio']:.1f}× |"
        )
    return "\n".join(out + [""] + [f"- {n}" for n in notes]) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = local_run_parser(__doc__.splitlines()[0], "bench-explainers.json", tuple(TABS))
    p.add_argument("--budget", type=float, default=90.0, help="seconds per cell before it is extrapolated")
    p.add_argument("--explainers", nargs="+", help="only these explainers (default: every one of the task)")
    p.add_argument("--heads", default="L0H0", help="what ablate knocks out (e.g. 'decoder self-attention L0H0')")
    p.add_argument("--map-method", default="knockout", choices=tuple(HEAD_MAP_METHODS),
                   help="the head map's method: every knockout run, or their estimate from one gradient")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    load0, started = begin_local_run(args.size, args.threads)
    from bench.timing import load_average

    rows, notes = measure(args.tabs, args.quick, 1 if args.quick else args.repeats, args.budget, args.explainers,
                          args.heads, args.map_method)
    meta = {
        "size": args.size,
        "threads": args.threads,
        "load_average": [load0, load_average()],
        "duration_s": time.perf_counter() - started,
    }
    write_results(args.out, {"rows": rows, "notes": notes, "meta": meta}, markdown(rows, notes))
    print(f"[explainers] {meta}")
    return rows


if __name__ == "__main__":
    main()
