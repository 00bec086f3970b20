"""What a browser session keeps of a result, and for how long.

A large result (a 512-token input: 12 heads x 512^2 attention per layer, ~48 MB) is not held by
the session: its `gr.State` holds a `ResultRef`, the recipe that made it (task, compute function,
arguments), and the result itself lives once in the server's byte-bounded memo (`demos.runtime.cache`,
`XRAY_CACHE_MB`). Every handler gets the result back (`resolve`, applied by `ui.common.guarded`):
a memo hit when it is still there, the same computation again when it was evicted (the compute
functions are deterministic: greedy decoding, seeded sampling). So what a class holds is bounded
by the memo's budget, not by sessions x tabs x input length. Small results (below
`XRAY_SESSION_REF_MB`, default 4 MiB) stay in the session as they are.

The sweeper ends what nobody uses: every `XRAY_SWEEP_S` seconds it drops the Gradio sessions idle
for longer than `XRAY_STATE_TTL_S` (their state, and on a page with deep links the figures Gradio keeps
per session for them, which `gr.State`'s own TTL does not release), the memo entries idle as long, and gives the
freed memory back to the operating system (`demos.runtime.heap`).

A new session costs little (`lazy_session_config`): Gradio 6 builds, for every new session, the
configuration of every component of the page (on the server's event loop, where it holds up every
other request) only to keep it for deep links; the app builds each one
when it is first read instead. Gradio also keeps in it a copy of every value a session was served
(a long input's heatmaps and bertviz page: megabytes per tab), again for deep links; this page
has no deep link button, so those copies are not made.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import inspect
import logging
import os
import threading
import time
import weakref
from types import SimpleNamespace
from typing import Any

from demos.runtime import heap
from scale.backend import RECIPE, ResultRef  # ResultRef: what a session stores of a large result

log = logging.getLogger(__name__)



def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def ttl_seconds() -> float:
    return _env_number("XRAY_STATE_TTL_S", 900.0)


def ref_from_bytes() -> int:
    return int(_env_number("XRAY_SESSION_REF_MB", 4.0) * 2**20)


def remember(result: Any, task: str, fn: str, args: tuple, kwargs: dict) -> Any:
    """Note on `result` the call that made it (results from a task's compute functions)."""
    if hasattr(result, "__dataclass_fields__"):
        with contextlib.suppress(AttributeError, TypeError):  # slots or a read-only object: kept as it is
            object.__setattr__(result, RECIPE, ResultRef(task, fn, tuple(args), tuple(sorted(kwargs.items()))))
    return result


def keep(value: Any) -> Any:
    """What a session stores for `value`: its recipe when it is large and has one, else itself."""
    from demos.runtime.cache import nbytes

    recipe = getattr(value, RECIPE, None)
    if recipe is None or nbytes(value) < ref_from_bytes():
        return value
    return recipe


def keep_outputs(outputs: Any) -> Any:
    """A handler's {component: value} with `keep` applied to the tabs' result states."""
    if isinstance(outputs, dict):
        return {c: keep(v) if getattr(c, "xray_result", False) else v for c, v in outputs.items()}
    return outputs


def resolve(value: Any) -> Any:
    """The result a session's stored value stands for."""
    return value.resolve() if isinstance(value, ResultRef) else value


# ---------------------------------------------------------------- the sweeper

_apps: weakref.WeakSet[Any] = weakref.WeakSet()
_started = threading.Lock()
_thread: threading.Thread | None = None


def sweep_interval() -> float:
    return _env_number("XRAY_SWEEP_S", max(5.0, min(60.0, ttl_seconds() / 4)))


def sweep(demo: Any, ttl: float | None = None) -> int:
    """Drop `demo`'s sessions idle for more than `ttl` seconds (state deleted through Gradio, so
    State delete callbacks run) and memo entries idle as long. Returns the sessions dropped."""
    from demos.runtime import cache

    ttl = ttl_seconds() if ttl is None else ttl
    holder = getattr(demo, "state_holder", None)
    dropped = 0
    if holder is not None:
        cutoff = datetime.datetime.now() - datetime.timedelta(seconds=ttl)
        for session_id, used in list(holder.time_last_used.items()):
            if used < cutoff:
                holder.delete_state(session_id)
                with holder.lock:
                    holder.session_data.pop(session_id, None)
                    holder.time_last_used.pop(session_id, None)
                dropped += 1
    expired = cache.expire_idle(ttl)
    if dropped or expired:  # a full collection only when something was let go (it holds the GIL)
        gc.collect()
        heap.trim()
    return dropped


class LazyConfigs(dict):
    """`SessionState.config_values` built on demand: `config_for_block` of a block when its entry
    is first read (an event's outputs, a deep link), not of every block at session start. Reading
    it whole (`items`, `values`, iteration: the deep link) builds what is missing, in page order,
    so it then holds what Gradio's eager dict holds."""

    def __init__(self, blocks_config: Any, ids: list[int]) -> None:
        super().__init__()
        self._config, self._order, self._pending = blocks_config, ids, set(ids)

    def __missing__(self, key: int) -> dict:
        if key not in self._pending:
            raise KeyError(key)
        value = self._config.config_for_block(key, [], self._config.blocks[key])
        self[key] = value
        return value

    def __setitem__(self, key: int, value: Any) -> None:
        self._pending.discard(key)
        super().__setitem__(key, value)

    def __contains__(self, key: object) -> bool:
        return key in self._pending or super().__contains__(key)

    def __len__(self) -> int:
        return len(self._pending) + super().__len__()

    def _fill(self) -> None:
        if self._pending:
            for key in self._order:
                if key in self._pending:
                    self.__missing__(key)
            built = dict(super().items())
            super().clear()
            super().update({k: built[k] for k in self._order if k in built})
            super().update({k: v for k, v in built.items() if k not in self._order})

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def items(self):  # type: ignore[override]
        self._fill()
        return super().items()

    def values(self):  # type: ignore[override]
        self._fill()
        return super().values()

    def keys(self):  # type: ignore[override]
        self._fill()
        return super().keys()

    def get(self, key: Any, default: Any = None) -> Any:
        return self.get(key, default)


def has_deep_links(blocks: Any) -> bool:
    """Whether the page offers deep links (a `gr.DeepLinkButton`), i.e. reads what sessions were served."""
    import gradio as gr

    found = getattr(blocks, "_xray_deep_links", None)
    if found is None:
        found = any(isinstance(b, gr.DeepLinkButton) for b in blocks.blocks.values())
        blocks._xray_deep_links = found
    return found


def lazy_session_config() -> bool:
    """New Gradio sessions build their components' configuration on demand (`LazyConfigs`), and,
    on a page without deep links, do not keep a copy of every value they were served.
    Gradio is pinned (requirements.txt); if its SessionState no longer looks as this expects,
    nothing is changed and False is returned (tests/demos/runtime/test_memory.py checks both ways agree)."""
    from gradio import state_holder

    base = state_holder.SessionState
    if getattr(base, "xray_lazy", False):
        return True
    try:
        src = inspect.getsource(base.__init__)
    except (OSError, TypeError):
        return False
    if "if k in blocks.blocks" not in src or "config_for_block(k, [], v)" not in src:
        log.warning("Gradio's SessionState changed: session configurations stay eager")
        return False

    class LazySessionState(base):  # type: ignore[misc, valid-type]
        xray_lazy = True

        def __init__(self, blocks: Any) -> None:
            # Gradio's own __init__, shown no blocks to configure; then the same keys, on demand
            super().__init__(SimpleNamespace(default_config=blocks.default_config, blocks={}))
            ids = [k for k in self.blocks_config.blocks if k in blocks.blocks]
            self.config_values = LazyConfigs(self.blocks_config, ids)
            self.keeps_values = has_deep_links(blocks)

        def _update_value_in_config(self, key: int, value: Any) -> None:
            # Gradio copies every value a session was served (a 512-token heatmap's JSON, a bertviz
            # page) into its configuration, for a deep link to restore; a page without a deep link
            # button never reads them, so they are not kept.
            if self.keeps_values:
                super()._update_value_in_config(key, value)

    state_holder.SessionState = LazySessionState
    return True


def start_sweeper(demo: Any) -> None:
    """Sweep `demo` (and every other app of this process) every `sweep_interval()` seconds."""
    global _thread
    _apps.add(demo)
    with _started:
        if _thread is not None and _thread.is_alive():
            return

        def loop() -> None:
            while True:
                time.sleep(sweep_interval())
                for app in list(_apps):
                    try:
                        dropped = sweep(app)
                        if dropped:
                            log.info("sweeper: %d idle session(s) ended", dropped)
                    except Exception:  # the sweeper must outlive one bad pass
                        log.exception("sweeper pass failed")

        _thread = threading.Thread(target=loop, name="xray-sweeper", daemon=True)
        _thread.start()
