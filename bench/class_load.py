"""A class on one CPU machine: `python -m bench.class_load --serve [--size full] [--clients 30] [--rounds 2]`.

Starts the whole app in this process (`app.build_app()`, queued as `app.py` queues it) on the
tiny or full-size local models, then runs the students in a child process (one
`gradio_client.Client`, i.e. one browser session, per student, all at once). Each student does
what the Sentiment tab does in a browser, `--rounds` times: `/sentiment` (the answer, timed), then
`/sentiment_views` (the attention and embedding figures the browser asks for once the answer is
shown, timed apart) and `/sentiment_attribution` on that session's result with the UI's defaults (integrated
gradients, at most 32 steps, adaptive to |delta| <= 0.01), so answers always arrive while other
students' attributions run. Texts are unique per student and round; each answer is compared with
the answer the demo function gives for that text (`mixed`: another student's answer).
Reports answers' and attributions' p50/p95 and answered / busy / failed / mixed / lost.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.load import TOL, make_request


def texts(clients: int, rounds: int) -> list[list[str]]:
    folder = Path(tempfile.gettempdir())
    return [[make_request(c, i, "sentiment", folder).args[0] for i in range(rounds)] for c in range(clients)]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def students(url: str, plan: list[list[str]], expected: dict, timeout: float, attribute: bool = True) -> dict:
    """Every student at once (a thread and a session each); returns counts and latencies."""
    from gradio_client import Client
    from gradio_client.utils import QueueError

    out = {"answers": [], "views": [], "views_failed": 0, "attributions": [], "ok": 0, "busy": 0, "failed": 0, "mixed": 0, "wrong": 0,
           "attr_ok": 0, "attr_busy": 0, "attr_failed": 0, "errors": []}
    lock, start = threading.Lock(), threading.Barrier(len(plan))

    def count(kind: str, seconds: float | None = None, series: str | None = None, err: str | None = None) -> None:
        with lock:
            out[kind] += 1
            if seconds is not None and series:
                out[series].append(seconds)
            if err:
                out["errors"].append(err[:300])

    def student(mine: list[str]) -> None:
        client = Client(url, verbose=False, httpx_kwargs={"timeout": timeout})
        try:
            start.wait(timeout=timeout)
        except threading.BrokenBarrierError:
            pass
        try:
            for text in mine:
                t0 = time.perf_counter()
                try:
                    label = client.submit(text, api_name="/sentiment").result(timeout=timeout)[0]
                except QueueError:
                    count("busy")
                    continue
                except Exception as exc:  # noqa: BLE001 - every outcome is counted
                    count("failed", err=f"/sentiment: {type(exc).__name__}: {exc}")
                    continue
                got = {c["label"]: float(c["confidence"]) for c in label.get("confidences", [])}
                own = all(abs(v - expected[text].get(k, -1)) <= TOL for k, v in got.items())
                other = not own and any(all(abs(v - w.get(k, -1)) <= TOL for k, v in got.items()) for w in expected.values())
                count("ok" if own else "mixed" if other else "wrong", time.perf_counter() - t0, "answers" if own else None)
                t2 = time.perf_counter()
                try:
                    client.submit(api_name="/sentiment_views").result(timeout=timeout)
                except Exception as exc:  # noqa: BLE001
                    count("views_failed", err=f"/sentiment_views: {type(exc).__name__}: {exc}")
                else:
                    with lock:
                        out["views"].append(time.perf_counter() - t2)
                if not attribute:
                    continue
                t1 = time.perf_counter()
                try:
                    client.submit(api_name="/sentiment_attribution").result(timeout=timeout)
                except QueueError:
                    count("attr_busy")
                except Exception as exc:  # noqa: BLE001
                    count("attr_failed", err=f"/sentiment_attribution: {type(exc).__name__}: {exc}")
                else:
                    count("attr_ok", time.perf_counter() - t1, "attributions")
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=len(plan)) as pool:
        for f in [pool.submit(student, mine) for mine in plan]:
            f.result()
    return out


def summary(out: dict, clients: int, rounds: int) -> dict:
    n = clients * rounds
    a, b = out["answers"], out["attributions"]
    answered = out["ok"] + out["busy"] + out["failed"] + out["mixed"] + out["wrong"]
    return {
        "clients": clients, "rounds": rounds, "answers_asked": n,
        "answer_ok": out["ok"], "answer_busy": out["busy"], "answer_failed": out["failed"],
        "mixed": out["mixed"], "wrong": out["wrong"], "lost": n - answered,
        "answer_p50_s": _pct(a, 0.5), "answer_p95_s": _pct(a, 0.95), "answer_max_s": max(a) if a else None,
        "views_p50_s": _pct(out["views"], 0.5), "views_p95_s": _pct(out["views"], 0.95), "views_failed": out["views_failed"],
        "attr_ok": out["attr_ok"], "attr_busy": out["attr_busy"], "attr_failed": out["attr_failed"],
        "attr_p50_s": _pct(b, 0.5), "attr_p95_s": _pct(b, 0.95), "attr_max_s": max(b) if b else None,
        "errors": out["errors"][:10],
    }


def serve_and_run(args: argparse.Namespace) -> dict:
    from bench.env import configure_models, prepare_environment, set_threads

    prepare_environment(hub=False)
    set_threads(args.threads)
    configure_models(False, None, args.size)
    import app
    from bench.serve import launch_whole_app
    from demos import sentiment

    plan = texts(args.clients, args.rounds)
    expected = {t: sentiment.analyse(t).class_probs() for mine in plan for t in mine}
    demo, url = launch_whole_app()
    tmp = Path(tempfile.mkdtemp(prefix="xray-class-"))
    try:
        (tmp / "expected.json").write_text(json.dumps(expected))
        warm = students(url, [["Warm-up request: a fine film."]], {"Warm-up request: a fine film.": {}}, args.timeout)
        print(f"[class_load] warm-up: {summary(warm, 1, 1)}", flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "bench.class_load", "--url", url, "--clients", str(args.clients), "--rounds", str(args.rounds),
               "--timeout", str(args.timeout), "--expected", str(tmp / "expected.json"), "--json", str(tmp / "out.json")]
        cmd += ["--answers-only"] if args.answers_only else []
        proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                              timeout=args.timeout * (2 * args.rounds + 4))
        if not (tmp / "out.json").exists():
            raise RuntimeError(f"students' process failed ({proc.returncode}): {proc.stderr[-3000:]}")
        res = json.loads((tmp / "out.json").read_text())
        res["wall_s"] = time.perf_counter() - t0
        res["size"], res["threads"], res["queue"] = args.size, args.threads, dict(app.QUEUE)
        return res
    finally:
        demo.close()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", action="store_true", help="start the app here, students in a child process")
    p.add_argument("--url", help="a running app (loopback), without --serve")
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clients", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2, help="answer + attribution pairs per student")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--answers-only", action="store_true", help="no attribution requests (the burst of answers alone)")
    p.add_argument("--expected", help="JSON {text: {label: prob}} (child mode)")
    p.add_argument("--json", help="write the summary here")
    args = p.parse_args(argv)
    if args.serve:
        res = serve_and_run(args)
    else:
        from bench.load import check_loopback

        check_loopback(args.url)
        expected = json.loads(Path(args.expected).read_text())
        t0 = time.perf_counter()
        res = summary(students(args.url, texts(args.clients, args.rounds), expected, args.timeout, not args.answers_only),
                      args.clients, args.rounds)
        res["students_wall_s"] = time.perf_counter() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
