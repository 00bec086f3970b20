"""A class connecting at once: `python -m bench.burst --serve [--size full] [--clients 100]`.

Starts the whole app in this process (as `app.py` launches it) on the tiny or full-size local
models, then, in a child process, two bursts. First the pages alone: `--clients` browsers
opening the page (`GET /`) and as many clients fetching the configuration and the API description
(`GET /config`, `GET /gradio_api/info`), all at once, each with gradio_client's default timeout
(20 s): the server's part of connecting. Then `--clients` new `gradio_client.Client`s at the same moment,
each with the client's default timeout (what a student's script or notebook uses), each asking
one Sentiment answer as soon as it is connected, so the queue fills while the later ones are still
connecting. Reports how many connected, the seconds to connect (p50/p95/max), how many answers
came, and the server's time to build the page configuration once (what every connection costs
without `ui.pagecache`). The clients' seconds to connect include their own parsing of the
configuration (about 0.4 s of CPU per client, all of them in one process here, where a class has
a machine each); the page burst is the server's part alone. `XRAY_PAGE_CACHE=0` in the
environment runs the same burst with every page built by Gradio: the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.timing import percentile

ROOT = Path(__file__).resolve().parent.parent


def burst(url: str, clients: int, timeout: float) -> dict:
    """`clients` threads released together; each connects (default timeout) and asks one answer."""
    from gradio_client import Client

    start = threading.Barrier(clients)
    lock = threading.Lock()
    out: dict = {"connected": 0, "connect_failed": 0, "answered": 0, "answer_failed": 0, "connect_s": [], "errors": []}

    def student(i: int) -> None:
        start.wait()
        t0 = time.perf_counter()
        try:
            client = Client(url, verbose=False)
        except Exception as exc:  # every outcome is counted
            with lock:
                out["connect_failed"] += 1
                out["errors"].append(f"connect: {type(exc).__name__}: {str(exc)[:200]}")
            return
        with lock:
            out["connected"] += 1
            out["connect_s"].append(time.perf_counter() - t0)
        try:
            client.predict(f"Student {i} found the film quite good.", api_name="/sentiment")
            key = "answered"
        except Exception as exc:  # every outcome is counted
            key = "answer_failed"
            with lock:
                out["errors"].append(f"answer: {type(exc).__name__}: {str(exc)[:200]}")
        with lock:
            out[key] += 1
        client.close()

    threads = [threading.Thread(target=student, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    times = out.pop("connect_s")
    return {
        **out,
        "clients": clients,
        "lost": clients - out["connected"] - out["connect_failed"],
        "connect_p50_s": percentile(times, 0.5),
        "connect_p95_s": percentile(times, 0.95),
        "connect_max_s": max(times) if times else None,
        "wall_s": time.perf_counter() - t0,
        "errors": out["errors"][:10],
    }


def page_burst(url: str, clients: int, timeout: float = 20.0) -> dict:
    """Every page request of `clients` browsers and `clients` API clients at once (httpx, one event
    loop): seconds per request (p50/p95/max) and how many failed."""
    import asyncio

    import httpx

    paths = ["/"] * clients + ["/config", "/gradio_api/info"] * clients

    async def run() -> tuple[list[float], list[str]]:
        times, errors = [], []
        limits = httpx.Limits(max_connections=len(paths), max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:

            async def one(path: str) -> None:
                t0 = time.perf_counter()
                try:
                    (await http.get(url.rstrip("/") + path)).raise_for_status()
                    times.append(time.perf_counter() - t0)
                except Exception as exc:  # every outcome is counted
                    errors.append(f"{path}: {type(exc).__name__}")

            await asyncio.gather(*(one(p) for p in paths))
        return times, errors

    times, errors = asyncio.run(run())
    return {
        "requests": len(paths),
        "failed": len(errors),
        "p50_s": percentile(times, 0.5),
        "p95_s": percentile(times, 0.95),
        "max_s": max(times) if times else None,
        "errors": errors[:5],
    }


def config_build_s() -> float:
    """Seconds Gradio spends building the page configuration once (deep copy + root URL), median of 5."""
    import statistics

    from gradio import route_utils, utils

    import app

    demo = app.build_app()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        route_utils.update_root_in_config(utils.safe_deepcopy(demo.config), "http://127.0.0.1:7860")
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def serve_and_run(args: argparse.Namespace) -> dict:
    from bench.env import configure_models, prepare_environment, set_threads

    prepare_environment(hub=False)
    set_threads(args.threads)
    configure_models(False, None, args.size)
    from bench.serve import launch_whole_app
    from ui import pagecache

    demo, url = launch_whole_app()
    tmp = Path(tempfile.mkdtemp(prefix="xray-burst-"))
    try:
        cmd = [sys.executable, "-m", "bench.burst", "--url", url, "--clients", str(args.clients)]
        cmd += ["--timeout", str(args.timeout), "--json", str(tmp / "out.json")]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout + 120)
        if not (tmp / "out.json").exists():
            raise RuntimeError(f"students' process failed ({proc.returncode}): {proc.stderr[-3000:]}")
        res = json.loads((tmp / "out.json").read_text())
    finally:
        demo.close()
    res["page_cache"] = pagecache.ENABLED
    res["config_build_s"] = config_build_s()
    res["size"], res["threads"] = args.size, args.threads
    res["load_average_at_start"] = args.load
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", action="store_true", help="start the app here, the students in a child process")
    p.add_argument("--url", help="a running app (loopback), without --serve")
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the whole burst")
    p.add_argument("--json", help="write the summary here")
    args = p.parse_args(argv)
    args.load = os.getloadavg()[0]
    if args.serve:
        res = serve_and_run(args)
    else:
        from bench.load import check_loopback

        check_loopback(args.url)
        os.nice(19)  # the students stand in for other machines: they take the CPU the server leaves idle
        pages = page_burst(args.url, args.clients)
        res = {"pages": pages, "clients": burst(args.url, args.clients, args.timeout)}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
