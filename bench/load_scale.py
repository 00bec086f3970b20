"""bench.load against the Ray Serve model tier, and against the in-process app, on this machine.

`python -m bench.load_scale --clients 20 --requests 3 --size full`
serves a Gradio front whose /sentiment and /qa endpoints (same inputs and outputs as the app's)
call `scale.backend.call`; once with the in-process backend, once with `XRAY_BACKEND=ray` on a
local Ray cluster (`--num-cpus`, one replica per task). The simulated users of bench.load (one
gradio_client session each, all at once, inputs unique per user) run in a child process; every
answer is checked against the in-process answer for THAT request (mixed = another user's answer).
Reports answered / busy / failed / mixed / lost, latency and throughput per backend.

`python -m bench.load_scale --faults all --clients 20` runs the fault drill instead (`fault_drill`):
a front started before the tier exists, a two-node Ray cluster on this machine (a head and a
worker, each its own `ray start` process), the sentiment application on it, and a class asking in
a loop while the worker node is killed, a replica is killed, and the application is redeployed;
it counts, per fault, answered / retried / refused / failed / mixed / lost and the seconds until
the tier is back to full service.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import pickle
import signal
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
        gr.Button("s").click(
            sentiment,
            text,
            [label, notice],
            api_name="sentiment",
            concurrency_limit=concurrency,
            concurrency_id="sentiment",
        )
        q, c, a, s = gr.Textbox(), gr.Textbox(), gr.Textbox(), gr.Number()
        gr.Button("q").click(qa, [q, c], [a, s], api_name="qa", concurrency_limit=concurrency, concurrency_id="qa")
    return demo


def launch(demo, queue_size: int) -> str:
    from bench.serve import free_port

    demo.queue(max_size=queue_size)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=free_port(), ssr_mode=False
    )
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
    cmd = [
        sys.executable,
        "-m",
        "bench.load_scale",
        "--drive",
        url,
        "--clients",
        str(clients),
        "--requests",
        str(requests),
        "--expected-file",
        expected_file,
        "--timeout",
        str(timeout),
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout * (requests + 4))
    if not out.exists():
        raise RuntimeError(f"users failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def summary(name: str, data: dict) -> list[str]:
    report = load.Report(**{k: v for k, v in data.items() if k in load.Report.__dataclass_fields__})
    total = report.clients * report.requests
    lines = [f"== {name}", *report.lines()]
    lines.append(
        f"throughput         : {report.ok / data['duration_s']:.2f} answers/s ({data['duration_s']:.1f} s for {total})"
    )
    if data.get("batch_sizes"):
        sizes = data["batch_sizes"]
        lines.append(f"sentiment batches  : {len(sizes)} for {sum(sizes)} requests (largest {max(sizes)})")
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument(
        "--size",
        choices=["tiny", "full"],
        default="tiny",
        help="tiny models or random models of the real sizes (bench.env; built if missing)",
    )
    parser.add_argument(
        "--models", default=None, help="models folder of that size (default: bench.env's folder for --size)"
    )
    parser.add_argument("--backends", default="inprocess,ray")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs (torch threads) per replica")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batch-wait", type=float, default=0.02)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--faults",
        default=None,
        help="run the fault drill instead: 'all' or some of node,replica,redeploy (a two-node loopback "
        "cluster, tiny sentiment model, --clients students)",
    )
    parser.add_argument("--drive", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--expected-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        drive(args.drive, args.clients, args.requests, args.expected_file, args.timeout, args.out)
        return {}
    if args.faults:
        return run_drill(args)

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

            env = {
                "OMP_NUM_THREADS": str(max(1, int(args.replica_cpus))),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
            }
            serve_app.local_cluster(args.num_cpus, env)
            config = ServeConfig(
                min_replicas=1,
                max_replicas=1,
                cpus=args.replica_cpus,
                batch_size=args.batch_size,
                batch_wait_s=args.batch_wait,
                max_ongoing=4 * args.batch_size,
                max_queued=args.queue_size,
            )
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
                import ray
                from ray import serve

                serve.shutdown()
                ray.shutdown()
            backend.configure(None)
        print("\n".join(summary(name, results[name])), flush=True)
    print(f"models: {folder}", flush=True)
    return results


def run_drill(args: argparse.Namespace) -> dict:
    """`--faults`: the fault drill on the tiny sentiment model; prints the counts, writes --out JSON."""
    from bench.env import prepare_environment

    prepare_environment(hub=False)
    from demos.provision.tiny import ensure_tiny_models
    from demos.runtime import settings

    folder = Path(args.models or Path(tempfile.gettempdir()) / "xray-drill-models")
    built = ensure_tiny_models(folder, ["sentiment"])
    settings.configure(settings.Settings(overrides={"sentiment": str(built["sentiment"])}, offline=True))
    faults = DRILL_FAULTS if args.faults == "all" else tuple(f.strip() for f in args.faults.split(",") if f.strip())
    t0 = time.perf_counter()
    report = fault_drill(dataclasses.asdict(settings.current()), str(folder), clients=args.clients, faults=faults)
    report["duration_s"] = round(time.perf_counter() - t0, 1)
    print("\n".join(drill_lines(report)), flush=True)
    print(f"drill took {report['duration_s']} s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    return report


def serve_app_stats() -> list[int]:
    from ray import serve

    from scale.backend import app_name

    return serve.get_app_handle(app_name("sentiment")).stats.remote().result(timeout_s=60)["batch_sizes"]


# ---- fault drill: a two-node Ray cluster on this machine, a class running, faults injected ----

REPLICA_CLASS = "ServeReplica:xray-sentiment:SentimentModel"
# The node first: the first deployment puts one replica on each node (Serve spreads them), so the
# node's loss leaves one replica answering; later replacements may share a node.
DRILL_FAULTS = ("node", "replica", "redeploy")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """A Ray head and one worker on this machine, each started as its own `ray start --block`
    process (own temp dir, free ports), and stopped by killing the process trees started here
    (never `ray stop`, which stops every Ray instance on the machine). Ray resolves 127.0.0.1 to
    the host's own address; every process stays on this machine."""

    def __init__(self, folder: Path, head_cpus: float = 1, worker_cpus: float = 1) -> None:
        self.folder, self.head_cpus, self.worker_cpus = Path(folder), head_cpus, worker_cpus
        self.port, self.client_port = _free_port(), _free_port()
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": str(ROOT),
            # the head notices a lost node within ~3 s (default: 5 checks of 3 s)
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        ports = [
            "--node-manager-port",
            "--object-manager-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--metrics-export-port",
        ]
        cmd = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--block",
            "--disable-usage-stats",
            *args,
            *[f"{p}={_free_port()}" for p in ports],
        ]
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - the process writes it while it runs
        return subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_head(self) -> None:
        self.head = self._start(
            [
                "--head",
                f"--port={self.port}",
                f"--num-cpus={self.head_cpus}",
                "--include-dashboard=false",
                f"--temp-dir={self.folder / 'ray'}",
                f"--ray-client-server-port={self.client_port}",
            ],
            "head",
        )

    def start_worker(self) -> None:
        self.worker = self._start([f"--address={self.address}", f"--num-cpus={self.worker_cpus}"], "worker")

    def wait_nodes(self, n: int, timeout_s: float = 60.0) -> float:
        import ray

        t0 = time.monotonic()
        while sum(1 for node in ray.nodes() if node["Alive"]) < n:
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"the cluster has fewer than {n} nodes after {timeout_s:.0f} s")
            time.sleep(0.5)
        return time.monotonic() - t0

    @staticmethod
    def tree(proc: subprocess.Popen | None) -> list:
        """The process and all its descendants (the node's raylet, agents and workers)."""
        import psutil

        if proc is None or proc.poll() is not None:
            return []
        try:
            root = psutil.Process(proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def owns(self, pid: int) -> bool:
        return any(p.pid == pid for proc in (self.head, self.worker) for p in self.tree(proc))

    def kill(self, proc: subprocess.Popen | None) -> None:
        import psutil

        for p in self.tree(proc):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if proc is not None:
            proc.wait(timeout=30)

    def kill_worker(self) -> None:
        """The worker node goes (as a machine would): its whole process tree is SIGKILLed."""
        self.kill(self.worker)

    def stop(self) -> None:
        self.kill(self.worker)
        self.kill(self.head)


@dataclasses.dataclass
class Outcome:
    student: int
    text: str
    start: float
    end: float | None = None
    result: object = None
    error: BaseException | None = None


def _replicas() -> dict[str, dict]:
    """Alive replicas of the drill's deployment: actor id -> actor table entry (pid, node)."""
    import ray

    table = ray._private.state.state.actor_table(None)
    return {
        aid: a for aid, a in table.items() if a.get("ActorClassName") == REPLICA_CLASS and a.get("State") == "ALIVE"
    }


def _replica_states() -> dict[str, int]:
    """The sentiment deployment's replicas by state ({} when the application is absent)."""
    from ray import serve

    app = serve.status().applications.get("xray-sentiment")
    if app is None:
        return {}
    states = {getattr(k, "value", k): v for d in app.deployments.values() for k, v in d.replica_states.items() if v}
    return states if app.status == "RUNNING" else {**states, "app": getattr(app.status, "value", app.status)}


class _Drill:
    """One run of the fault drill: its shared state (the front, the loopback cluster, the students
    and their outcomes, the phases so far, the report) and one method per phase, in the order
    `fault_drill` runs them: `no_tier`, `tier_appears`, `start_class`, `steady`, `fault` (per
    injected fault), `finish`; `close` tears everything down whatever happened."""

    def __init__(
        self,
        settings_fields: dict,
        models_dir: str,
        clients: int,
        think_s: float,
        steady_s: float,
        recover_limit_s: float,
        folder: Path | None,
        say,
    ) -> None:
        """The drill's state; nothing is started. Expects the cluster token in os.environ."""
        import threading

        # Ray before the cluster copies os.environ: importing it sets RAY_CLIENT_MODE.
        importlib.import_module("ray")
        from scale import backend
        from scale.config import ServeConfig

        self.settings_fields, self.models_dir, self.clients = settings_fields, models_dir, clients
        self.think_s, self.steady_s, self.recover_limit_s, self.say = think_s, steady_s, recover_limit_s, say
        self.folder = Path(folder or tempfile.mkdtemp(prefix="xray-drill-"))
        self.cluster = LoopbackCluster(self.folder)
        self.front = backend.RayServe(address=self.cluster.address, timeout_s=60.0, wait_s=5.0, connect_s=30.0)
        self.report: dict = {"address": self.cluster.address, "clients": clients, "phases": {}}
        self.env = {
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        self.config = ServeConfig(
            min_replicas=2, max_replicas=2, cpus=0.5, batch_size=8, batch_wait_s=0.01, max_ongoing=16, max_queued=64
        )
        self.outcomes: list[Outcome] = []
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.students: list[threading.Thread] = []
        self.phases: list[tuple[str, float, float | None]] = []  # (name, start, seconds to full service)
        self.counts_at: dict[str, dict] = {}  # the front's counts as each phase begins, and at the end
        self.running_least: dict[str, int] = {}  # per phase: the fewest replicas running
        self.changed_at: dict[str, float | None] = {}  # per phase: seconds until the replicas changed
        self.redeploys: list[subprocess.Popen] = []
        self.injectors = {"replica": self.kill_replica, "node": self.kill_node, "redeploy": self.redeploy}
        self.t_origin = time.monotonic()

    def now(self) -> float:
        """Seconds since the drill's state was made (the clock of outcomes and phases)."""
        return time.monotonic() - self.t_origin

    def no_tier(self) -> None:
        """The front asks before any tier exists: records the refusal (kind, message, seconds, health)
        under report["no_tier"]; a clear "unreachable" within seconds, no hang."""
        from scale import backend

        importlib.import_module("ray.serve")  # before the clock starts (a few seconds on a busy machine)
        t0 = time.monotonic()
        try:
            self.front.call("sentiment", "answer", "Is anyone there?")
            self.report["no_tier"] = {"error": None}
        except backend.TierUnavailable as exc:
            self.report["no_tier"] = {
                "kind": exc.kind,
                "message": str(exc),
                "seconds": round(time.monotonic() - t0, 2),
                "health": self.front.health(["sentiment"]).line(),
                "reason": self.front.health(["sentiment"]).reason,
            }
        self.say(f"[drill] no tier yet: {self.report['no_tier']}")

    def tier_appears(self) -> None:
        """Starts the head and the worker, lets the same front join (within 90 s), deploys the
        application on the two nodes and asks once; records cluster_s, deploy_s, replica_nodes,
        came_alive and health."""
        from scale import backend, serve_app

        t0 = time.monotonic()
        self.cluster.start_head()
        self.cluster.start_worker()
        deadline = time.monotonic() + 90
        while True:  # the same front object that said "unreachable" joins once the head listens
            try:
                self.front._connect()
                break
            except backend.TierUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        self.cluster.wait_nodes(2)
        self.report["cluster_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        serve_app.deploy(["sentiment"], self.settings_fields, self.config, env=self.env, wait_s=180)
        self.report["deploy_s"] = round(time.monotonic() - t0, 1)
        nodes = {a["Address"]["NodeID"] for a in _replicas().values()}
        self.report["replica_nodes"] = len(nodes)
        first = self.front.call("sentiment", "answer", "The tier is up and the film was good.")
        self.report["came_alive"] = bool(first.labels)
        self.report["health"] = self.front.health(["sentiment"]).line()
        self.say(
            f"[drill] cluster {self.report['cluster_s']} s, deploy {self.report['deploy_s']} s, "
            f"replicas on {len(nodes)} node(s); {self.report['health']}"
        )

    def student(self, i: int) -> None:
        """Student `i` (a thread): asks a unique question, records its Outcome, thinks, and again,
        until the drill stops."""
        k = 0
        while not self.stop.is_set():
            k += 1
            o = Outcome(i, f"Student {i} asks question {k}: was the film {'very ' * (k % 4)}good or bad?", self.now())
            with self.lock:
                self.outcomes.append(o)
            try:
                o.result = self.front.call("sentiment", "answer", o.text)
            except Exception as exc:  # every outcome is counted
                o.error = exc
            o.end = self.now()
            self.stop.wait(self.think_s * (0.5 + (i * 7919 + k * 104729) % 1000 / 1000))

    def start_class(self) -> None:
        """Starts one daemon thread per student."""
        import threading

        self.students = [
            threading.Thread(target=self.student, args=(i,), daemon=True, name=f"student-{i}")
            for i in range(self.clients)
        ]
        for s in self.students:
            s.start()

    def steady(self) -> None:
        """The steady phase: no fault, the class asks for `steady_s` seconds."""
        self.phase("steady", None)

    def fault(self, name: str) -> None:
        """The phase of one fault: "replica", "node" or "redeploy" (KeyError for any other)."""
        self.phase(name, self.injectors[name])

    def phase(self, name: str, inject) -> None:
        """One phase: notes the front's counts, injects the fault (if any), waits for full service
        (2 replicas RUNNING, none of those to be replaced) up to `recover_limit_s`, records the
        phase, says how it went, then lets the class ask for `steady_s` seconds."""
        self.counts_at[name] = dict(self.front.counts)
        before = set(_replicas())
        start = self.now()
        gone, dead = inject(before) if inject else (set(), set())  # to be replaced / killed
        recovered, fewest, changed = self.await_full_service(start, before, gone, dead) if inject else (None, 2, None)
        self.phases.append((name, start, recovered))
        self.running_least[name] = max(0, fewest)
        self.changed_at[name] = changed
        self.say(
            f"[drill] {name}: "
            + (
                f"back to full service after {recovered:.1f} s"
                if recovered is not None
                else ("steady" if not inject else f"NOT recovered within {self.recover_limit_s:.0f} s")
            )
        )
        self.stop.wait(self.steady_s)

    def await_full_service(
        self, start: float, before: set, gone: set, dead: set
    ) -> tuple[float | None, int, float | None]:
        """Polls the replicas (every 0.25 s, up to `recover_limit_s` from `start`) until 2 are alive
        and RUNNING and none of `gone` is among them. Returns the seconds until then (None if
        never), the fewest replicas running meanwhile (RUNNING, and alive outside `dead`), and the
        seconds until the set of replicas first differed from `before` (None if it never did)."""
        recovered, fewest, changed = None, 2, None
        while self.now() - start < self.recover_limit_s:
            alive, states = _replicas(), _replica_states()
            if changed is None and set(alive) != before:
                changed = self.now() - start  # the fault (or the update) reached the replicas
            fewest = min(fewest, states.get("RUNNING", 0), len(set(alive) - dead))
            if len(alive) == 2 and not (gone & set(alive)) and states == {"RUNNING": 2}:
                recovered = self.now() - start
                break
            time.sleep(0.25)
        return recovered, fewest, changed

    def kill_replica(self, before: set) -> tuple[set, set]:
        """SIGKILLs one replica process (on the head node, where the front sits, if one is there),
        after checking it belongs to this drill's cluster. Returns its actor id as to be replaced
        and as killed."""
        import ray

        replicas = _replicas()
        head_node = ray.get_runtime_context().get_node_id()  # the front (this driver) sits on the head
        aid, entry = next(
            ((a, e) for a, e in replicas.items() if e["Address"]["NodeID"] == head_node),
            next(iter(replicas.items())),
        )
        pid = int(entry["Pid"])
        if not self.cluster.owns(pid):
            raise RuntimeError(f"replica pid {pid} is not a process of this drill's cluster")
        os.kill(pid, signal.SIGKILL)
        return {aid}, {aid}

    def kill_node(self, before: set) -> tuple[set, set]:
        """Kills the worker node's whole process tree. Returns the replicas that were on it as to be
        replaced and as killed."""
        import ray

        worker_nodes = {
            n["NodeID"] for n in ray.nodes() if n["Alive"] and not n.get("Resources", {}).get("node:__internal_head__")
        }
        on_worker = {a for a, e in _replicas().items() if e["Address"]["NodeID"] in worker_nodes}
        self.cluster.kill_worker()
        return on_worker, on_worker

    def redeploy(self, before: set) -> tuple[set, set]:
        """Starts the operator's command (`python -m scale.serve_app`, its own process, log in
        redeploy.log) with a new revision (new replica processes); it is waited for in `finish`.
        Returns every replica in `before` as to be replaced, none as killed."""
        options = {
            "XRAY_SERVE_MIN_REPLICAS": "2",
            "XRAY_SERVE_MAX_REPLICAS": "2",
            "XRAY_SERVE_CPUS": "0.5",
            "XRAY_SERVE_BATCH_SIZE": "8",
            "XRAY_SERVE_BATCH_WAIT_S": "0.01",
            "XRAY_SERVE_MAX_ONGOING": "16",
            "XRAY_SERVE_MAX_QUEUED": "64",
            "XRAY_DRILL_REVISION": str(time.time()),
        }
        cmd = [
            sys.executable,
            "-m",
            "scale.serve_app",
            "--tasks",
            "sentiment",
            "--address",
            self.cluster.address,
            "--models",
            str(self.models_dir),
            "--offline",
            "--wait",
            "120",
        ]
        log = open(self.folder / "redeploy.log", "w")  # noqa: SIM115 - the command writes it while it runs
        env = {**self.cluster.env, **self.env, **options}
        self.redeploys.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        return set(before), set()

    def finish(self) -> None:
        """Notes the front's final counts, waits for the redeploy commands (record redeploy_rc),
        stops the students and fills the report: phases (counts, recovery), lost_students, counts."""
        self.counts_at["end"] = dict(self.front.counts)
        self.wait_redeploys()
        lost_threads = self.stop_students()
        self.report["phases"] = _drill_counts(self.outcomes, self.phases, self.counts_at, self.now())
        for name, least in self.running_least.items():
            self.report["phases"][name]["fewest_running_replicas"] = least
            p = self.report["phases"][name]
            if self.changed_at.get(name) is not None and p["recovery_s"] is not None:
                p["replicas_changed_after_s"] = round(self.changed_at[name], 1)
                p["recovery_from_change_s"] = round(p["recovery_s"] - self.changed_at[name], 1)
        self.report["lost_students"] = lost_threads
        self.report["counts"] = dict(self.front.counts)

    def wait_redeploys(self) -> None:
        """Waits up to 120 s for each redeploy command (killed after that); report["redeploy_rc"] is
        the last one's exit code, or "killed"."""
        for proc in self.redeploys:
            try:
                self.report["redeploy_rc"] = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.report["redeploy_rc"] = "killed"

    def stop_students(self) -> int:
        """Stops the class and joins each student (up to the front's timeout + 10 s). Returns how
        many are still running."""
        self.stop.set()
        for s in self.students:
            s.join(timeout=self.front.timeout_s + 10)
        return sum(1 for s in self.students if s.is_alive())

    def close(self) -> None:
        """Tears down, whatever happened: stops the class, closes the front, shuts Serve and Ray
        down in this process, and kills the cluster's processes."""
        import ray

        self.stop.set()
        self.front.close()
        try:
            from ray import serve

            if ray.is_initialized():
                serve.shutdown()
        except Exception:  # tearing down
            pass
        ray.shutdown()
        self.cluster.stop()


def fault_drill(
    settings_fields: dict,
    models_dir: str,
    clients: int = 20,
    faults=DRILL_FAULTS,
    think_s: float = 1.0,
    steady_s: float = 3.0,
    recover_limit_s: float = 120.0,
    folder: Path | None = None,
    say=print,
) -> dict:
    """Start a front (a `RayServe` backend) BEFORE the tier exists, then a two-node loopback
    cluster and the sentiment application (2 replicas, one per node); `clients` students ask
    unique questions in a loop while, in turn, the worker node is killed, a replica process is
    killed, and the application is redeployed with a new revision by the operator's command
    (`python -m scale.serve_app`, another process). `models_dir` holds the `sentiment` model
    folder. Returns the counts per phase (answered, answered after a retry, refused with a clear
    message, failed, mixed, lost) and the seconds until the tier was back to full service after
    each fault (from the fault, and from when the replicas changed)."""
    import secrets

    # The drill's own cluster token (Ray enables token authentication whenever ~/.ray/auth_token
    # exists): for this process and the nodes. Ray reads it once per process: run the drill in a
    # fresh process (`python -m bench.load_scale --faults all`), as tests/scale/test_cluster_faults.py does.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    drill = _Drill(settings_fields, models_dir, clients, think_s, steady_s, recover_limit_s, folder, say)
    try:
        drill.no_tier()
        drill.tier_appears()
        drill.start_class()
        drill.steady()
        for fault in faults:
            drill.fault(fault)
        drill.finish()
    finally:
        drill.close()
    drill.report["expected"] = _check_answers(drill.outcomes)
    return drill.report


def _drill_counts(outcomes: list, phases: list, counts_at: dict, end: float) -> dict:
    """Requests by the phase they started in: answered / refused (clear message) / failed / lost."""
    from scale.backend import Busy

    out = {}
    names = [p[0] for p in phases]
    for idx, (name, start, recovered) in enumerate(phases):
        stop = phases[idx + 1][1] if idx + 1 < len(phases) else end
        mine = [o for o in outcomes if start <= o.start < stop]
        refused: dict[str, int] = {}
        failed: list[str] = []
        for o in mine:
            if o.error is None:
                continue
            if isinstance(o.error, Busy):
                kind = getattr(o.error, "kind", "busy")
                refused[kind] = refused.get(kind, 0) + 1
            else:
                failed.append(f"{type(o.error).__name__}: {str(o.error).splitlines()[0][:120] if str(o.error) else ''}")
        after = counts_at.get(names[idx + 1] if idx + 1 < len(names) else "end", {})
        before = counts_at.get(name, {})
        answered = [o for o in mine if o.end is not None and o.error is None]
        out[name] = {
            "requests": len(mine),
            "answered": len(answered),
            "answered_after_retry": after.get("answered after a retry", 0) - before.get("answered after a retry", 0),
            "refused": refused,
            "failed": len(failed),
            "failures": sorted(set(failed))[:5],
            "mixed": sum(1 for o in answered if getattr(o.result, "text", None) != o.text),
            "lost": sum(1 for o in mine if o.end is None),
            "recovery_s": None if recovered is None else round(recovered, 1),
            "longest_gap_s": _longest_gap(answered, start, stop),
            "slowest_s": round(max((o.end - o.start for o in answered), default=0.0), 2),
        }
    return out


def _longest_gap(answered: list, start: float, stop: float) -> float:
    """The longest time within [start, stop) in which no student received an answer."""
    ends = sorted(o.end for o in answered if start <= o.end < stop)
    marks = [start, *ends, stop]
    return round(max(b - a for a, b in zip(marks, marks[1:])), 1)


def _check_answers(outcomes: list) -> dict:
    """Every answer (a tiny model answers in milliseconds) against the in-process answer for THEIR
    text: wrong = another computation's numbers. (Every answer's text was compared with its
    question: `mixed`.)"""
    import numpy as np

    from scale import backend

    here = backend.InProcess()
    checked = wrong = 0
    for o in outcomes:
        if o.error is None and o.result is not None and getattr(o.result, "text", None) == o.text:
            want = here.call("sentiment", "answer", o.text)
            checked += 1
            wrong += not np.allclose(o.result.probs, want.probs, atol=1e-5)
    return {"checked": checked, "wrong": wrong}


def drill_lines(report: dict) -> list[str]:
    lines = [
        f"== fault drill: {report['clients']} students, 2-node loopback cluster at {report['address']}",
        f"no tier yet        : {report['no_tier'].get('kind')} in {report['no_tier'].get('seconds')} s "
        f"({report['no_tier'].get('message')})",
        f"tier up            : cluster {report.get('cluster_s')} s, deploy {report.get('deploy_s')} s, "
        f"replicas on {report.get('replica_nodes')} nodes; same front answers: {report.get('came_alive')}",
    ]
    for name, p in report["phases"].items():
        refused = ", ".join(f"{k} {v}" for k, v in p["refused"].items()) or "0"
        lines.append(
            f"{name:<9}: {p['requests']:4d} requests, answered {p['answered']} "
            f"({p['answered_after_retry']} after a retry), refused {refused}, failed {p['failed']}, "
            f"mixed {p['mixed']}, lost {p['lost']}; full service after {p['recovery_s']} s "
            f"(replicas changed after {p.get('replicas_changed_after_s')} s; "
            f"fewest replicas running {p.get('fewest_running_replicas', 2)}), "
            f"longest gap without answers {p['longest_gap_s']} s, slowest {p['slowest_s']} s"
        )
        for f in p["failures"]:
            lines.append(f"           failure: {f}")
    lines.append(
        f"answers checked against in-process: {report['expected']['checked']}, wrong {report['expected']['wrong']}"
    )
    return lines


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main()
