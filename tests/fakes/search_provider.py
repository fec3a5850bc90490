"""A loopback search provider that answers like SearXNG's JSON API and the Brave Search API.

    with fake_search_provider() as provider:
        provider.base_url          # http://127.0.0.1:PORT
        provider.mode = "slow"     # ok | slow | error500 | malformed | wrong_shape | redirect
        provider.requests          # every request seen: (path, query params, headers)

``/search?q=...&format=json`` answers as SearXNG, ``/res/v1/web/search?q=...&count=N`` as
Brave (it wants the ``X-Subscription-Token`` header, equal to ``brave_key`` when that is set,
else 401). ``/page/<n>`` serves a small HTML page and ``/away`` redirects off the host: what
``web_fetch`` is tried on.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

BRAVE_PATH = "/res/v1/web/search"
SLOW_S = 3.0


def results_for(query: str, base_url: str, n: int = 8) -> list[dict[str, str]]:
    return [
        {
            "title": f"<b>{query}</b> result {i}",
            "url": f"{base_url}/page/{i}",
            "snippet": f"About {query} &amp; more, number {i}",
        }
        for i in range(1, n + 1)
    ]


@dataclass
class FakeSearchProvider:
    base_url: str = ""
    mode: str = "ok"
    brave_key: str | None = None  # when set, any other key gets a 401
    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def searches(self) -> int:
        with self.lock:
            return sum(1 for path, _, _ in self.requests if "search" in path)


def _handler(provider: FakeSearchProvider) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = parse_qs(parts.query)
            with provider.lock:
                provider.requests.append((parts.path, params, dict(self.headers)))
            if parts.path.startswith("/page/"):
                return self._send(200, f"<html><title>Page</title><p>Page {parts.path}</p>", "html")
            if parts.path == "/away":
                self.send_response(302)
                self.send_header("Location", "http://example.invalid/elsewhere")
                self.end_headers()
                return None
            if parts.path not in ("/search", BRAVE_PATH):
                return self._send(404, "not found", "plain")
            return self._search(parts.path, params)

        def _search(self, path: str, params: dict[str, list[str]]) -> None:
            mode = provider.mode
            if mode == "slow":
                time.sleep(SLOW_S)
            if mode == "error500":
                return self._send(500, "internal error", "plain")
            if mode == "malformed":
                return self._send(200, '{"results": [{"title": "cut', "json")
            if mode == "wrong_shape":
                return self._send(200, json.dumps({"answer": 42}), "json")
            query = params.get("q", [""])[0]
            found = results_for(query, provider.base_url)
            if path == BRAVE_PATH:
                token = self.headers.get("X-Subscription-Token")
                if not token or (provider.brave_key and token != provider.brave_key):
                    return self._send(401, "invalid subscription token", "plain")
                count = int(params.get("count", ["20"])[0])
                items = [
                    {"title": r["title"], "url": r["url"], "description": r["snippet"]}
                    for r in found[:count]
                ]
                return self._send(200, json.dumps({"web": {"results": items}}), "json")
            if params.get("format") != ["json"]:
                return self._send(403, "format not allowed", "plain")
            items = [
                {"title": r["title"], "url": r["url"], "content": r["snippet"], "engine": "x"}
                for r in found
            ]
            return self._send(200, json.dumps({"query": query, "results": items}), "json")

        def _send(self, status: int, body: str, kind: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", f"{_TYPES[kind]}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up (a timeout test)
                self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    return Handler


_TYPES = {"json": "application/json", "html": "text/html", "plain": "text/plain"}


@contextmanager
def fake_search_provider() -> Iterator[FakeSearchProvider]:
    provider = FakeSearchProvider()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    server.daemon_threads = True
    provider.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
