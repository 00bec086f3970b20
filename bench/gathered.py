"""A class's attributions at once: `python -m bench.gathered --size full [--students 30] [--repeats 3]`.

In this process, on the Sentiment tab's compute functions: every student's sentence answered first
(untimed, memo then holding only the answers), then the attribution the tab asks by default
(integrated gradients, at most 32 steps, adaptive to |delta| <= 0.01) of every sentence, either one
after the other or all at once from one thread per student, which gathers them into batched passes
(`demos.runtime.gather`, at most `XRAY_BATCH_SIZE` per pass). The two take turns, repeat by repeat
(`bench.timing.interleaved`). Reports wall and process CPU seconds, the pass sizes, and the largest
difference between a student's gathered scores and their own run's.
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np

TOLERANCE = 0.01


def sentences(count: int) -> list[str]:
    """`count` different sentences of 20-26 tokens, as a class types them."""
    moods = ("warm and funny", "dull and slow", "bold but uneven", "quiet and moving")
    return [
        f"Student {i} thought the film was {moods[i % 4]}, and the music {'bright' if i % 3 else 'sad'} in scene {i}."
        for i in range(count)
    ]


def measure(students: int, repeats: int) -> dict:
    from bench.timing import interleaved
    from demos import sentiment
    from demos.runtime import cache

    texts = sentences(students)

    def answered() -> None:
        cache.clear_all()
        for text in texts:
            sentiment.analyse(text)

    def attribute(text: str):
        return sentiment.attribute(text, None, "integrated_gradients", 32, tolerance=TOLERANCE)

    def at_once() -> list:
        with ThreadPoolExecutor(len(texts)) as pool:
            return list(pool.map(attribute, texts))

    passes = sentiment.attribute.gather.sizes
    before = len(passes)
    res = interleaved({"one at a time": lambda: [attribute(t) for t in texts], "at once": at_once}, repeats,
                      before=answered)
    alone, together = res["one at a time"]["value"], res["at once"]["value"]
    diff = max(float(np.abs(a.scores - b.scores).max() / np.abs(a.scores).max()) for a, b in zip(alone, together))
    return {
        "students": students,
        "steps_used": sorted({a.steps for a in alone}),
        "one_at_a_time_s": res["one at a time"]["median_s"],
        "one_at_a_time_cpu_s": res["one at a time"]["cpu_median_s"],
        "at_once_s": res["at once"]["median_s"],
        "at_once_cpu_s": res["at once"]["cpu_median_s"],
        "passes": list(passes)[before:],
        "largest_relative_difference": diff,
        "same_targets": [a.target for a in alone] == [b.target for b in together],
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    from bench.env import begin_local_run
    from bench.timing import load_average

    load_start, _ = begin_local_run(args.size, args.threads)
    row = {**measure(args.students, args.repeats), "size": args.size, "threads": args.threads,
           "load_average_start": load_start, "load_average_end": load_average()}
    print(json.dumps(row, indent=2))
    return row


if __name__ == "__main__":
    main()
