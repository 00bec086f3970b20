"""Settings of the model tier on Ray Serve, from XRAY_SERVE_* environment variables.

No Ray import here: the front reads `backend_from_env()` without Ray installed, and the
deployment options are plain dicts (the same keys as a Serve config file's `deployments:` entry).

  XRAY_BACKEND              inprocess (default) | ray | ray://host:10001 (Ray Client) | auto
  XRAY_RAY_ADDRESS          with XRAY_BACKEND=ray: the cluster to join (default "auto")
  XRAY_SERVE_MIN_REPLICAS   autoscaling lower bound per task (default 1)
  XRAY_SERVE_MAX_REPLICAS   autoscaling upper bound per task (default 2)
  XRAY_SERVE_TARGET_ONGOING requests in flight per replica the autoscaler aims at (default 4)
  XRAY_SERVE_MAX_ONGOING    requests in flight per replica, the rest wait at the caller (default 16)
  XRAY_SERVE_MAX_QUEUED     requests waiting per caller before "busy" (default 64; -1 = unbounded)
  XRAY_SERVE_BATCH_SIZE     forward-only requests per micro-batch (default 8)
  XRAY_SERVE_BATCH_WAIT_S   longest wait for a micro-batch to fill (default 0.01 s)
  XRAY_SERVE_CPUS           CPUs (and torch threads) per replica (default 1)
  XRAY_SERVE_GPU_SHARE      GPU fraction per replica; unset = 1/len(tasks) when the cluster has
                            GPUs, 0 otherwise
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

INPROCESS = "inprocess"


def _num(env: Mapping[str, str], name: str, default: float, cast=int):
    raw = env.get(name, "").strip()
    return cast(raw) if raw else default


@dataclass(frozen=True)
class ServeConfig:
    """How each task's deployment runs: replica bounds, queues, micro-batches, resources."""

    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing: float = 4.0
    max_ongoing: int = 16
    max_queued: int = 64
    batch_size: int = 8
    batch_wait_s: float = 0.01
    cpus: float = 1.0
    gpu_share: float | None = None
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServeConfig:
        env = os.environ if env is None else env
        share = env.get("XRAY_SERVE_GPU_SHARE", "").strip()
        config = cls(
            min_replicas=_num(env, "XRAY_SERVE_MIN_REPLICAS", cls.min_replicas),
            max_replicas=_num(env, "XRAY_SERVE_MAX_REPLICAS", cls.max_replicas),
            target_ongoing=_num(env, "XRAY_SERVE_TARGET_ONGOING", cls.target_ongoing, float),
            max_ongoing=_num(env, "XRAY_SERVE_MAX_ONGOING", cls.max_ongoing),
            max_queued=_num(env, "XRAY_SERVE_MAX_QUEUED", cls.max_queued),
            batch_size=_num(env, "XRAY_SERVE_BATCH_SIZE", cls.batch_size),
            batch_wait_s=_num(env, "XRAY_SERVE_BATCH_WAIT_S", cls.batch_wait_s, float),
            cpus=_num(env, "XRAY_SERVE_CPUS", cls.cpus, float),
            gpu_share=float(share) if share else None,
        )
        config.check()
        return config

    def check(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(
                f"replica bounds must be 0 <= min <= max, max >= 1 (got {self.min_replicas}..{self.max_replicas})"
            )
        if self.batch_size < 1 or self.batch_wait_s < 0 or self.max_ongoing < 1:
            raise ValueError("batch size and max ongoing requests must be >= 1, the batch wait >= 0")
        if self.gpu_share is not None and not 0 <= self.gpu_share <= 1:
            raise ValueError(f"XRAY_SERVE_GPU_SHARE must be within [0, 1] (got {self.gpu_share})")

    def gpus_per_replica(self, cluster_gpus: float, n_tasks: int) -> float:
        """The GPU fraction of one replica: the configured share, else an equal split of one
        GPU between the tasks when the cluster has any GPU, else 0."""
        if self.gpu_share is not None:
            return self.gpu_share
        return round(1.0 / max(1, n_tasks), 4) if cluster_gpus > 0 else 0.0

    def user_config(self) -> dict:
        """Settings a running replica takes without a restart (its `reconfigure`)."""
        return {"batch_size": self.batch_size, "batch_wait_s": self.batch_wait_s}

    def deployment_options(self, gpus: float = 0.0, env_vars: Mapping[str, str] | None = None) -> dict:
        """Keyword arguments of `serve.deployment(...)` / `.options(...)` for one task."""
        actor: dict = {"num_cpus": self.cpus}
        if gpus:
            actor["num_gpus"] = gpus
        if env_vars:
            actor["runtime_env"] = {"env_vars": dict(env_vars)}
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "initial_replicas": self.min_replicas or 1,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
            },
            "max_ongoing_requests": self.max_ongoing,
            "max_queued_requests": self.max_queued,
            "ray_actor_options": actor,
            "user_config": self.user_config(),
            "health_check_period_s": 10,
            "health_check_timeout_s": 30,
        }


def backend_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """('inprocess', None) or ('ray', address) from XRAY_BACKEND / XRAY_RAY_ADDRESS."""
    env = os.environ if env is None else env
    kind = (env.get("XRAY_BACKEND") or INPROCESS).strip()
    if kind.lower() in ("", INPROCESS, "local"):
        return INPROCESS, None
    if kind.lower() == "ray":
        return "ray", env.get("XRAY_RAY_ADDRESS") or "auto"
    if kind.startswith("ray://") or kind == "auto":
        return "ray", kind
    raise ValueError(f"XRAY_BACKEND={kind!r}: use 'inprocess', 'ray' (with XRAY_RAY_ADDRESS) or 'ray://host:port'")


def forwarded_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables of this process that replicas need too (models, offline mode, cache, threads)."""
    env = os.environ if env is None else env
    keep = ("XRAY_", "HF_", "TRANSFORMERS_", "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "PYTHONPATH")
    skip = {"XRAY_BACKEND", "XRAY_RAY_ADDRESS", "HF_TOKEN"}  # a token is set in the cluster's own env, never shipped
    return {k: v for k, v in env.items() if k.startswith(keep) and k not in skip}
