"""Generation attribution against Inseq at equal steps: every generated token of one continuation attributed to
the tokens before it, integrated gradients with the same number of steps, on the same model object.

    python -m bench.inseq_generation --size full          # 5 new tokens after an 18-word prompt, 32 steps

Three sides, interleaved repeats after a warm-up, the app's memo cleared before every call:
- `app_all`: `demos.generation.attribute_all(ids, n_prompt, steps=32)`: every generated token in one batched pass
  (what the Generation tab's "Explain every generated token" runs);
- `app_each`: `demos.generation.attribute(ids, p, steps=32)` once per generated position (the tab's one-token
  attribution, asked once per token);
- `inseq`: `inseq.load_model(model, "integrated_gradients").attribute(prompt, generated_text, n_steps=32)`.

Inseq is not a dependency of the app (its wheel asks for older releases and CUDA libraries); install it
beside the venv without its dependencies and put it on the path:

    .venv/bin/pip install --target /tmp/inseq-site --no-deps inseq jaxtyping wadler_lindig "typeguard<=2.13.3" treescope
    PYTHONPATH=/tmp/inseq-site .venv/bin/python -m bench.inseq_generation --size full

Writes artifacts/bench-inseq.json and .md (never committed).
"""
from __future__ import annotations

import argparse
import time

from bench.env import ROOT, configure_models, run_offline_bench, set_threads

# 21 tokens in the GPT-2 tokenizer
PROMPT = "The old lighthouse keeper climbed the narrow stairs every evening to light the lamp before the storm"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "full"), default="full")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--tokens", type=int, default=5, help="generated tokens attributed")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "artifacts" / "bench-inseq.json"))
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    import inseq

    from bench.sections import _clear_memo
    from bench.timing import interleaved, load_average, machine_info
    from demos import generation

    threads = set_threads(args.threads)
    configure_models(False, None, args.size)
    result = generation.generate(args.prompt, args.tokens)
    m = generation.load()
    tok, ids, first = m.processor, result.ids, result.n_prompt
    model = inseq.load_model(m.model, "integrated_gradients", tokenizer=tok)
    prompt, text = tok.decode(ids[:first]), tok.decode(ids)
    steps = args.steps
    runs = {
        "app_all": lambda: generation.attribute_all(ids, first, steps=steps),
        "app_each": lambda: [generation.attribute(ids, p, steps=steps) for p in range(first, len(ids))],
        "inseq": lambda: model.attribute(input_texts=prompt, generated_texts=text, n_steps=steps, show_progress=False),
    }
    load_start, started = load_average(), time.perf_counter()
    res = interleaved(runs, args.repeats, warmup=1, before=_clear_memo)
    attributed = res["inseq"]["value"].sequence_attributions[0]
    inseq_targets = len(attributed.target) - len(attributed.source) if attributed.source else None
    out = {
        "model": f"{type(m.model).__name__} {m.model_id} ({m.model.config.num_hidden_layers} layers)",
        "prompt_tokens": first,
        "generated_tokens": len(ids) - first,
        "inseq_targets": inseq_targets,
        "steps": steps,
        "repeats": args.repeats,
        "threads": threads,
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "duration_s": time.perf_counter() - started,
        "machine": machine_info(),
    }
    for name, r in res.items():
        out[f"{name}_s"], out[f"{name}_min_s"] = r["median_s"], r["min_s"]
    out["ratio_all"] = out["app_all_s"] / out["inseq_s"]
    out["ratio_each"] = out["app_each_s"] / out["inseq_s"]
    return out


def markdown(r: dict) -> str:
    s = lambda v: f"{v:.2f} s"  # noqa: E731
    return "\n".join(
        [
            f"{r['model']}; {r['prompt_tokens']}-token prompt, {r['generated_tokens']} generated tokens attributed "
            f"(Inseq: {r['inseq_targets']}), integrated gradients, {r['steps']} steps; {r['threads']} torch threads; "
            f"{r['repeats']} interleaved repeats; load average {r['load_average_start']} -> {r['load_average_end']}; "
            f"{r['started']}.",
            "",
            "| side | median | min | ratio to Inseq (medians) |",
            "|---|---|---|---|",
            f"| app, every token in one pass (`attribute_all`) | {s(r['app_all_s'])} | {s(r['app_all_min_s'])} | "
            f"{r['ratio_all']:.2f}× |",
            f"| app, one token at a time (`attribute` × {r['generated_tokens']}) | {s(r['app_each_s'])} | "
            f"{s(r['app_each_min_s'])} | {r['ratio_each']:.2f}× |",
            f"| Inseq 0.7.1 `integrated_gradients` | {s(r['inseq_s'])} | {s(r['inseq_min_s'])} | 1.00× |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    return run_offline_bench(argv, parse_args, run, markdown, show=True)


if __name__ == "__main__":
    main()
