"""The loopback server itself: routes, counters, scripted faults (other test areas rely on it)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeOpenAIServer, fake_openai_server

SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "fakes" / "openai_server.py"


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_models_chat_and_stats_routes() -> None:
    with fake_openai_server() as server:
        assert get(f"{server.base_url}/models")["data"][0]["id"] == "fake-model"
        status, _, body = post(
            f"{server.base_url}/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert status == 200 and body["choices"][0]["message"]["content"] == "echo: hi"
        stats = get(server.base_url.replace("/v1", "/_stats"))
        assert stats["requests"] == 1 and stats["completed"] == 1 and stats["in_flight"] == 0


def test_scripted_faults_in_order() -> None:
    with FakeOpenAIServer() as server:
        server.faults.retry_after = "3"
        server.script("rate_limit", "server_error", "ok")
        url = f"{server.base_url}/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        status, headers, _ = post(url, body)
        assert status == 429 and headers["Retry-After"] == "3"
        assert "retry-after-ms" not in {name.lower() for name in headers}
        assert post(url, body)[0] == 500
        assert post(url, body)[0] == 200
        assert server.stats()["faults"]["rate_limit"] == 1
        with pytest.raises(ValueError, match="unknown fault"):
            server.script("meteor")


def test_rate_limit_sends_each_retry_after_form() -> None:
    url_body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with FakeOpenAIServer() as server:
        url = f"{server.base_url}/chat/completions"
        server.faults.retry_after, server.faults.retry_after_ms = "2", "1500"
        server.script("rate_limit")
        headers = {k.lower(): v for k, v in post(url, url_body)[1].items()}
        assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "1500"
        server.faults.retry_after, server.faults.retry_after_http_date = "30", True
        server.script("rate_limit")
        date = parsedate_to_datetime(post(url, url_body)[1]["Retry-After"])
        assert 25 <= date.timestamp() - time.time() <= 31


def test_runs_as_a_standalone_script() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = json.loads(proc.stdout.readline())["base_url"]
        assert get(f"{base_url}/models")["object"] == "list"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
