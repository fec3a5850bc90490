"""Filtering, sorting and paging the episode index (pure; no I/O).

The query comes from the list page's URL. Unknown or malformed values never raise: a filter
value that matches nothing gives an empty page, and a bad page number or sort key falls back
to the default, because a URL edited by hand should still show a page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

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


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    total: int
    page: int
    pages: int
    per_page: int


# Fields with one value per row, and fields holding a list of values per row.
SINGLE = ("status", "stop_reason", "complexity", "persona_id")
MULTI = {"domain": "domains", "tool": "tools"}
NUMBERS = tuple(sorted({*SORT_KEYS[1:], *COUNT_FILTERS}))


class EpisodeIndex:
    """The index's rows as columns, so a query over 50,000 episodes costs milliseconds.

    Built once per index file: each single-valued field as integer codes, each value of a
    list field (a domain, a tool) as a boolean column, each count as an integer column, and
    the searchable text (id and request; persona) as lower-cased strings. A query is then a
    few vectorised comparisons combined into one mask, applied to a sort order computed
    once per sort key. Rows are kept in intent-id order, which is also the tie-break of
    every sort, so a page boundary never moves between requests.
    """

    def __init__(self, rows: list[Row], *, from_file: bool) -> None:
        self.rows = sorted(rows, key=lambda row: str(row["id"]))
        self.from_file = from_file
        n = len(self.rows)
        self._codes: dict[str, tuple[dict[str, int], np.ndarray]] = {}
        for name in SINGLE:
            values = [str(row.get(name) or "") for row in self.rows]
            vocabulary = {value: code for code, value in enumerate(sorted(set(values)))}
            codes = np.fromiter((vocabulary[v] for v in values), dtype=np.int32, count=n)
            self._codes[name] = (vocabulary, codes)
        self._members: dict[str, dict[str, np.ndarray]] = {}
        for name, field in MULTI.items():
            positions: dict[str, list[int]] = {}
            for position, row in enumerate(self.rows):
                for value in row.get(field) or ():
                    positions.setdefault(str(value), []).append(position)
            columns = {}
            for value, where in positions.items():
                column = np.zeros(n, dtype=bool)
                column[where] = True
                columns[value] = column
            self._members[name] = columns
        self._numbers = {
            name: np.fromiter((int(r.get(name) or 0) for r in self.rows), np.int64, count=n)
            for name in NUMBERS
        }
        self._text = [f"{r['id']} {r.get('request', '')}".casefold() for r in self.rows]
        self._personas = [str(r.get("persona", "")).casefold() for r in self.rows]
        self._orders: dict[tuple[str, bool], np.ndarray] = {}
        self._facets: dict[str, list[tuple[str, int]]] | None = None

    def _order(self, key: str, desc: bool) -> np.ndarray:
        if (key, desc) not in self._orders:
            if key == "id":
                order = np.arange(len(self.rows))
                order = order[::-1].copy() if desc else order
            else:
                values = self._numbers[key]
                order = np.argsort(-values if desc else values, kind="stable")
            self._orders[(key, desc)] = order
        return self._orders[(key, desc)]

    def _contains(self, texts: list[str], needle: str) -> np.ndarray:
        return np.fromiter((needle in t for t in texts), dtype=bool, count=len(texts))

    def mask(self, query: EpisodeQuery) -> np.ndarray | None:
        """Which rows pass every filter of ``query`` (None: no filter, every row)."""
        parts: list[np.ndarray] = []
        for name in ("status", "stop_reason", "complexity"):
            wanted = getattr(query, name)
            if wanted:
                vocabulary, codes = self._codes[name]
                parts.append(codes == vocabulary.get(wanted, -1))
        for name in MULTI:
            wanted = getattr(query, name)
            if wanted:
                parts.append(self._members[name].get(wanted, np.zeros(len(self.rows), bool)))
        if query.persona:
            vocabulary, codes = self._codes["persona_id"]
            exact = codes == vocabulary.get(query.persona, -1)
            parts.append(exact | self._contains(self._personas, query.persona.casefold()))
        for name in COUNT_FILTERS:
            mode = getattr(query, name)
            if mode:
                parts.append(self._numbers[name] > 0 if mode == "any" else self._numbers[name] == 0)
        if query.q:
            parts.append(self._contains(self._text, query.q.casefold()))
        if not parts:
            return None
        combined = parts[0].copy()
        for part in parts[1:]:
            combined &= part
        return combined

    def positions(self, query: EpisodeQuery) -> np.ndarray:
        """Row positions passing the filters, in the query's order."""
        order = self._order(query.sort, query.desc)
        chosen = self.mask(query)
        return order if chosen is None else order[chosen[order]]

    def page(self, query: EpisodeQuery) -> Page:
        positions = self.positions(query)
        total = len(positions)
        pages = max(1, -(-total // query.per_page))
        page = min(query.page, pages)
        start = (page - 1) * query.per_page
        rows = [self.rows[i] for i in positions[start : start + query.per_page]]
        return Page(rows, total, page, pages, query.per_page)

    def select(self, query: EpisodeQuery) -> list[Row]:
        return [self.rows[i] for i in self.positions(query)]

    @property
    def facets(self) -> dict[str, list[tuple[str, int]]]:
        """The values each filter can take, with how many episodes have each."""
        if self._facets is None:
            found: dict[str, list[tuple[str, int]]] = {}
            for name in ("status", "stop_reason", "complexity"):
                vocabulary, codes = self._codes[name]
                counts = np.bincount(codes, minlength=len(vocabulary))
                found[name] = [(value, int(counts[code])) for value, code in vocabulary.items()]
            for name, columns in self._members.items():
                found[name] = sorted((v, int(c.sum())) for v, c in columns.items())
            self._facets = found
        return self._facets

    def by_id(self) -> dict[str, Row]:
        return {row["id"]: row for row in self.rows}


def select(rows: Sequence[Row], query: EpisodeQuery) -> list[Row]:
    """The rows that pass every filter, in the query's order."""
    return EpisodeIndex(list(rows), from_file=False).select(query)


def facets(rows: Sequence[Row]) -> dict[str, list[tuple[str, int]]]:
    return EpisodeIndex(list(rows), from_file=False).facets


__all__ = [
    "COUNT_FILTERS",
    "PAGE_SIZES",
    "SORT_KEYS",
    "EpisodeIndex",
    "EpisodeQuery",
    "Page",
    "facets",
    "select",
]
