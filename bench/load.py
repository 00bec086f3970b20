"""Loopback load generator: many concurrent users of the app, each with inputs of its own.

`python -m bench.load --clients 30 --requests 10 --url http://127.0.0.1:7860/` starts one
`gradio_client.Client` (one browser session) per simulated user; every user sends `--requests`
requests spread over the tabs, all users at once, with texts and images unique to that user.
Each answer is compared with the answer expected for THAT request, so an answer that belongs to
another user is counted as `mixed`. Replies "queue is full" count as `busy` (the app said so
clearly); anything else that goes wrong counts as `failures`; nothing may be lost.

Expected answers (`--expect`): `local` computes them with the demo functions themselves on the
tiny models of `--models`; `sequential` asks the server one request at a time before the
concurrent run (any server); `none` skips the check. `--serve` starts the full app in this
process (tiny models, queue as app.main), runs the users in a child process (so they share
neither the GIL nor the memory of the server) and reports the server's RSS before/after.
Only loopback URLs are accepted; runs stop by themselves (bounded requests, per-request timeout).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import timing

TABS = ("sentiment", "qa", "generate", "translate", "clip_match", "classify_image")
ADJECTIVES = ("warm", "dull", "bright", "slow", "funny", "cold", "clever", "long", "quiet", "bold")
NEW_TOKENS = 4  # generation length per request: enough to differ, short enough for load runs
TOL = 1e-4  # probabilities compared across processes / sessions


@dataclass(frozen=True)
class Request:
    """One request of one user. `args` are the endpoint's public inputs (model left at default)."""

    client: int
    index: int
    tab: str
    args: tuple

    @property
    def api_name(self) -> str:
        return f"/{self.tab}"


def _image(folder: Path, client: int, index: int) -> str:
    """A small noise PNG unique to (client, index); returns its path."""
    import numpy as np
    from PIL import Image

    path = folder / f"client{client:03d}-req{index:03d}.png"
    if not path.exists():
        rng = np.random.default_rng(1000 * client + index)
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
    return str(path)


def make_request(client: int, index: int, tab: str, folder: Path) -> Request:
    """Inputs that name the user and the request, so no two requests share an input."""
    adj, adj2 = ADJECTIVES[(client + index) % 10], ADJECTIVES[(3 * client + index) % 10]
    if tab == "sentiment":
        args = (f"Client {client} request {index}: the film was {adj} and the music {adj2}.",)
    elif tab == "qa":
        args = (
            f"Who built bridge {client}-{index}?",
            f"Bridge {client}-{index} crosses a {adj} river. It was built by engineer {client} in {1900 + index}.",
        )
    elif tab == "generate":
        args = (f"Client {client} writes story {index}: once upon a {adj} time", NEW_TOKENS, False)
    elif tab == "translate":
        args = (f"Client {client} reads book {index} in the {adj} garden.",)
    elif tab == "clip_match":
        args = (_image(folder, client, index), f"a {adj} photo of client {client}\na {adj2} drawing of request {index}")
    elif tab == "classify_image":
        args = (_image(folder, client, index),)
    else:
        raise ValueError(f"unknown tab {tab!r}; choose from {TABS}")
    return Request(client, index, tab, args)


def plan(clients: int, requests: int, tabs: tuple[str, ...], folder: Path) -> list[list[Request]]:
    """requests[c] for every user c; user c starts at tab c and cycles through `tabs`."""
    return [[make_request(c, i, tabs[(c + i) % len(tabs)], folder) for i in range(requests)] for c in range(clients)]


# ---- answers: what a response says, and what the demo function says for the same input ----

def _label_answer(label: dict) -> tuple:
    """gr.Label output -> (top label, {label: confidence})."""
    return label["label"], {c["label"]: float(c["confidence"]) for c in label.get("confidences", [])}


def answer_of(tab: str, outputs: Any) -> Any:
    """The plain answer of a response: the first output(s) of the endpoint, normalised."""
    if tab in ("sentiment", "clip_match", "classify_image"):
        return _label_answer(outputs[0])
    if tab == "qa":
        return outputs[0], float(outputs[1])
    return outputs[0]  # generate: prompt + continuation; translate: the translation


def expected_local(req: Request) -> Any:
    """The answer of the demo function itself for `req` (needs the models configured in-process)."""
    from demos import clip, generation, image, qa, sentiment, translation

    if req.tab == "sentiment":
        r = sentiment.analyse(req.args[0])
        return r.predicted, r.class_probs()
    if req.tab == "qa":
        r = qa.answer(*req.args)
        return r.answer, float(r.score)
    if req.tab == "generate":
        return generation.generate(req.args[0], req.args[1]).text
    if req.tab == "translate":
        return translation.analyse(req.args[0]).translation
    if req.tab == "clip_match":
        values = clip.analyse([req.args[0]], req.args[1]).text_probs(0)
    else:
        values = dict(image.analyse(req.args[0]).ranked()[:image.TOP_K])
    return max(values, key=values.get), values


def same_answer(got: Any, want: Any) -> bool:
    """Equal answers; probabilities within TOL (only the classes shown in the response)."""
    if isinstance(want, tuple) and len(want) == 2 and isinstance(want[1], dict):
        (top, conf), (want_top, want_conf) = got, want
        return top == want_top and all(k in want_conf and abs(v - want_conf[k]) <= TOL for k, v in conf.items())
    if isinstance(want, tuple) and len(want) == 2 and isinstance(want[1], float):
        return got[0] == want[0] and abs(got[1] - want[1]) <= TOL
    return got == want


# ---- the run ----

@dataclass
class Report:
    clients: int
    requests: int
    ok: int = 0
    busy: int = 0
    failures: int = 0
    mixed: int = 0  # the answer of another user's request
    wrong: int = 0  # an answer matching no request
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None

    @property
    def answered(self) -> int:
        return self.ok + self.busy + self.failures + self.mixed + self.wrong

    def percentile(self, q: float) -> float:
        value = timing.percentile(self.latencies, q)
        return float("nan") if value is None else value

    def lines(self) -> list[str]:
        out = [
            f"clients x requests : {self.clients} x {self.requests} = {self.clients * self.requests}",
            f"ok                 : {self.ok}",
            f"busy (queue full)  : {self.busy}",
            f"failures           : {self.failures}",
            f"mixed / wrong      : {self.mixed} / {self.wrong}",
            f"lost               : {self.clients * self.requests - self.answered}",
            f"latency p50 / p95  : {self.percentile(0.5):.2f} s / {self.percentile(0.95):.2f} s",
        ]
        if self.rss_before_mb is not None:
            out.append(f"server RSS         : {self.rss_before_mb:.0f} MB before, {self.rss_after_mb:.0f} MB after")
        out += [f"  error: {e}" for e in self.errors[:10]]
        return out


def rss_mb() -> float:
    """Resident set size of this process (VmRSS), in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def check_loopback(url: str) -> None:
    host = urllib.parse.urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load {url}: only loopback URLs (127.0.0.1) are allowed")


def _wait(start: threading.Barrier, timeout: float) -> None:
    """Start together; a broken barrier (a user failed to connect) just starts at once."""
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait(timeout=timeout)


def _user(
    url: str,
    reqs: list[Request],
    expected: dict,
    report: Report,
    lock: threading.Lock,
    timeout: float,
    start: threading.Barrier,
) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    try:
        client = Client(url, verbose=False, httpx_kwargs={"timeout": timeout})
    except Exception as exc:  # a user who cannot connect fails all its requests
        with lock:
            report.failures += len(reqs)
            report.errors.append(f"client {reqs[0].client if reqs else '?'} could not connect: {exc}"[:300])
        _wait(start, timeout)
        return
    try:
        _wait(start, timeout)
        for req in reqs:
            args = [handle_file(a) if isinstance(a, str) and a.endswith(".png") else a for a in req.args]
            t0 = time.perf_counter()
            try:
                got = answer_of(req.tab, client.submit(*args, api_name=req.api_name).result(timeout=timeout))
            except QueueError:
                kind, err = "busy", None
            except (AppError, Exception) as exc:  # every outcome is counted
                kind, err = "failures", f"{req.api_name} client {req.client}: {type(exc).__name__}: {exc}"[:300]
            else:
                own = same_answer(got, expected[req]) if req in expected else True
                other = not own and any(
                    same_answer(got, w) for r, w in expected.items() if r.tab == req.tab and r != req
                )
                kind, err = ("ok" if own else "mixed" if other else "wrong"), None
            with lock:
                setattr(report, kind, getattr(report, kind) + 1)
                if kind == "ok":
                    report.latencies.append(time.perf_counter() - t0)
                if err:
                    report.errors.append(err)
    finally:
        client.close()


def run(url: str, requests: list[list[Request]], expected: dict, timeout: float = 120.0) -> Report:
    """All users at once (one thread and one session each); returns the counts."""
    check_loopback(url)
    report = Report(len(requests), len(requests[0]) if requests else 0)
    lock, start = threading.Lock(), threading.Barrier(len(requests))
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = [pool.submit(_user, url, reqs, expected, report, lock, timeout, start) for reqs in requests]
        for f in futures:
            f.result(timeout=timeout * (len(requests[0]) + 2))
    return report


def reference(url: str, requests: list[list[Request]], timeout: float = 120.0) -> dict:
    """Expected answers from a server by asking one request at a time (no concurrency)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, httpx_kwargs={"timeout": timeout})
    try:
        out = {}
        for req in (r for reqs in requests for r in reqs):
            args = [handle_file(a) if isinstance(a, str) and a.endswith(".png") else a for a in req.args]
            out[req] = answer_of(req.tab, client.submit(*args, api_name=req.api_name).result(timeout=timeout))
        return out
    finally:
        client.close()


def serve(max_size: int = 64, concurrency: int = 2, models_dir: str | None = None, build: Callable | None = None):
    """Start the full app in this process as app.main does (tiny models); returns (demo, url, models folder)."""
    import app
    from bench.env import configure_models, prepare_environment
    from bench.serve import free_port

    prepare_environment(hub=False)
    folder = configure_models(hub=False, models_dir=models_dir)
    demo = (build or app.build_app)()
    demo.queue(max_size=max_size, default_concurrency_limit=concurrency)
    kwargs = app.launch_kwargs(app.parse_args(["--host", "127.0.0.1", "--port", str(free_port())]))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    return demo, url, folder


def run_child(
    url: str,
    clients: int,
    requests: int,
    tabs: tuple[str, ...],
    models_dir: str | None,
    timeout: float = 120.0,
    expect: str = "local",
) -> dict:
    """Run the users in a child process (so they share neither the GIL nor the RSS of a server
    living in this process); with expect="local" the expected answers are computed there from
    `models_dir` (the folder the server uses). Returns the report as a dict."""
    import json
    import subprocess
    import sys

    out = Path(tempfile.mkdtemp(prefix="xray-load-")) / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.load",
        "--url",
        url,
        "--clients",
        str(clients),
        "--requests",
        str(requests),
        "--tabs",
        ",".join(tabs),
        "--expect",
        expect,
        "--timeout",
        str(timeout),
        "--json",
        str(out),
    ] + (["--models", str(models_dir)] if models_dir else [])
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout * (requests + 4))
    if not out.exists():
        raise RuntimeError(f"load child failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def _expected(args, reqs: list[list[Request]], url: str) -> dict:
    if args.expect == "none":
        return {}
    if args.expect == "sequential":
        return reference(url, reqs, args.timeout)
    from bench.env import configure_models, prepare_environment

    prepare_environment(hub=False)
    configure_models(hub=False, models_dir=args.models)
    return {r: expected_local(r) for rs in reqs for r in rs}


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--url", default="http://127.0.0.1:7860/", help="a running app (loopback only)")
    parser.add_argument(
        "--serve", action="store_true", help="start the app here (tiny models), users in a child process; reports RSS"
    )
    parser.add_argument("--queue-size", type=int, default=64, help="queue max_size with --serve")
    parser.add_argument(
        "--models", default=None, help="tiny models folder (default artifacts/bench-models, built if missing)"
    )
    parser.add_argument(
        "--expect",
        choices=["local", "sequential", "none"],
        default="sequential",
        help="expected answers: demo functions here on --models (local), one request at a time (sequential), none",
    )
    parser.add_argument("--tabs", default=",".join(TABS), help=f"comma-separated subset of {','.join(TABS)}")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--json", default=None, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    tabs = tuple(t for t in args.tabs.split(",") if t)
    t0 = time.perf_counter()
    if args.serve:
        demo, url, folder = serve(args.queue_size, models_dir=args.models)
        try:
            run_child(url, 1, len(tabs), tabs, None, args.timeout, expect="none")  # warm-up: models loaded
            gc.collect()
            before = rss_mb()
            data = run_child(url, args.clients, args.requests, tabs, folder, args.timeout)
            gc.collect()
            data.update(rss_before_mb=before, rss_after_mb=rss_mb())
        finally:
            demo.close()
        report = Report(**{k: v for k, v in data.items() if k in Report.__dataclass_fields__})
    else:
        check_loopback(args.url)
        reqs = plan(args.clients, args.requests, tabs, Path(tempfile.mkdtemp(prefix="xray-load-")))
        expected = _expected(args, reqs, args.url)
        report = run(args.url, reqs, expected, args.timeout)
    print("\n".join(report.lines()))
    print(f"wall time          : {time.perf_counter() - t0:.1f} s")
    if args.json:
        import dataclasses
        import json

        Path(args.json).write_text(json.dumps(dataclasses.asdict(report)))
    return report


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    r = main()
    raise SystemExit(0 if r.failures == r.mixed == r.wrong == 0 and r.answered == r.clients * r.requests else 1)
