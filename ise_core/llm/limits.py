"""Endpoint limits and the retry policy: keep an endpoint busy without tripping its limits.

One ``EndpointLimiter`` per endpoint (base URL + model) per process, from ``shared_limiter``,
so the writer, the user simulator and the agent share the endpoint's limits when they share
the endpoint. A limiter bounds:

- requests in flight (an asyncio semaphore per event loop; a process runs one loop),
- requests per minute and tokens per minute (token buckets, both optional). A bucket holds a
  tenth of a minute's allowance, so a cold start bursts at most that much above the sustained
  rate. Tokens are reserved from an estimate before sending and settled from the reported usage.
  Waiters are served first come, first served, whatever their size.

After a 429 with ``Retry-After`` the whole endpoint pauses: no new attempt starts before the
time the server asked for, so concurrent requests do not hammer it.

Retry policy (applied by the client, one attempt per ``slot``): 408, 409, 429 and every 5xx,
timeouts and dropped connections are retried up to ``max_retries`` times with exponential
backoff and jitter (``backoff_base_s * 2**n``, capped at ``backoff_max_s``, half of it
random); a ``retry-after-ms`` (milliseconds) or ``Retry-After`` (seconds or an HTTP date) is
honoured as a lower bound, up to ``MAX_RETRY_AFTER_S``. Other 4xx are not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ise_core.config import LLMSettings

# Statuses worth another try: request timeout, conflict (a busy lock), rate limit, server side.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
# A Retry-After longer than this is treated as this (a misconfigured proxy must not stall a
# run for hours); the retry then meets the endpoint's answer again.
MAX_RETRY_AFTER_S = 600.0
# Fraction of a minute's allowance a bucket can hold (the burst size).
BURST_FRACTION = 0.1

_jitter = random.Random()


@dataclass(frozen=True)
class LimitSettings:
    """The limits and retry policy of one endpoint (from the ``llm`` block)."""

    max_in_flight: int = 16
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 90.0

    @classmethod
    def from_llm(cls, llm: LLMSettings) -> LimitSettings:
        return cls(
            max_in_flight=llm.max_concurrency,
            requests_per_minute=llm.requests_per_minute,
            tokens_per_minute=llm.tokens_per_minute,
            max_retries=llm.max_retries,
            backoff_base_s=llm.backoff_base_s,
            backoff_max_s=llm.backoff_max_s,
        )


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    seconds = _number(value)
    if seconds is None:
        try:
            when = parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return _capped(seconds)


def parse_retry_after_ms(value: str | None) -> float | None:
    """Seconds to wait from a ``retry-after-ms`` header (milliseconds; no date form)."""
    milliseconds = _number(value)
    # Convert before capping: the cap is in seconds.
    return None if milliseconds is None else _capped(milliseconds / 1000.0)


def retry_after_from_headers(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The wait a reply asks for: ``retry-after-ms`` (the finer one) if it parses, else
    ``Retry-After``; None when neither says anything usable."""
    seconds = parse_retry_after_ms(headers.get("retry-after-ms"))
    return seconds if seconds is not None else parse_retry_after(headers.get("retry-after"), now)


def _number(value: str | None) -> float | None:
    """A header's value as a finite-or-infinite number, or None (absent, text, NaN)."""
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return None if number != number else number  # NaN says nothing


def _capped(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def backoff_delay(
    retry_index: int,
    limits: LimitSettings,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to sleep before retry number ``retry_index`` (0-based)."""
    rng = rng or _jitter
    ceiling = min(limits.backoff_max_s, limits.backoff_base_s * (2.0**retry_index))
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if retry_after is not None:
        # Honour the server's wait, plus a little jitter so paused requests do not return
        # all in the same instant.
        delay = max(delay, retry_after + rng.uniform(0, 0.1 * retry_after))
    return delay


class TokenBucket:
    """``per_minute`` units per minute, holding at most ``BURST_FRACTION`` of a minute.

    Waiters are served in arrival order: ``take`` reserves its units at once, letting the
    level go below zero, and sleeps until the refill has paid that debt. A later request
    queues behind the debt of every earlier one, so a large request cannot be overtaken by a
    stream of small ones (which a wait-then-retry loop allows: each small one fits into the
    refill the large one is waiting for). Units still pass at ``per_minute``: the same
    throughput, in a fair order.
    """

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute * BURST_FRACTION)
        self.level = self.capacity
        self.updated = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def try_take(self, amount: float) -> float:
        """Take ``amount`` and return 0, or return the seconds until it would be there."""
        amount = min(amount, self.capacity)  # a request bigger than the burst still goes
        with self._lock:
            self._refill()
            if self.level >= amount:
                self.level -= amount
                return 0.0
            return (amount - self.level) / self.rate

    def reserve(self, amount: float) -> float:
        """Take ``amount`` now, on credit; return the seconds until the refill covers it."""
        amount = min(amount, self.capacity)  # a request bigger than the burst still goes
        with self._lock:
            self._refill()
            self.level -= amount
            return max(0.0, -self.level / self.rate)

    async def take(self, amount: float) -> float:
        """Wait for ``amount`` in arrival order and take it; returns the seconds waited."""
        wait = self.reserve(amount)
        if wait <= 0:
            return 0.0
        try:
            await asyncio.sleep(wait)
        except asyncio.CancelledError:
            # A cancelled waiter gives its reservation back to those still coming.
            self.adjust(-min(amount, self.capacity))
            raise
        return wait

    def adjust(self, delta: float) -> None:
        """Charge (positive) or refund (negative) units after the fact; may go below zero."""
        with self._lock:
            self._refill()
            self.level = min(self.capacity, self.level - delta)


class EndpointLimiter:
    """Concurrency, rate limits and the shared Retry-After pause of one endpoint."""

    def __init__(self, endpoint: str, model: str, limits: LimitSettings) -> None:
        self.endpoint = endpoint
        self.model = model
        self.limits = limits
        self._requests = (
            TokenBucket(limits.requests_per_minute) if limits.requests_per_minute else None
        )
        self._tokens = TokenBucket(limits.tokens_per_minute) if limits.tokens_per_minute else None
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._semaphores = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._resume_at = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = 0
        self.waited_s = 0.0

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            semaphore = self._semaphores.get(loop)
            if semaphore is None:
                semaphore = asyncio.Semaphore(self.limits.max_in_flight)
                self._semaphores[loop] = semaphore
            return semaphore

    def pause(self, seconds: float) -> None:
        """No new attempt on this endpoint starts within ``seconds`` (a server's Retry-After)."""
        with self._lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    async def _wait_for_resume(self) -> None:
        while True:
            wait = self._resume_at - time.monotonic()
            if wait <= 0:
                return
            self.waited_s += wait
            await asyncio.sleep(wait)

    @contextlib.asynccontextmanager
    async def slot(self, estimated_tokens: int = 0) -> AsyncIterator[None]:
        """Hold one in-flight slot for the duration of one attempt."""
        await self._wait_for_resume()
        if self._requests is not None:
            self.waited_s += await self._requests.take(1)
        if self._tokens is not None and estimated_tokens > 0:
            self.waited_s += await self._tokens.take(estimated_tokens)
        async with self._semaphore():
            # The pause may have been set while this request waited for its slot.
            await self._wait_for_resume()
            with self._lock:
                self.in_flight += 1
                self.started += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield
            finally:
                with self._lock:
                    self.in_flight -= 1

    def settle_tokens(self, estimated: int, actual: int) -> None:
        """Correct the tokens-per-minute bucket once the real usage is known."""
        if self._tokens is not None and estimated > 0:
            self._tokens.adjust(actual - min(estimated, self._tokens.capacity))

    def stats(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "model": self.model,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "attempts_started": self.started,
            "waited_s": round(self.waited_s, 3),
        }


_REGISTRY: dict[tuple[str, str], EndpointLimiter] = {}
_REGISTRY_LOCK = threading.Lock()


def shared_limiter(endpoint: str, model: str, limits: LimitSettings) -> EndpointLimiter:
    """The process-wide limiter for (endpoint, model).

    Chats built from the same settings share one limiter. A chat built with *different*
    limits for the same endpoint replaces the registry entry (the latest configuration wins
    for chats built from then on; chats already built keep theirs).
    """
    key = (endpoint.rstrip("/"), model)
    with _REGISTRY_LOCK:
        limiter = _REGISTRY.get(key)
        if limiter is None or limiter.limits != limits:
            limiter = EndpointLimiter(key[0], model, limits)
            _REGISTRY[key] = limiter
        return limiter


def reset_limiters() -> None:
    """Forget every shared limiter (tests; a fresh run in the same process)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
