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

With ``llm.adaptive: true`` the in-flight cap is not fixed at ``max_concurrency`` but follows
the endpoint's answers (AIMD: lower on 429s, 503s and timeouts, back up while it keeps up;
ise_core.llm.adaptive). Each ``slot`` yields an ``Attempt`` on which the client records how
the attempt went; the limiter also times the attempts that were answered, so ``stats()``
carries the endpoint's measured latency.

Retry policy (applied by the client, one attempt per ``slot``): 408, 409, 429 and every 5xx,
timeouts and dropped connections are retried up to ``max_retries`` times with exponential
backoff and jitter (``backoff_base_s * 2**n``, capped at ``backoff_max_s``, half of it
random); a ``retry-after-ms`` (milliseconds) or ``Retry-After`` (seconds or an HTTP date) is
honoured as a lower bound, up to ``MAX_RETRY_AFTER_S``. Other 4xx are not retried.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from ise_core.llm.adaptive import AdaptiveCap, Attempt

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
    adaptive: bool = False  # AIMD on the in-flight cap within [1, max_in_flight]

    @classmethod
    def from_llm(cls, llm: LLMSettings) -> LimitSettings:
        return cls(
            max_in_flight=llm.max_concurrency,
            adaptive=llm.adaptive,
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


class SlotGate:
    """A first-come-first-served semaphore of one event loop whose size is read at every
    grant (``cap()``), so a cap that shrinks holds new attempts back until enough have
    finished, and one that grows lets waiters go at once (``wake``)."""

    def __init__(self, cap: Callable[[], int]) -> None:
        self._cap = cap
        self.held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.held < self._cap() and not self._waiters:
            self.held += 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # granted, then cancelled before it could be used
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(granted)
            raise

    def release(self) -> None:
        self.held -= 1
        self.wake()

    def wake(self) -> None:
        while self._waiters and self.held < self._cap():
            granted = self._waiters.popleft()
            if not granted.done():
                self.held += 1
                granted.set_result(None)


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
        self.adaptive = (
            AdaptiveCap(limits.max_in_flight, f"{endpoint} model {model}")
            if limits.adaptive
            else None
        )
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SlotGate]
        self._gates = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._resume_at = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = 0
        self.waited_s = 0.0
        self.latency = LatencyTally()

    def cap(self) -> int:
        """Attempts allowed in flight now: ``max_in_flight``, or the adaptive cap."""
        return self.adaptive.cap if self.adaptive is not None else self.limits.max_in_flight

    def _gate(self) -> SlotGate:
        loop = asyncio.get_running_loop()
        with self._lock:
            gate = self._gates.get(loop)
            if gate is None:
                gate = self._gates[loop] = SlotGate(self.cap)
            return gate

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
    async def slot(self, estimated_tokens: int = 0) -> AsyncIterator[Attempt]:
        """Hold one in-flight slot for the duration of one attempt."""
        await self._wait_for_resume()
        if self._requests is not None:
            self.waited_s += await self._requests.take(1)
        if self._tokens is not None and estimated_tokens > 0:
            self.waited_s += await self._tokens.take(estimated_tokens)
        gate = self._gate()
        await gate.acquire()
        try:
            # The pause may have been set while this request waited for its slot.
            await self._wait_for_resume()
            with self._lock:
                self.in_flight += 1
                self.started += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                in_flight = self.in_flight
            attempt = (
                self.adaptive.begin(in_flight)
                if self.adaptive is not None
                else Attempt(started=time.monotonic())
            )
            try:
                yield attempt
            finally:
                with self._lock:
                    self.in_flight -= 1
                self.latency.add(attempt)
                if self.adaptive is not None:
                    self.adaptive.end(attempt)
        finally:
            gate.release()

    def settle_tokens(self, estimated: int, actual: int) -> None:
        """Correct the tokens-per-minute bucket once the real usage is known."""
        if self._tokens is not None and estimated > 0:
            self._tokens.adjust(actual - min(estimated, self._tokens.capacity))

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "endpoint": self.endpoint,
            "model": self.model,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "attempts_started": self.started,
            "waited_s": round(self.waited_s, 3),
            **self.latency.stats(),
        }
        if self.adaptive is not None:
            data["adaptive"] = self.adaptive.stats()
        return data


class LatencyTally:
    """How long answered attempts held their slot: the endpoint's own latency, without the
    time spent waiting for a slot, a rate window or a pause."""

    def __init__(self) -> None:
        self.answered = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    def add(self, attempt: Attempt) -> None:
        if attempt.outcome != "ok" or not attempt.started:
            return
        held = time.monotonic() - attempt.started
        with self._lock:
            self.answered += 1
            self.seconds += held

    def stats(self) -> dict[str, Any]:
        with self._lock:
            mean = self.seconds / self.answered if self.answered else None
        return {
            "answered": self.answered,
            "answered_s": round(self.seconds, 4),
            "latency_s": None if mean is None else round(mean, 4),
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


def process_limiters() -> list[EndpointLimiter]:
    """The process-wide limiters made so far (for a run's statistics)."""
    with _REGISTRY_LOCK:
        return list(_REGISTRY.values())


def endpoint_stats() -> list[dict[str, Any]]:
    """``stats()`` of every limiter this process used: its own and its Redis-shared ones."""
    import sys

    limiters: list[Any] = process_limiters()
    shared = sys.modules.get("ise_core.llm.redis_limits")
    if shared is not None:
        limiters += shared.redis_limiters()
    return [limiter.stats() for limiter in limiters]


def adaptive_summary(stats: list[dict[str, Any]]) -> str:
    """One phrase per endpoint whose adaptive cap moved ("" when none did)."""
    parts = []
    for entry in stats:
        cap = entry.get("adaptive")
        if cap and (cap["decreases"] or cap["increases"]):
            parts.append(
                f"adaptive cap of {entry['endpoint']} now {cap['cap']}/{cap['ceiling']} "
                f"(lowest {cap['lowest']}, {cap['decreases']} down, {cap['increases']} up, "
                f"{cap['overloads']} overloads)"
            )
    return "; ".join(parts)


def reset_limiters() -> None:
    """Forget every shared limiter (tests; a fresh run in the same process)."""
    with _REGISTRY_LOCK:
        _REGISTRY.clear()
