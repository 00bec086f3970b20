"""Sections that need a real server or a fresh interpreter: start-up time of `python app.py`
against the bare imports, and throughput of 8 gradio_client clients against a served app."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import inputs
from bench.timing import median

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TARGET = 1.5
IMPORTS = "import gradio, torch, transformers"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_whole_app():
    """The whole app in this process (`app.build_app()`, queued and launched with app.py's own
    settings) on a free loopback port: (demo, url). The caller closes it."""
    import app

    demo = app.build_app()
    demo.queue(**app.QUEUE)
    kwargs = app.launch_kwargs(app.parse_args(["--host", "127.0.0.1", "--port", str(free_port())]))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    return demo, url


def _time_imports(env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - t0


def _time_app(env: dict, models_dir: str | None, timeout: float) -> float:
    """Seconds from starting `python app.py` until GET / answers 200 (the process is then stopped)."""
    port = free_port()
    cmd = [sys.executable, "app.py", "--port", str(port)]
    if models_dir:
        cmd += ["--models", models_dir, "--offline"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"app.py did not answer within {timeout:.0f} s")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def startup(models_dir: str | None, repeats: int, timeout: float = 180.0) -> tuple[dict, list[str]]:
    """Median wall time of `python app.py` until GET / is 200 vs `python -c "import gradio, torch,
    transformers"`, each in a fresh interpreter, taking turns."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONDONTWRITEBYTECODE": "1"}
    app_times, import_times = [], []
    for r in range(repeats):
        pair = [
            lambda: app_times.append(_time_app(env, models_dir, timeout)),
            lambda: import_times.append(_time_imports(env)),
        ]
        for run in pair if r % 2 == 0 else pair[::-1]:
            run()
    app_s, imp_s = median(app_times), median(import_times)
    row = {
        "app_s": app_s,
        "imports_s": imp_s,
        "ratio": app_s / imp_s,
        "target": STARTUP_TARGET,
        "meets_target": app_s / imp_s <= STARTUP_TARGET,
        "repeats": repeats,
        "app_runs_s": app_times,
        "imports_runs_s": import_times,
        "imports": IMPORTS,
    }
    return row, []


def _served_app(names: list[str]):
    """A Blocks holding the benchmarked tabs, queued as app.py queues the real app."""
    import importlib

    import gradio as gr

    with gr.Blocks() as demo:
        for name in names:
            with gr.Tab(name):
                importlib.import_module(f"ui.{name}").build()
    demo.queue(max_size=64, default_concurrency_limit=2)  # as app.main()
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), ssr_mode=False, quiet=True
    )
    return demo, url


def _request(name: str):
    from gradio_client import handle_file

    if name == "sentiment":
        return lambda client, i: client.predict(f"{inputs.TEXT} (review {i})", api_name="/sentiment")
    image = handle_file(str(inputs.IMAGE))
    return lambda client, i: client.predict(
        image, "\n".join([*inputs.LABELS, f"a photo number {i}"]), api_name="/clip_match"
    )


def throughput_served(names: list[str], clients: int, requests: int) -> tuple[dict, list[str]]:
    """Requests per second through gradio_client: one client sending `requests` distinct requests
    one after another vs `clients` clients sending them concurrently."""
    from gradio_client import Client

    ok, notes = [], []
    for name in names:
        try:
            __import__(f"ui.{name}")
            ok.append(name)
        except ImportError as exc:
            notes.append(f"{name}: skipped ({exc})")
    if not ok:
        return {}, notes
    demo, url = _served_app(ok)
    rows = {}
    try:
        pool_clients = [Client(url, verbose=False) for _ in range(clients)]
        for name in ok:
            from bench.sections import counting_errors

            errors: list[str] = []
            send = _request(name)
            send(pool_clients[0], -1)  # warm: model loaded
            safe = counting_errors(lambda i: send(pool_clients[i % clients], i), errors)
            t0 = time.perf_counter()
            for i in range(requests):
                safe(i * clients)  # always the first client
            seq = time.perf_counter() - t0
            with ThreadPoolExecutor(clients) as pool:
                t0 = time.perf_counter()
                list(pool.map(safe, range(requests * clients, requests * clients + requests)))
                conc = time.perf_counter() - t0
            rows[name] = {
                "mode": "gradio_client against a served app (queue concurrency 2, as app.py)",
                "clients": clients,
                "requests": requests,
                "sequential_rps": requests / seq,
                "concurrent_rps": requests / conc,
                "speedup": seq / conc,
                "sequential_latency_s": seq / requests,
                "failed_requests": len(errors),
            }
            if errors:
                notes.append(f"{name}: {len(errors)} of {2 * requests} served requests failed, e.g. {errors[0]}")
    finally:
        demo.close()
    return rows, notes
