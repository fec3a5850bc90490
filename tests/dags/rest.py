"""A tiny REST client and polling helpers for the tests that drive a real Airflow API server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

DAG_ID = "ise_refresh"


class Api:
    """JSON over HTTP with the bearer token of the simple auth manager."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token = ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text

    def login(self, password: str, username: str = "admin") -> None:
        status, body = self.call(
            "POST", "/auth/token", {"username": username, "password": password}
        )
        assert status == 201, body
        self.token = body["access_token"]


def wait_for(what: str, check: Callable[[], Any], timeout: float, logs: Path) -> Any:
    """Poll ``check`` every second until it returns something true; on timeout fail with the
    end of every ``*.log`` in ``logs``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, urllib.error.URLError):
            value = None
        if value:
            return value
        time.sleep(1.0)
    tails = "\n".join(
        f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted(logs.glob("*.log"))
    )
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def failure_report(api: Api, run_id: str) -> str:
    """Each unsuccessful task instance with the end of its log, for the assertion message."""
    _, tis = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=1000")
    lines = []
    for ti in tis.get("task_instances", []):
        lines.append(f"{ti['task_id']}[{ti['map_index']}]: {ti['state']} on {ti.get('hostname')}")
        if ti["state"] == "failed":
            path = (
                f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                f"/logs/{ti['try_number']}?map_index={ti['map_index']}"
            )
            _, log = api.call("GET", path)
            lines.append(json.dumps(log)[-4000:])
    return "\n".join(lines)


def run_state(api: Api, run_id: str) -> str | None:
    """The run's state once it has finished ("success" / "failed"), else None."""
    code, current = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
    state = current.get("state") if code == 200 else None
    return state if state in ("success", "failed") else None
