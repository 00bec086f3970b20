"""bench.busy: the neighbour computes only while a busy call runs; bench.run --busy adds the busy
columns to the answer-path table (tiny models; timings not asserted)."""
from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from bench.busy import Busy


def _cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def test_the_neighbour_computes_during_a_busy_call_only_and_is_gone_after_close():
    with Busy(threads=1) as busy:
        pid = busy.pid
        before = _cpu_s(pid)
        time.sleep(0.4)  # paused
        paused = _cpu_s(pid) - before
        before = _cpu_s(pid)
        assert busy.during(lambda: time.sleep(0.4) or "done") == "done"
        running = _cpu_s(pid) - before
        with pytest.raises(ZeroDivisionError):  # paused again after a call that raised
            busy.during(lambda: 1 / 0)
        before = _cpu_s(pid)
        time.sleep(0.4)
        paused_after_error = _cpu_s(pid) - before
    assert paused < 0.05 and paused_after_error < 0.05, (paused, paused_after_error)
    assert running > 0.2, running  # one thread for 0.4 s
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_the_neighbour_dies_with_a_bench_that_was_killed():
    """A bench stopped by a signal runs no `close`: the paused neighbour must not outlive it."""
    import subprocess
    import sys

    code = "from bench.busy import Busy; b = Busy(1); print(b.pid, flush=True); import time; time.sleep(60)"
    root = Path(__file__).resolve().parents[2]
    bench = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=root)
    pid = int(bench.stdout.readline())
    assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
    bench.kill()
    bench.wait(10)
    bench.stdout.close()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_latency_with_a_busy_neighbour_reports_both_columns():
    from bench import report, sections

    with Busy(threads=1) as busy:
        rows, _ = sections.latency(["sentiment"], True, 1, busy)
    row = rows["sentiment"]
    assert row["busy_threads"] == 1 and row["busy_same_answer"]
    assert row["busy_ratio"] == pytest.approx(row["busy_app_s"] / row["busy_plain_s"])
    table = report._latency_table(rows)
    assert "busy ratio (≤1.2)" in table.splitlines()[0] and table.count("| sentiment |") == 1
    quiet, _ = sections.latency(["sentiment"], True, 1)
    assert "busy_ratio" not in quiet["sentiment"] and "busy" not in report._latency_table(quiet)
