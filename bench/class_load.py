"""A class on one CPU machine: `python -m bench.class_load --serve [--size full] [--clients 30] [--rounds 2]`.

Starts the whole app in this process (`app.build_app()`, queued as `app.py` queues it) on the
tiny or full-size local models, then runs the students in a child process (one
browser session per student, all at once, spoken as the browser speaks it: `Browser`). Each student does
what the Sentiment tab does in a browser, `--rounds` times: `/sentiment` (the answer, timed), then
`/sentiment_views` (the attention and embedding figures the browser asks for once the answer is
shown, timed apart) and `/sentiment_attribution` on that session's result with the UI's defaults (integrated
gradients, at most 32 steps, adaptive to |delta| <= 0.01), so answers always arrive while other
students' attributions run. Texts are unique per student and round; each answer is compared with
the answer the demo function gives for that text (`mixed`: another student's answer).
Reports answers' and attributions' p50/p95 and answered / busy / failed / mixed / lost.

`--tabs sentiment,qa --tokens 512` makes each student answer on every tab listed (QA's answer checked against
`qa.answer`), with inputs of about 512 tokens, and reports each tab's p50/p95 apart (`tabs`). `--order same`
(the default) sends every student through the tabs in the order listed, so the whole class reaches the first
tab at once and the next ones as each student finishes; `--order rotate` starts student c at tab c.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.load import TOL, make_request
from bench.timing import percentile


def texts(clients: int, rounds: int) -> list[list[str]]:
    folder = Path(tempfile.gettempdir())
    return [[make_request(c, i, "sentiment", folder).args[0] for i in range(rounds)] for c in range(clients)]


FILLER = (
    "The river ran past the old mill where the village kept its grain through the winter months. "
    "Children walked along the bank every morning on their way to the school beside the church. "
    "In spring the water rose and the miller opened the gates to keep the wheel turning slowly. "
)


def long_text(text: str, words: int) -> str:
    """`text` followed by `words` filler words."""
    filler = FILLER.split()
    return text if words <= 0 else text + " " + " ".join(filler[i % len(filler)] for i in range(words))


Counter = Callable[[str, tuple], int]


def inputs(tab: str, client: int, index: int, tokens: int, count: Counter | None = None) -> tuple[str, ...]:
    """The endpoint's inputs for student `client`'s request `index` on `tab` (unique to both), filled to about
    `tokens` tokens: with `count(tab, inputs)` (the model's own token count, specials included), the most filler
    that stays within `tokens` (the model's window: a 512-token QA pair is one window, not two); without it,
    about 1.25 tokens a word."""
    args = make_request(client, index, tab, Path(tempfile.gettempdir())).args
    if tab not in ("sentiment", "qa"):
        raise ValueError(f"class_load knows the sentiment and qa tabs, not {tab!r}")

    def filled(words: int) -> tuple[str, ...]:
        # QA: the answer's sentence first, the filler after it: the answer stays in the model's window
        return (long_text(args[0], words),) if tab == "sentiment" else (args[0], long_text(args[1], words))

    if tokens <= 0:
        return filled(0)
    if count is None:
        return filled(max(0, int(tokens / 1.25) - sum(len(a.split()) for a in args)))
    lo, hi = 0, tokens  # the most filler words whose count is within `tokens` (a word is at least one token)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count(tab, filled(mid)) <= tokens else (lo, mid - 1)
    return filled(lo)


def key(tab: str, args: Sequence[str]) -> str:
    """The expected answers' key of a request (JSON-able)."""
    return "\n".join((tab, *args))


def plan_of(clients: int, rounds: int, tabs: Sequence[str], tokens: int, order: str,
            count: Counter | None = None) -> list[list[tuple[str, tuple]]]:
    """Per student, its requests in order: (tab, inputs), `rounds` times through `tabs`."""
    out = []
    for c in range(clients):
        mine = list(tabs) if order == "same" else [tabs[(c + k) % len(tabs)] for k in range(len(tabs))]
        out.append([(tab, inputs(tab, c, i, tokens, count)) for i in range(rounds) for tab in mine])
    return out


class Browser:
    """What a browser tab sends, and nothing more: one session hash, `POST queue/join` with the
    event's fn_index and its inputs (the components' current values; a State is kept by the
    server, so null), then the session's SSE stream until `process_completed`. It is one asyncio
    task per student in one thread: unlike 30 `gradio_client.Client`s (a thread per job, each
    polling every 50 ms) it leaves the two CPUs to the server it measures."""

    def __init__(self, http, url: str, endpoints: dict):
        self.http, self.url = http, url.rstrip("/") + "/"
        self.session = uuid.uuid4().hex[:11]
        self.endpoints = endpoints  # api name -> (fn_index, input components), from the page's config

    @staticmethod
    def api_table(config: dict) -> dict:
        comps = {c["id"]: c for c in config["components"]}
        out = {}
        for i, dep in enumerate(config["dependencies"]):
            if dep.get("api_name"):
                ins = [comps.get(c, {}) for c in dep["inputs"]]
                out[dep["api_name"]] = (dep.get("id", i), ins)
        return out

    async def call(self, api_name: str, *args) -> list:
        fn_index, inputs = self.endpoints[api_name]
        body = {
            "data": self.fill(inputs, list(args)),
            "fn_index": fn_index,
            "session_hash": self.session,
            "event_data": None,
            "trigger_id": None,
        }
        r = await self.http.post(self.url + "gradio_api/queue/join", json=body)
        if r.status_code == 503:
            raise Busy(r.text)
        r.raise_for_status()
        return await self.outcome(api_name, r.json()["event_id"])

    @staticmethod
    def fill(inputs: list[dict], given: list) -> list:
        """The event's input values as the page sends them: None for a state, the given values in
        order, then the components' own values."""
        data = []
        for comp in inputs:
            if comp.get("type") == "state":
                data.append(None)
            else:
                data.append(given.pop(0) if given else comp.get("props", {}).get("value"))
        return data

    async def outcome(self, api_name: str, event_id: str) -> list:
        """Read the session's event stream until `event_id` completes: its output data, or an error."""
        async with self.http.stream(
            "GET", self.url + "gradio_api/queue/data", params={"session_hash": self.session}
        ) as resp:
            async for line in resp.aiter_lines():
                msg = json.loads(line[5:]) if line.startswith("data:") else {}
                if msg.get("event_id") not in (None, event_id):
                    continue
                if msg.get("msg") == "process_completed":
                    if not msg.get("success"):
                        raise RuntimeError(str(msg.get("output", {}).get("error") or msg.get("output")))
                    return msg["output"]["data"]
                if msg.get("msg") == "unexpected_error":
                    raise RuntimeError(msg.get("message"))
        raise RuntimeError(f"{api_name}: the stream closed without an answer")


class Busy(Exception):
    """The queue was full (HTTP 503): the app said so clearly."""


def students(url: str, plan: list[list], expected: dict, timeout: float, attribute: bool = True) -> dict:
    """Every student at once (a session each, one event loop); returns counts and latencies. A plan lists each
    student's sentiment texts, or its (tab, inputs) requests (`plan_of`)."""
    plan = [[r if isinstance(r, tuple) else ("sentiment", (r,)) for r in mine] for mine in plan]
    return asyncio.run(_students(url, plan, expected, timeout, attribute))


class _Tally(dict):
    """The class's outcomes: counts, latencies (seconds) and the first errors."""

    def __init__(self) -> None:
        super().__init__(answers=[], views=[], attributions=[], errors=[], tabs={})
        for kind in ("views_failed", "ok", "busy", "failed", "mixed", "wrong", "attr_ok", "attr_busy", "attr_failed"):
            self[kind] = 0

    def count(self, kind: str, seconds: float | None = None, series: str | None = None, err: str | None = None) -> None:
        self[kind] += 1
        if seconds is not None and series:
            self[series].append(seconds)
        if err:
            self["errors"].append(err[:300])


async def _students(url: str, plan: list[list[tuple]], expected: dict, timeout: float, attribute: bool) -> dict:
    import httpx

    out = _Tally()
    limits = httpx.Limits(max_connections=4 * len(plan) + 4, max_keepalive_connections=4 * len(plan) + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        # the page load, once: every student's page is the same
        endpoints = Browser.api_table((await http.get(url.rstrip("/") + "/config")).json())

        async def student(mine: list[tuple]) -> None:
            me = Browser(http, url, endpoints)
            for tab, args in mine:
                if await _answer(me, tab, args, expected, timeout, out):
                    await _views(me, tab, timeout, out)
                    if attribute and tab == "sentiment":
                        await _attribution(me, timeout, out)

        await asyncio.gather(*(student(mine) for mine in plan))
    return dict(out)


async def _answer(me: Browser, tab: str, args: tuple, expected: dict, timeout: float, out: _Tally) -> bool:
    """One answer, checked against the student's own expected answer; True when it came."""
    t0 = time.perf_counter()
    try:
        data = await asyncio.wait_for(me.call(tab, *args), timeout)
    except Busy:
        out.count("busy")
        return False
    except Exception as exc:  # every outcome is counted
        out.count("failed", err=f"/{tab}: {type(exc).__name__}: {exc}")
        return False
    seconds = time.perf_counter() - t0
    if tab == "sentiment":
        got = {c["label"]: float(c["confidence"]) for c in data[0].get("confidences", [])}
        mine = expected[key(tab, args)]
        own = all(abs(v - mine.get(k, -1)) <= TOL for k, v in got.items())
        other = not own and any(all(abs(v - w.get(k, -1)) <= TOL for k, v in got.items())
                                for w in expected.values() if isinstance(w, dict))
    else:
        own = data[0] == expected[key(tab, args)]
        other = not own and data[0] in expected.values()
    out.count("ok" if own else "mixed" if other else "wrong", seconds, "answers" if own else None)
    if own:
        out["tabs"].setdefault(tab, []).append(seconds)
    return True


async def _views(me: Browser, tab: str, timeout: float, out: _Tally) -> None:
    """The views drawn after the answer, as the page asks for them."""
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(me.call(f"{tab}_views"), timeout)
    except Exception as exc:  # every outcome is counted
        out.count("views_failed", err=f"/{tab}_views: {type(exc).__name__}: {exc}")
    else:
        out["views"].append(time.perf_counter() - t0)


async def _attribution(me: Browser, timeout: float, out: _Tally) -> None:
    """The attribution the teacher asked the class to look at."""
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(me.call("sentiment_attribution"), timeout)
    except Busy:
        out.count("attr_busy")
    except Exception as exc:  # every outcome is counted
        out.count("attr_failed", err=f"/sentiment_attribution: {type(exc).__name__}: {exc}")
    else:
        out.count("attr_ok", time.perf_counter() - t0, "attributions")


def summary(out: dict, clients: int, rounds: int, tabs: int = 1) -> dict:
    n = clients * rounds * tabs
    a, b = out["answers"], out["attributions"]
    answered = out["ok"] + out["busy"] + out["failed"] + out["mixed"] + out["wrong"]
    return {
        "clients": clients,
        "rounds": rounds,
        "answers_asked": n,
        "answer_ok": out["ok"],
        "answer_busy": out["busy"],
        "answer_failed": out["failed"],
        "mixed": out["mixed"],
        "wrong": out["wrong"],
        "lost": n - answered,
        "answer_p50_s": percentile(a, 0.5),
        "answer_p95_s": percentile(a, 0.95),
        "answer_max_s": max(a) if a else None,
        "views_p50_s": percentile(out["views"], 0.5),
        "views_p95_s": percentile(out["views"], 0.95),
        "views_failed": out["views_failed"],
        "attr_ok": out["attr_ok"],
        "attr_busy": out["attr_busy"],
        "attr_failed": out["attr_failed"],
        "attr_p50_s": percentile(b, 0.5),
        "attr_p95_s": percentile(b, 0.95),
        "attr_max_s": max(b) if b else None,
        "tabs": {tab: {"ok": len(t), "p50_s": percentile(t, 0.5), "p95_s": percentile(t, 0.95), "max_s": max(t)}
                 for tab, t in out.get("tabs", {}).items()},
        "errors": out["errors"][:10],
    }


def serve_and_run(args: argparse.Namespace) -> dict:
    from bench.env import configure_models, prepare_environment, set_threads

    prepare_environment(hub=False)
    set_threads(args.threads)
    configure_models(False, None, args.size)
    import app
    from bench.serve import launch_whole_app
    from demos import qa, sentiment

    tabs = args.tabs.split(",")
    counters = {"sentiment": lambda a: len(sentiment.load().processor(*a)["input_ids"]),
                "qa": lambda a: len(qa.load().processor(*a)["input_ids"])}
    count = (lambda tab, a: counters[tab](a)) if args.tokens > 0 else None
    plan = plan_of(args.clients, args.rounds, tabs, args.tokens, args.order, count)
    warm_up = [(tab, inputs(tab, 10_000, 0, args.tokens, count)) for tab in tabs]
    answer = {"sentiment": lambda text: sentiment.analyse(text).class_probs(),
              "qa": lambda q, c: qa.answer(q, c).answer}
    expected = {key(tab, a): answer[tab](*a) for tab, a in warm_up + [r for mine in plan for r in mine]}
    demo, url = launch_whole_app()
    tmp = Path(tempfile.mkdtemp(prefix="xray-class-"))
    try:
        (tmp / "expected.json").write_text(json.dumps({"expected": expected, "plan": plan}))
        warm = students(url, [warm_up], expected, args.timeout)  # checked like the class's answers
        print(f"[class_load] warm-up: {summary(warm, 1, 1, len(tabs))}", flush=True)
        t0 = time.perf_counter()
        cmd = [
            sys.executable,
            "-m",
            "bench.class_load",
            "--url",
            url,
            "--clients",
            str(args.clients),
            "--rounds",
            str(args.rounds),
            "--timeout",
            str(args.timeout),
            "--expected",
            str(tmp / "expected.json"),
            "--json",
            str(tmp / "out.json"),
            "--tabs",
            args.tabs,
            "--tokens",
            str(args.tokens),
            "--order",
            args.order,
        ]
        cmd += ["--answers-only"] if args.answers_only else []
        cpu0 = time.process_time()
        proc = subprocess.run(
            cmd,
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=args.timeout * (2 * args.rounds + 4),
        )
        server_cpu = time.process_time() - cpu0
        if not (tmp / "out.json").exists():
            raise RuntimeError(f"students' process failed ({proc.returncode}): {proc.stderr[-3000:]}")
        res = json.loads((tmp / "out.json").read_text())
        res["wall_s"] = time.perf_counter() - t0
        res["server_cpu_s"] = server_cpu  # the app's process (all its threads) while the students ran
        res["size"], res["threads"], res["queue"] = args.size, args.threads, dict(app.QUEUE)
        res["tokens"], res["order"] = args.tokens, args.order
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
    p.add_argument("--tabs", default="sentiment", help="comma-separated: sentiment,qa (answers on each, in turn)")
    p.add_argument("--tokens", type=int, default=0, help="inputs of about this many tokens (0: one sentence)")
    p.add_argument("--order", choices=("same", "rotate"), default="same",
                   help="same: every student takes the tabs in the order listed; rotate: student c starts at tab c")
    p.add_argument("--expected", help="JSON {expected: {request: answer}, plan: [[tab, inputs]...]} (child mode)")
    p.add_argument("--json", help="write the summary here")
    args = p.parse_args(argv)
    if args.serve:
        res = serve_and_run(args)
    else:
        from bench.load import check_loopback

        check_loopback(args.url)
        # The students stand in for 30 other machines: on this one they take only the CPU the server leaves idle
        # (their clocks still run while they wait, so a starved student can only make the figures worse).
        os.nice(19)
        given = json.loads(Path(args.expected).read_text())
        expected, plan = given["expected"], [[(t, tuple(a)) for t, a in mine] for mine in given["plan"]]
        t0, cpu0 = time.perf_counter(), time.process_time()
        tabs = args.tabs.split(",")
        res = summary(
            students(args.url, plan, expected, args.timeout, not args.answers_only),
            args.clients,
            args.rounds,
            len(tabs),
        )
        res["students_wall_s"] = time.perf_counter() - t0
        # the students' own CPU (gradio_client threads): it shares the machine with the server
        res["students_cpu_s"] = time.process_time() - cpu0
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
