"""Adaptive in-flight cap (``llm.adaptive: true``): follow what an endpoint can take right now.

``llm.max_concurrency`` is what the endpoint can serve at best; a shared server, a provider's
burst limit or a replica that went away can make that less for a while. With ``adaptive`` the
limiter keeps a *cap* in ``[1, max_concurrency]`` and moves it by additive increase,
multiplicative decrease (AIMD):

- **Decrease.** A 429, a 503 or a timeout says the endpoint was over its capacity: the cap is
  multiplied by ``DECREASE`` (rounded down, at least 1). One overload decreases it once: the
  attempts already in flight when it was lowered were sent at the old cap, so their 429s say
  nothing new and do not lower it again (each decrease opens a new *epoch*; only an attempt
  started in the current epoch can close it). A ``Retry-After`` is honoured as before: the
  whole endpoint pauses for that long.
- **Increase.** While the endpoint keeps up, the cap grows by one after a round of successful
  attempts that found the cap full (``cap`` answers: about one per latency). Successes while
  fewer requests than the cap are out prove nothing about a larger cap, so they do not count.
- **Probing.** The step back up to the level where the last overload happened is a probe
  that will likely meet one more 429: it needs ``PROBE_ROUNDS`` rounds of success (at least
  ``PROBE_MIN_SUCCESSES``), so an endpoint at a steady capacity sees a few percent of 429s at
  most. Once the cap holds at that level, the level is forgotten and growth is fast again
  (the endpoint got more capacity).

Every change is logged (``ise_core.llm.adaptive`` at INFO: endpoint, old and new cap, why) and
kept in ``stats()``: the cap now, its lowest, the counts of decreases and increases and the
last changes.

The controller is one object per limiter. With ``llm.limiter: process`` that is one per
process and endpoint; with ``llm.limiter: redis`` each process adapts its own cap, within the
fleet-wide ``max_concurrency`` Redis enforces (see ise_core.llm.redis_limits): every process
that meets the endpoint's 429s slows down, as TCP flows sharing a link do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

# The cap is multiplied by this on an overload.
DECREASE = 0.5
# Near the last overload level a step needs this many rounds of success ...
PROBE_ROUNDS = 8
# ... and at least this many successes (a small cap's round is only a few requests).
PROBE_MIN_SUCCESSES = 40
# Changes kept for stats().
KEPT_CHANGES = 50
# HTTP statuses that mean "more than I can take right now".
OVERLOAD_STATUSES = frozenset({429, 503})

Outcome = Literal["ok", "overload", "other"]


@dataclass
class Attempt:
    """One attempt holding a slot. The client says how it went (``ok``: answered;
    ``overload``: 429, 503 or a timeout; ``other``: anything else, which moves no cap)."""

    epoch: int = 0
    binding: bool = False  # the cap was full when it started
    started: float = 0.0
    outcome: Outcome = "other"
    reason: str = ""

    def answered(self) -> None:
        self.outcome = "ok"

    def overloaded(self, reason: str) -> None:
        self.outcome = "overload"
        self.reason = reason


def is_overload(status: int | str) -> bool:
    """Whether a failed attempt's status says the endpoint was over its capacity."""
    return status in OVERLOAD_STATUSES or status == "timeout"


class AdaptiveCap:
    """The AIMD controller of one endpoint's in-flight cap (thread-safe)."""

    def __init__(self, ceiling: int, name: str = "") -> None:
        self.ceiling = max(1, ceiling)
        self.name = name
        self.cap = self.ceiling
        self.lowest = self.ceiling
        self.epoch = 0
        self.decreases = 0
        self.increases = 0
        self.overloads = 0
        # The cap at which the last overload happened (None: none since the last probe held).
        self.overload_level: int | None = None
        self._successes = 0
        self._changes: deque[dict[str, Any]] = deque(maxlen=KEPT_CHANGES)
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def begin(self, in_flight: int) -> Attempt:
        """An attempt starts with ``in_flight`` attempts out (itself included)."""
        with self._lock:
            return Attempt(
                epoch=self.epoch, binding=in_flight >= self.cap, started=time.monotonic()
            )

    def end(self, attempt: Attempt) -> bool:
        """Account a finished attempt; True when the cap grew (waiters may go)."""
        if attempt.outcome == "overload":
            self._on_overload(attempt)
            return False
        if attempt.outcome == "ok" and attempt.binding:
            return self._on_success(attempt)
        return False

    def _round(self) -> int:
        """Successes needed for the next step up: one round, or a long one when the step
        reaches the level of the last overload again."""
        if self.overload_level is not None and self.cap + 1 == self.overload_level:
            return max(PROBE_MIN_SUCCESSES, PROBE_ROUNDS * self.cap)
        return self.cap

    def _on_success(self, attempt: Attempt) -> bool:
        with self._lock:
            if attempt.epoch != self.epoch or self.cap >= self.ceiling:
                return False
            self._successes += 1
            if self._successes < self._round():
                return False
            old = self.cap
            self.cap += 1
            self._successes = 0
            self.increases += 1
            if self.overload_level is not None and old >= self.overload_level:
                self.overload_level = None  # a round at the old limit held
            self._record(old, "the endpoint kept up")
            return True

    def _on_overload(self, attempt: Attempt) -> None:
        with self._lock:
            self.overloads += 1
            if attempt.epoch != self.epoch or self.cap == 1:
                return  # sent at an older cap (already answered by a decrease), or at 1
            old = self.cap
            self.overload_level = old
            self.cap = max(1, int(old * DECREASE))
            self.lowest = min(self.lowest, self.cap)
            self.epoch += 1
            self._successes = 0
            self.decreases += 1
            self._record(old, attempt.reason or "overload")

    def _record(self, old: int, why: str) -> None:
        change = {
            "t_s": round(time.monotonic() - self._started, 3),
            "from": old,
            "to": self.cap,
            "why": why,
        }
        self._changes.append(change)
        log.info("llm %s: in-flight cap %d -> %d (%s)", self.name, old, self.cap, why)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "cap": self.cap,
                "ceiling": self.ceiling,
                "lowest": self.lowest,
                "decreases": self.decreases,
                "increases": self.increases,
                "overloads": self.overloads,
                "changes": list(self._changes),
            }
