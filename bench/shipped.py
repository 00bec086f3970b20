"""What an explanation sends to the model tier: `python -m bench.shipped [--size full] [--tokens 512]` answers one
long input per text tab in this process (random models of the real configurations with `--size full`), notes its
recipe as the front does (`ui.session.remember`) and prints the pickled bytes of the result against those of the
`scale.backend.ResultRef` that `RayServe.call` sends in its place."""
from __future__ import annotations

import argparse
import pickle

from bench.env import begin_local_run

SENTENCE = "the film was warm and funny and the cast clearly enjoyed itself "


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--tokens", type=int, default=512, help="about this many tokens of input")
    args = parser.parse_args(argv)
    begin_local_run(args.size, 2)
    from demos.explain import tasks
    from scale import backend
    from ui import session

    text = " ".join([SENTENCE.strip()] * max(1, args.tokens // 12))
    print("| tab | tokens | result, pickled | its recipe, pickled | ratio |\n|---|---:|---:|---:|---:|")
    for task, fn, inputs in (("sentiment", "analyse", (text,)), ("qa", "answer", ("Who enjoyed itself?", text))):
        result = session.remember(getattr(tasks.module(task), fn)(*inputs), task, fn, inputs, {})
        whole, ref = len(pickle.dumps(result)), len(pickle.dumps(backend.by_recipe(result)))
        n = len(getattr(result, "tokens", ()) or ())
        print(f"| {task} | {n} | {whole / 2**20:.1f} MiB | {ref / 1024:.1f} KiB | {whole / ref:,.0f}x |")


if __name__ == "__main__":
    main()
