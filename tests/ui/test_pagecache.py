"""ui.pagecache: the page and its configuration from memory, only where they are the same for
every visitor; the served page equals the one Gradio builds."""

from __future__ import annotations

import asyncio
import gzip
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from ui import pagecache
from ui.pagecache import PageCache


class Gradio:
    """A stand-in ASGI app: counts the pages it builds; its page names the Host it was built for."""

    def __init__(self, status: int = 200, cookie: bool = False, delay: float = 0.0):
        self.built, self.status, self.cookie, self.delay = 0, status, cookie, delay

    async def __call__(self, scope, receive, send):
        self.built += 1
        await asyncio.sleep(self.delay)
        host = dict(scope["headers"]).get(b"host", b"")
        headers = [(b"content-type", b"text/html")] + ([(b"set-cookie", b"a=b")] if self.cookie else [])
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"page for " + host, "more_body": True})
        await send({"type": "http.response.body", "body": b" #" + str(self.built).encode(), "more_body": False})


def _run(coro):
    """Run `coro` on a fresh event loop in a thread of its own (an earlier test, e.g. Playwright's sync API,
    may leave a loop running in the main thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _get(mw, path="/", query=b"", headers=((b"host", b"a.example"),)) -> tuple[int, bytes]:
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": list(headers)}
    _run(mw(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_page_is_built_once_and_served_as_built():
    gradio = Gradio()
    mw = PageCache(gradio)
    first = _get(mw)
    assert first == (200, b"page for a.example #1")
    assert _get(mw) == first and _get(mw, "/config") == (200, b"page for a.example #2")
    assert _get(mw, "/config") == (200, b"page for a.example #2") and gradio.built == 2


def test_a_client_that_accepts_gzip_gets_the_same_page_compressed():
    gradio = Gradio()
    mw = PageCache(gradio)
    plain = _get(mw)
    status, body = _get(mw, headers=[(b"host", b"a.example"), (b"accept-encoding", b"br, GZIP")])
    assert status == 200 and body != plain[1] and gzip.decompress(body) == plain[1] and gradio.built == 1


def test_a_page_built_for_one_host_is_never_served_to_another():
    gradio = Gradio()
    mw = PageCache(gradio)
    assert _get(mw, headers=[(b"host", b"a.example")]) == (200, b"page for a.example #1")
    assert _get(mw, headers=[(b"host", b"b.example")]) == (200, b"page for b.example #2")
    forwarded = [(b"host", b"a.example"), (b"x-forwarded-host", b"evil.example")]
    assert _get(mw, headers=forwarded) == (200, b"page for a.example #3")  # its own entry, built by Gradio


@pytest.mark.parametrize(
    "path, query, headers",
    [
        ("/", b"deep_link=abc", [(b"host", b"a")]),  # Gradio's own per-visitor page
        ("/", b"page=other", [(b"host", b"a")]),
        ("/config", b"deep_link=abc", [(b"host", b"a")]),
        ("/", b"", [(b"host", b"a"), (b"cookie", b"access-token=secret")]),  # a logged-in visitor
        ("/", b"", [(b"host", b"a"), (b"authorization", b"Bearer x")]),
        ("/gradio_api/info", b"all_endpoints=true", [(b"host", b"a")]),
        ("/gradio_api/upload", b"", [(b"host", b"a")]),  # other paths are not this module's
    ],
)
def test_per_visitor_requests_always_go_to_gradio(path, query, headers):
    gradio = Gradio()
    mw = PageCache(gradio)
    assert _get(mw, path, query, headers)[1].endswith(b"#1")
    assert _get(mw, path, query, headers)[1].endswith(b"#2")


@pytest.mark.parametrize("gradio", [Gradio(status=500), Gradio(cookie=True)], ids=["error", "set-cookie"])
def test_an_error_or_a_cookie_is_passed_on_and_never_kept(gradio):
    mw = PageCache(gradio)
    status, body = _get(mw)
    assert status == gradio.status and body.endswith(b"#1")
    assert _get(mw)[1].endswith(b"#2")


def test_a_burst_of_first_requests_builds_the_page_once():
    gradio = Gradio(delay=0.05)
    mw = PageCache(gradio)
    scope = {"type": "http", "method": "GET", "path": "/config", "query_string": b"", "headers": [(b"host", b"a")]}

    async def one():
        sent = []

        async def send(message):
            sent.append(message)

        await mw(dict(scope), None, send)
        return b"".join(m.get("body", b"") for m in sent[1:])

    async def burst():
        return await asyncio.gather(*(one() for _ in range(50)))

    bodies = _run(burst())
    assert gradio.built == 1 and set(bodies) == {b"page for a #1"}


def test_the_number_of_kept_pages_is_bounded():
    gradio = Gradio()
    mw = PageCache(gradio, max_entries=3)
    for i in range(10):
        _get(mw, headers=[(b"host", f"h{i}".encode())])
    assert len(mw._pages) == 3


def _fetch(url: str, gzipped: bool = False) -> bytes:
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzipped else {})
    with urllib.request.urlopen(request, timeout=60) as r:
        body = r.read()
        assert (r.headers.get("Content-Encoding") == "gzip") == gzipped
        assert int(r.headers["Content-Length"]) == len(body)
    return gzip.decompress(body) if gzipped else body


def test_the_served_configuration_equals_the_one_gradio_builds(monkeypatch):
    """A tab launched with app.py's own settings: `/config` and `/` from memory equal what Gradio
    itself builds for the same request (cache switched off)."""
    import app
    from bench.serve import free_port
    from tests.conftest import tab_app

    demo = tab_app("ui.sentiment")()
    demo.queue(**app.QUEUE)
    kwargs = app.launch_kwargs(app.parse_args(["--host", "127.0.0.1", "--port", str(free_port())]))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        assert any(m.cls is PageCache for m in demo.app.user_middleware)  # app.py installs it
        url = url.rstrip("/")
        cached_config, cached_page = _fetch(url + "/config"), _fetch(url + "/?tab=sentiment")
        assert _fetch(url + "/config") == cached_config and _fetch(url + "/") == cached_page  # from memory now
        assert _fetch(url + "/config", gzipped=True) == cached_config
        cached_info = _fetch(url + "/gradio_api/info")
        assert _fetch(url + "/gradio_api/info") == cached_info
        monkeypatch.setattr(pagecache, "ENABLED", False)
        assert json.loads(_fetch(url + "/config")) == json.loads(cached_config)
        assert _fetch(url + "/") == cached_page
        assert json.loads(_fetch(url + "/gradio_api/info")) == json.loads(cached_info)
    finally:
        demo.close()
