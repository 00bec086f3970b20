"""Benchmark command: `python -m bench.run [--size tiny|full] [--quick] [--hub] [--out FILE.json] [--tasks ...]`.

Measures, in one run on the same models and inputs: each tab's compute path against the plain
transformers call, attribution against plain Captum (and a steps trade-off), start-up of
`python app.py` against the bare imports, first / warm / memo-hit requests, throughput of 8
concurrent clients, peak memory per tab and latency against input length. Prints markdown
tables and writes the JSON (plus the same tables next to it as .md).
"""
from __future__ import annotations

import argparse
import time

from bench.env import ROOT, SIZES, configure_models, prepare_environment, set_threads

SECTIONS = (
    "first_request",
    "latency",
    "attribution",
    "attribution_tradeoff",
    "scaling",
    "throughput",
    "startup",
    "memory",
)
PLAN = {  # quick / full
    "repeats": (3, 9),
    "steps": (8, 32),
    "tradeoff_steps": ([8, 16], [8, 16, 32, 64, 128]),
    "tokens": ([16, 64], [16, 64, 128, 256, 512]),
    "seconds": ([1, 5], [1, 5, 10, 30]),
    "requests": (8, 32),
    "startup_repeats": (1, 3),
}
CLIENTS = 8
# At the real sizes a quick run keeps to what answers issue 11 first, in < 10 min on 2 CPUs.
FULL_QUICK_SECTIONS = ("latency", "attribution")
THROUGHPUT_TABS = ["sentiment", "clip"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bench.tasks import TASKS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="few repeats, short inputs (well under a minute on tiny models)"
    )
    p.add_argument("--hub", action="store_true", help="use the default hub models instead of local ones")
    p.add_argument(
        "--size",
        choices=SIZES,
        default="tiny",
        help="local models: tiny (2 layers, 32 wide) or full (random weights, the real configurations)",
    )
    p.add_argument("--out", default=str(ROOT / "artifacts" / "bench.json"))
    p.add_argument(
        "--tasks", nargs="+", default=list(TASKS), choices=TASKS, metavar="TASK", help=f"tabs among {', '.join(TASKS)}"
    )
    p.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"{', '.join(SECTIONS)} (default: all; with --size full --quick: {', '.join(FULL_QUICK_SECTIONS)})",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: one per CPU)")
    p.add_argument("--models-dir", help="where local models are built/cached (default artifacts/bench-models[-full])")
    p.add_argument("--steps", type=int, help="attribution steps (default: 8 with --quick, else 32)")
    p.add_argument("--repeats", type=int, help="timed repeats per measurement (default: 3 with --quick, else 9)")
    p.add_argument(
        "--busy",
        type=int,
        default=0,
        metavar="THREADS",
        help="latency: also time each pair while a second process computes on THREADS threads (bench.busy)",
    )
    args = p.parse_args(argv)
    if args.sections is None:
        args.sections = list(FULL_QUICK_SECTIONS if args.quick and args.size == "full" and not args.hub else SECTIONS)
    return args


def run(args: argparse.Namespace) -> dict:
    """All requested sections; a section that is not requested is an empty entry."""
    from bench import memory, sections, serve
    from bench.timing import load_average, machine_info

    q = 0 if args.quick else 1
    plan = {k: v[q] for k, v in PLAN.items()}
    plan.update({k: v for k, v in (("steps", args.steps), ("repeats", args.repeats)) if v})
    started, load_start = time.perf_counter(), load_average()
    threads = set_threads(args.threads)
    models_dir = configure_models(args.hub, args.models_dir, args.size)
    res: dict = {s: {} for s in SECTIONS}
    res["attribution_tradeoff"], res["scaling"] = [], {"sentiment": [], "speech": []}
    notes: dict[str, list[str]] = {}
    want = set(args.sections)
    tabs = list(args.tasks)
    tp_tabs = [t for t in THROUGHPUT_TABS if t in tabs]

    def section(name: str, fn, *a):
        if name in want:
            print(f"[bench] {name}…", flush=True)
            value, n = fn(*a)
            notes.setdefault(name, []).extend(n)
            return value
        return res[name]

    res["first_request"] = section(
        "first_request", sections.first_requests, tabs, args.quick, max(1, plan["repeats"] // 3)
    )
    if "latency" in want and args.busy:
        from bench.busy import Busy

        with Busy(args.busy) as busy:
            res["latency"] = section("latency", sections.latency, tabs, args.quick, plan["repeats"], busy)
    else:
        res["latency"] = section("latency", sections.latency, tabs, args.quick, plan["repeats"])
    res["attribution"] = section("attribution", sections.attributions, tabs, args.quick, plan["repeats"], plan["steps"])
    if "sentiment" in tabs:
        res["attribution_tradeoff"] = section(
            "attribution_tradeoff", sections.tradeoff, args.quick, max(3, plan["repeats"] // 2), plan["tradeoff_steps"]
        )
    if "scaling" in want:
        if "sentiment" in tabs:
            res["scaling"]["sentiment"] = section(
                "scaling", sections.scaling_text, args.quick, max(3, plan["repeats"] // 2), plan["tokens"]
            )
        if "speech" in tabs:
            res["scaling"]["speech"] = section(
                "scaling", sections.scaling_audio, args.quick, max(3, plan["repeats"] // 2), plan["seconds"]
            )
    if "throughput" in want:
        threaded = section("throughput", sections.throughput_threads, tp_tabs, args.quick, CLIENTS, plan["requests"])
        served = section("throughput", serve.throughput_served, tp_tabs, CLIENTS, plan["requests"])
        res["throughput"] = {
            **{f"{k}: served": v for k, v in served.items()},
            **{f"{k}: threads": v for k, v in threaded.items()},
        }
    res["startup"] = section("startup", serve.startup, models_dir if not args.hub else None, plan["startup_repeats"])
    res["memory"] = section(
        "memory", memory.measure, tabs, args.hub, models_dir, args.quick, threads, plan["steps"], args.size
    )
    res["notes"] = notes
    res["meta"] = {
        "mode": "quick" if args.quick else "full",
        "models": "hub (default ids)" if args.hub else f"{args.size} local models in {models_dir}",
        "size": "hub" if args.hub else args.size,
        "tasks": tabs,
        "sections": sorted(want),
        "plan": plan,
        "busy_threads": args.busy,
        "machine": machine_info(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "duration_s": time.perf_counter() - started,
    }
    return res


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    prepare_environment(args.hub)
    from bench.report import markdown, write_results

    res = run(args)
    out = write_results(args.out, res, markdown(res))
    print(f"[bench] wrote {out} and {out.with_suffix('.md')}")
    return res


if __name__ == "__main__":
    main()
