"""A loopback OpenAI-compatible chat server for tests and benchmarks, with fault injection.

    with FakeOpenAIServer(latency_s=0.05, faults=Faults(rate_limit=0.3)) as server:
        chat = OpenAIChat(..., base_url=server.base_url, ...)
        ...
        assert server.stats()["max_in_flight"] <= 4

It binds 127.0.0.1 on a free port, serves ``POST /v1/chat/completions``, ``POST /v1/embeddings``
and ``GET /v1/models`` (plus ``GET /_stats`` with its counters as JSON, for a server run in
another process), and answers with a pluggable *responder* (request JSON → completion JSON, or
a ``Reply`` with any status); embeddings come from the *embedder* (default
``hash_embedder``: a deterministic, deliberately not unit-length vector per text).
Faults are drawn per request from a seeded generator, or taken in order from
``Faults.script`` first, so a test can say exactly what the next requests meet:

- ``rate_limit``     429 with ``Retry-After`` (seconds, or an HTTP date when configured so)
                     and/or ``retry-after-ms`` (milliseconds), as configured
- ``server_error``   500
- ``slow``           the normal reply, but after ``slow_s`` (longer than the client's timeout)
- ``drop``           the socket is closed without any response
- ``bad_tool_json``  200 with a tool call whose arguments are not JSON
- ``ok``             (script only) no fault

A *capacity* (``capacity=N``, changeable while it runs with ``set_capacity``) makes it behave
like a server with N slots: a request arriving while N others are being served gets a 429
(``Retry-After`` from ``capacity_retry_after``), counted as ``over_capacity``; ``serving`` is
the number being served now.

It counts requests, faults and requests in flight (current and maximum), and records every
request's headers and body, so tests can assert what was and was not sent.

Run standalone (used by the throughput benchmark, so the client's CPU time is its own):
``python tests/fakes/openai_server.py --latency 0.2`` prints one JSON line with ``base_url``
and serves until stdin closes or the process is terminated. The module uses the standard
library only, so it runs as a plain script.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULT_KINDS = ("rate_limit", "server_error", "slow", "drop", "bad_tool_json")


@dataclass
class Reply:
    """A full HTTP reply a responder may return instead of a 200 completion."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[dict[str, Any]], "dict[str, Any] | Reply"]


@dataclass
class Faults:
    """Fractions of requests that meet each fault (drawn independently per request)."""

    rate_limit: float = 0.0
    retry_after: str | None = "0"  # the Retry-After value sent with a 429 (None: no header)
    retry_after_http_date: bool = False  # send Retry-After as an HTTP date (now + retry_after)
    retry_after_ms: str | None = None  # a retry-after-ms value sent with a 429 (None: none)
    server_error: float = 0.0
    slow: float = 0.0
    slow_s: float = 1.0
    drop: float = 0.0
    bad_tool_json: float = 0.0
    seed: int = 0
    script: list[str] = field(default_factory=list)  # faults for the first requests, in order


def completion(
    request: dict[str, Any],
    *,
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int = 7,
) -> dict[str, Any]:
    """A chat.completion body for ``request`` with the given assistant message."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if prompt_tokens is None:
        prompt_tokens = max(1, len(json.dumps(request.get("messages", []))) // 4)
    return {
        "id": f"chatcmpl-{random.getrandbits(48):012x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake-model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def tool_call(name: str, arguments: str, call_id: str = "call_0") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def echo_responder(request: dict[str, Any]) -> dict[str, Any]:
    """Calls the first offered tool after a user message; otherwise echoes the last message.

    The tool call's arguments fill each required parameter of the tool with ``"ping"``.
    """
    messages = request.get("messages") or [{}]
    last = messages[-1]
    tools = request.get("tools") or []
    if tools and last.get("role") == "user":
        function = tools[0].get("function", {})
        required = function.get("parameters", {}).get("required", [])
        arguments = json.dumps({name: "ping" for name in required})
        return completion(request, tool_calls=[tool_call(function.get("name", "?"), arguments)])
    return completion(request, content=f"echo: {last.get('content') or ''}"[:200])


def embedding_vector(text: str, dim: int) -> list[float]:
    """A deterministic vector for ``text``: seeded by its hash, of norm ≈ 3·√dim (not unit)."""
    rng = random.Random(hashlib.sha256(text.encode("utf-8")).digest())
    return [rng.gauss(0.0, 3.0) for _ in range(dim)]


def hash_embedder(request: dict[str, Any], dim: int = 16) -> dict[str, Any]:
    """An ``/embeddings`` reply for ``request``: one ``embedding_vector`` per input, the
    ``data`` items in reverse order (their ``index`` says where each belongs)."""
    inputs = request.get("input")
    texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
    data = [
        {"object": "embedding", "index": i, "embedding": embedding_vector(str(text), dim)}
        for i, text in enumerate(texts)
    ]
    tokens = sum(max(1, len(str(text)) // 4) for text in texts)
    return {
        "object": "list",
        "data": data[::-1],
        "model": request.get("model", "fake-embedder"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


class _State:
    """Counters and records shared by the handler threads."""

    def __init__(
        self, responder: Responder, latency_s: float, faults: Faults, embedder: Responder
    ) -> None:
        self.capacity: int | None = None
        self.capacity_retry_after: str | None = None
        self.responder = responder
        self.embedder = embedder
        self.latency_s = latency_s
        self.faults = faults
        self.lock = threading.Lock()
        self.rng = random.Random(faults.seed)
        self.script = list(faults.script)
        self.connections: set[socket.socket] = set()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.completed = 0
            self.in_flight = 0
            self.max_in_flight = 0
            self.serving = 0
            self.max_serving = 0
            self.over_capacity = 0
            self.fault_counts = dict.fromkeys(FAULT_KINDS, 0)
            self.headers: list[dict[str, str]] = []
            self.bodies: list[dict[str, Any]] = []

    def begin(self, headers: dict[str, str], body: dict[str, Any]) -> str:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.headers.append(headers)
            self.bodies.append(body)
            if self.capacity is not None and self.serving >= self.capacity:
                self.over_capacity += 1
                return "over_capacity"
            self.serving += 1
            self.max_serving = max(self.max_serving, self.serving)
            fault = self._draw()
            if fault != "ok":
                self.fault_counts[fault] += 1
            return fault

    def end(self, ok: bool, fault: str) -> None:
        with self.lock:
            self.in_flight -= 1
            if fault != "over_capacity":
                self.serving -= 1
            if ok:
                self.completed += 1

    def _draw(self) -> str:
        if self.script:
            return self.script.pop(0)
        faults = self.faults
        for kind in FAULT_KINDS:
            if self.rng.random() < getattr(faults, kind):
                return kind
        return "ok"

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "completed": self.completed,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "serving": self.serving,
                "max_serving": self.max_serving,
                "over_capacity": self.over_capacity,
                "faults": dict(self.fault_counts),
            }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    state: _State


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint behind a pool would see it
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tests read the counters instead

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; with Nagle's algorithm the second waits for
        # the client's delayed ACK (~40 ms), which no real endpoint would add.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.state.lock:
            self.server.state.connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.state.lock:
            self.server.state.connections.discard(self.connection)

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        state = self.server.state
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [{"id": "fake-model"}]})
        elif self.path == "/_stats":
            self._send_json(200, state.snapshot())
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        route = self.path.rstrip("/")
        if not route.endswith(("/chat/completions", "/embeddings")):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            request = json.loads(raw)
        except json.JSONDecodeError:
            self._send_json(400, {"error": {"message": "body is not JSON"}})
            return
        state = self.server.state
        fault = state.begin(dict(self.headers.items()), request)
        ok = False
        try:
            if fault == "over_capacity":
                self._over_capacity(state)
                return
            if state.latency_s:
                time.sleep(state.latency_s)
            ok = self._answer(state, fault, request)
        except OSError:
            pass  # the client went away (e.g. it timed out on a slow reply)
        finally:
            state.end(ok, fault)

    def _over_capacity(self, state: _State) -> None:
        headers = {}
        if state.capacity_retry_after is not None:
            headers["Retry-After"] = state.capacity_retry_after
        body = {"error": {"message": "Server at capacity", "type": "rate_limit_error"}}
        self._send_json(429, body, headers)

    def _answer(self, state: _State, fault: str, request: dict[str, Any]) -> bool:
        faults = state.faults
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return False
        if fault == "rate_limit":
            headers = {}
            if faults.retry_after is not None:
                headers["Retry-After"] = (
                    formatdate(time.time() + float(faults.retry_after), usegmt=True)
                    if faults.retry_after_http_date
                    else faults.retry_after
                )
            if faults.retry_after_ms is not None:
                headers["retry-after-ms"] = faults.retry_after_ms
            body = {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}
            self._send_json(429, body, headers)
            return False
        if fault == "server_error":
            self._send_json(500, {"error": {"message": "internal error", "type": "server_error"}})
            return False
        if fault == "slow":
            time.sleep(faults.slow_s)
        if fault == "bad_tool_json":
            tools = request.get("tools") or [{"function": {"name": "echo"}}]
            name = tools[0].get("function", {}).get("name", "echo")
            self._send_json(200, completion(request, tool_calls=[tool_call(name, '{"text": ')]))
            return True
        if self.path.rstrip("/").endswith("/embeddings"):
            reply = state.embedder(request)
        else:
            reply = state.responder(request)
        if isinstance(reply, Reply):
            self._send_json(reply.status, reply.body, reply.headers)
            return reply.status == 200
        self._send_json(200, reply)
        return True


class FakeOpenAIServer:
    """The server, started on enter and stopped (connections closed) on exit."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency_s: float = 0.0,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        embedder: Responder | None = None,
        capacity: int | None = None,
        capacity_retry_after: str | None = None,
    ) -> None:
        self.state = _State(
            responder or echo_responder, latency_s, faults or Faults(), embedder or hash_embedder
        )
        self.state.capacity = capacity
        self.state.capacity_retry_after = capacity_retry_after
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None  # kept after stop, so a test can still name the URL

    def start(self) -> FakeOpenAIServer:
        server = _Server(self._address, _Handler)
        server.state = self.state
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self.state.lock:
            open_connections = list(self.state.connections)
        for connection in open_connections:  # keep-alive sockets the client pool still holds
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake server has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @property
    def requests(self) -> int:
        return self.state.snapshot()["requests"]

    @property
    def headers(self) -> list[dict[str, str]]:
        return list(self.state.headers)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return list(self.state.bodies)

    def stats(self) -> dict[str, Any]:
        return self.state.snapshot()

    def reset(self) -> None:
        self.state.reset()

    def set_capacity(self, capacity: int | None) -> None:
        """Requests served at once from now on (None: no limit)."""
        with self.state.lock:
            self.state.capacity = capacity

    def script(self, *faults: str) -> None:
        """Set the faults the next requests meet, in order (``"ok"`` for none)."""
        unknown = set(faults) - {*FAULT_KINDS, "ok"}
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        with self.state.lock:
            self.state.script = list(faults)


@contextlib.contextmanager
def fake_openai_server(
    responder: Responder | None = None, **kwargs: Any
) -> Iterator[FakeOpenAIServer]:
    """``with fake_openai_server(latency_s=0.2) as server: ...`` (a plain context manager)."""
    server = FakeOpenAIServer(responder, **kwargs)
    with server:
        yield server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="loopback OpenAI-compatible test server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per reply")
    for kind in FAULT_KINDS:
        parser.add_argument(f"--{kind.replace('_', '-')}", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    faults = Faults(seed=args.seed, **{kind: getattr(args, kind) for kind in FAULT_KINDS})
    server = FakeOpenAIServer(latency_s=args.latency, faults=faults, port=args.port).start()
    print(json.dumps({"base_url": server.base_url, "port": server.port}), flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin (or terminates us)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
