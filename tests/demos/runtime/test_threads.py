"""demos.runtime.threads: every computation runs on the torch threads that fit beside what else the CPUs
run: the configured number on a quiet machine, fewer beside a busy neighbour, given back afterwards."""
from __future__ import annotations

import threading

import pytest
import torch

from bench.busy import Busy
from demos.runtime import loading
from demos.runtime import threads as T


@pytest.mark.parametrize(
    ("wanted", "cpus", "others", "expected"),
    [
        (2, 2, None, 2),  # unknown (no /proc/loadavg): as configured
        (2, 2, 0, 2),  # quiet
        (2, 2, 1, 1),  # one other thread: one core left
        (2, 2, 5, 1),  # never fewer than one
        (4, 8, 4, 4),  # they all fit
        (4, 8, 5, 3),  # the CPUs left over
        (1, 2, 3, 1),
    ],
)
def test_threads_fit_beside_the_others(wanted, cpus, others, expected):
    assert T.threads_for(wanted, cpus, others) == expected


def test_runnable_others_reads_the_kernels_running_count(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_own_running", lambda: 1)  # only the caller runs in this process (not a torch
    # worker still spinning after the test before, which the count would rightly take as ours)
    path = tmp_path / "loadavg"
    path.write_text("0.50 0.40 0.30 3/120 4242\n")
    assert T.runnable_others(path) == 2  # three running, one of them the caller
    path.write_text("0.50 0.40 0.30 1/120 4242\n")
    assert T.runnable_others(path) == 0
    path.write_text("garbled")
    assert T.runnable_others(path) is None
    assert T.runnable_others(tmp_path / "missing") is None


@pytest.fixture
def two_threads(monkeypatch):
    """Two torch threads on two CPUs, whatever the machine; the session's threads given back after."""
    before = T.configured()
    monkeypatch.setattr(T, "cpus", lambda: 2)
    T.configure(2)
    yield
    T.configure(before)


def _inside() -> tuple[int, int]:
    """(torch threads inside a task's computation, in the same thread after it), in a fresh thread as a server's
    worker would run it."""
    seen: list[int] = []

    @loading.one_at_a_time("sentiment")
    def compute() -> None:
        seen.append(torch.get_num_threads())

    def worker() -> None:
        compute()
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    return seen[0], seen[1]


def test_a_computation_runs_on_fewer_threads_only_while_others_run(two_threads, monkeypatch, tmp_path):
    path = tmp_path / "loadavg"
    monkeypatch.setattr(T, "LOADAVG", path)
    path.write_text("0.1 0.1 0.1 1/100 1\n")  # only the caller
    assert _inside() == (2, 2)
    path.write_text("2.0 1.5 1.0 3/100 1\n")  # two others
    assert _inside() == (1, 2)
    monkeypatch.setenv("XRAY_ADAPTIVE_THREADS", "0")  # switched off: as configured
    assert _inside() == (2, 2)


def test_beside_a_real_busy_neighbour_a_computation_takes_one_thread(two_threads):
    with Busy(threads=2) as busy, busy.running():
        inside, after = _inside()
    assert (inside, after) == (1, 2)


def test_a_computation_that_calls_another_keeps_its_choice(two_threads, monkeypatch, tmp_path):
    path = tmp_path / "loadavg"
    monkeypatch.setattr(T, "LOADAVG", path)
    path.write_text("2.0 1.5 1.0 3/100 1\n")
    seen = []

    @loading.one_at_a_time("sentiment")
    def inner() -> None:
        path.write_text("0.1 0.1 0.1 1/100 1\n")  # the machine went quiet meanwhile: the inner call keeps 1
        seen.append(torch.get_num_threads())

    @loading.one_at_a_time("sentiment")
    def outer() -> None:
        inner()
        seen.append(torch.get_num_threads())

    outer()
    assert seen == [1, 1] and torch.get_num_threads() == 2
