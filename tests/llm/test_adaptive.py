"""``llm.adaptive``: the in-flight cap follows what the endpoint can take (AIMD).

The controller on its own (decrease once per overload, additive increase only while the cap is
full, a slow probe back to the last overload level), then the whole client against the
loopback server with a capacity that changes mid-run.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from typing import Any

import pytest

from ise_core.llm.adaptive import PROBE_MIN_SUCCESSES, AdaptiveCap, Attempt, is_overload
from ise_core.llm.limits import EndpointLimiter, LimitSettings, SlotGate
from ise_core.records import Message
from tests.fakes import FakeOpenAIServer
from tests.llm.conftest import ChatMaker


def _ok(cap: AdaptiveCap, n: int, in_flight: int | None = None) -> None:
    for _ in range(n):
        attempt = cap.begin(cap.cap if in_flight is None else in_flight)
        attempt.answered()
        cap.end(attempt)


def _overload(cap: AdaptiveCap, attempt: Attempt | None = None) -> None:
    attempt = attempt or cap.begin(cap.cap)
    attempt.overloaded("429 Too Many Requests")
    cap.end(attempt)


def test_overload_halves_the_cap_once_per_epoch() -> None:
    cap = AdaptiveCap(16)
    sent_together = [cap.begin(16) for _ in range(5)]  # five attempts out at cap 16
    for attempt in sent_together:
        _overload(cap, attempt)
    assert cap.cap == 8 and cap.decreases == 1 and cap.overloads == 5
    _overload(cap)  # one sent at the new cap: a new overload
    assert cap.cap == 4
    for _ in range(5):
        _overload(cap)
    assert cap.cap == 1 and cap.lowest == 1  # never below one
    assert cap.decreases == 4 and cap.overloads == 11  # 4 -> 2 -> 1, then no more changes


def test_additive_increase_needs_a_full_cap_and_stops_at_the_ceiling() -> None:
    cap = AdaptiveCap(6)
    _overload(cap)  # 6 -> 3, last overload at 6
    _ok(cap, 50, in_flight=1)  # the cap was never full: no evidence for more
    assert cap.cap == 3
    _ok(cap, 3)  # one round at 3
    assert cap.cap == 4
    _ok(cap, 4)
    assert cap.cap == 5
    _ok(cap, 5)  # the step back to 6, the last overload level, is a slow probe
    assert cap.cap == 5
    _ok(cap, PROBE_MIN_SUCCESSES - 5)
    assert cap.cap == 6
    _ok(cap, 100)
    assert cap.cap == 6  # the ceiling: max_concurrency
    stats = cap.stats()
    assert stats["increases"] == 3 and stats["decreases"] == 1
    assert [(c["from"], c["to"]) for c in stats["changes"]] == [(6, 3), (3, 4), (4, 5), (5, 6)]


def test_successes_of_an_older_epoch_do_not_raise_the_cap() -> None:
    cap = AdaptiveCap(8)
    old = [cap.begin(8) for _ in range(8)]
    _overload(cap)
    for attempt in old:
        attempt.answered()
        cap.end(attempt)
    assert cap.cap == 4


def test_overload_statuses() -> None:
    assert is_overload(429) and is_overload(503) and is_overload("timeout")
    assert not any(is_overload(s) for s in (500, 502, 400, "connection", "invalid body"))


def test_every_change_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    cap = AdaptiveCap(4, "http://x/v1 model m")
    with caplog.at_level(logging.INFO, logger="ise_core.llm.adaptive"):
        _overload(cap)
        _ok(cap, 2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "llm http://x/v1 model m: in-flight cap 4 -> 2 (429 Too Many Requests)",
        "llm http://x/v1 model m: in-flight cap 2 -> 3 (the endpoint kept up)",
    ]


def test_gate_holds_back_when_the_cap_shrinks_and_wakes_when_it_grows() -> None:
    size = {"cap": 2}
    gate = SlotGate(lambda: size["cap"])

    async def go() -> None:
        await gate.acquire()
        await gate.acquire()
        size["cap"] = 1
        gate.release()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # one held, cap 1
        size["cap"] = 3
        gate.wake()
        await asyncio.sleep(0)
        assert waiter.done() and gate.held == 2

    asyncio.run(go())


def test_limiter_stats_report_the_cap_and_the_measured_latency() -> None:
    limiter = EndpointLimiter("http://x/v1", "m", LimitSettings(max_in_flight=4, adaptive=True))

    async def go() -> None:
        async with limiter.slot() as attempt:
            await asyncio.sleep(0.05)
            attempt.overloaded("timeout")
        async with limiter.slot() as attempt:
            await asyncio.sleep(0.05)
            attempt.answered()

    asyncio.run(go())
    stats = limiter.stats()
    assert stats["adaptive"]["cap"] == 2 and stats["adaptive"]["decreases"] == 1
    assert stats["answered"] == 1 and 0.04 <= stats["latency_s"] < 1.0
    assert "adaptive" not in EndpointLimiter("http://x/v1", "m", LimitSettings()).stats()


# --- against the loopback server ---------------------------------------------------------------

LATENCY_S = 0.3
CEILING = 8  # llm.max_concurrency: what the endpoint promised
WORKERS = 16  # more callers than the cap, as episodes in flight are
# (capacity, seconds): the endpoint serves the 8 it promised, then 3 (another tenant came),
# then 6.
PHASES = ((8, 6.0), (3, 8.0), (6, 12.0))
SETTLE_S = 4.0  # each phase is judged on its last seconds, after the cap had time to move


class _Sampler:
    """Every 20 ms: the server's requests being served, the client's in flight and cap."""

    def __init__(self, server: FakeOpenAIServer, limiter: EndpointLimiter) -> None:
        self.server = server
        self.limiter = limiter
        self.rows: list[tuple[float, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            stats = self.server.stats()
            self.rows.append(
                (
                    time.monotonic() - self.started,
                    stats["serving"],
                    self.limiter.in_flight,
                    self.limiter.cap(),
                )
            )

    def __enter__(self) -> _Sampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def window(self, start: float, end: float) -> dict[str, float]:
        rows = [row for row in self.rows if start <= row[0] < end]
        assert rows, f"no samples between {start} and {end} s"
        return {
            "serving": statistics.fmean(r[1] for r in rows),
            "client_in_flight": statistics.fmean(r[2] for r in rows),
            "cap_max": max(r[3] for r in rows),
            "cap_mean": statistics.fmean(r[3] for r in rows),
        }


async def _drive(chat: Any, server: FakeOpenAIServer, sampler: _Sampler) -> int:
    # Warm up first (the SDK's import, the connection pool): on a loaded machine that takes
    # seconds, which would otherwise eat into the first phase.
    await asyncio.gather(
        *(chat.complete([Message(role="user", content=f"warm-up {i}")]) for i in range(4))
    )
    sampler.started = time.monotonic()
    stop_at = sampler.started + sum(seconds for _, seconds in PHASES)
    sent = 0

    async def worker(index: int) -> None:
        nonlocal sent
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            text = f"worker {index} request {n}"
            await chat.complete([Message(role="user", content=text)])
            sent += 1

    async def schedule(started: float) -> None:
        elapsed = 0.0
        for capacity, seconds in PHASES:
            server.set_capacity(capacity)
            elapsed += seconds
            await asyncio.sleep(max(0.0, started + elapsed - time.monotonic()))

    await asyncio.gather(schedule(sampler.started), *(worker(i) for i in range(WORKERS)))
    return sent


def test_in_flight_follows_a_capacity_that_changes_mid_run(make_chat: ChatMaker) -> None:
    limits = LimitSettings(
        max_in_flight=CEILING,
        adaptive=True,
        max_retries=30,
        backoff_base_s=0.02,
        backoff_max_s=0.5,
    )
    with FakeOpenAIServer(latency_s=LATENCY_S, capacity_retry_after="0.05") as server:
        chat = make_chat(server, limits=limits, timeout_s=30.0)
        limiter = chat.limiter
        assert isinstance(limiter, EndpointLimiter)
        with _Sampler(server, limiter) as sampler:
            answered = asyncio.run(_drive(chat, server, sampler))
        served = server.stats()

    windows = []
    end = 0.0
    for _, seconds in PHASES:
        end += seconds
        windows.append(sampler.window(end - SETTLE_S, end))
    report = {"windows": windows, "served": served, "adaptive": limiter.stats()["adaptive"]}
    requests, rejected = served["requests"], served["over_capacity"]
    assert answered > 200, report
    # 429s stay under 5% of the requests the endpoint saw.
    assert rejected / requests < 0.05, report
    first, low, high = windows
    # Down: the client keeps about as many out as the endpoint takes, not its ceiling.
    assert low["cap_max"] <= 4 and low["client_in_flight"] <= 3.6, report
    # Up again: well above the low phase's capacity, close to the new one.
    assert high["serving"] >= 4.0 and high["cap_mean"] >= 4.5, report
    # Full while the endpoint serves what it promised (no 429 to react to).
    assert first["serving"] >= 4.5 and first["cap_mean"] == CEILING, report
    assert served["max_serving"] <= 8
    assert report["adaptive"]["decreases"] >= 2 and report["adaptive"]["increases"] >= 3


def test_a_run_summary_names_the_moves_of_each_adaptive_cap() -> None:
    from ise_core.llm.limits import adaptive_summary

    moved = EndpointLimiter("http://a/v1", "m", LimitSettings(max_in_flight=8, adaptive=True))
    assert moved.adaptive is not None
    _overload(moved.adaptive)
    still = EndpointLimiter("http://b/v1", "m", LimitSettings(max_in_flight=8, adaptive=True))
    fixed = EndpointLimiter("http://c/v1", "m", LimitSettings(max_in_flight=8))
    line = adaptive_summary([moved.stats(), still.stats(), fixed.stats()])
    assert line == "adaptive cap of http://a/v1 now 4/8 (lowest 4, 1 down, 0 up, 1 overloads)"
