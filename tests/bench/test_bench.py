"""The benchmark command in quick mode: every section has positive numbers and the markdown
tables print. Timings are not asserted (they depend on the machine)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from core import registry

ROOT = Path(__file__).resolve().parents[2]


def _positive_numbers(obj, keys=("_s", "_mb", "rps", "ratio", "speedup")) -> list[float]:
    """Every timing / memory / rate value found anywhere in `obj`."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and any(k.endswith(s) or k == s for s in keys):
                found.append(float(v))
            else:
                found += _positive_numbers(v, keys)
    elif isinstance(obj, list):
        for v in obj:
            found += _positive_numbers(v, keys)
    return found


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    models = tmp_path / "models"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--models-dir", str(models), "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    tasks = res["meta"]["tasks"]
    assert tasks == [t.demo for t in registry.TASKS] and res["meta"]["machine"]["torch_threads"] == 1
    assert res["meta"]["machine"]["cpu_count"] >= 1 and res["meta"]["load_average_start"]

    for section in ("latency", "first_request", "attribution", "memory"):
        assert res[section], f"{section} is empty: {res['notes'].get(section)}"
    for name, row in res["latency"].items():
        assert row["app_s"] > 0 and row["plain_s"] > 0 and row["ratio"] > 0
        assert row["same_answer"], f"{name}: the app and the plain call disagree"
    for row in res["attribution"].values():
        assert row["app_s"] > 0 and row["captum_s"] > 0
        assert row["app_delta"] == pytest.approx(row["captum_delta"], abs=1e-5)  # same computation
    assert [r["steps"] for r in res["attribution_tradeoff"]] == res["meta"]["plan"]["tradeoff_steps"]
    assert len(res["scaling"]["sentiment"]) == len(res["meta"]["plan"]["tokens"])
    assert [r["seconds"] for r in res["scaling"]["speech"]] == res["meta"]["plan"]["seconds"]
    assert res["startup"]["app_s"] > 0 and res["startup"]["imports_s"] > 0
    assert {k.split(":")[0] for k in res["throughput"]} == {"sentiment", "clip"}
    for row in res["memory"].values():
        assert row["app"]["answer_peak_mb"] > 0 and row["plain"]["answer_peak_mb"] > 0
    numbers = _positive_numbers({k: v for k, v in res.items() if k != "meta"})
    assert numbers and all(x > 0 and math.isfinite(x) for x in numbers)

    assert "### Answer latency" in proc.stdout and "| sentiment |" in proc.stdout
    assert out.with_suffix(".md").read_text() in proc.stdout


def test_gpu_check_refuses_without_cuda_and_dry_runs_on_tiny_models(tmp_path, capsys):
    """bench.gpu is one short command on a CUDA machine; here (no GPU) it says so, and its dry run
    measures the same app paths on the tiny models."""
    import torch

    from bench import gpu
    from demos.runtime import settings

    old = settings.current()
    try:
        if not torch.cuda.is_available():
            assert gpu.main([]) == 2
            assert "No CUDA device" in capsys.readouterr().err
        out = tmp_path / "gpu.md"
        assert gpu.main(["--allow-cpu", "--tiny", "--repeats", "1", "--models", str(tmp_path / "m"), "--out", str(out)]) == 0
        text = out.read_text()
        assert "sentiment answer + 32-step IG" in text and "generation: 50 tokens" in text and "| 50 |" in text
    finally:
        settings.configure(old)
        from demos.runtime import cache, loading

        loading.device.cache_clear()
        loading.clear()
        cache.clear_all()
