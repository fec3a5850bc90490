"""Retry-After parsing, backoff, token buckets and the shared limiter registry."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from email.utils import formatdate

from ise_core.llm.limits import (
    MAX_RETRY_AFTER_S,
    EndpointLimiter,
    LimitSettings,
    TokenBucket,
    backoff_delay,
    is_retryable_status,
    parse_retry_after,
    parse_retry_after_ms,
    retry_after_from_headers,
    shared_limiter,
)


def test_retryable_statuses() -> None:
    assert all(is_retryable_status(s) for s in (408, 409, 429, 500, 502, 503, 504, 599))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 413, 422))


def test_parse_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("99999") == MAX_RETRY_AFTER_S
    now = time.time()
    assert abs((parse_retry_after(formatdate(now + 30, usegmt=True), now=now) or 0) - 30) <= 1
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0
    for junk in (None, "", "soon", "nan"):
        assert parse_retry_after(junk) is None


def test_parse_retry_after_ms_converts_before_capping() -> None:
    assert parse_retry_after_ms("1500") == 1.5
    assert parse_retry_after_ms("30000") == 30.0
    assert parse_retry_after_ms(" 250.5 ") == 0.2505
    assert parse_retry_after_ms("0") == 0.0
    assert parse_retry_after_ms("-20") == 0.0
    assert parse_retry_after_ms("700000") == MAX_RETRY_AFTER_S  # 700 s: over the cap
    for junk in (None, "", "soon", "nan", formatdate(time.time() + 30, usegmt=True)):
        assert parse_retry_after_ms(junk) is None  # no date form for milliseconds


def test_absurd_retry_after_values_are_bounded() -> None:
    for value in ("inf", "1e309", "99999999999999999999", "1e12"):
        assert parse_retry_after(value) == MAX_RETRY_AFTER_S
        assert parse_retry_after_ms(value) == MAX_RETRY_AFTER_S
    for value in ("-inf", "-1e309"):
        assert parse_retry_after(value) == 0.0
        assert parse_retry_after_ms(value) == 0.0
    now = time.time()
    far = formatdate(now + 10 * 365 * 86400, usegmt=True)  # ten years away
    assert parse_retry_after(far, now=now) == MAX_RETRY_AFTER_S
    assert parse_retry_after("Mon, 99 Foo 2026 99:99:99 GMT") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00") is None  # no zone: ambiguous


def test_retry_after_from_headers_prefers_milliseconds() -> None:
    assert retry_after_from_headers({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert retry_after_from_headers({"retry-after": "2"}) == 2.0
    assert retry_after_from_headers({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert retry_after_from_headers({}) is None
    now = time.time()
    date = {"retry-after": formatdate(now + 20, usegmt=True)}
    assert abs((retry_after_from_headers(date, now=now) or 0) - 20) <= 1


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    limits = LimitSettings(backoff_base_s=1.0, backoff_max_s=8.0)
    rng = random.Random(0)
    for index, ceiling in enumerate((1, 2, 4, 8, 8, 8)):
        delays = [backoff_delay(index, limits, rng=rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > 0  # jitter
    assert backoff_delay(0, limits, retry_after=30, rng=rng) >= 30
    assert backoff_delay(0, limits, retry_after=30, rng=rng) <= 33


def test_token_bucket_paces_and_settles() -> None:
    bucket = TokenBucket(per_minute=600)  # 10/s, bursts of 60
    assert bucket.capacity == 60
    assert bucket.try_take(60) == 0.0
    wait = bucket.try_take(5)
    assert 0.4 < wait <= 0.5
    bucket.adjust(-50)  # a refund after a smaller-than-estimated request
    assert bucket.try_take(5) == 0.0
    small = TokenBucket(per_minute=60)
    assert small.try_take(10_000) == 0.0  # bigger than the burst: clamped, so it can go
    assert small.try_take(10_000) > 0  # ... and the next one waits for the refill


def test_requests_per_minute_spaces_requests() -> None:
    limiter = EndpointLimiter("http://x/v1", "m", LimitSettings(requests_per_minute=600))

    async def go() -> float:
        started = time.monotonic()
        for _ in range(66):  # 60 in the burst, 6 more at 10/s
            async with limiter.slot():
                pass
        return time.monotonic() - started

    assert asyncio.run(go()) >= 0.5


def test_pause_holds_every_new_attempt() -> None:
    limiter = EndpointLimiter("http://x/v1", "m", LimitSettings())

    async def go() -> float:
        limiter.pause(0.3)
        started = time.monotonic()
        async with limiter.slot():
            return time.monotonic() - started

    assert asyncio.run(go()) >= 0.29


def test_shared_limiter_is_per_endpoint_and_model() -> None:
    limits = LimitSettings(max_in_flight=2)
    a = shared_limiter("http://h/v1", "m", limits)
    assert shared_limiter("http://h/v1/", "m", limits) is a
    assert shared_limiter("http://h/v1", "n", limits) is not a
    assert shared_limiter("http://other/v1", "m", limits) is not a
    replaced = shared_limiter("http://h/v1", "m", LimitSettings(max_in_flight=3))
    assert replaced is not a and replaced.limits.max_in_flight == 3


def test_limiter_works_across_event_loops() -> None:
    limiter = EndpointLimiter("http://x/v1", "m", LimitSettings(max_in_flight=1))

    async def once() -> None:
        async with limiter.slot():
            await asyncio.sleep(0)

    asyncio.run(once())
    asyncio.run(once())  # a semaphore bound to the first loop would fail here
    assert limiter.started == 2 and limiter.in_flight == 0


# A mixed stream on a tokens-per-minute limit: 10,000 tokens/s, a burst of 60,000.
TPM = 600_000
TOKENS_PER_S = TPM / 60
SMALL, LARGE, SMALL_WORKERS = 800, 5_000, 4


def test_token_waiters_are_served_in_arrival_order() -> None:
    bucket = TokenBucket(per_minute=TPM)
    order: list[str] = []

    async def one(name: str, amount: int) -> None:
        await bucket.take(amount)
        order.append(name)

    async def go() -> None:
        await bucket.take(bucket.capacity)  # start empty: every one below has to wait
        names = ["small-1", "large", "small-2", "small-3", "small-4"]
        amounts = [SMALL, LARGE, SMALL, SMALL, SMALL]
        await asyncio.gather(*(one(n, a) for n, a in zip(names, amounts, strict=True)))
        assert order == names

    asyncio.run(go())


def test_cancelled_waiter_gives_its_reservation_back() -> None:
    bucket = TokenBucket(per_minute=TPM)

    async def go() -> None:
        await bucket.take(bucket.capacity)
        waiter = asyncio.ensure_future(bucket.take(LARGE))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        # Without the refund the next small request would queue behind 5,000 tokens (0.5 s).
        assert await bucket.take(SMALL) < (SMALL + 200) / TOKENS_PER_S

    asyncio.run(go())


def test_large_request_is_not_overtaken_by_a_stream_of_small_ones() -> None:
    """Four workers send 800-token requests back to back for 3 s; a 5,000-token request
    arrives 0.2 s in. Served in arrival order it waits for the requests already queued and
    its own refill, not for the stream to end; the endpoint still gets its full rate."""
    limiter = EndpointLimiter(
        "http://x/v1", "m", LimitSettings(max_in_flight=64, tokens_per_minute=TPM)
    )
    granted = 0

    async def small_stream(stop: float) -> None:
        nonlocal granted
        while time.monotonic() < stop:
            async with limiter.slot(SMALL):
                granted += SMALL
                await asyncio.sleep(0)

    async def large() -> float:
        await asyncio.sleep(0.2)
        asked = time.monotonic()
        async with limiter.slot(LARGE):
            return time.monotonic() - asked

    async def go() -> tuple[float, float]:
        async with limiter.slot(10**9):  # drain the burst: the figures are the sustained rate
            pass
        started = time.monotonic()
        streams = [small_stream(started + 3.0) for _ in range(SMALL_WORKERS)]
        waited, *_ = await asyncio.gather(large(), *streams)
        return waited, (granted + LARGE) / (time.monotonic() - started)

    waited, throughput = asyncio.run(go())
    # At most every worker's queued request ahead of it, then its own tokens.
    bound = (SMALL_WORKERS * SMALL + LARGE) / TOKENS_PER_S
    assert waited <= bound + 0.3, f"the large request waited {waited:.2f} s (bound {bound} s)"
    assert 0.9 * TOKENS_PER_S <= throughput <= 1.02 * TOKENS_PER_S, throughput
