"""bench.load against the Ray Serve model tier, and against the in-process app, on this machine.

`python -m bench.load_scale --clients 20 --requests 3 --size full`
serves a Gradio front whose /sentiment and /qa endpoints (same inputs and outputs as the app's)
call `scale.backend.call`; once with the in-process backend, once with `XRAY_BACKEND=ray` on a
local Ray cluster (`--num-cpus`, one replica per task). The simulated users of bench.load (one
gradio_client session each, all at once, inputs unique per user) run in a child process; every
answer is checked against the in-process answer for THAT request (mixed = another user's answer).
Reports answered / busy / failed / mixed / lost, latency and throughput per backend.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import load

TABS = ("sentiment", "qa")
ROOT = Path(__file__).resolve().parent.parent


def answer_key(tab: str, args: tuple) -> tuple:
    """The (task, answer-function) call behind a bench.load tab."""
    return {"sentiment": ("sentiment", "answer"), "qa": ("qa", "answer")}[tab]


def plain_answer(tab: str, result) -> object:
    """A result as bench.load.answer_of reads the response of that endpoint."""
    if tab == "sentiment":
        probs = {label: float(p) for label, p in zip(result.labels, result.probs)}
        return max(probs, key=probs.get), probs
    return result.answer, float(result.score)


def build_front(concurrency: int):
    """A Gradio front with the app's /sentiment and /qa signatures, computing via scale.backend."""
    import gradio as gr

    from scale import backend

    def sentiment(text: str):
        r = backend.call("sentiment", "answer", text)
        return {label: float(p) for label, p in zip(r.labels, r.probs)}, r.notice

    def qa(question: str, context: str):
        r = backend.call("qa", "answer", question, context)
        return r.answer, float(r.score)

    with gr.Blocks() as demo:
        text, label, notice = gr.Textbox(), gr.Label(), gr.Textbox()
        gr.Button("s").click(sentiment, text, [label, notice], api_name="sentiment", concurrency_limit=concurrency, concurrency_id="sentiment")
        q, c, a, s = gr.Textbox(), gr.Textbox(), gr.Textbox(), gr.Number()
        gr.Button("q").click(qa, [q, c], [a, s], api_name="qa", concurrency_limit=concurrency, concurrency_id="qa")
    return demo


def launch(demo, queue_size: int) -> str:
    from bench.serve import free_port

    demo.queue(max_size=queue_size)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=free_port(), ssr_mode=False)
    return url


def drive(url: str, clients: int, requests: int, expected_file: str, timeout: float, out: str) -> None:
    """Child process: the users of bench.load against `url`; report (with duration) to `out`."""
    expected = pickle.loads(Path(expected_file).read_bytes())
    reqs = load.plan(clients, requests, TABS, Path(tempfile.mkdtemp(prefix="xray-load-")))
    t0 = time.perf_counter()
    report = load.run(url, reqs, expected, timeout)
    data = dataclasses.asdict(report) | {"duration_s": time.perf_counter() - t0}
    Path(out).write_text(json.dumps(data))


def run_users(url: str, clients: int, requests: int, expected_file: str, timeout: float) -> dict:
    out = Path(tempfile.mkdtemp(prefix="xray-load-scale-")) / "report.json"
    cmd = [sys.executable, "-m", "bench.load_scale", "--drive", url, "--clients", str(clients), "--requests", str(requests),
           "--expected-file", expected_file, "--timeout", str(timeout), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout * (requests + 4))
    if not out.exists():
        raise RuntimeError(f"users failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def summary(name: str, data: dict) -> list[str]:
    report = load.Report(**{k: v for k, v in data.items() if k in load.Report.__dataclass_fields__})
    total = report.clients * report.requests
    lines = [f"== {name}", *report.lines()]
    lines.append(f"throughput         : {report.ok / data['duration_s']:.2f} answers/s ({data['duration_s']:.1f} s for {total})")
    if data.get("batch_sizes"):
        sizes = data["batch_sizes"]
        lines.append(f"sentiment batches  : {len(sizes)} for {sum(sizes)} requests (largest {max(sizes)})")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny",
                        help="tiny models or random models of the real sizes (bench.env; built if missing)")
    parser.add_argument("--models", default=None, help="models folder of that size (default: bench.env's folder for --size)")
    parser.add_argument("--backends", default="inprocess,ray")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs (torch threads) per replica")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batch-wait", type=float, default=0.02)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--drive", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--expected-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        drive(args.drive, args.clients, args.requests, args.expected_file, args.timeout, args.out)
        return {}

    from bench.env import configure_models, prepare_environment

    prepare_environment(hub=False)
    folder = configure_models(hub=False, models_dir=args.models, size=args.size)
    from demos.runtime import settings
    from scale import backend

    reqs = load.plan(args.clients, args.requests, TABS, Path(tempfile.mkdtemp(prefix="xray-load-")))
    inproc = backend.InProcess()
    expected = {r: plain_answer(r.tab, inproc.call(*answer_key(r.tab, r.args), *r.args)) for rs in reqs for r in rs}
    expected_file = Path(tempfile.mkdtemp(prefix="xray-expected-")) / "expected.pkl"
    expected_file.write_bytes(pickle.dumps(expected))
    results: dict[str, dict] = {}
    for name in [b for b in args.backends.split(",") if b]:
        if name == "inprocess":
            backend.configure(inproc)
            demo = build_front(concurrency=2)  # as the app: a task's calls run one at a time anyway
        else:
            from scale import serve_app
            from scale.config import ServeConfig

            env = {"OMP_NUM_THREADS": str(max(1, int(args.replica_cpus))), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            serve_app.local_cluster(args.num_cpus, env)
            config = ServeConfig(min_replicas=1, max_replicas=1, cpus=args.replica_cpus, batch_size=args.batch_size,
                                 batch_wait_s=args.batch_wait, max_ongoing=4 * args.batch_size, max_queued=args.queue_size)
            serve_app.deploy(TABS, dataclasses.asdict(settings.current()), config, env=env)
            backend.configure(backend.RayServe(address=None))
            demo = build_front(concurrency=4 * args.batch_size)  # fronts wait on the tier: let calls meet in batches
        url = launch(demo, args.queue_size)
        try:
            run_users(url, 1, len(TABS), str(expected_file), args.timeout)  # warm-up: models resident
            results[name] = run_users(url, args.clients, args.requests, str(expected_file), args.timeout)
            if name != "inprocess":
                results[name]["batch_sizes"] = serve_app_stats()
        finally:
            demo.close()
            if name != "inprocess":
                from ray import serve

                import ray

                serve.shutdown()
                ray.shutdown()
            backend.configure(None)
        print("\n".join(summary(name, results[name])), flush=True)
    print(f"models: {folder}", flush=True)
    return results


def serve_app_stats() -> list[int]:
    from ray import serve

    from scale.backend import app_name

    return serve.get_app_handle(app_name("sentiment")).stats.remote().result(timeout_s=60)["batch_sizes"]


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main()
