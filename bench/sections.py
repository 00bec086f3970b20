"""In-process sections: first requests, answer latency against plain transformers, attribution
against plain Captum, the steps trade-off, input-length scaling and threaded throughput.

Each section returns (rows, notes): rows keyed by tab, notes saying what was skipped and why.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import attribution, inputs, tasks
from bench.timing import clock, interleaved, median

LATENCY_TARGET = 1.1  # issue 11: the answer path within 10% of the plain call
BUSY_LATENCY_TARGET = 1.2  # issue 26: within 20% while another process keeps both cores busy
ATTRIBUTION_TARGET = 1.1


def _clear_memo() -> None:
    from demos.runtime import cache

    cache.clear_all()


def _specs(names: list[str], quick: bool, notes: list[str]) -> dict[str, tasks.Spec]:
    out = {}
    for name in names:
        try:
            out[name] = tasks.spec(name, quick)
        except ImportError as exc:
            notes.append(f"{name}: skipped, demo module cannot be imported yet ({exc})")
    return out


def first_requests(names: list[str], quick: bool, repeats: int) -> tuple[dict, list[str]]:
    """Cold (model load, caches cleared), warm (memo cleared) and memo-hit latency of each tab,
    and the plain side's first call (pipeline construction included)."""
    from demos.runtime import loading

    notes: list[str] = []
    rows = {}
    for name, spec in _specs(names, quick, notes).items():
        loading.clear()
        _clear_memo()
        cold, _ = clock(spec.app)
        warm = []
        for _ in range(repeats):
            _clear_memo()
            warm.append(clock(spec.app)[0])
        hits = [clock(spec.app)[0] for _ in range(repeats)]
        plain_cold, _ = clock(lambda: spec.make_baseline()())
        rows[name] = {"cold_s": cold, "warm_s": median(warm), "memo_hit_s": median(hits), "plain_cold_s": plain_cold}
    return rows, notes


def latency(names: list[str], quick: bool, repeats: int, busy=None) -> tuple[dict, list[str]]:
    """Median latency of the app's compute path vs the plain call, interleaved, memo cleared.
    With `busy` (a `bench.busy.Busy`), the same pair runs a second time in the same rotation while
    the busy process computes: the quiet and the busy ratio from one run."""
    notes: list[str] = []
    rows = {}
    for name, spec in _specs(names, quick, notes).items():
        plain = spec.make_baseline()
        runs = {"app": spec.app, "plain": plain}
        if busy is not None:
            runs.update({"app busy": spec.app, "plain busy": plain})
        around = {"app busy": busy.running, "plain busy": busy.running} if busy is not None else None
        res = interleaved(runs, repeats, warmup=1, before=_clear_memo, around=around)
        app_s, plain_s = res["app"]["median_s"], res["plain"]["median_s"]
        rows[name] = {
            "app_s": app_s,
            "plain_s": plain_s,
            "ratio": app_s / plain_s,
            "target": LATENCY_TARGET,
            "meets_target": app_s / plain_s <= LATENCY_TARGET,
            "same_answer": bool(spec.same(res["app"]["value"], res["plain"]["value"])),
            "app_min_s": res["app"]["min_s"],
            "plain_min_s": res["plain"]["min_s"],
            "app_cpu_s": res["app"]["cpu_median_s"],
            "plain_cpu_s": res["plain"]["cpu_median_s"],
            "cpu_ratio": res["app"]["cpu_median_s"] / res["plain"]["cpu_median_s"],
            "repeats": repeats,
            "app_call": spec.app_call,
            "plain_call": spec.baseline_call,
        }
        if busy is not None:
            busy_app, busy_plain = res["app busy"]["median_s"], res["plain busy"]["median_s"]
            rows[name].update({
                "busy_app_s": busy_app,
                "busy_plain_s": busy_plain,
                "busy_ratio": busy_app / busy_plain,
                "busy_target": BUSY_LATENCY_TARGET,
                "busy_threads": busy.threads,
                "busy_same_answer": bool(spec.same(res["app busy"]["value"], res["plain busy"]["value"])),
            })
    return rows, notes


def _attr_runs(spec: attribution.AttrSpec, run: Callable, steps: int) -> tuple[dict, Callable[[], None]]:
    holder: list[Any] = [None]

    def before() -> None:  # as in the UI: the main result exists, the attribution is not cached
        _clear_memo()
        holder[0] = spec.prepare()

    return {"app": lambda: spec.app(holder[0], steps), "captum": lambda: run(holder[0], steps)}, before


def attributions(names: list[str], quick: bool, repeats: int, steps: int) -> tuple[dict, list[str]]:
    """App attribution vs Captum with its defaults, same forward function, input and steps."""
    notes: list[str] = []
    rows = {}
    for name in names:
        if name in attribution.NO_ATTRIBUTION:
            notes.append(f"{name}: {attribution.NO_ATTRIBUTION[name]}")
            continue
        try:
            spec = attribution.attr_spec(name, quick)
        except ImportError as exc:
            notes.append(f"{name}: skipped, demo module cannot be imported yet ({exc})")
            continue
        spec.prepare()
        runs, before = _attr_runs(spec, spec.make_captum(), steps)
        res = interleaved(runs, repeats, warmup=1, before=before)
        app_s, cap_s = res["app"]["median_s"], res["captum"]["median_s"]
        rows[name] = {
            "app_s": app_s,
            "captum_s": cap_s,
            "ratio": app_s / cap_s,
            "target": ATTRIBUTION_TARGET,
            "meets_target": app_s / cap_s <= ATTRIBUTION_TARGET,
            "steps": steps,
            "app_delta": abs(res["app"]["value"].delta),
            "captum_delta": res["captum"]["value"][1],
            "repeats": repeats,
            "app_call": spec.app_call,
            "captum_call": spec.captum_call,
        }
    return rows, notes


def tradeoff(quick: bool, repeats: int, steps_list: list[int], name: str = "sentiment") -> tuple[list, list[str]]:
    """Steps vs latency vs |convergence delta| for one tab, app and plain Captum side by side."""
    try:
        spec = attribution.attr_spec(name, quick)
    except ImportError as exc:
        return [], [f"{name}: skipped, demo module cannot be imported yet ({exc})"]
    run = spec.make_captum()
    rows = []
    for steps in steps_list:
        runs, before = _attr_runs(spec, run, steps)
        res = interleaved(runs, repeats, warmup=1, before=before)
        rows.append({
            "task": name,
            "steps": steps,
            "app_s": res["app"]["median_s"],
            "captum_s": res["captum"]["median_s"],
            "ratio": res["app"]["median_s"] / res["captum"]["median_s"],
            "app_delta": abs(res["app"]["value"].delta),
            "captum_delta": res["captum"]["value"][1],
        })
    return rows, []


def scaling_text(quick: bool, repeats: int, lengths: list[int], attr_steps: int = 16) -> tuple[list, list[str]]:
    """Sentiment latency (app, plain pipeline, app attribution) against the number of tokens."""
    try:
        mod = tasks.demo("sentiment")
    except ImportError as exc:
        return [], [f"sentiment: skipped ({exc})"]
    pipe = tasks._pipeline("sentiment", "text-classification", top_k=None)
    m = mod.load()
    label = m.model.config.id2label[0]
    rows = []
    for n in lengths:
        text = inputs.text_of_tokens(m.processor, n)
        res = interleaved(
            {"app": lambda: mod.analyse(text), "plain": lambda: pipe(text),
             "app_attribution": lambda: mod.attribute(text, label, attribution.IG, attr_steps)},
            repeats, warmup=1, before=_clear_memo,
        )
        rows.append({
            "task": "sentiment",
            "tokens": len(m.processor(text)["input_ids"]),
            "app_s": res["app"]["median_s"],
            "plain_s": res["plain"]["median_s"],
            "ratio": res["app"]["median_s"] / res["plain"]["median_s"],
            "attribution_s": res["app_attribution"]["median_s"],
            "attribution_steps": attr_steps,
        })
    return rows, []


def scaling_audio(quick: bool, repeats: int, seconds: list[float]) -> tuple[list, list[str]]:
    """Speech latency (app, plain ASR pipeline) against the clip length. Both sides get the audio
    the app keeps: at most one model window (30 s for Whisper, 5 s for the tiny model)."""
    try:
        mod = tasks.demo("speech")
    except ImportError as exc:
        return [], [f"speech: skipped ({exc})"]
    from demos.inputs import audio

    pipe = tasks._pipeline("speech", "automatic-speech-recognition")
    window = mod.window_seconds(mod.load())
    rows, notes = [], []
    for sec in seconds:
        clip = inputs.speech(sec)
        samples = audio.limit(audio.normalise(clip), window)[0].samples
        res = interleaved({"app": lambda: mod.transcribe(clip), "plain": lambda: pipe(samples.copy())},
                          repeats, warmup=1, before=_clear_memo)
        rows.append({
            "task": "speech",
            "seconds": sec,
            "processed_s": len(samples) / 16_000,
            "app_s": res["app"]["median_s"],
            "plain_s": res["plain"]["median_s"],
            "ratio": res["app"]["median_s"] / res["plain"]["median_s"],
            "words": len(res["app"]["value"].text.split()),
        })
        if sec > window:
            notes.append(f"speech: the {sec:g} s clip is cut to the model's {window:g} s window on both sides")
    return rows, notes


def _threaded_calls(name: str, quick: bool) -> Callable[[int], Any] | None:
    """call(i) -> the tab's compute path on the i-th distinct input (no memo hits)."""
    mod = tasks.demo(name)
    if name == "sentiment":
        return lambda i: mod.analyse(f"{inputs.TEXT} (review {i})")
    if name == "clip":
        return lambda i: mod.analyse(str(inputs.IMAGE), "\n".join([*inputs.LABELS, f"a photo number {i}"]))
    return None


def counting_errors(call: Callable[[int], Any], errors: list[str]) -> Callable[[int], None]:
    """call(i), with any exception recorded in `errors` instead of raised (a failed request)."""

    def safe(i: int) -> None:
        try:
            call(i)
        except Exception as exc:  # a failed request is a result of this section
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    return safe


def throughput_threads(names: list[str], quick: bool, clients: int, requests: int) -> tuple[dict, list[str]]:
    """Requests per second: `requests` distinct calls one after another vs from `clients` threads."""
    rows, notes = {}, []
    for name in names:
        try:
            call = _threaded_calls(name, quick)
        except ImportError as exc:
            notes.append(f"{name}: skipped ({exc})")
            continue
        call(-1)  # warm: model loaded
        errors: list[str] = []
        call = counting_errors(call, errors)
        offset = [0]

        def batch() -> list[int]:
            offset[0] += requests
            return list(range(offset[0], offset[0] + requests))

        t0 = time.perf_counter()
        for i in batch():
            call(i)
        seq = time.perf_counter() - t0
        with ThreadPoolExecutor(clients) as pool:
            t0 = time.perf_counter()
            list(pool.map(call, batch()))
            conc = time.perf_counter() - t0
        rows[name] = {"mode": "threads calling the demo function", "clients": clients, "requests": requests,
                      "sequential_rps": requests / seq, "concurrent_rps": requests / conc, "speedup": seq / conc,
                      "failed_requests": len(errors)}
        if errors:
            notes.append(f"{name}: {len(errors)} of {2 * requests} threaded requests failed, e.g. {errors[0]}")
    return rows, notes
