"""The app's page, its configuration and its API description served from memory.

Gradio builds the page (`/`) and its configuration (`/config`) anew for every request: a deep copy
of the whole app's configuration and a walk over it to set the root URL; the API description
(`/gradio_api/info`, what every `gradio_client.Client` fetches) too. When a class opens the app at once, those
copies queue behind each other on the interpreter lock and new clients time out before they
connect. The configuration does not change after launch, so `PageCache` (an ASGI middleware)
keeps the finished response per root URL and serves it in microseconds; concurrent first requests
wait for one build instead of building it each. It is also compressed once (gzip) for every client that
accepts it, for a classroom's shared network. Figures: docs/PERFORMANCE.md, "A class connecting at once".

Only what is the same for every visitor is kept: a request with Gradio's own per-visitor query
(`deep_link`, `page`), a login cookie or an `Authorization` header goes to Gradio untouched, as
does any response that is not a plain 200 or that sets a cookie. The key holds everything Gradio
derives the root URL from (scheme, Host, X-Forwarded-* and Forwarded headers, root path), so a
page built for one host is never served to another. At most `max_entries` pages are kept.
"""

from __future__ import annotations

import asyncio
import gzip
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PATHS = ("/", "/config", "/gradio_api/info")
PER_VISITOR_QUERY = ("deep_link", "page")  # Gradio builds a different page for these
ENABLED = os.environ.get("XRAY_PAGE_CACHE", "1") != "0"  # 0: every page built by Gradio (benchmarks' baseline)


@dataclass(frozen=True)
class _Page:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    gzipped: bytes

    @classmethod
    def of(cls, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> _Page:
        return cls(status, headers, body, gzip.compress(body, compresslevel=6, mtime=0))

    def message(self, gzip_ok: bool) -> tuple[Message, bytes]:
        """The response start and body, compressed when the client accepts it."""
        if not gzip_ok:
            return {"type": "http.response.start", "status": self.status, "headers": self.headers}, self.body
        kept = [(k, v) for k, v in self.headers if k.lower() not in (b"content-length", b"content-encoding", b"vary")]
        extra = [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
        headers = kept + extra + [(b"content-length", str(len(self.gzipped)).encode())]
        return {"type": "http.response.start", "status": self.status, "headers": headers}, self.gzipped


class PageCache:
    """ASGI middleware: GET `/`, `/config` and `/gradio_api/info` answered from memory after their first build."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_entries: int = 16) -> None:
        self.app = app
        self.max_entries = max_entries
        self._pages: OrderedDict[tuple, _Page] = OrderedDict()
        self._building: dict[tuple, asyncio.Lock] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self.key(scope) if ENABLED else None
        if key is None:
            await self.app(scope, receive, send)
            return
        page = self._pages.get(key)
        if page is None:
            lock = self._building.setdefault(key, asyncio.Lock())
            async with lock:  # one build per key; the others wait for it
                try:
                    page = self._pages.get(key)
                    if page is None:
                        page = await self._build(scope, receive, send)
                        if page is not None:
                            self._keep(key, page)
                        return  # sent to this client as Gradio made it
                finally:
                    self._building.pop(key, None)
        if key in self._pages:  # (another host's pages may have pushed it out meanwhile: it is still served)
            self._pages.move_to_end(key)
        await _replay(page, scope, send)

    @staticmethod
    def key(scope: Scope) -> tuple | None:
        """The cache key of a request, or None when it must go to Gradio."""
        if scope.get("type") != "http" or scope.get("method") != "GET" or scope.get("path") not in PATHS:
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if any(query.get(name, [""])[0] for name in PER_VISITOR_QUERY):
            return None
        if scope["path"] != "/" and query:  # the configuration and the API description: any query is Gradio's
            return None
        headers = [(k.lower(), v) for k, v in scope.get("headers", [])]
        if any(k == b"authorization" for k, _ in headers):
            return None
        if any(k == b"cookie" and b"access-token" in v for k, v in headers):
            return None
        where = tuple(sorted((k, v) for k, v in headers if k in (b"host", b"forwarded") or k.startswith(b"x-forward")))
        return scope["path"], scope.get("scheme", "http"), scope.get("root_path", ""), where

    async def _build(self, scope: Scope, receive: Receive, send: Send) -> _Page | None:
        """Let Gradio answer; return the page when it may be kept. A page that may not be kept is
        passed on to the client as it comes (and None returned)."""
        start: Message = {}
        chunks: list[bytes] = []
        passing = False

        async def capture(message: Message) -> None:
            nonlocal passing
            if message["type"] == "http.response.start":
                start.update(message)
                passing = message["status"] != 200 or any(k.lower() == b"set-cookie" for k, _ in message["headers"])
                if passing:
                    await send(message)
            elif passing:
                await send(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        if passing or not start:
            return None
        page = _Page.of(start["status"], list(start["headers"]), b"".join(chunks))
        await _replay(page, scope, send)
        return page

    def _keep(self, key: tuple, page: _Page) -> None:
        self._pages[key] = page
        while len(self._pages) > self.max_entries:
            self._pages.popitem(last=False)


def _accepts_gzip(scope: Scope) -> bool:
    return any(k.lower() == b"accept-encoding" and b"gzip" in v.lower() for k, v in scope.get("headers", []))


async def _replay(page: _Page, scope: Scope, send: Send) -> None:
    start, body = page.message(_accepts_gzip(scope))
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
