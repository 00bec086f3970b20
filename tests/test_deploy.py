"""Deployment files: Space front matter, ZeroGPU wrapping, Dockerfile = the README's install."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with Space front matter"
    meta, key = {}, None
    for line in match.group(1).splitlines():
        if line.startswith("  - "):
            meta.setdefault(key, []).append(line[4:].strip())
        else:
            key, _, value = line.partition(":")
            meta[key] = value.strip().strip('"') or []
    return meta


def test_space_front_matter_matches_the_app():
    import gradio

    from core.registry import TASKS

    meta = _front_matter()
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == gradio.__version__
    assert (ROOT / meta["app_file"]).is_file()
    assert meta["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    listed = {m.split("/")[-1] for m in meta["models"]}
    for default, others in ((t.default_model, t.alternatives) for t in TASKS):
        for model in (default, *others):
            assert model.split("/")[-1] in listed, f"{model} missing from the README's models list"
    assert meta["suggested_hardware"]


def test_zero_gpu_wrapping(monkeypatch):
    from demos.runtime import gpu

    calls = []

    def fake_gpu(fn, duration):
        def run(*args, **kwargs):
            calls.append((duration(*args, **kwargs) if callable(duration) else duration, kwargs))
            return fn(*args, **kwargs)

        return run

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=fake_gpu))

    def work(text, target=None, method="ig", steps=32, progress=None):
        return f"{text}:{steps}:{progress}"

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert gpu.on_gpu(10)(work) is work  # off-Space: unchanged

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    from demos.runtime.compute import gpu_duration

    wrapped = gpu.on_gpu(gpu_duration(work, 15, 0.25))(work)
    assert wrapped is not work and wrapped.__name__ == "work"
    assert wrapped("a", None, "ig", 64, progress=print) == "a:64:None"  # progress cannot cross to the GPU worker
    assert calls[-1][0] == 15 + 16
    assert wrapped("a", steps=8) == "a:8:None" and calls[-1][0] == 15 + 2  # steps found by name, not position
    assert gpu.on_gpu(20)(work)("b") == "b:32:None" and calls[-1][0] == 20


def test_dockerfile_runs_the_readme_install_as_uid_1000():
    docker = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh" in docker and "bash scripts/setup.sh" in readme and "scripts/setup.sh" in ci
    assert re.search(r"useradd .*--uid 1000", docker) and re.search(r"^USER user$", docker, re.M)
    assert re.search(r"^EXPOSE 7860$", docker, re.M)
    assert "HF_HOME=/home/user/.cache/huggingface" in docker and 'VOLUME ["/home/user/.cache"]' in docker
    cmd = re.search(r"^CMD (.*)$", docker, re.M).group(1)
    assert '"app.py"' in cmd and '"0.0.0.0"' in cmd and '"7860"' in cmd
    for name in re.findall(r"^COPY --chown=user (\S+)", docker, re.M):
        assert (ROOT / name).exists() or name == "."
    assert "docker build" in readme and "docker run" in readme


@pytest.mark.slow
def test_app_main_starts_and_serves(tmp_path, tiny_models):
    """`python app.py` itself: starts offline from local folders and answers the first page."""
    import os
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XRAY_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    for task, folder in tiny_models.items():
        env[f"XRAY_MODEL_{task.upper()}"] = str(folder)
    env["XRAY_MODEL_EXPLORER"] = str(tiny_models["sentiment"])
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    assert r.status == 200 and b"Transformer X-Ray" in r.read()
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        else:
            pytest.fail("app.py did not serve its page within 120 s")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_busy_port_says_to_use_the_port_flag():
    import socket

    import app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        with pytest.raises(SystemExit) as info:
            app.main(["--host", "127.0.0.1", "--port", str(port)])
    message = str(info.value)
    assert f"Port {port}" in message and "--port" in message and "GRADIO_SERVER_PORT" not in message
    assert app.port_free("127.0.0.1", port)


def test_readme_test_command_is_what_ci_runs():
    """The README's test line is exactly .ci/run's commands (setup flags and the check script)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip().startswith("bash ")]
    quick = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    test_line = next(line for line in quick.splitlines() if "check.sh" in line)
    commands = [c.strip() for c in test_line.split("#", 1)[0].split("&&")]
    assert commands == ci, f"README runs {commands}, CI runs {ci}"
    app_line = next(line for line in quick.splitlines() if "app.py" in line)
    assert ".venv/bin/python app.py" in app_line and "keeps running" in app_line
    assert "<a CPU-only torch index>" not in readme and "download.pytorch.org/whl/cpu" in readme
    for line in readme.splitlines():  # every python command is runnable as written (the venv's python)
        assert not line.lstrip().startswith(("python ", "$ python ")), line
