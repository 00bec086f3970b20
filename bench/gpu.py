"""The GPU check, one short command on a CUDA machine:

    .venv/bin/python -m bench.gpu                 # full-size models, the app's own paths, on CUDA
    .venv/bin/python -m bench.gpu --out gpu.md    # and write the table

Times, with `torch.cuda.synchronize()` inside every clock, the app's own compute functions on
random-weight models with the real configurations (demos.provision.fullsize; half precision where the
registry says it is safe, exactly as the app loads them on a GPU), against the targets of the
real-scale issue:
  * sentiment: the answer (one forward pass with every attention map) plus a 32-step integrated
    gradients attribution, under 50 ms;
  * generation: 50 new tokens with every per-step view (top-k choices, attentions, hidden states,
    P(token)), under 0.5 s; plus the layer lens of that result.
Median of `--repeats` runs after one warm-up. Without CUDA it says so and exits with status 2
(`--allow-cpu` runs the same code on the CPU, e.g. to check the script itself on tiny models).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

TARGETS_MS = {"sentiment answer + 32-step IG": 50.0, "generation: 50 tokens, every per-step view": 500.0}
SENTENCE = "A warm, funny and beautifully acted film that stays with you long after the credits roll."
PROMPT = "The most important invention of the twentieth century was"


def clock(fn: Callable[[], object], repeats: int, cuda: bool) -> float:
    """Median wall milliseconds of `fn` over `repeats` runs after one warm-up (GPU work finished
    inside the clock)."""
    import torch

    def once() -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1000

    once()
    return statistics.median(once() for _ in range(repeats))


def run(models: dict[str, Path], repeats: int, cuda: bool) -> list[tuple[str, float, float | None]]:
    """(what, median ms, target ms or None) rows, measured through the app's compute functions."""
    from demos import generation, sentiment
    from demos.explain import lens
    from demos.runtime import cache, loading, settings

    settings.configure(settings.Settings(overrides={k: str(v) for k, v in models.items()}, offline=True,
                                         device="cuda" if cuda else "cpu"))
    loading.device.cache_clear()
    loading.clear()

    def fresh(fn: Callable[[], object]) -> Callable[[], object]:
        def call() -> object:
            cache.clear_all()  # time the work, not the memo
            return fn()
        return call

    rows = []
    answer = clock(fresh(lambda: sentiment.analyse(SENTENCE)), repeats, cuda)
    both = clock(
        fresh(lambda: (sentiment.analyse(SENTENCE), sentiment.attribute(SENTENCE, None, "integrated_gradients", 32))),
        repeats,
        cuda,
    )
    rows += [
        ("sentiment answer", answer, None),
        ("sentiment answer + 32-step IG", both, TARGETS_MS["sentiment answer + 32-step IG"]),
    ]
    gen = clock(fresh(lambda: generation.generate(PROMPT, 50)), repeats, cuda)
    rows.append(
        ("generation: 50 tokens, every per-step view", gen, TARGETS_MS["generation: 50 tokens, every per-step view"])
    )
    result = generation.generate(PROMPT, 50)
    rows.append(
        ("generation: layer lens of that result", clock(lambda: lens.lens("generation", result), repeats, cuda), None)
    )
    return rows


def table(rows: list[tuple[str, float, float | None]], device: str, dtypes: str) -> str:
    lines = [
        f"GPU check on {device} ({dtypes}), full-size random-weight models, median ms",
        "",
        "| what | ms | target | met |",
        "|---|---:|---:|---|",
    ]
    for what, ms, target in rows:
        met = "" if target is None else ("yes" if ms <= target else "no")
        lines.append(f"| {what} | {ms:.1f} | {'' if target is None else f'{target:.0f}'} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="folder of full-size models (default: bench's full-size cache, built once)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="also write the markdown table here")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no CUDA (a dry run)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny models instead of full-size ones (with --allow-cpu: a smoke test)"
    )
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(
            "No CUDA device here: this script measures the app on a GPU (use --allow-cpu for a dry run).",
            file=sys.stderr,
        )
        return 2
    from bench.env import default_models_dir

    tasks = ("sentiment", "generation")
    if args.tiny:
        from demos.provision.tiny import ensure_tiny_models

        models = ensure_tiny_models(Path(args.models or default_models_dir("tiny")), tasks)
    else:
        from demos.provision.fullsize import ensure_full_models

        models = ensure_full_models(Path(args.models or default_models_dir("full")), tasks, progress=print)
    rows = run(models, args.repeats, cuda)
    from demos.runtime import loading

    device = torch.cuda.get_device_name(0) if cuda else "CPU (dry run)"
    text = table(rows, device, ", ".join(f"{t}: {str(loading.dtype_for(t)).replace('torch.', '')}" for t in tasks))
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
