"""Deploy the model tier: `python -m scale.serve_app --tasks sentiment,qa`.

Joins the Ray cluster at `--address` (default: XRAY_RAY_ADDRESS, else "auto"; `local` starts a
cluster in this process and keeps it running until Ctrl-C) and deploys one Serve application per
task (`xray-<task>`), each with the settings of this process (XRAY_MODEL_*, --models, --offline)
passed to its replicas, and the XRAY_SERVE_* options of scale.config. Only deployment handles
call these applications (no HTTP route), so the Serve HTTP proxy is not needed on loopback.

Every application is deployed at once, then awaited (at most `--wait` seconds): the status of
each is printed, and an application that is not running by then is named with Serve's reason (a
replica that cannot be placed says which resources it asks for and which the cluster has). A
`--address local` trial sizes each replica's CPU share to the machine (unless XRAY_SERVE_CPUS is
set): every task's largest number of replicas fits the local cluster's CPUs.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core import registry
from scale import backend
from scale.config import ServeConfig

RUNNING = "RUNNING"


class NotDeployed(RuntimeError):
    """Some applications were not running when the wait ended; `problems`: task -> why."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__("not running: " + "; ".join(f"{k}: {v}" for k, v in self.problems.items()))

ROOT = Path(__file__).resolve().parent.parent


def parse_tasks(text: str) -> list[str]:
    """'sentiment,qa' -> ['sentiment', 'qa'] (checked against the registry); 'all' -> every task."""
    keys = list(registry.KEYS) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    for key in keys:
        registry.get(key)
    if not keys:
        raise ValueError("no task given")
    return keys


def local_cluster(num_cpus: int = 2, env: Mapping[str, str] | None = None) -> None:
    """Start a local Ray cluster whose workers import this project (PYTHONPATH = the checkout)."""
    import ray

    env_vars = {"PYTHONPATH": str(ROOT), **(dict(env) if env else {})}
    ray.init(num_cpus=num_cpus, include_dashboard=False, namespace="serve", log_to_driver=False,
             runtime_env={"env_vars": env_vars})


def local_cpus(num_cpus: float, n_tasks: int, config: ServeConfig) -> float:
    """CPUs per replica so that every task's largest number of replicas fits `num_cpus` (a
    one-machine trial: 8 tasks x 2 replicas on 2 CPUs -> 0.12 each; torch still runs 1 thread)."""
    return max(0.01, int(100 * num_cpus / max(1, n_tasks * config.max_replicas)) / 100)


def fit_problem(n_tasks: int, config: ServeConfig, cluster_cpus: float) -> str:
    """Why the tasks' minimum replicas cannot all be placed on `cluster_cpus` CPUs ('' if they can)."""
    need = n_tasks * max(1, config.min_replicas) * config.cpus
    if need <= cluster_cpus + 1e-9:
        return ""
    fits = int(cluster_cpus // (max(1, config.min_replicas) * config.cpus)) if config.cpus else n_tasks
    share = int(100 * cluster_cpus / (n_tasks * max(1, config.min_replicas))) / 100
    return (f"{n_tasks} tasks x {max(1, config.min_replicas)} replica(s) x {config.cpus:g} CPU need {need:g} CPUs; "
            f"the cluster has {cluster_cpus:g}: only {fits} of {n_tasks} applications can be placed. "
            f"Set XRAY_SERVE_CPUS={share:g} (or less), or add nodes.")


def deploy(tasks: Sequence[str], settings_fields: Mapping[str, Any] | None = None, config: ServeConfig | None = None,
           env: Mapping[str, str] | None = None, proxy: bool = False, wait_s: float = 900.0,
           progress=None) -> dict[str, Any]:
    """Deploy one Serve application per task on the connected cluster, all at once, and wait (at
    most `wait_s`) until each runs; returns task -> handle. Raises NotDeployed naming those that
    do not run by then, with Serve's reason (never waits forever for one that cannot be placed)."""
    from ray import serve

    from scale.deployments import application

    serve.start(proxy_location="EveryNode" if proxy else "Disabled")
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONPATH", str(ROOT))
    targets = [serve.RunTarget(application(key, settings_fields, config, n_tasks=len(tasks), env=env),
                               name=backend.app_name(key), route_prefix=None) for key in tasks]
    handles = dict(zip(tasks, serve.run_many(targets, wait_for_applications_running=False)))
    problems = wait_running(tasks, wait_s, progress)
    if problems:
        raise NotDeployed(problems)
    return handles


def app_problems(tasks: Sequence[str]) -> dict[str, str]:
    """task -> why its application does not run now (status and Serve's message); running ones absent."""
    from ray import serve

    apps = serve.status().applications
    out = {}
    for key in tasks:
        app = apps.get(backend.app_name(key))
        if app is None:
            out[key] = "not deployed"
        elif app.status != RUNNING:
            why = " ".join((app.message or "").split()) or " ".join(
                " ".join(d.message.split()) for d in app.deployments.values() if d.message)
            out[key] = backend._name(app.status) + (f": {why}" if why else "")
    return out


def wait_running(tasks: Sequence[str], timeout_s: float, progress=None, poll_s: float = 1.0) -> dict[str, str]:
    """Wait until every task's application runs (or failed to deploy, or `timeout_s` passed);
    returns the problems left (empty: all running). `progress(line)` hears of each change."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, str] = {}
    while True:
        problems = app_problems(tasks)
        if progress is not None:
            for key in tasks:
                state = problems.get(key, RUNNING).split(":")[0]
                if seen.get(key) != state:
                    progress(f"{backend.app_name(key)}: {state}")
                    seen[key] = state
        if (
            not problems
            or all(p.startswith("DEPLOY_FAILED") for p in problems.values())
            or time.monotonic() >= deadline
        ):
            return problems
        time.sleep(poll_s)


def status_lines() -> list[str]:
    from ray import serve

    out = []
    for name, app in serve.status().applications.items():
        replicas = {d: {backend._name(k): v for k, v in s.replica_states.items()} for d, s in app.deployments.items()}
        out.append(f"{name}: {backend._name(app.status)} {replicas}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", default="sentiment,qa", help=f"comma-separated tasks or 'all' ({','.join(registry.KEYS)})"
    )
    parser.add_argument(
        "--address",
        default=os.environ.get("XRAY_RAY_ADDRESS") or "auto",
        help="Ray cluster to join ('auto', 'host:6379', 'ray://host:10001') or 'local'",
    )
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of a --address local cluster")
    parser.add_argument(
        "--wait",
        type=float,
        default=600.0,
        help="seconds to wait for the applications to run; then those not running are named, with why",
    )
    parser.add_argument("--models", default=None, help="folder with one sub-folder per task (as app.py --models)")
    parser.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    parser.add_argument("--proxy", action="store_true", help="also run Serve's HTTP proxy (health checks over HTTP)")
    parser.add_argument(
        "--block", action="store_true", help="keep running after deploying (implied by --address local)"
    )
    args = parser.parse_args(argv)
    tasks = parse_tasks(args.tasks)

    import ray

    from demos.runtime import settings as settings_mod

    chosen = settings_mod.settings_from_env(models_dir=args.models, offline=True if args.offline else None)
    config = ServeConfig.from_env()
    if args.address == "local":
        local_cluster(args.num_cpus)
        if not os.environ.get("XRAY_SERVE_CPUS", "").strip():
            config = dataclasses.replace(config, cpus=local_cpus(args.num_cpus, len(tasks), config))
            print(
                f"local trial: {len(tasks)} task(s) x up to {config.max_replicas} replica(s) on {args.num_cpus} CPUs: "
                f"{config.cpus:g} CPU per replica (XRAY_SERVE_CPUS overrides); each replica is a process with torch "
                "and its task's model in memory.",
                flush=True,
            )
    else:
        ray.init(address=args.address, namespace="serve", log_to_driver=False)
    problem = fit_problem(len(tasks), config, float(ray.cluster_resources().get("CPU", 0)))
    if problem:
        print(f"WARNING: {problem}", flush=True)
    t0 = time.perf_counter()
    failed: dict[str, str] = {}
    try:
        deploy(
            tasks,
            dataclasses.asdict(chosen),
            config,
            proxy=args.proxy,
            wait_s=args.wait,
            progress=lambda line: print(f"  {time.perf_counter() - t0:5.1f} s  {line}", flush=True),
        )
        print(f"deployed {', '.join(tasks)} in {time.perf_counter() - t0:.1f} s", flush=True)
    except NotDeployed as exc:
        failed = exc.problems
        print(
            f"{len(tasks) - len(failed)} of {len(tasks)} applications run after {time.perf_counter() - t0:.0f} s; "
            "not running:",
            flush=True,
        )
        for key, why in failed.items():
            print(f"  {backend.app_name(key)}: {why}", flush=True)
    print("\n".join(status_lines()), flush=True)
    if args.address == "local" or args.block:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
