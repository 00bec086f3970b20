"""Deploy the model tier: `python -m scale.serve_app --tasks sentiment,qa`.

Joins the Ray cluster at `--address` (default: XRAY_RAY_ADDRESS, else "auto"; `local` starts a
cluster in this process and keeps it running until Ctrl-C) and deploys one Serve application per
task (`xray-<task>`), each with the settings of this process (XRAY_MODEL_*, --models, --offline)
passed to its replicas, and the XRAY_SERVE_* options of scale.config. Only deployment handles
call these applications (no HTTP route), so the Serve HTTP proxy is not needed on loopback.
Prints the status of every deployment once all replicas are running.
"""
from __future__ import annotations

import argparse
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


def deploy(tasks: Sequence[str], settings_fields: Mapping[str, Any] | None = None, config: ServeConfig | None = None,
           env: Mapping[str, str] | None = None, proxy: bool = False) -> dict[str, Any]:
    """Deploy one Serve application per task on the connected cluster; returns task -> handle."""
    from ray import serve

    from scale.deployments import application

    serve.start(proxy_location="EveryNode" if proxy else "Disabled")
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONPATH", str(ROOT))
    handles = {}
    for key in tasks:
        app = application(key, settings_fields, config, n_tasks=len(tasks), env=env)
        handles[key] = serve.run(app, name=backend.app_name(key), route_prefix=None, blocking=False)
    return handles


def status_lines() -> list[str]:
    from ray import serve

    out = []
    for name, app in serve.status().applications.items():
        replicas = {d: dict(s.replica_states) for d, s in app.deployments.items()}
        out.append(f"{name}: {app.status} {replicas}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sentiment,qa", help=f"comma-separated tasks or 'all' ({','.join(registry.KEYS)})")
    parser.add_argument("--address", default=os.environ.get("XRAY_RAY_ADDRESS") or "auto",
                        help="Ray cluster to join ('auto', 'host:6379', 'ray://host:10001') or 'local'")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of a --address local cluster")
    parser.add_argument("--models", default=None, help="folder with one sub-folder per task (as app.py --models)")
    parser.add_argument("--offline", action="store_true", help="never contact the Hugging Face Hub")
    parser.add_argument("--proxy", action="store_true", help="also run Serve's HTTP proxy (health checks over HTTP)")
    parser.add_argument("--block", action="store_true", help="keep running after deploying (implied by --address local)")
    args = parser.parse_args(argv)
    tasks = parse_tasks(args.tasks)

    import ray

    from demos.runtime import settings as settings_mod

    chosen = settings_mod.settings_from_env(models_dir=args.models, offline=True if args.offline else None)
    if args.address == "local":
        local_cluster(args.num_cpus)
    else:
        ray.init(address=args.address, namespace="serve", log_to_driver=False)
    t0 = time.perf_counter()
    deploy(tasks, dataclasses.asdict(chosen), ServeConfig.from_env(), proxy=args.proxy)
    print(f"deployed {', '.join(tasks)} in {time.perf_counter() - t0:.1f} s", flush=True)
    print("\n".join(status_lines()), flush=True)
    if args.address == "local" or args.block:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
