"""Adaptive attribution steps against Captum's fixed default: `python -m bench.adaptive [--size full] [--quick]`.

For each text tab on a realistic input (the registry's first example; also a ~150-token review
for sentiment), three calls take turns after the tab's main result is computed (untimed, memo
cleared before each call, as in the UI):

- Captum direct with its defaults: `LayerIntegratedGradients` (translation: `IntegratedGradients`
  on the source embeddings, the layer the app attributes to), `n_steps=50`, `gausslegendre`, no
  `internal_batch_size` (Captum's default: all 50 steps in one batch), `return_convergence_delta`;
- the app's attribution function with `tolerance` (adaptive: 8, 16, 32, ... up to 256 steps);
- the app's attribution function with fixed 32 steps (the UI's default).

Reports steps used, median wall and CPU time, |delta| and the time-to-accuracy ratio
Captum-default / app-adaptive. Writes JSON and a markdown table.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from bench import attribution, inputs
from bench.env import begin_local_run, local_run_parser
from bench.report import write_results

IG = "integrated_gradients"
TABS = ("sentiment", "sentiment_long", "qa", "generation", "translation", "clip")
CAPTUM_STEPS = 50
LONG_REVIEW = (
    "I went into this film expecting very little, since the trailer made it look like yet another loud and "
    "empty summer blockbuster, but I came out of the cinema genuinely moved. The two leads have a warm, easy "
    "chemistry that makes every quiet scene between them feel honest, and the supporting cast, especially the "
    "grandmother who runs the bakery, steals almost every moment she is on screen. The script is sharp and "
    "often very funny, the music never tells you what to feel, and the photography of the old harbour town at "
    "dawn is simply beautiful. It is not perfect: the middle section drags a little, and one subplot about a "
    "lost letter goes nowhere at all. Still, by the final scene half of the audience was in tears, and I "
    "would happily watch it again next week with my whole family."
)


def app_call(name: str) -> Callable[[Any, int, float | None], Any]:
    """(main result, steps, tolerance) -> Attribution, called as the UI calls each tab's function."""
    from bench.tasks import demo

    mod = demo(name)
    calls = {
        "sentiment": lambda r, s, t: mod.attribute(inputs.TEXT, None, IG, s, r.model_id, tolerance=t),
        "qa": lambda r, s, t: mod.attribute(inputs.QUESTION, inputs.CONTEXT, "start", IG, s, r.model_id, tolerance=t),
        "generation": lambda r, s, t: mod.attribute(r.ids, len(r.ids) - 1, IG, s, r.model_id, tolerance=t),
        "translation": lambda r, s, t: mod.attribute(inputs.SOURCE, 0, IG, s, r.model_id, tolerance=t),
        "clip": lambda r, s, t: mod.attribute_text(str(inputs.IMAGE), r.best_text, IG, s, r.model_id, tolerance=t),
    }
    return calls[name]


def measure(tab: str, quick: bool, repeats: int, tolerance: float, ceiling: int, fixed: int) -> dict:
    """One tab: Captum default vs app adaptive vs app fixed, interleaved, medians."""
    from bench.timing import interleaved
    from demos.runtime import cache

    name = "sentiment" if tab == "sentiment_long" else tab
    inputs.TEXT = LONG_REVIEW if tab == "sentiment_long" else ORIGINAL_TEXT
    spec = attribution.attr_spec(name, quick)
    captum = spec.make_captum()
    app = app_call(name)
    holder: list[Any] = [None]

    def before() -> None:
        cache.clear_all()
        holder[0] = spec.prepare()

    runs = {
        "captum": lambda: captum(holder[0], CAPTUM_STEPS),
        "adaptive": lambda: app(holder[0], ceiling, tolerance),
        "fixed": lambda: app(holder[0], fixed, None),
    }
    res = interleaved(runs, repeats, warmup=1, before=before)
    units = len(res["adaptive"]["value"].tokens)
    row = {"tab": tab, "units": units, "tolerance": tolerance, "repeats": repeats}
    row["captum"] = {"steps": CAPTUM_STEPS, "s": res["captum"]["median_s"], "cpu_s": res["captum"]["cpu_median_s"],
                     "delta": res["captum"]["value"][1]}
    for k in ("adaptive", "fixed"):
        v = res[k]["value"]
        row[k] = {"steps": v.steps, "s": res[k]["median_s"], "cpu_s": res[k]["cpu_median_s"], "delta": abs(v.delta)}
    row["ratio"] = row["captum"]["s"] / row["adaptive"]["s"]
    row["cpu_ratio"] = row["captum"]["cpu_s"] / row["adaptive"]["cpu_s"]
    return row


ORIGINAL_TEXT = inputs.TEXT


def _t(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def markdown(rows: list[dict]) -> str:
    out = [
        "| tab | tokens | Captum default: steps, time, abs δ | app adaptive (tol): steps, time, abs δ "
        "| app 32 steps: time, abs δ "
        "| Captum / adaptive, wall (CPU) (≥2) |",
        "|---|---:|---|---|---|---|",
    ]
    for r in rows:
        c, a, f = r["captum"], r["adaptive"], r["fixed"]
        ok = "✓" if r["ratio"] >= 2 else "✗"
        out.append(
            f"| {r['tab']} | {r['units']} | {c['steps']}, {_t(c['s'])}, {c['delta']:.1e} | {a['steps']}, {_t(a['s'])}, "
            f"{a['delta']:.1e} | {_t(f['s'])}, {f['delta']:.1e} | {r['ratio']:.2f}× ({r['cpu_ratio']:.2f}×) {ok} |"
        )
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = local_run_parser(__doc__.splitlines()[0], "bench-adaptive.json", tuple(TABS))
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--ceiling", type=int, default=256, help="the adaptive ladder's last step count")
    p.add_argument("--fixed", type=int, default=32)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    load0, started = begin_local_run(args.size, args.threads)
    from bench.timing import load_average

    rows = []
    for tab in args.tabs:
        print(f"[adaptive] {tab}…", flush=True)
        rows.append(
            measure(tab, args.quick, 1 if args.quick else args.repeats, args.tolerance, args.ceiling, args.fixed)
        )
    meta = {
        "size": args.size,
        "threads": args.threads,
        "load_average": [load0, load_average()],
        "duration_s": time.perf_counter() - started,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_results(args.out, {"rows": rows, "meta": meta}, markdown(rows))
    print(f"[adaptive] {meta}")
    return rows


if __name__ == "__main__":
    main()
