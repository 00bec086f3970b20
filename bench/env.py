"""Environment of a benchmark run: quiet, offline unless --hub, threads fixed, and the app's
settings pointed at local models (tiny, or random at the real sizes; built once into a cache folder)
or the hub ids."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ROOT / "artifacts" / "bench-models"
FULL_MODELS = ROOT / "artifacts" / "bench-models-full"
SIZES = ("tiny", "full")


def prepare_environment(hub: bool) -> None:
    """Set before torch/transformers/gradio are imported (here and in child processes)."""
    if not hub:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "xray-mpl"))
    os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(tempfile.gettempdir(), "xray-gradio"))


def set_threads(threads: int | None) -> int:
    """Fix torch's intra-op threads and return the number. Default: torch's own default, which is
    what `python app.py` runs with (one per physical core)."""
    from demos.runtime import threads as threads_mod

    return threads_mod.configure(threads)


def default_models_dir(size: str = "tiny") -> Path:
    return FULL_MODELS if size == "full" else DEFAULT_MODELS


def configure_models(hub: bool, models_dir: str | os.PathLike | None = None, size: str = "tiny") -> str | None:
    """Point the app's settings at local models, built into `models_dir` if missing: the tiny ones
    (`size="tiny"`) or random models with the real configurations (`size="full"`, demos.provision.fullsize;
    the explorer then runs the packaged all-MiniLM-L6-v2), or at the default hub ids.
    Returns the models folder (None with --hub)."""
    from core import registry
    from demos.runtime import cache, loading, settings

    if hub:
        base = settings.settings_from_env()
        base.max_models = 16
        settings.configure(base)
        folder = None
    else:
        folder = Path(models_dir or default_models_dir(size))
        if size == "full":
            from demos.provision.fullsize import ensure_full_models

            built = ensure_full_models(folder, progress=lambda m: print(f"[bench] {m}", flush=True))
            overrides = {t.key: str(built[t.key]) for t in registry.TASKS if t.key in built}
        else:
            from demos.provision.tiny import TASKS, ensure_tiny_models

            built = ensure_tiny_models(folder, TASKS)
            overrides = {t.key: str(built[t.tiny_key]) for t in registry.TASKS if t.tiny_key in built}
        settings.configure(settings.Settings(overrides=overrides, offline=True, max_models=16))
        folder = str(folder.resolve())
    cache.clear_all()
    loading.clear()
    return folder


def begin_local_run(size: str, threads: int | None) -> tuple[float, float]:
    """The start of a benchmark on local models: offline environment, torch threads, settings
    pointed at the `size` models; returns (load average, perf_counter) at the start."""
    import time

    from bench.timing import load_average

    prepare_environment(False)
    set_threads(threads)
    configure_models(False, None, size)
    return load_average(), time.perf_counter()


def local_run_parser(description: str, out_name: str, tabs: tuple[str, ...]):
    """The options every local-model benchmark takes (size, quick, repeats, threads, tabs, out);
    each adds its own."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", choices=SIZES, default="tiny")
    p.add_argument("--quick", action="store_true", help="1 repeat, short inputs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tabs", nargs="+", default=list(tabs), choices=tabs)
    p.add_argument("--out", default=str(ROOT / "artifacts" / out_name))
    return p


def run_offline_bench(argv: list[str] | None, parse_args, run, markdown, show: bool = False) -> dict:
    """The main of a benchmark on local models: parse `argv`, set the offline environment, `run(args)`, write the
    result to `args.out` (JSON) with its `markdown(result)` beside it; `show` also prints the table."""
    args = parse_args(argv)
    prepare_environment(False)
    from bench.report import write_results

    result = run(args)
    table = markdown(result)
    write_results(args.out, result, table)
    if show:
        print(table)
    return result
