"""Every way a call to the Ray Serve model tier can fail, with a fake deployment handle (no Ray
cluster: fast). Each class of failure is retried once on a fresh handle or refused with a clear
message (`TierUnavailable`, a `Busy`: the tab shows it as it is), and the server logs ONE line
without a traceback. Also: a front that starts where nothing runs answers "unreachable" in
seconds, and a front replica that restarts (a session no front knows) asks the student to run the
answer again instead of showing a traceback or someone else's result."""
from __future__ import annotations

import importlib
import logging
import socket
import time

import gradio as gr
import pytest

from core import registry
from scale import backend
from scale.backend import TierUnavailable

ray = pytest.importorskip("ray", reason="ray[serve] is installed by scripts/setup.sh --scale")
rx = pytest.importorskip("ray.exceptions")
sx = pytest.importorskip("ray.serve.exceptions")

TEXT = "A warm and funny film."


def task_error(cause: Exception):
    """What a handle raises when the replica ran the call and the call raised `cause`."""
    trace = f"Traceback (most recent call last):\n  File \"/srv/demos/x.py\", line 1\n{type(cause).__name__}: {cause}"
    return rx.RayTaskError("call", trace, cause, proctitle="ray::SentimentModel", pid=1, ip="127.0.0.1").as_instanceof_cause()


def deployment_unavailable():
    from ray.serve._private.common import DeploymentID

    return sx.DeploymentUnavailableError(DeploymentID(name="SentimentModel", app_name="xray-sentiment"))


# (exception raised by the handle call, its class of fault)
FAULTS = [
    ("ActorDiedError", lambda: rx.ActorDiedError(), backend.REPLICA),
    ("RayActorError", lambda: rx.RayActorError(), backend.REPLICA),
    ("WorkerCrashedError", lambda: rx.WorkerCrashedError(), backend.REPLICA),
    ("NodeDiedError", lambda: rx.NodeDiedError("node 1 died"), backend.REPLICA),
    ("ReplicaUnavailableError", lambda: sx.ReplicaUnavailableError("SentimentModel#abc"), backend.REPLICA),
    ("RequestCancelledError", lambda: sx.RequestCancelledError("r1"), backend.REPLICA),
    ("task-error-actor-died", lambda: task_error(rx.ActorDiedError()), backend.REPLICA),
    ("ActorUnavailableError", lambda: rx.ActorUnavailableError("Actor is unavailable.", None), backend.UNAVAILABLE),
    ("GetTimeoutError", lambda: rx.GetTimeoutError("Get timed out: some object(s) not ready."), backend.TIMEOUT),
    ("TimeoutError", lambda: TimeoutError("Timed out resolving to ObjectRef."), backend.TIMEOUT),
    ("BackPressureError", lambda: sx.BackPressureError(num_queued_requests=64, max_queued_requests=64), backend.BUSY),
    ("ConnectionError", lambda: ConnectionError("GCS unreachable"), backend.UNREACHABLE),
    ("not-initialised", lambda: rx.RaySystemError("Ray has not been started yet. You can start Ray with 'ray.init()'."),
     backend.UNREACHABLE),
    ("client-gone", lambda: Exception("Ray Client is not connected. Please connect by calling `ray.init`."), backend.UNREACHABLE),
    ("client-channel-closed", lambda: ValueError("Cannot invoke RPC on closed channel!"), backend.UNREACHABLE),
    ("app-missing", lambda: sx.RayServeException("Application 'xray-sentiment' does not exist."), backend.MISSING),
    ("no-serve", lambda: sx.RayServeException("There is no Serve instance running on this Ray cluster."), backend.MISSING),
    ("DeploymentUnavailableError", deployment_unavailable, backend.MISSING),
]
IDS = [f[0] for f in FAULTS]


class Response:
    """A fake DeploymentResponse: taken by a replica at once (or never), then `outcome`."""

    def __init__(self, outcome, assigned: bool = True) -> None:
        self.outcome, self.assigned, self.cancelled = outcome, assigned, False

    def _fetch_future_result_sync(self, timeout):
        if not self.assigned:
            time.sleep(min(timeout, 0.05))
            raise TimeoutError("Timed out resolving to ObjectRef.")
        if isinstance(self.outcome, sx.BackPressureError):
            raise self.outcome  # refused before any replica took it

    def result(self, timeout_s=None):
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self):
        self.cancelled = True


class Handle:
    """A fake deployment handle; `handle.call.remote(fn, args, kwargs)` plays the next outcome."""

    def __init__(self, tier: Tier, n: int) -> None:
        self.tier, self.n = tier, n

    @property
    def call(self):
        return self

    def remote(self, fn_name, args, kwargs):
        self.tier.calls.append((self.n, fn_name, args))
        outcome = self.tier.script.pop(0)
        response = outcome if isinstance(outcome, Response) else Response(outcome)
        self.tier.responses.append(response)
        return response


class Tier(backend.RayServe):
    """RayServe whose handles are fakes; every handle it resolves is a new one (a fresh router)."""

    def __init__(self, script, state=(True, "RUNNING"), **kwargs) -> None:
        super().__init__(address=None, **{"timeout_s": 30.0, "wait_s": 0.2, **kwargs})
        self.script, self.state = list(script), state
        self.calls, self.responses, self.resolved = [], [], 0

    def _handle(self, task_key):
        with self._lock:
            if task_key not in self._handles:
                outcome = self.script[0]
                if isinstance(outcome, BaseException) and getattr(outcome, "_on_resolve", False):
                    self.script.pop(0)
                    raise outcome  # serve.get_app_handle itself failed (no application, no cluster)
                self.resolved += 1
                self._handles[task_key] = Handle(self, self.resolved)
            return self._handles[task_key]

    def app_state(self, task_key):
        return self.state


def answer():
    from demos import sentiment

    return sentiment.analyse(TEXT)


def lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "scale.backend"]


@pytest.mark.parametrize("name, make, kind", FAULTS, ids=IDS)
def test_each_failure_is_classified(name, make, kind):
    assert backend.classify(make()) == kind


def test_the_computations_own_errors_are_not_tier_faults():
    assert backend.classify(task_error(ValueError("Please enter some text."))) is None
    assert backend.classify(KeyError("x")) is None
    assert backend.classify(task_error(backend.UnknownFunction("no such function"))) is None


RETRIED = [f for f in FAULTS if f[2] in backend.RETRIED]


@pytest.mark.parametrize("name, make, kind", RETRIED, ids=[f[0] for f in RETRIED])
def test_a_retried_fault_is_answered_once_more_on_a_fresh_handle(caplog, name, make, kind):
    want = answer()
    tier = Tier([make(), want])
    with caplog.at_level(logging.INFO, logger="scale.backend"):
        got = tier.call("sentiment", "answer", TEXT)
    assert got is want
    assert [c[0] for c in tier.calls] == [1, 2], "the second try must use a fresh handle"
    assert tier.counts["answered after a retry"] == 1 and tier.counts["retries"] == 1
    (record,) = lines(caplog)
    assert "second try" in record.getMessage() and kind in record.getMessage()
    assert record.exc_info is None and "\n" not in record.getMessage()


@pytest.mark.parametrize("name, make, kind", RETRIED, ids=[f[0] for f in RETRIED])
def test_a_fault_twice_is_refused_with_a_clear_message_and_one_log_line(caplog, name, make, kind):
    tier = Tier([make(), make()])
    with caplog.at_level(logging.INFO, logger="scale.backend"), pytest.raises(TierUnavailable) as info:
        tier.call("sentiment", "answer", TEXT)
    assert info.value.kind == kind and isinstance(info.value, backend.Busy)
    message = str(info.value)
    assert message == backend.fault_message(kind, "sentiment")
    assert "try again" in message.lower() or "run it again" in message.lower()
    assert "Traceback" not in message and "Error" not in message
    assert len(tier.calls) == 2  # retried ONCE
    (record,) = lines(caplog)
    assert "refused" in record.getMessage() and "first try" in record.getMessage()
    assert record.exc_info is None and "\n" not in record.getMessage()


@pytest.mark.parametrize("make, kind", [
    (lambda: rx.GetTimeoutError("Get timed out: some object(s) not ready."), backend.TIMEOUT),
    (lambda: TimeoutError("Timed out resolving to ObjectRef."), backend.TIMEOUT),
    (lambda: sx.BackPressureError(num_queued_requests=64, max_queued_requests=64), backend.BUSY),
], ids=["GetTimeoutError", "TimeoutError", "BackPressureError"])
def test_timeouts_and_back_pressure_are_refused_at_once(caplog, make, kind):
    tier = Tier([make(), answer()])
    with caplog.at_level(logging.INFO, logger="scale.backend"), pytest.raises(TierUnavailable) as info:
        tier.call("sentiment", "answer", TEXT)
    assert info.value.kind == kind and len(tier.calls) == 1
    assert str(info.value) == backend.fault_message(kind, "sentiment", timeout_s=tier.timeout_s)
    if kind == backend.TIMEOUT:
        assert tier.responses[0].cancelled, "a timed-out call must be cancelled (it frees the replica)"
    assert len(lines(caplog)) == 1


def test_busy_keeps_its_message():
    tier = Tier([sx.BackPressureError(num_queued_requests=64, max_queued_requests=64)])
    with pytest.raises(backend.Busy, match="busy; please try again in a moment"):
        tier.call("sentiment", "answer", TEXT)


def test_the_computations_own_error_keeps_its_message_without_the_replicas_traceback():
    tier = Tier([task_error(ValueError("Please enter some text."))])
    with pytest.raises(ValueError) as info:
        tier.call("sentiment", "answer", TEXT)
    assert str(info.value) == "Please enter some text."  # not the remote traceback text Ray puts in str()
    assert len(tier.calls) == 1 and not tier.counts.get("retries")


def test_an_application_that_appears_is_picked_up_by_the_same_backend():
    missing = sx.RayServeException("Application 'xray-sentiment' does not exist.")
    missing._on_resolve = True
    tier = Tier([missing, missing])
    with pytest.raises(TierUnavailable) as info:
        tier.call("sentiment", "answer", TEXT)
    assert info.value.kind == backend.MISSING and "not deployed" in str(info.value)
    want = answer()
    tier.script = [want]  # deployed now
    assert tier.call("sentiment", "answer", TEXT) is want


def test_no_running_replica_answers_not_ready_within_the_wait_not_the_timeout():
    tier = Tier([Response(answer(), assigned=False)], state=(False, "DEPLOYING: 1 replica cannot be scheduled"),
                timeout_s=600.0, wait_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(TierUnavailable) as info:
        tier.call("sentiment", "answer", TEXT)
    assert time.monotonic() - t0 < 5
    assert info.value.kind == backend.NOT_READY and "starting or restarting (deploying)" in str(info.value)
    assert "cannot be scheduled" in info.value.detail
    assert tier.responses[0].cancelled and len(tier.calls) == 1  # not retried: the tier said why


def test_a_call_queued_behind_others_keeps_waiting_while_replicas_run():
    want = answer()
    slow = Response(want, assigned=False)
    tier = Tier([slow], wait_s=0.05)
    states = iter([(True, "RUNNING"), (True, "RUNNING")])

    def state(task_key):
        try:
            return next(states)
        except StopIteration:
            slow.assigned = True  # the queue moved
            return (True, "RUNNING")

    tier.app_state = state
    assert tier.call("sentiment", "answer", TEXT) is want


def test_no_retry_when_the_time_bound_is_spent():
    tier = Tier([rx.ActorDiedError(), answer()], timeout_s=1.0)
    with pytest.raises(TierUnavailable) as info:
        tier.call("sentiment", "answer", TEXT)
    assert info.value.kind == backend.REPLICA and len(tier.calls) == 1


def test_the_ui_guard_shows_the_message_without_a_traceback(caplog):
    from ui.common import guarded

    @guarded
    def handler(text):
        return Tier([ConnectionError("lost"), ConnectionError("lost")]).call("sentiment", "answer", text)

    with caplog.at_level(logging.INFO), pytest.raises(gr.Error) as info:
        handler(TEXT)
    assert info.value.message == backend.fault_message(backend.UNREACHABLE, "sentiment")
    assert info.value.print_exception is False
    assert not [r for r in caplog.records if r.exc_info]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_front_where_no_tier_runs_says_unreachable_in_seconds(monkeypatch):
    if ray.is_initialized():
        pytest.skip("this process already joined a Ray cluster")
    from ray._private import auto_init_hook

    monkeypatch.setenv("RAY_ENABLE_AUTO_CONNECT", "0")  # what the backend sets (restored afterwards)
    monkeypatch.setattr(auto_init_hook, "enable_auto_connect", auto_init_hook.enable_auto_connect)
    tier = backend.RayServe(address=f"127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    with pytest.raises(TierUnavailable) as info:
        tier.call("sentiment", "answer", TEXT)
    assert time.monotonic() - t0 < backend.PROBE_S + 1
    assert info.value.kind == backend.UNREACHABLE and "cannot be reached" in str(info.value)
    t1 = time.monotonic()
    health = tier.health(["sentiment"])
    assert not health.ok and "nothing answers at 127.0.0.1" in health.reason and time.monotonic() - t1 < 1
    assert health.line().startswith("Model tier: not ready (cannot be reached") and "127.0.0.1" not in health.line()
    assert backend.Health(False, "x", {"sentiment": "DEPLOYING 0/2 replicas", "qa": "RUNNING 1/1 replicas"}).line() == (
        "Model tier: not ready (Sentiment: deploying). Answers may be refused for a few seconds.")
    assert not ray.is_initialized()  # no local cluster was started instead
    assert backend.InProcess().health().ok


# ---------------------------------------------------------------- a front replica that restarts

def _state_handlers(module: str):
    """Every event handler of a tab that reads a session state (gr.State), with the state inputs."""
    with gr.Blocks() as demo:
        importlib.import_module(module).build()
    for fn in demo.fns.values():
        states = [i for i, c in enumerate(fn.inputs) if isinstance(c, gr.State)]
        if states and fn.fn is not None:
            yield fn, states


TABS = [spec.tab for spec in registry.TASKS]


@pytest.mark.parametrize("module", TABS)
def test_a_session_no_front_knows_is_asked_to_run_the_answer_again(module):
    """A front replica restarted, or the balancer moved the student: the new front has no state
    for the session (Gradio gives each gr.State its initial value, None). Every handler that reads
    a result then either does nothing or says, clearly, what to run first; none shows a traceback,
    the generic error, or a result (there is none to show: sessions are per front)."""
    from ui.common import GENERIC_ERROR

    checked = 0
    for fn, states in _state_handlers(module):
        args = [None if i in states else getattr(c, "value", None) for i, c in enumerate(fn.inputs)]
        try:
            out = fn.fn(*args)
        except gr.Error as exc:
            assert exc.message and exc.message != GENERIC_ERROR and "Traceback" not in exc.message, (fn.name, exc.message)
        else:
            values = out.values() if isinstance(out, dict) else (out if isinstance(out, (list, tuple)) else [out])
            assert not any(hasattr(v, "__dataclass_fields__") for v in values), f"{fn.name} produced a result"
        checked += 1
    assert checked, f"{module}: no handler reads a session state"


def _front(build, started: list):
    """A front on a free loopback port of its own (two fronts must never share one)."""
    from gradio_client import Client

    from bench.serve import free_port

    demo = build()
    demo.queue(max_size=32, default_concurrency_limit=2)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                            ssr_mode=False, quiet=True)
    started.append(demo)
    return Client(url, verbose=False)


@pytest.mark.slow
def test_an_explanation_on_another_front_asks_for_the_answer_again_never_another_students(request):
    """Two fronts, one page. Student A's answer lives on front 1; on front 2 (after a restart of
    front 1) A's explanation asks A to classify again, although another student has a result on
    front 2; once A runs the answer on front 2, the explanation works there."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from tests.conftest import tab_app

    started: list = []
    request.addfinalizer(lambda: [demo.close() for demo in started])
    front1, front2 = _front(tab_app("ui.sentiment"), started), _front(tab_app("ui.sentiment"), started)
    assert front1.src != front2.src
    a_text, b_text = "Student A found the film warm and funny.", "Student B found it cold and dull."
    front1.predict(a_text, api_name="/sentiment")
    front2.predict(b_text, api_name="/sentiment")
    moved = Client(front2.src, verbose=False)
    moved.session_hash = front1.session_hash  # A's browser, now talking to front 2
    with pytest.raises(AppError) as info:
        moved.predict("predicted class", "integrated_gradients", 4, False, api_name="/sentiment_attribution")
    assert str(info.value) == "Classify a text first."
    label = moved.predict(a_text, api_name="/sentiment")[0]
    assert label["label"]
    summary = moved.predict("predicted class", "integrated_gradients", 4, False, api_name="/sentiment_attribution")[0]
    assert summary


# ---------------------------------------------------------------- sizing a one-machine trial

def test_a_local_trial_is_sized_to_the_machine_and_what_cannot_be_placed_is_named():
    from scale.config import ServeConfig
    from scale.serve_app import fit_problem, local_cpus

    config = ServeConfig()  # 1 CPU per replica, 1..2 replicas per task
    assert fit_problem(8, config, 2.0).startswith("8 tasks x 1 replica(s) x 1 CPU need 8 CPUs; the cluster has 2: only 2 of 8")
    share = local_cpus(2, 8, config)
    assert share == 0.12  # every task's largest number of replicas fits 2 CPUs
    assert fit_problem(8, ServeConfig(cpus=share), 2.0) == ""
    assert 8 * config.max_replicas * share <= 2.0
    assert "XRAY_SERVE_CPUS=0.25" in fit_problem(8, config, 2.0)
