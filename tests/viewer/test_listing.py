"""Filtering, sorting and paging the episode index."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ise_core.viewer.listing import EpisodeIndex, EpisodeQuery, Page, facets, select


def _row(i: int, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"it-{i:04d}",
        "status": "kept" if i % 3 else "rejected",
        "stop_reason": "completed" if i % 3 else "max_turns",
        "complexity": ("simple", "medium", "complex")[i % 3],
        "domains": ["file-io", "code-runtime"] if i % 2 else ["web-extraction"],
        "persona_id": f"p-{i % 4}",
        "persona": f"Person {i % 4} (analyst)",
        "tools": ["exec", "read"] if i % 2 else ["write"],
        "user_turns": i % 7,
        "dialogue_turns": 10 + i,
        "tool_calls": (i * 7) % 11,
        "tool_errors": i % 5 == 0,
        "recovered_errors": int(i % 10 == 0),
        "text_tool_calls": int(i == 4),
        "compactions": 2 if i == 6 else 0,
        "total_tokens": 100 * i,
        "request": f"please tidy folder {i}",
    }
    row.update(fields)
    return row


ROWS = [_row(i) for i in range(30)]


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "rejected"}, [r for r in ROWS if r["status"] == "rejected"]),
        ({"stop_reason": "max_turns"}, [r for r in ROWS if r["stop_reason"] == "max_turns"]),
        ({"domain": "file-io"}, [r for r in ROWS if "file-io" in r["domains"]]),
        ({"complexity": "complex"}, [r for r in ROWS if r["complexity"] == "complex"]),
        ({"persona": "p-2"}, [r for r in ROWS if r["persona_id"] == "p-2"]),
        ({"persona": "person 1"}, [r for r in ROWS if r["persona_id"] == "p-1"]),
        ({"tool": "write"}, [r for r in ROWS if "write" in r["tools"]]),
        ({"tool_errors": "any"}, [r for r in ROWS if r["tool_errors"]]),
        ({"tool_errors": "none"}, [r for r in ROWS if not r["tool_errors"]]),
        ({"recovered_errors": "any"}, [r for r in ROWS if r["recovered_errors"]]),
        ({"text_tool_calls": "any"}, [ROWS[4]]),
        ({"compactions": "any"}, [ROWS[6]]),
        ({"q": "FOLDER 12"}, [ROWS[12]]),
        ({"status": "kept", "tool": "exec", "complexity": "medium"}, None),
        ({"status": "no-such-status"}, []),
    ],
)
def test_each_filter_selects_exactly_its_rows(
    params: dict[str, str], expected: list[dict[str, Any]] | None
) -> None:
    if expected is None:
        expected = [
            r
            for r in ROWS
            if r["status"] == "kept" and "exec" in r["tools"] and r["complexity"] == "medium"
        ]
        assert expected  # the combination is not vacuous
    assert ids(select(ROWS, EpisodeQuery.from_params(params))) == ids(expected)


def test_sorting_by_turns_or_tool_calls_keeps_id_order_among_ties() -> None:
    by_calls = select(ROWS, EpisodeQuery.from_params({"sort": "tool_calls", "desc": "1"}))
    values = [r["tool_calls"] for r in by_calls]
    assert values == sorted(values, reverse=True)
    for a, b in itertools.pairwise(by_calls):
        if a["tool_calls"] == b["tool_calls"]:
            assert a["id"] < b["id"]
    by_turns = select(ROWS, EpisodeQuery.from_params({"sort": "user_turns"}))
    assert [r["user_turns"] for r in by_turns] == sorted(r["user_turns"] for r in ROWS)


def paginate(rows: list[dict[str, Any]], query: EpisodeQuery) -> Page:
    return EpisodeIndex(rows, from_file=True).page(query)


def test_pages_cover_every_row_once_and_bad_numbers_fall_back() -> None:
    query = EpisodeQuery.from_params({"per_page": "25"})
    first = paginate(ROWS, query)
    second = paginate(ROWS, EpisodeQuery.from_params({"per_page": "25", "page": "2"}))
    assert (first.total, first.pages, second.page) == (30, 2, 2)
    assert ids(first.rows) + ids(second.rows) == ids(ROWS)
    beyond = paginate(ROWS, EpisodeQuery.from_params({"per_page": "25", "page": "99"}))
    assert beyond.page == 2  # the last page, not an empty one
    odd = EpisodeQuery.from_params(
        {"page": "x", "per_page": "-3", "sort": "rm -rf", "tool_errors": "maybe"}
    )
    assert (odd.page, odd.per_page, odd.sort, odd.tool_errors) == (1, 1, "id", "")
    assert EpisodeQuery.from_params({"per_page": "100000"}).per_page == 200


def test_links_keep_the_filters_and_change_only_the_page() -> None:
    query = EpisodeQuery.from_params({"status": "kept", "sort": "tool_calls", "desc": "1"})
    assert query.params(page=3) == {
        "status": "kept",
        "sort": "tool_calls",
        "desc": "1",
        "page": "3",
    }


def test_facets_count_each_value_and_pages_do_not_overlap() -> None:
    counted = dict(facets(ROWS)["status"])
    assert counted == {"kept": 20, "rejected": 10}
    assert dict(facets(ROWS)["tool"])["write"] == 15
    index = EpisodeIndex(ROWS, from_file=True)
    page1 = index.page(EpisodeQuery.from_params({"status": "kept", "per_page": "10"}))
    page2 = index.page(EpisodeQuery.from_params({"status": "kept", "per_page": "10", "page": "2"}))
    assert (page1.total, page2.page) == (20, 2)
    assert set(ids(page1.rows)).isdisjoint(ids(page2.rows))
    unsorted = EpisodeIndex(list(reversed(ROWS)), from_file=True)  # rows in any order
    assert ids(unsorted.page(EpisodeQuery()).rows) == ids(ROWS[:50])
