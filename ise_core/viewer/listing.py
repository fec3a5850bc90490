"""Filtering, sorting and paging the episode index (pure; no I/O).

The query comes from the list page's URL. Unknown or malformed values never raise: a filter
value that matches nothing gives an empty page, and a bad page number or sort key falls back
to the default, because a URL edited by hand should still show a page.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

SORT_KEYS = ("id", "user_turns", "dialogue_turns", "tool_calls", "tool_errors", "total_tokens")
PAGE_SIZES = (25, 50, 100, 200)
# Count filters: "any" means at least one, "none" means zero.
COUNT_FILTERS = ("tool_errors", "recovered_errors", "text_tool_calls", "compactions")
PRESENCE = ("", "any", "none")

Row = dict[str, Any]


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(value) if value is not None else default
    except ValueError:
        return default
    return min(max(number, low), high)


@dataclass(frozen=True)
class EpisodeQuery:
    """The list page's filters, sort and page, as read from its URL."""

    status: str = ""
    stop_reason: str = ""
    domain: str = ""
    complexity: str = ""
    persona: str = ""
    tool: str = ""
    tool_errors: str = ""
    recovered_errors: str = ""
    text_tool_calls: str = ""
    compactions: str = ""
    q: str = ""
    sort: str = "id"
    desc: bool = False
    page: int = 1
    per_page: int = 50

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> EpisodeQuery:
        def text(name: str) -> str:
            return str(params.get(name) or "").strip()[:200]

        presence = {name: text(name) if text(name) in PRESENCE else "" for name in COUNT_FILTERS}
        per_page = _int(params.get("per_page"), 50, 1, PAGE_SIZES[-1])
        return cls(
            status=text("status"),
            stop_reason=text("stop_reason"),
            domain=text("domain"),
            complexity=text("complexity"),
            persona=text("persona"),
            tool=text("tool"),
            q=text("q"),
            sort=text("sort") if text("sort") in SORT_KEYS else "id",
            desc=text("desc") in ("1", "true", "yes"),
            page=_int(params.get("page"), 1, 1, 1_000_000),
            per_page=per_page,
            **presence,
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """The non-default parameters of this query with ``changes`` applied (for links)."""
        defaults = EpisodeQuery()
        out: dict[str, str] = {}
        for item in fields(self):
            value = changes.get(item.name, getattr(self, item.name))
            if value != getattr(defaults, item.name):
                out[item.name] = "1" if value is True else str(value)
        return out

    def predicates(self) -> list[Callable[[Row], bool]]:
        checks: list[Callable[[Row], bool]] = []
        for name in ("status", "stop_reason", "complexity"):
            if getattr(self, name):
                checks.append(_equals(name, getattr(self, name)))
        if self.domain:
            checks.append(_contains("domains", self.domain))
        if self.tool:
            checks.append(_contains("tools", self.tool))
        if self.persona:
            checks.append(_persona(self.persona))
        for name in COUNT_FILTERS:
            if getattr(self, name):
                checks.append(_presence(name, getattr(self, name) == "any"))
        if self.q:
            checks.append(_text(self.q))
        return checks


def _equals(name: str, wanted: str) -> Callable[[Row], bool]:
    return lambda row: bool(row.get(name) == wanted)


def _contains(name: str, wanted: str) -> Callable[[Row], bool]:
    return lambda row: wanted in row.get(name, ())


def _presence(name: str, present: bool) -> Callable[[Row], bool]:
    return lambda row: (int(row.get(name) or 0) > 0) is present


def _persona(wanted: str) -> Callable[[Row], bool]:
    needle = wanted.casefold()
    return lambda row: (
        row.get("persona_id") == wanted or needle in str(row.get("persona", "")).casefold()
    )


def _text(wanted: str) -> Callable[[Row], bool]:
    needle = wanted.casefold()
    return lambda row: (
        needle in str(row["id"]).casefold() or needle in str(row.get("request", "")).casefold()
    )


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    total: int
    page: int
    pages: int
    per_page: int


def select(rows: Sequence[Row], query: EpisodeQuery) -> list[Row]:
    """The rows that pass every filter, in the query's order."""
    checks = query.predicates()
    chosen = [row for row in rows if all(check(row) for check in checks)]
    if query.sort != "id" or query.desc:
        key = query.sort
        # Ties keep id order, so a page boundary never shuffles between requests.
        chosen.sort(key=lambda row: row.get(key) or 0, reverse=query.desc)
    return chosen


def paginate(rows: Sequence[Row], query: EpisodeQuery) -> Page:
    total = len(rows)
    pages = max(1, -(-total // query.per_page))
    page = min(query.page, pages)
    start = (page - 1) * query.per_page
    return Page(list(rows[start : start + query.per_page]), total, page, pages, query.per_page)


def facets(rows: Sequence[Row]) -> dict[str, list[tuple[str, int]]]:
    """The values each filter can take in ``rows``, with how many episodes have each."""
    counters: dict[str, Counter[str]] = {
        name: Counter() for name in ("status", "stop_reason", "complexity", "domain", "tool")
    }
    for row in rows:
        counters["status"][row.get("status", "")] += 1
        counters["stop_reason"][row.get("stop_reason", "")] += 1
        counters["complexity"][row.get("complexity", "")] += 1
        counters["domain"].update(row.get("domains", ()))
        counters["tool"].update(row.get("tools", ()))
    return {name: sorted(counter.items()) for name, counter in counters.items()}


class EpisodeIndex:
    """An index's rows with what is worth computing once per index: the facets, and the
    selections of the last few queries (paging through one filter selects once)."""

    MEMO = 32

    def __init__(self, rows: list[Row], *, from_file: bool) -> None:
        self.rows = rows
        self.from_file = from_file
        self._facets: dict[str, list[tuple[str, int]]] | None = None
        self._memo: dict[EpisodeQuery, list[Row]] = {}
        self._lock = threading.Lock()

    @property
    def facets(self) -> dict[str, list[tuple[str, int]]]:
        if self._facets is None:
            self._facets = facets(self.rows)
        return self._facets

    def page(self, query: EpisodeQuery) -> Page:
        key = replace(query, page=1, per_page=1)
        with self._lock:
            chosen = self._memo.get(key)
        if chosen is None:
            chosen = select(self.rows, query)
            with self._lock:
                if len(self._memo) >= self.MEMO:
                    self._memo.pop(next(iter(self._memo)))
                self._memo[key] = chosen
        return paginate(chosen, query)

    def by_id(self) -> dict[str, Row]:
        return {row["id"]: row for row in self.rows}


__all__ = [
    "COUNT_FILTERS",
    "PAGE_SIZES",
    "SORT_KEYS",
    "EpisodeIndex",
    "EpisodeQuery",
    "Page",
    "facets",
    "paginate",
    "select",
]
