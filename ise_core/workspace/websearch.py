"""``web_search`` on the host side of the tool boundary: the sandbox never gets a network.

The agent sends a query; the host asks the configured provider (``workspace.web_search``) and
returns title, URL and snippet of each result. Providers:

- ``searxng``: a SearXNG instance's JSON API, ``GET <base_url>/search?q=...&format=json``
  (the instance must list ``json`` under ``search.formats``). An optional bearer token comes
  from the variable named by ``api_key_env``.
- ``brave``: the Brave Search API (the provider the published agent's ``web_search`` uses),
  ``GET <base_url>?q=...&count=N`` with the key from the variable named by ``api_key_env``
  (``BRAVE_API_KEY`` by default) in ``X-Subscription-Token``.

Searching is off by default, and refused with a clear observation while network access is off
(``workspace.network_allowlist`` empty): a search engine reveals the query to the outside.
The provider's address is the operator's setting, so it is not checked against the allowlist;
the result URLs are, when the agent fetches them with ``web_fetch``. No proxy from the
environment is used.

Results are cached like LLM replies (``ise_core.llm.cache``): keyed on the provider's endpoint,
the query and the count (never the key), so a re-run replays the same results and costs
nothing. Only answers that parsed are cached; a timeout, an HTTP error or malformed JSON
reaches the agent as an error and is asked again next time.
"""

from __future__ import annotations

import html
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ise_core.config import WebSearchSettings
from ise_core.errors import SearchError
from ise_core.llm.cache import ResponseCache, request_key

MAX_RESPONSE_BYTES = 2 * 1024 * 1024
MAX_SNIPPET_CHARS = 500
_TAG = re.compile(r"<[^>]{0,200}>")


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str


def _clean(text: object, limit: int) -> str:
    """Plain text: providers mark matches with HTML tags and entities."""
    plain = html.unescape(_TAG.sub("", str(text or "")))
    return " ".join(plain.split())[:limit]


def _request(settings: WebSearchSettings, query: str, count: int) -> urllib.request.Request:
    headers = {"Accept": "application/json", "User-Agent": "ise-workspace/1"}
    variable = settings.key_variable()
    key = os.environ.get(variable, "") if variable else ""
    if settings.provider == "brave":
        if not key:
            raise SearchError(
                f"web search is not available: the API key variable {variable} is not set "
                "(workspace.web_search.api_key_env)"
            )
        headers["X-Subscription-Token"] = key
        params = {"q": query, "count": str(count)}
    else:
        if key:
            headers["Authorization"] = f"Bearer {key}"
        params = {"q": query, "format": "json"}
    return urllib.request.Request(f"{settings.endpoint()}?{urlencode(params)}", headers=headers)


def _fetch_json(request: urllib.request.Request, timeout_s: float) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout_s) as response:
            data = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        hint = " (check the API key)" if exc.code in (401, 403) else ""
        raise SearchError(
            f"the search provider failed: HTTP {exc.code} {exc.reason}{hint}"
        ) from None
    except TimeoutError:
        raise SearchError(f"the search provider did not answer within {timeout_s:g}s") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise SearchError(f"the search provider did not answer within {timeout_s:g}s") from None
        raise SearchError(f"cannot reach the search provider: {reason}") from None
    if len(data) > MAX_RESPONSE_BYTES:
        raise SearchError("the search provider's answer is too large")
    try:
        return json.loads(data.decode("utf-8", errors="replace"))
    except ValueError:
        raise SearchError("the search provider answered with something that is not JSON") from None


def parse_results(provider: str, body: Any, count: int) -> list[SearchResult]:
    """The results of a provider's JSON answer, or ``SearchError`` when it has another shape."""
    if provider == "brave":
        web = body.get("web") if isinstance(body, dict) else None
        items = web.get("results", []) if isinstance(web, dict) else None
        snippet_key = "description"
    else:
        items = body.get("results") if isinstance(body, dict) else None
        snippet_key = "content"
    if not isinstance(items, list):
        raise SearchError("the search provider's answer has no list of results")
    results = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            continue
        results.append(
            SearchResult(
                title=_clean(item.get("title"), 300),
                url=item["url"][:2000],
                snippet=_clean(item.get(snippet_key), MAX_SNIPPET_CHARS),
            )
        )
        if len(results) >= count:
            break
    return results


def search(
    settings: WebSearchSettings,
    query: str,
    count: int,
    *,
    network_allowlist: list[str],
    base_dir: Path,
) -> list[SearchResult]:
    """Up to ``count`` results for ``query``, from the cache or the provider."""
    if settings.provider == "off":
        raise SearchError(
            "web search is not enabled in this workspace (workspace.web_search.provider is off)"
        )
    if not network_allowlist:
        raise SearchError(
            "web search is disabled: network access is off in this workspace "
            "(workspace.network_allowlist is empty)"
        )
    if not query.strip():
        raise SearchError("query must not be empty")
    cache_dir = Path(settings.cache_dir)
    cache = ResponseCache(
        cache_dir if cache_dir.is_absolute() else base_dir / cache_dir, settings.cache
    )
    body = {"tool": "web_search", "provider": settings.provider, "query": query, "count": count}
    key = request_key(settings.endpoint(), body)
    cached = cache.get(key)
    if cached is not None:
        try:
            return [SearchResult(**item) for item in cached["results"]]
        except (KeyError, TypeError):
            pass  # an entry of another shape: ask the provider again and rewrite it
    request = _request(settings, query, count)
    results = parse_results(settings.provider, _fetch_json(request, settings.timeout_s), count)
    cache.put(key, {"results": [asdict(r) for r in results]}, model=settings.provider)
    return results


def render(query: str, provider: str, results: list[SearchResult]) -> str:
    """What the agent sees: one JSON object, the results in the provider's order."""
    payload = {
        "query": query,
        "provider": provider,
        "count": len(results),
        "results": [asdict(r) for r in results],
    }
    return json.dumps(payload, ensure_ascii=False, indent=1)
