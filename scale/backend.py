"""Where the front's computations run: in this process (default) or on the Ray Serve model tier.

    from scale import backend
    result = backend.call(task_key, "answer", text, model_id)   # the task's result type either way

`XRAY_BACKEND=inprocess` (default) calls the demos functions directly and never imports Ray;
`XRAY_BACKEND=ray` (joining the cluster at `XRAY_RAY_ADDRESS`, default "auto") or
`XRAY_BACKEND=ray://head:10001` (Ray Client) sends the call to the task's Serve application
(`python -m scale.serve_app`). Arguments and results are the plain result types (dataclasses of
numpy arrays), pickled by Ray; nothing of a session lives in the model tier, so any front replica
may call any model replica. A UI `progress` callback cannot cross the wire: it is dropped.

Faults of the tier (`classify`, `RayServe.call`): a front starts without the tier and joins it on
the first call (an address where nothing answers is "unreachable" within PROBE_S seconds); a
replica that dies or stops answering, a lost connection or a missing application make the call
run ONCE more on a fresh handle (answers and explanations are deterministic and side-effect free),
within XRAY_SERVE_TIMEOUT_S in all; a call that no replica takes within XRAY_SERVE_WAIT_S while
none runs ends with "not ready" at once. What cannot be answered raises `TierUnavailable` (a
`Busy`: the tab shows its message, what happened and what to do) and logs one line. `health()`
says whether the tier can answer now, and why not.

Function names (`fn_name`), resolved the same way on both paths (`resolve`):
  "answer" / "attribution"   the task's registered answer / attribution function (core.registry);
  an explainer's name        demos.explain.catalog registered for the task: run(task, result, **params);
  any other public function of the task's compute module (demos.<demo>), except `load`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import os
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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
log = logging.getLogger(__name__)


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


TIMEOUT_S = _seconds("XRAY_SERVE_TIMEOUT_S", 600.0)  # longest a call may take in all (an attribution of a long input)
WAIT_S = _seconds("XRAY_SERVE_WAIT_S", 10.0)  # then, if no replica has taken the call, ask whether any is running
CONNECT_S = _seconds("XRAY_SERVE_CONNECT_S", 20.0)  # longest a call waits for this front to join the cluster
PROBE_S = 2.0  # TCP check of the cluster's address before joining (ray.init itself retries for minutes)
RECHECK_S = 2.0  # a failed join is not tried again sooner: meanwhile calls get the same answer at once
RETRY_PAUSE_S = 0.5  # before the one retry: Serve's router learns of the dead replica, the controller of the new one


class UnknownFunction(LookupError):
    """`fn_name` is not a servable function of the task."""


class Busy(RuntimeError):
    """The model tier refused the call: its queue for this task is full (try again shortly)."""


class TierUnavailable(Busy):
    """The model tier cannot answer this call now: unreachable, not deployed, (re)starting, or too
    slow. The message says what happened and what to do (the UI shows it as it is, like `Busy`);
    `kind` names the fault (one of FAULTS), `detail` what Ray said (for the log and `health`)."""

    def __init__(self, message: str, kind: str, detail: str = "") -> None:
        super().__init__(message)
        self.kind, self.detail = kind, detail


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
    from demos.explain import catalog, tasks

    module = tasks.module(task_key)

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


# ---- results by their recipe ----

RECIPE = "_xray_recipe"  # the attribute of a result noting the call that made it (`ui.session.remember`)


@dataclass(frozen=True)
class ResultRef:
    """How to get a result back: `backend.call(task, fn, *args, **kwargs)` (memo or recompute: the compute
    functions are deterministic). A session stores a large result as this (`ui.session`), and an explanation sent
    to the model tier carries it in place of the result (`by_recipe`)."""

    task: str
    fn: str
    args: tuple
    kwargs: tuple  # (name, value) pairs

    def resolve(self) -> Any:
        return call(self.task, self.fn, *self.args, **dict(self.kwargs))


def by_recipe(value: Any) -> Any:
    """`value` as the recipe noted on it, its files shipped (`ship`), to be made again where it is used: on the
    model tier the answer's memo still holds it, so an explanation's call carries a few hundred bytes instead of
    the result (attention maps and hidden states: megabytes). A value without a recipe: itself."""
    recipe = getattr(value, RECIPE, None)
    if not isinstance(recipe, ResultRef):
        return value
    args, kwargs = ship(recipe.task, recipe.args, dict(recipe.kwargs))
    return ResultRef(recipe.task, recipe.fn, args, tuple(sorted(kwargs.items())))


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
    return (
        isinstance(value, (str, os.PathLike))
        and len(str(value)) < 4096
        and "\n" not in str(value)
        and os.path.isfile(value)
    )


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
    """The inverse of `ship` (and of `by_recipe`) on the model tier: `Shipped` values become local file paths, a
    `ResultRef` the result it stands for, computed here (a memo hit when this replica made it)."""
    folder = folder or ship_folder()

    def local(value: Any) -> Any:
        if isinstance(value, Shipped):
            return value.materialise(folder)
        if isinstance(value, ResultRef):
            args, kwargs = unship(value.args, dict(value.kwargs), folder)
            return resolve(value.task, value.fn)(*args, **kwargs)
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

    def health(self, tasks: Any = None, max_age_s: float = 5.0) -> Health:
        return Health(True, "")


def app_name(task_key: str) -> str:
    """The Serve application of a task (one per task: each scales and updates on its own)."""
    return f"xray-{registry.get(task_key).key}"


# ---- faults of the model tier ----

BUSY = "busy"  # the deployment's queue at this front is full (Serve's BackPressureError)
REPLICA = "replica died"  # the replica (or its node) died with the call in it
UNAVAILABLE = "replica unavailable"  # the replica does not answer (network, its node going)
TIMEOUT = "timeout"  # the call outlived its time bound
UNREACHABLE = "unreachable"  # no cluster at the address, the connection to it lost, or not joined yet
MISSING = "not deployed"  # no Serve instance, no application of the task, or it failed to deploy
NOT_READY = "not ready"  # the application exists but no replica runs (starting, restarting, cannot be placed)
FAULTS = (BUSY, REPLICA, UNAVAILABLE, TIMEOUT, UNREACHABLE, MISSING, NOT_READY)
# Answers and explanations are deterministic and side-effect free: after these, the call runs once
# more (a fresh handle: another replica, a redeployed application, a rejoined cluster).
RETRIED = frozenset({REPLICA, UNAVAILABLE, UNREACHABLE, MISSING})

_UNREACHABLE_MESSAGE = (
    "The model tier cannot be reached right now (it may be restarting). Please try again in a few seconds."
)
_UNREACHABLE_TEXT = (
    "Ray has not been started yet",
    "Ray Client is not connected",
    "Failed to connect to GCS",
    "Cannot invoke RPC on closed channel",  # this one and the next: Ray Client
    "reconnection grace period",
)
_MISSING_TEXT = ("does not exist", "no Serve instance running", "failed to deploy")


def classify(exc: BaseException) -> str | None:
    """The fault of the model tier that `exc` (raised by a deployment handle call) stands for, or
    None when it is the computation's own error (bad input, a model that failed to load: raised
    as it is). The classes are those of ray 2.60 (ray.exceptions, ray.serve.exceptions)."""
    import concurrent.futures

    from ray import exceptions as rx
    from ray.serve import exceptions as sx

    if isinstance(exc, TierUnavailable):
        return exc.kind
    if isinstance(exc, sx.BackPressureError):
        return BUSY
    if isinstance(exc, rx.RayTaskError):  # the replica ran the call and the call raised
        return REPLICA if isinstance(getattr(exc, "cause", None), rx.ActorDiedError) else None
    if isinstance(exc, rx.ActorUnavailableError):
        return UNAVAILABLE
    if isinstance(
        exc,
        (
            rx.RayActorError,
            rx.WorkerCrashedError,
            rx.NodeDiedError,
            rx.ObjectLostError,
            rx.TaskCancelledError,
            rx.OutOfMemoryError,
            sx.ReplicaUnavailableError,
        ),
    ):
        return REPLICA  # ActorDiedError is a RayActorError; RequestCancelledError a TaskCancelledError
    if isinstance(exc, sx.DeploymentUnavailableError):
        return MISSING
    text = str(exc)
    if isinstance(exc, sx.RayServeException) and any(t in text for t in _MISSING_TEXT):
        return MISSING
    if isinstance(exc, (TimeoutError, concurrent.futures.TimeoutError)):  # GetTimeoutError is a TimeoutError
        return TIMEOUT
    if isinstance(exc, (ConnectionError, rx.RaySystemError, rx.RpcError)) or any(t in text for t in _UNREACHABLE_TEXT):
        return UNREACHABLE
    return None


def fault_message(kind: str, task_key: str, detail: str = "", timeout_s: float = TIMEOUT_S) -> str:
    """What the student reads: what happened and what to do."""
    title = registry.get(task_key).title
    return {
        BUSY: f"The {title} model tier is busy; please try again in a moment.",
        REPLICA: f"The {title} model restarted while computing your request. Please run it again in a few seconds.",
        UNAVAILABLE: (
            f"The {title} model is not answering (the model tier is restarting). Please try again in a few seconds."
        ),
        TIMEOUT: (
            f"The {title} model did not answer within {timeout_s:.0f} s, so the request was stopped. "
            "Try a shorter input or fewer steps, or try again in a minute."
        ),
        UNREACHABLE: _UNREACHABLE_MESSAGE,
        MISSING: f"The {title} model is not deployed on the model tier right now (it may be redeploying). "
        "Please try again in a few seconds.",
        NOT_READY: f"The {title} model is starting or restarting{f' ({detail})' if detail else ''}. "
        "Please try again in a few seconds.",
    }[kind]


def _name(state: Any) -> str:
    """'RUNNING' for Serve's ApplicationStatus.RUNNING (a str enum prints its class name too)."""
    return str(getattr(state, "value", state))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}"


@dataclass(frozen=True)
class Health:
    """Whether the backend can answer now: `ok`, else `reason` (for the page and a readiness
    probe); `apps` says, per task, how its application stands ("RUNNING 2/2 replicas")."""

    ok: bool
    reason: str = ""
    apps: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        """One line for the page (no addresses or Ray messages: those are in `reason`)."""
        if self.ok:
            return "Model tier: ready" + (f" ({len(self.apps)} task{'s' * (len(self.apps) != 1)})" if self.apps else "")
        down = [
            f"{registry.get(k).title}: {v if v == 'not deployed' else v.split(' ')[0].lower().replace('_', ' ')}"
            for k, v in self.apps.items()
            if not v.startswith("RUNNING") or v.startswith("RUNNING 0/")
        ]
        return (
            "Model tier: not ready ("
            + ("; ".join(down) if down else "cannot be reached, it may be restarting")
            + "). Answers may be refused for a few seconds."
        )


class RayServe:
    """Calls the task's Serve deployment through a deployment handle (one per task, cached).

    Nothing is contacted at start: the first call joins the cluster at `address` (a TCP check first,
    so an address where nothing runs answers "unreachable" in at most PROBE_S seconds, not after
    Ray's minutes of retries), and the front comes alive whenever the tier does. A failed call is
    classified (`classify`); replica deaths, lost connections and missing applications drop the
    cached handle and run the call once more, within the same time bound; otherwise, and after a
    second failure, the student gets a `TierUnavailable` saying what happened, and the log ONE line.
    A call no replica takes within `wait_s` (none running: starting, restarting, or cannot be
    placed) ends at once with "not ready" instead of waiting out `timeout_s`.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = "auto",
        timeout_s: float = TIMEOUT_S,
        wait_s: float = WAIT_S,
        connect_s: float = CONNECT_S,
    ) -> None:
        self.address, self.timeout_s, self.wait_s, self.connect_s = address, timeout_s, wait_s, connect_s
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._joining: threading.Thread | None = None
        self._join_error: TierUnavailable | None = None
        self._recheck_at = 0.0
        self._status_cache: tuple[float, Any] = (0.0, None)
        self._made: list = []  # every handle resolved (`close` shuts their routers down)
        self._generation = 0  # joins so far: a loss seen by a call is acted on once, not after a new join
        self.counts: Counter = Counter()  # answered / retried / refused:<kind>, for tests and operators

    # ---- joining the cluster ----

    def _client_mode(self) -> bool:
        return str(self.address or "").startswith("ray://")

    def _target(self) -> tuple[str, int] | None:
        """(host, port) to check before joining; None when there is nothing to check."""
        address = self.address
        if address in (None, "local"):
            return None
        if address == "auto":
            from ray._private.services import canonicalize_bootstrap_address

            address = canonicalize_bootstrap_address("auto")  # ConnectionError when no cluster is known here
            if address is None:
                return None
        host, _, port = str(address).removeprefix("ray://").rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)

    def _connect(self) -> None:
        """Join the cluster (once; again after a lost connection), or raise TierUnavailable."""
        import ray

        if ray.is_initialized():
            return
        _no_auto_init()
        if self.address is None:
            raise TierUnavailable(
                _UNREACHABLE_MESSAGE, UNREACHABLE, "this process has joined no Ray cluster (address None)"
            )
        with self._lock:
            if ray.is_initialized():
                return
            if self._joining is None or not self._joining.is_alive():
                now = time.monotonic()
                if now < self._recheck_at and self._join_error is not None:
                    raise self._join_error
                self._join_error = None
                try:
                    target = self._target()
                    if target is not None:
                        socket.create_connection(target, timeout=PROBE_S).close()
                except (OSError, ValueError) as exc:
                    self._recheck_at = now + RECHECK_S
                    self._join_error = TierUnavailable(
                        _UNREACHABLE_MESSAGE, UNREACHABLE, f"nothing answers at {self.address} ({_first_line(exc)})"
                    )
                    raise self._join_error from None
                self._joining = threading.Thread(target=self._join, name="xray-ray-join", daemon=True)
                self._joining.start()
            joining = self._joining
        joining.join(self.connect_s)
        if ray.is_initialized():
            return
        if self._join_error is not None:
            raise self._join_error
        raise TierUnavailable(
            "Joining the model tier is taking longer than usual. Please try again in a few seconds.",
            UNREACHABLE,
            f"joining {self.address} takes more than {self.connect_s:.0f} s",
        )

    def _join(self) -> None:
        import ray

        try:
            ray.init(address=self.address, namespace="serve", log_to_driver=False)
            self._generation += 1
        except Exception as exc:  # reported to the callers as "unreachable"
            self._recheck_at = time.monotonic() + RECHECK_S
            self._join_error = TierUnavailable(
                _UNREACHABLE_MESSAGE, UNREACHABLE, f"joining {self.address} failed ({_first_line(exc)})"
            )

    def _handle(self, task_key: str) -> Any:
        with self._lock:
            handle = self._handles.get(task_key)
        if handle is not None:
            return handle
        self._connect()
        import ray
        from ray import serve

        if not ray.is_initialized():  # lost meanwhile: Serve would start a cluster of its own here
            raise ConnectionError("the connection to the cluster was lost")
        handle = serve.get_app_handle(app_name(task_key))  # RayServeException when it is not deployed
        with self._lock:
            self._made.append(handle)
            return self._handles.setdefault(task_key, handle)

    def close(self) -> None:
        """Shut down the routers of every handle this backend resolved (before `ray.shutdown()`:
        their background metrics tasks would otherwise fail noisily once Ray is gone)."""
        with self._lock:
            made, self._made = self._made, []
            self._handles.clear()
        for handle in made:
            _quietly(handle.shutdown)

    def _forget(self, task_key: str, kind: str, used: Any) -> None:
        """Drop what a fault made stale, unless a concurrent call already did (the cached handle is
        no longer the one `used`): the task's handle and Serve's cached controller (it may have
        restarted); after a lost cluster every handle and, with Ray Client, the connection, so the
        next call joins again. Handles are dropped, not shut down: other calls may still be
        running on them (on healthy replicas)."""
        with self._lock:
            if self._handles.get(task_key) is not used:
                return
            self._handles.pop(task_key, None)
            if kind == UNREACHABLE:
                self._handles.clear()
        try:
            from ray.serve import context

            context._set_global_client(None)  # rediscover the controller by name (a private API of ray 2.60)
        except Exception:  # best effort
            pass
        if kind == UNREACHABLE:
            self._lost(self._generation)

    def _lost(self, generation: int) -> None:
        """The cluster is gone. A Ray Client connection is not re-established by itself: close it
        (and the handles' routers) so that the next call joins again, maybe a restarted tier.
        (A front joined as a driver cannot rejoin: Ray ends it 60 s after losing the head.)"""
        if not self._client_mode():
            return
        import ray

        with self._lock:
            if generation != self._generation:
                return  # already closed and joined again since
            self._generation += 1
            made, self._made = self._made, []
            self._handles.clear()
        for handle in made:
            threading.Thread(target=_quietly, args=(handle.shutdown,), daemon=True).start()
        closing = threading.Thread(target=_quietly, args=(ray.shutdown,), daemon=True)
        closing.start()
        closing.join(PROBE_S * 2)

    # ---- the tier's state ----

    def _status(self, max_age_s: float = 1.0) -> Any:
        """serve.status(), bounded in time (a worker thread) and shared by calls for `max_age_s`."""
        at, status = self._status_cache
        if status is not None and time.monotonic() - at < max_age_s:
            return status
        from concurrent.futures import ThreadPoolExecutor
        from concurrent.futures import TimeoutError as FutureTimeout

        import ray
        from ray import serve

        generation = self._generation

        def status_now() -> Any:
            if not ray.is_initialized():  # Serve would start a cluster of its own
                raise ConnectionError("the connection to the cluster was lost")
            return serve.status()

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xray-serve-status")
        try:
            status = pool.submit(status_now).result(timeout=max(PROBE_S, 5.0))
        except Exception as exc:
            if not isinstance(exc, FutureTimeout) and classify(exc) != UNREACHABLE:
                raise
            self._lost(generation)
            raise TierUnavailable(_UNREACHABLE_MESSAGE, UNREACHABLE, f"Serve's status: {_first_line(exc)}") from None
        finally:
            pool.shutdown(wait=False)
        self._status_cache = (time.monotonic(), status)
        return status

    def app_state(self, task_key: str) -> tuple[bool, str]:
        """(whether a replica of the task's application is running, else why not)."""
        app = self._status().applications.get(app_name(task_key))
        if app is None:
            return False, "not deployed"
        running = sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())
        if running:
            return True, f"{_name(app.status)} {running} replica(s) running"
        why = " ".join((app.message or "").split()) or " ".join(
            " ".join(d.message.split()) for d in app.deployments.values() if d.message
        )
        return False, _name(app.status) + (f": {why[:300]}" if why else "")

    def health(self, tasks: list[str] | tuple[str, ...] | None = None, max_age_s: float = 5.0) -> Health:
        """Ready to answer every task in `tasks` (default: every deployed one)? Bounded in time:
        a few seconds at most, whatever the state of the cluster; Serve's status is asked at most
        once per `max_age_s` (every open page may show it)."""
        try:
            self._connect()
            status = self._status(max_age_s=max_age_s)
        except TierUnavailable as exc:
            return Health(False, getattr(exc, "detail", "") or str(exc))
        except Exception as exc:  # a health check reports, it does not raise
            return Health(False, f"the model tier does not answer ({_first_line(exc)})")
        keys = list(tasks) if tasks is not None else [k for k in registry.KEYS if app_name(k) in status.applications]
        if not keys:
            return Health(False, "no task is deployed on the model tier")
        apps, missing = {}, []
        for key in keys:
            app = status.applications.get(app_name(key))
            if app is None:
                apps[key] = "not deployed"
                missing.append(key)
                continue
            states = [d.replica_states for d in app.deployments.values()]
            running = sum(s.get("RUNNING", 0) for s in states)
            total = sum(sum(s.values()) for s in states)
            apps[key] = f"{_name(app.status)} {running}/{total} replicas"
            if not running:
                missing.append(key)
        if missing:
            return Health(False, "; ".join(f"{k}: {apps[k]}" for k in missing), apps)
        return Health(True, "", apps)

    # ---- a call ----

    def _await_replica(self, response: Any, task_key: str, deadline: float) -> None:
        """Wait until a replica takes the call. Every `wait_s` without one, ask Serve: a running
        replica means the call is queued behind others (keep waiting, Serve bounds that queue);
        none (starting, restarting, or cannot be placed) ends the call with "not ready" now."""
        assigned = getattr(response, "_fetch_future_result_sync", None)
        if assigned is None:  # another Ray version: only the overall time bound applies
            return
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no replica took the call within {self.timeout_s:.0f} s")
                try:
                    assigned(min(self.wait_s, left))
                    return
                except TimeoutError:
                    serving, why = self.app_state(task_key)
                    if not serving:
                        raise TierUnavailable(
                            fault_message(NOT_READY, task_key, why.split(":")[0].lower()), NOT_READY, why
                        ) from None
        except BaseException:
            _quietly(response.cancel)
            raise

    def _once(self, task_key: str, fn_name: str, args: tuple, kwargs: dict, deadline: float, used: list) -> Any:
        handle = self._handle(task_key)
        used.append(handle)
        response = handle.call.remote(fn_name, args, kwargs)
        self._await_replica(response, task_key, deadline)
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within {self.timeout_s:.0f} s")
            return response.result(timeout_s=left)
        except TimeoutError:
            _quietly(response.cancel)  # frees the replica of a call nobody waits for any more
            raise

    def call(self, task_key: str, fn_name: str, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("progress", None)  # a UI callback: it cannot cross the wire
        canonical(task_key, fn_name)  # unknown aliases fail here, before any network call
        args = tuple(by_recipe(a) for a in args)  # a result goes down as its recipe
        args, kwargs = ship(task_key, args, kwargs)
        deadline = time.monotonic() + self.timeout_s
        first: str = ""
        while True:
            used: list = []
            try:
                result = outside_event_loop(
                    functools.partial(self._once, task_key, fn_name, args, kwargs, deadline, used)
                )
            except Exception as exc:  # classified below; the computation's own errors re-raised
                kind = classify(exc)
                if kind is None:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, Exception) and _is_ray_task_error(exc):
                        raise cause from None  # its own message, not the replica's traceback text
                    raise
                detail = getattr(exc, "detail", "") or _first_line(exc)
                final = isinstance(exc, TierUnavailable)  # this backend's own verdict: joining failed, not ready
                if kind in RETRIED and not final:
                    self._forget(task_key, kind, used[0] if used else None)
                if kind in RETRIED and not final and not first and deadline - time.monotonic() > RETRY_PAUSE_S + 1:
                    first = f"{kind} ({detail})"
                    self.counts["retries"] += 1
                    time.sleep(RETRY_PAUSE_S)
                    continue
                self.counts[f"refused:{kind}"] += 1
                log.warning(
                    "model tier: %s %s refused, %s (%s)%s",
                    task_key,
                    fn_name,
                    kind,
                    detail,
                    f"; first try: {first}" if first else "",
                )
                if isinstance(exc, TierUnavailable):
                    raise exc from None
                raise TierUnavailable(fault_message(kind, task_key, timeout_s=self.timeout_s), kind, detail) from None
            self.counts["answered"] += 1
            if first:
                self.counts["answered after a retry"] += 1
                log.warning("model tier: %s %s answered on its second try (first try: %s)", task_key, fn_name, first)
            return result


def _is_ray_task_error(exc: BaseException) -> bool:
    from ray.exceptions import RayTaskError

    return isinstance(exc, RayTaskError)


def _quietly(fn: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):  # cleaning up after a fault: nothing more to do
        fn()


def _no_auto_init() -> None:
    """A front must never start a Ray cluster of its own: Ray's API calls (and Serve's) call
    `ray.init()` when Ray is not initialised, e.g. after a lost Ray Client connection."""
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    try:
        from ray._private import auto_init_hook

        auto_init_hook.enable_auto_connect = False
    except Exception:  # another Ray version: the environment variable is set
        pass


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


def health(tasks: list[str] | tuple[str, ...] | None = None, max_age_s: float = 5.0) -> Health:
    """Whether the configured backend can answer now (in-process: always), with the reason if not."""
    return current().health(tasks, max_age_s)
