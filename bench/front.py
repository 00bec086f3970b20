"""The front's memory: `python -m bench.front --backend inprocess|ray` builds the whole app (every tab) in
this process, as `app.py` does before launching, and prints its resident memory and whether torch,
transformers or captum were imported (a front on the Ray tier should import none of them)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("inprocess", "ray"), default="ray")
    args = parser.parse_args(argv)
    import app

    app.configure(app.parse_args(["--backend", args.backend]))
    app.build_app()
    with open("/proc/self/status", encoding="ascii") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    loaded = [m for m in ("torch", "transformers", "captum") if m in sys.modules]
    print(f"backend {args.backend}: front RSS {rss_kib / 1024:.0f} MiB; model libraries imported: {loaded or 'none'}")


if __name__ == "__main__":
    main()
