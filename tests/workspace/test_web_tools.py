"""``web_search`` and ``web_fetch`` through the tool boundary, on every backend that runs here,
against a loopback provider. Both run on the host; the sandbox itself never reaches it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ise_core.config import WebSearchSettings
from ise_core.workspace import SandboxWorkspace, tool_schemas
from tests.fakes.search_provider import BRAVE_PATH, FakeSearchProvider, fake_search_provider
from tests.workspace.fixtures import WorkspaceFactory


@pytest.fixture
def provider() -> Iterator[FakeSearchProvider]:
    with fake_search_provider() as fake:
        yield fake


def _host(provider: FakeSearchProvider) -> str:
    return provider.base_url.removeprefix("http://")


def searching_ws(
    factory: WorkspaceFactory,
    backend: str,
    fake: FakeSearchProvider,
    tmp_path: Path,
    *,
    network: bool = True,
    **search: Any,
) -> SandboxWorkspace:
    settings = {
        "provider": "searxng",
        "base_url": fake.base_url,
        "cache_dir": str(tmp_path / "search-cache"),
        "timeout_s": 1.0,
        **search,
    }
    allowlist = [_host(fake)] if network else []
    return factory(backend, web_search=WebSearchSettings(**settings), network_allowlist=allowlist)


def results(content: str) -> list[dict[str, str]]:
    payload = json.loads(content)
    found: list[dict[str, str]] = payload["results"]
    assert payload["count"] == len(found)
    return found


def sandbox_reaches(ws: SandboxWorkspace, url: str) -> str:
    """What a program inside the sandbox gets when it asks ``url`` itself."""
    probe = ws.call(
        "exec",
        {
            "command": 'python3 -c "import urllib.request as u, sys\n'
            f"try:\n  u.urlopen('{url}', timeout=3); print('REACHED')\n"
            "except Exception as e:\n  print('refused', type(e).__name__)\"",
        },
    )
    return probe.content


# --- web_search ------------------------------------------------------------------------------


def test_web_search_is_off_by_default(
    workspace_factory: WorkspaceFactory, provider: FakeSearchProvider
) -> None:
    ws = workspace_factory("local")
    names = {s["function"]["name"] for s in ws.tool_schemas()}
    assert "web_search" not in names and "web_fetch" in names
    assert "web_search" not in {s["function"]["name"] for s in tool_schemas()}
    result = ws.call("web_search", {"query": "anything"})
    assert not result.ok and "web search is not enabled" in result.content
    assert provider.searches() == 0


def test_web_search_says_so_when_network_access_is_off(
    workspace_factory: WorkspaceFactory, provider: FakeSearchProvider, tmp_path: Path
) -> None:
    ws = searching_ws(workspace_factory, "local", provider, tmp_path, network=False)
    assert "web_search" in {s["function"]["name"] for s in ws.tool_schemas()}
    result = ws.call("web_search", {"query": "quarterly freight rates"})
    assert not result.ok
    assert "network access is off" in result.content and "network_allowlist" in result.content
    assert provider.searches() == 0


def test_web_search_returns_title_url_snippet_and_replays_from_the_cache(
    workspace_factory: WorkspaceFactory, provider: FakeSearchProvider, tmp_path: Path, backend: str
) -> None:
    ws = searching_ws(workspace_factory, backend, provider, tmp_path)
    first = ws.call("web_search", {"query": "freight rates 2026", "count": 3})
    assert first.ok, first.content
    found = results(first.content)
    assert [r["title"] for r in found] == [f"freight rates 2026 result {i}" for i in (1, 2, 3)]
    assert found[0] == {
        "title": "freight rates 2026 result 1",
        "url": f"{provider.base_url}/page/1",
        "snippet": "About freight rates 2026 & more, number 1",
    }
    assert provider.searches() == 1
    ((path, params, _),) = provider.requests
    assert path == "/search" and params["q"] == ["freight rates 2026"]
    # A re-run (another workspace, the same cache) replays the same bytes and asks nobody.
    again = searching_ws(workspace_factory, backend, provider, tmp_path)
    replay = again.call("web_search", {"query": "freight rates 2026", "count": 3})
    assert replay.content == first.content and provider.searches() == 1
    default_count = ws.call("web_search", {"query": "freight rates 2026"})
    assert len(results(default_count.content)) == 5 and provider.searches() == 2
    # The sandbox itself cannot reach the provider: egress stays closed.
    assert "refused" in sandbox_reaches(ws, f"{provider.base_url}/search?q=x&format=json")
    assert provider.searches() == 2


def test_web_search_with_a_keyed_api(
    workspace_factory: WorkspaceFactory,
    provider: FakeSearchProvider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = f"{provider.base_url}{BRAVE_PATH}"
    settings = {"provider": "brave", "base_url": base, "api_key_env": "ISE_TEST_SEARCH_KEY"}
    monkeypatch.delenv("ISE_TEST_SEARCH_KEY", raising=False)
    ws = searching_ws(workspace_factory, "local", provider, tmp_path, **settings)
    missing = ws.call("web_search", {"query": "port congestion"})
    assert not missing.ok and "ISE_TEST_SEARCH_KEY is not set" in missing.content
    assert provider.searches() == 0

    monkeypatch.setenv("ISE_TEST_SEARCH_KEY", "sk-search-secret-123")
    found = ws.call("web_search", {"query": "port congestion", "count": 2})
    assert found.ok, found.content
    assert [r["url"] for r in results(found.content)] == [
        f"{provider.base_url}/page/1",
        f"{provider.base_url}/page/2",
    ]
    ((_, params, headers),) = provider.requests
    assert params["count"] == ["2"] and headers["X-Subscription-Token"] == "sk-search-secret-123"
    cached = "".join(p.read_text() for p in (tmp_path / "search-cache").rglob("*.json"))
    assert "port congestion" in cached and "sk-search-secret-123" not in cached


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("slow", "did not answer within 1s"),
        ("error500", "HTTP 500"),
        ("malformed", "not JSON"),
        ("wrong_shape", "no list of results"),
    ],
)
def test_web_search_provider_failures_are_observations(
    workspace_factory: WorkspaceFactory,
    provider: FakeSearchProvider,
    tmp_path: Path,
    mode: str,
    message: str,
) -> None:
    ws = searching_ws(workspace_factory, "local", provider, tmp_path)
    provider.mode = mode
    failed = ws.call("web_search", {"query": "container dwell time"})
    assert not failed.ok and failed.content.startswith("Error: ") and message in failed.content
    assert failed.duration_s < 3.0
    # Failures are not cached: once the provider recovers, the same query is asked again.
    provider.mode = "ok"
    recovered = ws.call("web_search", {"query": "container dwell time"})
    assert recovered.ok and provider.searches() == 2


def test_a_refused_key_is_named_in_the_observation(
    workspace_factory: WorkspaceFactory,
    provider: FakeSearchProvider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider.brave_key = "right"
    monkeypatch.setenv("BRAVE_API_KEY", "wrong")  # the default variable of the brave provider
    settings = {"provider": "brave", "base_url": f"{provider.base_url}{BRAVE_PATH}"}
    ws = searching_ws(workspace_factory, "local", provider, tmp_path, **settings)
    refused = ws.call("web_search", {"query": "x"})
    assert not refused.ok and "HTTP 401" in refused.content
    assert "check the API key" in refused.content and "wrong" not in refused.content


# --- web_fetch, the same path ----------------------------------------------------------------


def test_web_fetch_goes_through_the_allowlist_on_the_host(
    workspace_factory: WorkspaceFactory, provider: FakeSearchProvider, backend: str
) -> None:
    off = workspace_factory(backend)
    disabled = off.call("web_fetch", {"url": f"{provider.base_url}/page/1"})
    assert not disabled.ok and "network access is disabled" in disabled.content

    ws = workspace_factory(backend, network_allowlist=[_host(provider)])
    page = ws.call("web_fetch", {"url": f"{provider.base_url}/page/1"})
    assert page.ok and "Page /page/1" in page.content, page.content
    port = int(_host(provider).rsplit(":", 1)[1])
    other = ws.call("web_fetch", {"url": f"http://127.0.0.1:{port + 1}/"})
    assert not other.ok and "not in the network allowlist" in other.content
    away = ws.call("web_fetch", {"url": f"{provider.base_url}/away"})
    assert not away.ok and "example.invalid is not in the network allowlist" in away.content
    by_name = workspace_factory(backend, network_allowlist=["localhost"])
    internal = by_name.call("web_fetch", {"url": f"http://localhost:{port}/page/1"})
    assert not internal.ok and "internal address" in internal.content
    # What the host may fetch for the agent, the sandbox still cannot reach by itself.
    assert "refused" in sandbox_reaches(ws, f"{provider.base_url}/page/1")
    fetched = [path for path, _, _ in provider.requests]
    assert fetched == ["/page/1", "/away"]
