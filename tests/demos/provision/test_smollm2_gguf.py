"""The SmolLM2 preparation's bookkeeping, without the minute of dequantising (the conversion itself
is stubbed; tests/demos/provision/test_packaged_weights.py runs the real one): once, atomically,
one converter at a time across processes or threads, rebuilt when the converter changes."""
from __future__ import annotations

import json
import threading
import time

from demos.provision import smollm2_gguf


def _fake_convert(calls: list):
    def convert(gguf, out_dir):
        calls.append(out_dir)
        time.sleep(0.3)  # long enough for a second caller to arrive meanwhile
        (out_dir / "config.json").write_text("{}")
        return out_dir

    return convert


def test_two_first_starts_convert_once(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(smollm2_gguf, "convert", _fake_convert(calls))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    out = tmp_path / "pretrained" / "smollm2"
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(smollm2_gguf.ensure_converted(out, gguf))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [out, out] and len(calls) == 1
    assert smollm2_gguf.is_converted(out) and (out / "config.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == [".smollm2.lock", "smollm2"]  # no staging left
    assert smollm2_gguf.ensure_converted(out, gguf) == out and len(calls) == 1  # reused


def test_a_folder_from_an_older_converter_is_rebuilt(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(smollm2_gguf, "convert", _fake_convert(calls))
    out = tmp_path / "smollm2"
    out.mkdir()
    (out / smollm2_gguf.MARKER).write_text(json.dumps({"version": smollm2_gguf.VERSION - 1}))
    (out / "stale.txt").write_text("old")
    assert smollm2_gguf.ensure_converted(out, tmp_path / "model.gguf") == out
    assert len(calls) == 1 and not (out / "stale.txt").exists() and smollm2_gguf.is_converted(out)
