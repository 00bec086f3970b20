"""Where the front's computations run: in this process (default) or on the Ray Serve model tier.

    from scale import backend
    result = backend.call(task_key, "answer", text, model_id)   # the task's result type either way

`XRAY_BACKEND=inprocess` (default) calls the demos functions directly and never imports Ray;
`XRAY_BACKEND=ray` (joining the cluster at `XRAY_RAY_ADDRESS`, default "auto") or
`XRAY_BACKEND=ray://head:10001` (Ray Client) sends the call to the task's Serve application
(`python -m scale.serve_app`). Arguments and results are the plain result types (dataclasses of
numpy arrays), pickled by Ray; nothing of a session lives in the model tier, so any front replica
may call any model replica. A UI `progress` callback cannot cross the wire: it is dropped.

Function names (`fn_name`), resolved the same way on both paths (`resolve`):
  "answer" / "attribution"   the task's registered answer / attribution function (core.registry);
  an explainer's name        demos.explain.catalog registered for the task: run(task, result, **params);
  any other public function of the task's compute module (demos.<demo>), except `load`.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import registry
from scale.config import INPROCESS, backend_from_env

ALIASES = {"answer": "run", "attribution": "attribute"}
DENIED = frozenset({"load", "subject", "forward_sentences"})  # would return model objects, not plain results
# Tasks whose first argument (or their `file_args` keywords) name files the front received from a
# user: on the remote path their bytes travel with the call (the model tier has no access to the
# front's disk).
FILE_TASKS = frozenset(spec.key for spec in registry.TASKS if spec.file_task)
TIMEOUT_S = float(os.environ.get("XRAY_SERVE_TIMEOUT_S", "600"))


class UnknownFunction(LookupError):
    """`fn_name` is not a servable function of the task."""


class Busy(RuntimeError):
    """The model tier refused the call: its queue for this task is full (try again shortly)."""


def canonical(task_key: str, fn_name: str) -> str:
    """'answer' -> the task's run function name (e.g. 'analyse'), 'attribution' -> its
    attribution function name; other names unchanged."""
    spec = registry.get(task_key)
    if fn_name in ALIASES:
        name = getattr(spec, ALIASES[fn_name])
        if not name:
            raise UnknownFunction(f"The {task_key} task has no {fn_name} function.")
        return name
    return fn_name


def resolve(task_key: str, fn_name: str) -> Callable[..., Any]:
    """The callable serving `fn_name` for `task_key` (imports the compute module: torch)."""
    spec = registry.get(task_key)
    name = canonical(task_key, fn_name)
    if name == "model_info":  # which model serves the task, as a plain ModelInfo
        from demos.runtime import loading

        return functools.partial(loading.model_info, task_key)
    module = spec.compute()
    from demos.explain import catalog

    for explainer in catalog.for_task(task_key):
        if explainer.name == name:  # Explainer.run applies the explanations' runtime policy
            return functools.partial(explainer.run, task_key)
    fn = getattr(module, name, None)
    if (
        name.startswith("_")
        or name in DENIED
        or fn is None
        or inspect.isclass(fn)
        or not callable(fn)
        or getattr(fn, "__module__", None) != module.__name__
    ):
        raise UnknownFunction(f"{fn_name!r} is not a function of the {task_key} task (demos.{spec.demo}).")
    return fn


# ---- files that travel with a call ----

@dataclass(frozen=True)
class Shipped:
    """A user's file sent to the model tier: its name, bytes and their SHA-256."""

    name: str
    data: bytes
    digest: str

    @classmethod
    def of(cls, path: str | os.PathLike) -> Shipped:
        data = Path(path).read_bytes()
        return cls(Path(path).name, data, hashlib.sha256(data).hexdigest())

    def materialise(self, folder: Path) -> str:
        """Write the bytes once under `folder/<digest>/<name>` (content-addressed, so memo keys
        built from the path stay stable across calls) and return that path."""
        target = folder / self.digest[:32] / Path(self.name).name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}")
            tmp.write_bytes(self.data)
            os.replace(tmp, target)
        return str(target)


def _is_file(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and len(str(value)) < 4096 and "\n" not in str(value) and os.path.isfile(value)


def _pack(value: Any) -> Any:
    if _is_file(value):
        return Shipped.of(value)
    if isinstance(value, (list, tuple)) and value and all(_is_file(v) for v in value):
        return type(value)(Shipped.of(v) for v in value)
    return value


def ship(task_key: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Replace file paths among a file task's inputs by `Shipped` copies of the files."""
    if task_key not in FILE_TASKS:
        return args, kwargs
    args = (_pack(args[0]), *args[1:]) if args else args
    keywords = registry.get(task_key).file_args
    return args, {k: _pack(v) if k in keywords else v for k, v in kwargs.items()}


def ship_folder() -> Path:
    return Path(os.environ.get("XRAY_SHIP_DIR") or Path(tempfile.gettempdir()) / "xray-shipped")


def unship(args: tuple, kwargs: dict, folder: Path | None = None) -> tuple[tuple, dict]:
    """The inverse of `ship` on the model tier: `Shipped` values become local file paths."""
    folder = folder or ship_folder()

    def local(value: Any) -> Any:
        if isinstance(value, Shipped):
            return value.materialise(folder)
        if isinstance(value, (list, tuple)) and any(isinstance(v, Shipped) for v in value):
            return type(value)(local(v) for v in value)
        return value

    return tuple(local(a) for a in args), {k: local(v) for k, v in kwargs.items()}


# ---- the two backends ----

class InProcess:
    """Calls the demos functions in this process (the default: a laptop, a Space)."""

    name = INPROCESS

    def call(self, task_key: str, fn_name: str, *args: Any, **kwargs: Any) -> Any:
        return resolve(task_key, fn_name)(*args, **kwargs)


def app_name(task_key: str) -> str:
    """The Serve application of a task (one per task: each scales and updates on its own)."""
    return f"xray-{registry.get(task_key).key}"


class RayServe:
    """Calls the task's Serve deployment through a deployment handle (one per task, cached)."""

    name = "ray"

    def __init__(self, address: str | None = "auto", timeout_s: float = TIMEOUT_S) -> None:
        self.address, self.timeout_s = address, timeout_s
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _handle(self, task_key: str) -> Any:
        with self._lock:
            if task_key not in self._handles:
                import ray
                from ray import serve

                if not ray.is_initialized():
                    ray.init(address=self.address, namespace="serve", log_to_driver=False)
                self._handles[task_key] = serve.get_app_handle(app_name(task_key))
            return self._handles[task_key]

    def call(self, task_key: str, fn_name: str, *args: Any, **kwargs: Any) -> Any:
        from ray.serve.exceptions import BackPressureError

        kwargs.pop("progress", None)  # a UI callback: it cannot cross the wire
        canonical(task_key, fn_name)  # unknown aliases fail here, before any network call
        args, kwargs = ship(task_key, args, kwargs)
        def remote() -> Any:
            return self._handle(task_key).call.remote(fn_name, args, kwargs).result(timeout_s=self.timeout_s)

        try:
            return outside_event_loop(remote)
        except BackPressureError as exc:
            raise Busy(f"The {task_key} model tier is busy; please try again in a moment.") from exc


def outside_event_loop(fn: Callable[[], Any]) -> Any:
    """Run `fn` here, or in a worker thread when this thread runs an asyncio loop (a deployment
    handle's blocking `.result()` refuses to run inside one; Gradio's handlers have none)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


_current: InProcess | RayServe | None = None
_current_lock = threading.Lock()


def from_env() -> InProcess | RayServe:
    kind, address = backend_from_env()
    return InProcess() if kind == INPROCESS else RayServe(address)


def current() -> InProcess | RayServe:
    """The configured backend (decided once, from XRAY_BACKEND, unless `configure` was called)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = from_env()
        return _current


def configure(chosen: InProcess | RayServe | None) -> None:
    """Install a backend (app start-up flag, tests); None = decide again from the environment."""
    global _current
    with _current_lock:
        _current = chosen


def call(task_key: str, fn_name: str, *args: Any, **kwargs: Any) -> Any:
    """Run `fn_name` of `task_key` on the configured backend and return its plain result."""
    return current().call(task_key, fn_name, *args, **kwargs)
