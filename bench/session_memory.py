"""Memory per session at full size: bytes of one 512-token result per tab, as stored and as float32,
and what a class of N sessions x 4 tabs holds (results are held by reference: a session keeps the
memo's own object, so sessions with the same input share one copy; see tests/test_memory.py).

    python -m bench.session_memory [--sessions 30] [--tokens 512] [--size full]

Prints a markdown table. Each tab's result is computed once by the app's own compute function on
the full-size random models (demos.fullsize); the class figures are sums of those exact byte
counts (demos.cache.nbytes), for distinct inputs (every session its own results) and for one shared
input per tab, and after the sessions' state expired (only the memos' budget, XRAY_CACHE_MB).
"Before" is float32 attention, memos of 8 results per task and state without a TTL (Gradio 6
already stored the memo's object in State without copying it).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench.env import configure_models, prepare_environment, set_threads

TABS = ("sentiment", "qa", "translation", "generation")
MB = 1e6


def _float32_bytes(value) -> int:
    """nbytes of `value` had every float16 array been kept float32 (what results held before)."""
    from demos.cache import nbytes

    total, stack, seen = 0, [value], set()
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            if id(item) not in seen:
                seen.add(id(item))
                total += item.nbytes * (2 if item.dtype == np.float16 else 1)
        elif hasattr(item, "__dataclass_fields__"):
            stack.extend(getattr(item, f) for f in item.__dataclass_fields__)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return max(total, nbytes(value))


def tab_results(tokens: int) -> dict:
    """tab -> (result, seconds): one `tokens`-token input through each tab's compute function."""
    from bench.inputs import text_of_tokens
    from demos import generation, loading, qa, sentiment, translation

    out = {}
    for tab in TABS:
        tok = loading.load(tab).processor
        tok = getattr(tok, "tokenizer", tok)
        started = time.perf_counter()
        if tab == "sentiment":
            result = sentiment.analyse(text_of_tokens(tok, tokens))
        elif tab == "qa":
            result = qa.answer("What is it?", text_of_tokens(tok, tokens - 8))
        elif tab == "translation":
            result = translation.analyse(text_of_tokens(tok, tokens))
        else:
            result = generation.generate(text_of_tokens(tok, tokens - 24))
        out[tab] = (result, time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> None:
    from demos import cache

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--size", default="full", choices=("full", "tiny"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    prepare_environment(hub=False)
    set_threads(args.threads)
    configure_models(hub=False, size=args.size)
    results = tab_results(args.tokens)
    print(f"| tab ({args.tokens}-token input, {args.size} size) | stored MB | as float32 MB | attention shapes |")
    print("|---|---:|---:|---|")
    stored = f32 = 0
    for tab, (result, _) in results.items():
        s, f = cache.nbytes(result), _float32_bytes(result)
        stored, f32 = stored + s, f32 + f
        shapes = ", ".join(
            f"{getattr(result, name).weights.shape} {getattr(result, name).weights.dtype}"
            for name in ("attention", "encoder_attention", "decoder_attention", "cross_attention")
            if getattr(getattr(result, name, None), "weights", None) is not None
        )
        print(f"| {tab} | {s / MB:.1f} | {f / MB:.1f} | {shapes} |")
    print(f"| one session, 4 tabs | {stored / MB:.1f} | {f32 / MB:.1f} | |")
    n, budget = args.sessions, cache.budget_bytes()
    print()
    print(f"| {n} sessions x 4 tabs | results held, MB | before (float32) MB |")
    print("|---|---:|---:|")
    print(f"| every session its own inputs | {n * stored / MB:.0f} | {n * f32 / MB:.0f} |")
    print(f"| one input per tab, shared | {stored / MB:.0f} | {f32 / MB:.0f} |")
    print(f"| after their state expired: the memos at most | {budget / MB:.0f} (XRAY_CACHE_MB) | "
          f"{8 * f32 / MB:.0f} (8 per task; and state never expired) |")
    print(f"\nmemos now hold {cache.held_bytes() / MB:.1f} MB (budget {budget / MB:.0f} MB)")


if __name__ == "__main__":
    main()
