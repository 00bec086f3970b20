"""The model tier: one Ray Serve deployment per task of `core.registry.TASKS`.

Each deployment class (`SentimentModel`, `QaModel`, ... generated from the registry, all sharing
`TaskModel`) holds its task's model(s), loaded in the replica through demos.runtime.loading, and serves
the task's compute functions by name (`scale.backend.resolve`: answer, attribution, explainers,
the module's public functions). Forward-only answers of tasks with a batched forward pass
(`TaskSpec.batch`: sentiment's `analyse_many`, the explorer's `explore_many`) from concurrent callers are gathered by
`@serve.batch` into one padded forward pass; every caller gets the result of its own single run.

Replicas autoscale between `ServeConfig` bounds; `ray_actor_options` reserve CPUs and, where the
cluster has GPUs, a GPU fraction. Batch size and wait are a `user_config` (changed live).
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
from collections.abc import Mapping
from typing import Any

from ray import serve

from core import registry
from demos.runtime.gather import Failed, batch_item, run_batch
from scale import backend
from scale.config import ServeConfig, forwarded_env

log = logging.getLogger(__name__)


class TaskModel:
    """Base of every task's deployment; `task_key` is set by the generated subclass."""

    task_key = ""

    def __init__(self, settings_fields: Mapping[str, Any], threads: int = 1) -> None:
        from demos.explain import tasks
        from demos.provision import offline
        from demos.runtime import loading
        from demos.runtime import settings as settings_mod
        from demos.runtime import threads as threads_mod

        threads_mod.configure(max(1, int(threads)))
        given = dict(settings_fields)
        chosen = settings_mod.Settings(
            **{f.name: given[f.name] for f in dataclasses.fields(settings_mod.Settings) if f.init and f.name in given}
        )
        if chosen.offline:
            loading.hub_offline_env()
        settings_mod.configure(chosen)
        offline.prepare(chosen, progress=log.info)  # as the app's start-up: local fallbacks when offline
        self.spec = registry.get(self.task_key)
        self.module = tasks.module(self.task_key)
        single_name = self.spec.run if self.spec.batch else ""
        self._batched_fn = getattr(self.module, self.spec.batch) if self.spec.batch else None
        self._single = backend.resolve(self.task_key, single_name) if self._batched_fn else None
        self._single_name = single_name
        self.batch_sizes: list[int] = []  # size of every micro-batch run (stats())
        self.module.load()  # the default model is resident before the replica is ready

    def reconfigure(self, config: Mapping[str, Any]) -> None:
        """user_config: {"batch_size": int, "batch_wait_s": float} (applied without a restart)."""
        self.forward.set_max_batch_size(int(config.get("batch_size", 8)))
        self.forward.set_batch_wait_timeout_s(float(config.get("batch_wait_s", 0.01)))

    def _batchable(self, fn_name: str, args: tuple, kwargs: dict) -> tuple | None:
        """(text, model_id) when the call is the batched single-run function with plain inputs."""
        if self._single is None or backend.canonical(self.task_key, fn_name) != self._single_name:
            return None
        return batch_item(inspect.signature(self._single), args, kwargs)

    async def call(self, fn_name: str, args: tuple = (), kwargs: dict | None = None) -> Any:
        """Run `fn_name(*args, **kwargs)` of this task; returns its plain result."""
        kwargs = dict(kwargs or {})
        kwargs.pop("progress", None)
        item = self._batchable(fn_name, tuple(args), kwargs)
        if item is not None:
            out = await self.forward(item)
            if isinstance(out, Failed):
                raise out.exc
            return out
        fn = backend.resolve(self.task_key, fn_name)

        def run() -> Any:  # in a thread: unshipping a result's recipe may compute it again
            local_args, local_kwargs = backend.unship(tuple(args), kwargs)
            return fn(*local_args, **local_kwargs)

        return await asyncio.to_thread(run)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def forward(self, items: list[tuple[str, str | None]]) -> list[Any]:
        """Micro-batch of (text, model_id) from concurrent callers -> one result per item."""
        return await asyncio.to_thread(self._forward_sync, items)

    def _forward_sync(self, items: list[tuple[str, str | None]]) -> list[Any]:
        self.batch_sizes.append(len(items))
        return run_batch(self._single, self._batched_fn, items)

    def stats(self) -> dict:
        """What this replica did: pid, micro-batch sizes, resident models (for tests and ops)."""
        from demos.runtime import loading

        return {"pid": os.getpid(), "batch_sizes": list(self.batch_sizes), "resident": loading.resident()}

    def check_health(self) -> None:
        """Serve's periodic health check: the replica can still reach its compute module."""
        from demos.explain import tasks

        tasks.module(self.task_key)


def class_name(task_key: str) -> str:
    """'sentiment' -> 'SentimentModel', 'qa' -> 'QaModel'."""
    return "".join(part.title() for part in task_key.split("_")) + "Model"


# One class per registered task, importable by name (Ray pickles the class by reference).
MODEL_CLASSES: dict[str, type[TaskModel]] = {}
for _spec in registry.TASKS:
    _name = class_name(_spec.key)
    MODEL_CLASSES[_spec.key] = globals()[_name] = type(
        _name, (TaskModel,), {"task_key": _spec.key, "__module__": __name__, "__qualname__": _name}
    )


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0


def deployment(
    task_key: str, config: ServeConfig | None = None, n_tasks: int = 1, env: Mapping[str, str] | None = None
):
    """The Serve deployment of one task with its autoscaling, queue, batch and resource options."""
    config = config or ServeConfig.from_env()
    cls = MODEL_CLASSES[registry.get(task_key).key]
    options = config.deployment_options(config.gpus_per_replica(cluster_gpus(), n_tasks), forwarded_env(env))
    return serve.deployment(cls, name=cls.__name__, **options)


def application(
    task_key: str,
    settings_fields: Mapping[str, Any] | None = None,
    config: ServeConfig | None = None,
    n_tasks: int = 1,
    env: Mapping[str, str] | None = None,
):
    """A bound Serve application for one task; settings default to this process's
    (`demos.runtime.settings.current()`), passed to the replicas explicitly (they are other processes)."""
    from demos.runtime import settings as settings_mod

    config = config or ServeConfig.from_env()
    fields = dict(settings_fields) if settings_fields is not None else dataclasses.asdict(settings_mod.current())
    return deployment(task_key, config, n_tasks, env).bind(fields, max(1, int(config.cpus)))


def app_builder(args: Mapping[str, Any]):
    """Serve config-file entry point (`import_path: scale.deployments:app_builder`,
    `args: {task: sentiment}`): settings from the replica environment (XRAY_MODEL_*, ...)."""
    from demos.runtime import settings as settings_mod

    task = str(args["task"])
    models_dir = args.get("models_dir") or os.environ.get("XRAY_MODELS_DIR")
    return application(task, dataclasses.asdict(settings_mod.settings_from_env(models_dir=models_dir)))
