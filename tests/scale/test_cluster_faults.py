"""The scaled-out app survives faults, proven with real processes on this machine: a front (a
`RayServe` backend) started before the tier exists, a two-node Ray cluster (a head and a worker,
each its own `ray start` process), the sentiment application on it (tiny model, 2 replicas, one
per node), and a class of 20 students asking in a loop while (b) the worker node is killed,
(a) a replica process is killed, (c) the application is redeployed with a new revision.

The drill runs as its own process (`python -m bench.load_scale --faults all`): Ray reads its
authentication token once per process, and a Ray driver whose cluster goes away is ended by Ray;
neither must touch the test process. Takes about 4 minutes on 2 busy CPUs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray[serve] is installed by scripts/setup.sh --scale")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FAULTS = ("node", "replica", "redeploy")
FULL_SERVICE_S = 30.0  # the target: all replicas back within this many seconds of each fault, on a quiet machine
# Full service waits for new replica processes (Python, Ray, torch, the model): on a busy machine
# that alone takes longer than the target. The bound is then what a fault adds to that cold start
# (`deploy_s`: both replicas from nothing): detection for a node; the rolling update of a redeploy
# replaces its replicas one after the other (capacity never below one replica).
COLD_STARTS = {"node": 1, "replica": 1, "redeploy": 2}


@pytest.fixture(scope="module")
def drill(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("drill") / "report.json"
    cmd = [sys.executable, "-m", "bench.load_scale", "--faults", ",".join(FAULTS), "--clients", "20",
           "--models", str(Path(tiny_models["sentiment"]).parent), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=480)
    assert out.exists(), f"the drill failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    print("\n".join(line for line in proc.stdout.splitlines() if not line.startswith(("INFO", "WARNING", "ERROR"))))
    return report


def test_a_front_started_before_the_tier_says_so_quickly_then_answers(drill):
    no_tier = drill["no_tier"]
    assert no_tier["kind"] == "unreachable" and no_tier["seconds"] < 5
    assert "try again in a few seconds" in no_tier["message"]
    assert no_tier["health"] == "Model tier: not ready (cannot be reached, it may be restarting). Answers may be refused for a few seconds."
    assert no_tier["reason"].startswith("nothing answers at 127.0.0.1")
    assert drill["came_alive"] and drill["health"].startswith("Model tier: ready")
    assert drill["replica_nodes"] == 2, "the two replicas should sit on the two nodes"


@pytest.mark.parametrize("phase", ["steady", *FAULTS])
def test_no_answer_is_mixed_lost_or_failed(drill, phase):
    p = drill["phases"][phase]
    assert p["requests"] > 20 and p["answered"] > 0
    assert p["mixed"] == 0 and p["lost"] == 0
    assert p["failed"] == 0, p["failures"]
    assert set(p["refused"]) <= {"busy", "replica died", "replica unavailable", "timeout", "unreachable",
                                 "not deployed", "not ready"}
    if phase == "steady":
        assert p["answered"] == p["requests"]


@pytest.mark.parametrize("fault", FAULTS)
def test_the_tier_is_back_to_full_service_after_each_fault(drill, fault):
    p = drill["phases"][fault]
    bound = max(FULL_SERVICE_S, COLD_STARTS[fault] * drill["deploy_s"] + 10)
    assert p["recovery_s"] is not None, p
    # a redeploy counts from when the command's new revision reaches the replicas (the command
    # itself first starts Python and joins the cluster: `replicas_changed_after_s`)
    took = p["recovery_from_change_s"] if fault == "redeploy" else p["recovery_s"]
    assert took <= bound, (bound, p)
    assert p["fewest_running_replicas"] >= 1, "one replica kept answering throughout"
    assert not p["refused"], "with one replica answering, nobody is refused"
    assert p["longest_gap_s"] < 10


def test_every_answer_is_the_students_own(drill):
    assert drill["expected"]["checked"] > 100 and drill["expected"]["wrong"] == 0
    assert drill["lost_students"] == 0
