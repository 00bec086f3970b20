"""Peak resident memory per tab, each (tab, side) measured in its own process.

Sides: "app" (the tab's compute path, then its attribution), "plain" (the plain transformers
call) and "captum" (the tab's result, then plain Captum with its default of all steps in one
batch); "imports" is a process that only imports what the others import.

Two methods. "fresh" (full mode): one new interpreter per (tab, side), peak RSS (VmHWM) as a
user's process would see it. "fork" (--quick): one interpreter imports everything once and forks a
child per (tab, side). A forked child does not count the parent's library pages until it touches
them, so its peaks are lower than a fresh process's: compare them with each other only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.env import configure_models, prepare_environment, set_threads
from bench.timing import peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURES = ("DistilBertForSequenceClassification", "DistilBertForQuestionAnswering", "MarianMTModel",
                 "GPT2LMHeadModel", "ViTForImageClassification", "WhisperForConditionalGeneration", "CLIPModel")


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _side(name: str, side: str, quick: bool, steps: int, threads: int | None) -> dict:
    """Run one side of one tab in this (forked) process and report peak RSS after each phase."""
    from bench import attribution, tasks

    set_threads(threads)  # in the child: an OpenMP pool started before fork() would deadlock here
    out: dict = {"start_mb": rss_mb()}
    if side == "imports":
        for n in tasks.TASKS:
            with contextlib.suppress(ImportError):
                tasks.demo(n)
        out["answer_peak_mb"] = peak_rss_mb()
    elif side == "app":
        tasks.spec(name, quick).app()
        out["answer_peak_mb"] = peak_rss_mb()
        if name in attribution.BUILDERS:
            spec = attribution.attr_spec(name, quick)
            spec.app(spec.prepare(), steps)
            out["attribution_peak_mb"] = peak_rss_mb()
    elif side == "plain":
        tasks.spec(name, quick).make_baseline()()
        out["answer_peak_mb"] = peak_rss_mb()
    elif side == "captum":
        spec = attribution.attr_spec(name, quick)
        prepared = spec.prepare()
        out["answer_peak_mb"] = peak_rss_mb()
        spec.make_captum()(prepared, steps)
        out["attribution_peak_mb"] = peak_rss_mb()
    return out


def _fork(name: str, side: str, quick: bool, steps: int, threads: int | None) -> dict:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        try:
            payload = {"ok": True, **_side(name, side, quick, steps, threads)}
        except BaseException as exc:  # reported to the parent
            payload = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        with os.fdopen(write, "w") as fh:
            fh.write(json.dumps(payload))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data) if data else {"ok": False, "error": "child died"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="peak memory per tab (forked children)")
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--hub", action="store_true")
    p.add_argument("--models-dir")
    p.add_argument("--size", default="tiny")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--one", help="fresh method: run only this side of the single task given")
    args = p.parse_args(argv)
    prepare_environment(args.hub)
    from bench import attribution, tasks

    if args.one:
        configure_models(args.hub, args.models_dir, args.size)
        print(
            json.dumps({"ok": True, **_side(args.tasks[0], args.one, args.quick, args.steps, args.threads)}), flush=True
        )
        return
    import captum.attr  # noqa: F401 - imported once here, not in each child
    import transformers

    configure_models(args.hub, args.models_dir, args.size)
    for cls in ARCHITECTURES:
        getattr(transformers, cls)
    transformers.pipeline  # noqa: B018 - resolve the lazy attribute before forking
    available = []
    for name in args.tasks:
        try:
            tasks.demo(name)
            available.append(name)
        except ImportError as exc:
            print(json.dumps({"task": name, "skipped": str(exc)}), flush=True)
    print(json.dumps({"imports_mb": rss_mb()}), flush=True)
    for name in available:
        sides = ["app", "plain"] + (["captum"] if name in attribution.BUILDERS else [])
        row = {"task": name}
        for side in sides:
            row[side] = _fork(name, side, args.quick, args.steps, args.threads)
        print(json.dumps(row), flush=True)


def _base_cmd(
    hub: bool, models_dir: str | None, quick: bool, threads: int, steps: int, size: str = "tiny"
) -> list[str]:
    cmd = [sys.executable, "-m", "bench.memory", "--threads", str(threads), "--steps", str(steps), "--size", size]
    cmd += ["--quick"] if quick else []
    return cmd + (["--hub"] if hub else ["--models-dir", models_dir] if models_dir else [])


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _sides(name: str) -> list[str]:
    from bench import attribution

    return ["app", "plain"] + (["captum"] if name in attribution.BUILDERS else [])


def _fresh(names: list[str], base: list[str]) -> tuple[dict, list[str]]:
    """One new interpreter per (tab, side), run one after another."""
    from bench import tasks

    def one(name: str, side: str) -> dict:
        proc = subprocess.run([*base, "--tasks", name, "--one", side], cwd=ROOT, capture_output=True, text=True)
        lines = _json_lines(proc.stdout)
        return lines[-1] if proc.returncode == 0 and lines else {"ok": False, "error": proc.stderr[-800:]}

    imports = one(names[0], "imports").get("answer_peak_mb")
    rows, notes = {}, []
    for name in names:
        try:
            tasks.demo(name)
        except ImportError as exc:
            notes.append(f"{name}: skipped ({exc})")
            continue
        rows[name] = {side: one(name, side) for side in _sides(name)}
        rows[name]["imports_mb"] = imports
    return rows, notes


def _forked(names: list[str], base: list[str]) -> tuple[dict, list[str]]:
    proc = subprocess.run([*base, "--tasks", *names], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        return {}, [f"memory helper failed: {proc.stderr[-1500:]}"]
    rows, notes, imports = {}, [], None
    for item in _json_lines(proc.stdout):
        if "imports_mb" in item:
            imports = item["imports_mb"]
        elif "skipped" in item:
            notes.append(f"{item['task']}: skipped ({item['skipped']})")
        else:
            rows[item.pop("task")] = {**item, "imports_mb": imports}
    return rows, notes


def measure(
    names: list[str], hub: bool, models_dir: str | None, quick: bool, threads: int, steps: int, size: str = "tiny"
) -> tuple[dict, list[str]]:
    """task -> {side: {answer_peak_mb, attribution_peak_mb, ...}, imports_mb, method}.
    Fresh interpreters in full mode, forked children with --quick (see the module docstring)."""
    base = _base_cmd(hub, models_dir, quick, threads, steps, size)
    method = "fork" if quick else "fresh"
    rows, notes = (_forked if quick else _fresh)(names, base)
    for name, row in rows.items():
        row["method"] = method
        for side in ("app", "plain", "captum"):
            if side in row and not row[side].get("ok"):
                notes.append(f"{name}: memory of the {side} side failed: {row[side].get('error')}")
    return rows, notes


if __name__ == "__main__":
    main()
