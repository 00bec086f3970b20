"""Memory per session at full size: bytes of one 512-token result per tab, as stored and as float32,
and what a class of N sessions x 4 tabs holds (results are held by reference: a session keeps the
memo's own object, so sessions with the same input share one copy; see tests/demos/runtime/test_memory.py).

    python -m bench.session_memory [--sessions 30] [--tokens 512] [--size full]
    python -m bench.session_memory --serve [--sessions 30] [--tokens 512] [--size full] [--ttl 60]

`--serve` measures the server instead of adding up bytes: the whole app (`app.build_app()`,
queued as app.py queues it) in this process on the local models, warmed up (every model loaded,
then the memos emptied), then N students in a child process, one gradio_client session each, all
at once, each running four tabs (sentiment, QA, translation, generation) on its own `--tokens`
input and then the tab's views (`<api>_views`, as the browser does after the answer). The
server's resident memory (VmRSS of this process) is sampled every 0.2 s: at the start, its peak,
when the class is done, and after the sessions were idle for the TTL (`XRAY_STATE_TTL_S`, swept
by `ui.session`). `--no-refs` keeps every result in its session (XRAY_SESSION_REF_MB=1e9): the
behaviour before sessions stored recipes.

Prints a markdown table. Each tab's result is computed once by the app's own compute function on
the full-size random models (demos.provision.fullsize); the class figures are sums of those exact byte
counts (demos.runtime.cache.nbytes), for distinct inputs (every session its own results) and for one shared
input per tab, and after the sessions' state expired (only the memos' budget, XRAY_CACHE_MB).
"Before" is float32 attention, memos of 8 results per task and state without a TTL (Gradio 6
already stored the memo's object in State without copying it).
"""
from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from bench.env import configure_models, prepare_environment, set_threads

TABS = ("sentiment", "qa", "translation", "generation")
MB = 1e6


def _float32_bytes(value) -> int:
    """nbytes of `value` had every float16 array been kept float32 (what results held before)."""
    from demos.runtime.cache import nbytes

    total, stack, seen = 0, [value], set()
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            if id(item) not in seen:
                seen.add(id(item))
                total += item.nbytes * (2 if item.dtype == np.float16 else 1)
        elif hasattr(item, "__dataclass_fields__"):
            stack.extend(getattr(item, f) for f in item.__dataclass_fields__)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return max(total, nbytes(value))


def tab_results(tokens: int) -> dict:
    """tab -> (result, seconds): one `tokens`-token input through each tab's compute function."""
    from bench.inputs import text_of_tokens
    from demos import generation, qa, sentiment, translation
    from demos.runtime import loading

    out = {}
    for tab in TABS:
        tok = loading.load(tab).processor
        tok = getattr(tok, "tokenizer", tok)
        started = time.perf_counter()
        if tab == "sentiment":
            result = sentiment.analyse(text_of_tokens(tok, tokens))
        elif tab == "qa":
            result = qa.answer("What is it?", text_of_tokens(tok, tokens - 8))
        elif tab == "translation":
            result = translation.analyse(text_of_tokens(tok, tokens))
        else:
            result = generation.generate(text_of_tokens(tok, tokens - 24))
        out[tab] = (result, time.perf_counter() - started)
    return out


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def class_inputs(sessions: int, tokens: int) -> list[dict]:
    """Per student: its own `tokens`-token text for each tab (a distinct first word)."""
    from bench.inputs import text_of_tokens
    from demos.runtime import loading

    base = {}
    for tab, n in (("sentiment", tokens), ("qa", tokens - 8), ("translation", tokens), ("generation", tokens - 24)):
        tok = loading.load(tab).processor
        base[tab] = text_of_tokens(getattr(tok, "tokenizer", tok), n).split(" ", 1)[1]
    return [{tab: f"Student{i} {text}" for tab, text in base.items()} for i in range(sessions)]


CALLS = (  # (api, arguments from a student's inputs): the answer, then the tab's views
    ("/sentiment", lambda x: (x["sentiment"],)),
    ("/qa", lambda x: ("What is it?", x["qa"])),
    ("/translate", lambda x: (x["translation"],)),
    ("/generate", lambda x: (x["generation"], 4)),
)


def students(url: str, inputs: list[dict], timeout: float) -> dict:
    """Every student at once, four tabs each (answer, then views); counts and wall time."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    out, lock = {"ok": 0, "failed": 0, "errors": []}, threading.Lock()
    barrier = threading.Barrier(len(inputs))

    def student(mine: dict) -> None:
        client = Client(url, verbose=False, httpx_kwargs={"timeout": timeout})
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=timeout)
        for api, args in CALLS:
            try:
                client.predict(*args(mine), api_name=api)
                client.predict(api_name=f"{api}_views")
                with lock:
                    out["ok"] += 1
            except Exception as exc:  # every outcome is counted
                with lock:
                    out["failed"] += 1
                    out["errors"].append(f"{api}: {type(exc).__name__}: {exc}"[:300])
        client.close()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        for f in [pool.submit(student, mine) for mine in inputs]:
            f.result()
    out["wall_s"] = time.perf_counter() - t0
    return out


def serve(args: argparse.Namespace) -> dict:
    """The served class: RSS at start, peak, end of class, after the TTL (see the module doc)."""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    import threading
    from pathlib import Path

    os.environ["XRAY_STATE_TTL_S"] = str(args.ttl)
    os.environ.setdefault("XRAY_SWEEP_S", str(max(2.0, args.ttl / 6)))
    if args.no_refs:
        os.environ["XRAY_SESSION_REF_MB"] = "1e9"
    prepare_environment(hub=False)
    set_threads(args.threads)
    configure_models(hub=False, models_dir=args.models_dir, size=args.size)
    import gc

    from bench.serve import launch_whole_app
    from demos.runtime import cache
    from ui import session

    inputs = class_inputs(args.sessions, args.tokens)
    demo, url = launch_whole_app()
    tmp = Path(tempfile.mkdtemp(prefix="xray-memory-"))
    try:
        students(url, class_inputs(1, 32), args.timeout)  # warm-up: every model loaded, every code path run
        session.sweep(demo, ttl=0)  # ... and forgotten: the warm-up session and its memo entries
        cache.clear_all()
        gc.collect()
        time.sleep(1)
        start = _rss_mb()
        samples, done = [start], threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                samples.append(_rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        (tmp / "inputs.json").write_text(json.dumps(inputs))
        cmd = [sys.executable, "-m", "bench.session_memory", "--url", url, "--inputs", str(tmp / "inputs.json"),
               "--json", str(tmp / "out.json"), "--timeout", str(args.timeout)]
        proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                              timeout=args.timeout * 8)
        if not (tmp / "out.json").exists():
            raise RuntimeError(f"students' process failed ({proc.returncode}): {proc.stderr[-3000:]}")
        res = json.loads((tmp / "out.json").read_text())
        end_of_class = _rss_mb()
        held_sessions = len(demo.state_holder.session_data)
        time.sleep(args.ttl + 2 * session.sweep_interval() + 1)  # idle for the TTL; the sweeper's passes
        done.set()
        after = _rss_mb()
        res.update(
            sessions=args.sessions, tokens=args.tokens, size=args.size, ttl_s=args.ttl, refs=not args.no_refs,
            memo_budget_mb=cache.budget_bytes() / 2**20, rss_start_mb=start, rss_peak_mb=max(samples),
            rss_end_of_class_mb=end_of_class, rss_after_ttl_mb=after, added_peak_mb=max(samples) - start,
            added_after_ttl_mb=after - start, after_vs_start=after / start - 1,
            sessions_at_end_of_class=held_sessions, sessions_after_ttl=len(demo.state_holder.session_data),
            memo_after_mb=cache.held_bytes() / 2**20,
        )
        return res
    finally:
        demo.close()


def main(argv: list[str] | None = None) -> None:
    from demos.runtime import cache

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--size", default="full", choices=("full", "tiny"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models-dir", help="where the local models are built and cached (default: bench.env's)")
    ap.add_argument("--serve", action="store_true", help="measure a served class (RSS) instead of adding up bytes")
    ap.add_argument("--ttl", type=float, default=60.0, help="--serve: XRAY_STATE_TTL_S, seconds")
    ap.add_argument("--no-refs", action="store_true", help="--serve: sessions keep their results (the old behaviour)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--url", help="(child) a running app on loopback")
    ap.add_argument("--inputs", help="(child) the students' inputs, JSON")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    if args.url or args.serve:
        import json
        from pathlib import Path

        if args.url:
            from bench.load import check_loopback

            check_loopback(args.url)
            res = students(args.url, json.loads(Path(args.inputs).read_text()), args.timeout)
        else:
            res = serve(args)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
        return
    prepare_environment(hub=False)
    set_threads(args.threads)
    configure_models(hub=False, models_dir=args.models_dir, size=args.size)
    results = tab_results(args.tokens)
    print(f"| tab ({args.tokens}-token input, {args.size} size) | stored MB | as float32 MB | attention shapes |")
    print("|---|---:|---:|---|")
    stored = f32 = 0
    for tab, (result, _) in results.items():
        s, f = cache.nbytes(result), _float32_bytes(result)
        stored, f32 = stored + s, f32 + f
        shapes = ", ".join(
            f"{getattr(result, name).weights.shape} {getattr(result, name).weights.dtype}"
            for name in ("attention", "encoder_attention", "decoder_attention", "cross_attention")
            if getattr(getattr(result, name, None), "weights", None) is not None
        )
        print(f"| {tab} | {s / MB:.1f} | {f / MB:.1f} | {shapes} |")
    print(f"| one session, 4 tabs | {stored / MB:.1f} | {f32 / MB:.1f} | |")
    n, budget = args.sessions, cache.budget_bytes()
    print()
    print(f"| {n} sessions x 4 tabs | results held, MB | before (float32) MB |")
    print("|---|---:|---:|")
    print(f"| every session its own inputs | {n * stored / MB:.0f} | {n * f32 / MB:.0f} |")
    print(f"| one input per tab, shared | {stored / MB:.0f} | {f32 / MB:.0f} |")
    print(f"| after their state expired: the memos at most | {budget / MB:.0f} (XRAY_CACHE_MB) | "
          f"{8 * f32 / MB:.0f} (8 per task; and state never expired) |")
    print(f"\nmemos now hold {cache.held_bytes() / MB:.1f} MB (budget {budget / MB:.0f} MB)")


if __name__ == "__main__":
    main()
