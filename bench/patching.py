"""Cost of activation patching on generation: `python -m bench.patching [--size full] [--models DIR]`.

A 12-token prompt (with the local tokenizer the built models carry) and its corrupted twin (one word
swapped, same length); the median time of the
`patch` explainer (memo cleared before each call) for the residual grid alone (layers x 12 positions,
one batched pass per layer) and for all three grids, against one forward pass of the prompt. With
`--size full` only the generation model is built (distilgpt2's real configuration, random weights).
"""
from __future__ import annotations

import argparse
import time

PROMPT = "The capital of France is the name of the"  # 12 tokens with the tiny/full builds' tokenizer
CORRUPTED = "The capital of Spain is the name of the"


def configure(size: str, models: str | None) -> str:
    """Point the generation task at a tiny or full-size local model (built once) and return its folder."""
    from pathlib import Path

    from bench.env import default_models_dir, prepare_environment
    from demos.runtime import cache, loading, settings

    prepare_environment(False)
    folder = Path(models or default_models_dir(size))
    if size == "full":
        from demos.provision.fullsize import ensure_full_models

        built = ensure_full_models(folder, ["generation"], progress=lambda m: print(f"[patching] {m}", flush=True))
    else:
        from demos.provision.tiny import ensure_tiny_models

        built = ensure_tiny_models(folder, ["generation"])
    settings.configure(settings.Settings(overrides={"generation": str(built["generation"])}, offline=True))
    cache.clear_all()
    loading.clear()
    return str(built["generation"])


def _median(fn, repeats: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of this process (all threads) of `fn()`, memo cleared.
    CPU seconds hardly move when other processes share the machine; wall seconds do."""
    from demos.runtime import cache

    wall, cpu = [], []
    for _ in range(repeats):
        cache.clear_all()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return sorted(wall)[len(wall) // 2], sorted(cpu)[len(cpu) // 2]


def measure(repeats: int) -> dict:
    import torch

    from demos import generation
    from demos.explain import catalog

    result = generation.generate(PROMPT, 1)
    m = generation.load()
    ids = torch.tensor([result.ids[: result.n_prompt]])
    patch = catalog.get("patch")
    patch.run("generation", result, corrupted=CORRUPTED, grids=("residual",))  # warm-up
    with torch.no_grad():
        forward = _median(lambda: m.model(input_ids=ids), repeats)
    residual = _median(lambda: patch.run("generation", result, corrupted=CORRUPTED, grids=("residual",)), repeats)
    every = _median(lambda: patch.run("generation", result, corrupted=CORRUPTED), repeats)
    got = patch.run("generation", result, corrupted=CORRUPTED)
    row = {"tokens": result.n_prompt, "layers": len(got.grid("residual").layers), "threads": torch.get_num_threads()}
    for name, (wall, cpu) in (("forward", forward), ("residual_grid", residual), ("all_grids", every)):
        row.update({f"{name}_s": round(wall, 3), f"{name}_cpu_s": round(cpu, 3)})
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--models", default=None, help="folder holding (or to build) the generation model")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    from bench.env import set_threads

    set_threads(args.threads)
    folder = configure(args.size, args.models)
    row = {"size": args.size, "model": folder, **measure(args.repeats)}
    print(f"[patching] {row}", flush=True)
    return row


if __name__ == "__main__":
    main()
