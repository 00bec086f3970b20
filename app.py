"""Transformer X-Ray: a Gradio app that shows what happens inside transformer models.

Thin entry point: parses flags and environment, builds one tab per task from `TABS`, launches.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from core import registry
from demos.runtime import heap, settings
from ui import lessons, session, share
from ui.pagecache import PageCache
from ui.presenter import PRESENTER_CSS

ROOT = Path(__file__).resolve().parent
ASSETS = ROOT / "assets"

# (tab title, module in ui/ with a `build()` function): the guide, the lessons, then one tab per registered task.
TABS: list[tuple[str, str]] = [("How to read these views", "ui.guide"), ("Lessons", "ui.lessons")] + [
    (t.title, t.tab) for t in registry.TASKS
]


def tab_key(module: str) -> str:
    """A tab's id, the name links use for it: the task's key, else the module's name ('guide', 'lessons')."""
    return next((t.key for t in registry.TASKS if t.tab == module), module.rsplit(".", 1)[-1])

CSS = (
    """
.xray-help {font-size: 0.92em; opacity: 0.85}
.xray-tokens {line-height: 2.1em}
.xray-tok {padding: 2px 4px; margin: 1px; border-radius: 4px; border: 1px solid rgba(0,0,0,.08); unicode-bidi: isolate;
           display: inline-block; max-width: 100%; line-height: 1.5em}  \
/* a chip wraps whole, never split at its own space */
.xray-legend span {padding: 1px 6px; border-radius: 4px; font-size: .85em}
.xray-answer {background: #fde047; padding: 1px 2px; border-radius: 3px}
.xray-caption {font-weight: 600; margin-bottom: .3em}
.xray-similarity table {table-layout: fixed; width: 100%}
.xray-similarity th:first-child, .xray-similarity td:first-child {width: 46%}
.xray-similarity td, .xray-similarity th {white-space: normal; overflow-wrap: anywhere}
"""
    + PRESENTER_CSS
)


def _tier_health(demo: gr.Blocks) -> None:
    """On the Ray backend, a line under the title while the model tier is not ready (checked at page
    load and every 15 s; hidden when the tier answers)."""
    from scale import backend

    if backend.current().name != "ray":
        return
    tier = gr.Markdown(visible=False, elem_classes=["xray-help"])

    def show() -> dict:
        health = backend.health()
        return gr.update(value=health.line(), visible=not health.ok)

    demo.load(show, None, tier, queue=False, api_visibility="private")
    gr.Timer(15).tick(show, None, tier, queue=False, api_visibility="private")


def build_app(banner: str = "") -> gr.Blocks:
    """The whole UI: a header and one tab per entry of `TABS` (models load on first use).

    `banner`: markdown shown under the title in an open accordion (e.g. the offline plan)."""
    heap.tune()  # freed large blocks go back to the OS at once (glibc)
    session.lazy_session_config()  # a new session does not build the whole page's configuration
    with gr.Blocks(title="Transformer X-Ray") as demo:
        gr.Markdown(
            "# Transformer X-Ray\n"
            "See what happens inside transformer models: the answer, and beside it the attention, "
            "attributions and embeddings that led there."
        )
        _tier_health(demo)
        if banner:
            with gr.Accordion("Offline mode: which models run", open=True):  # seen, not hidden
                gr.Markdown(banner)
        toolbar = share.Toolbar.build()  # copy a link to the view shown; presenter mode
        bar = lessons.LessonBar.build()  # the lesson a student walks through, in a sidebar
        with gr.Tabs(overflow_behavior="wrap") as tabs:  # every tab in sight (presenter mode's large type too)
            for title, module in TABS:
                with gr.Tab(title, id=tab_key(module)):
                    importlib.import_module(module).build()
        lessons.bind(bar, share.wire(tabs, toolbar))  # links (?tab=...&view=...) and lessons (?lesson=...)
    session.start_sweeper(demo)  # idle sessions and memo entries end after XRAY_STATE_TTL_S
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument(
        "--models", default=os.environ.get("XRAY_MODELS_DIR"), help="folder with one subfolder per task"
    )
    parser.add_argument("--offline", action="store_true", default=None, help="never contact the Hugging Face Hub")
    parser.add_argument(
        "--backend",
        default=os.environ.get("XRAY_BACKEND", "inprocess"),
        help="where the models run: inprocess (default), ray (a cluster at XRAY_RAY_ADDRESS) or ray://head:10001",
    )
    return parser.parse_args(argv)


def launch_kwargs(args: argparse.Namespace) -> dict:
    """Hardened launch settings shared by `main` and the tests."""
    return dict(
        server_name=args.host,
        server_port=args.port,
        css=CSS,
        ssr_mode=False,
        show_error=True,
        max_file_size="25mb",
        strict_cors=True,
        enable_monitoring=False,
        allowed_paths=[str(ASSETS)],
        # Gradio keeps each session's last outputs until this many newer sessions exist (default
        # 10,000): a classroom server keeps a few hundred.
        state_session_capacity=int(os.environ.get("XRAY_SESSION_CAPACITY", "500")),
        # the page and its configuration from memory: a class connecting at once is not kept waiting
        app_kwargs={"middleware": [Middleware(PageCache)]},
    )


def configure(args: argparse.Namespace) -> None:
    settings.configure(settings.settings_from_env(models_dir=args.models, offline=args.offline))
    from scale import backend, config

    kind, address = config.backend_from_env({**os.environ, "XRAY_BACKEND": args.backend})
    backend.configure(backend.InProcess() if kind == config.INPROCESS else backend.RayServe(address))
    if kind == config.INPROCESS:  # a Ray front runs no model (its replicas configure their own threads)
        from demos.runtime import threads

        # torch's threads on a quiet machine (default: one per core); fewer per call while the CPUs are busy
        threads.configure(int(os.environ.get("XRAY_TORCH_THREADS") or 0) or None)


log = logging.getLogger("xray")


# Bounded queue; two requests of one event at a time (2 CPU cores; GPU work is short).
QUEUE = dict(max_size=64, default_concurrency_limit=2)


def start(args: argparse.Namespace, banner: str = "", block: bool = True) -> tuple[gr.Blocks, str]:
    """Build, queue and launch the app with the hardened settings; (app, local url)."""
    demo = build_app(banner)
    demo.queue(**QUEUE)
    _, url, _ = demo.launch(prevent_thread_lock=not block, quiet=not block, **launch_kwargs(args))
    return demo, url


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if not port_free(args.host, args.port):
        raise SystemExit(
            f"Port {args.port} on {args.host} is busy (another app is using it): "
            f"start with --port N, e.g. --port {args.port + 1}."
        )
    configure(args)
    if args.backend != "inprocess":  # the model tier provisions its own models; this front loads none
        start(args)
        return
    from demos.provision import offline  # in-process: this process provisions and loads the models

    plan = offline.prepare(settings.current(), progress=log.info)
    start(args, offline.banner(plan, settings.current().offline))


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on (host, port) now."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    main()
