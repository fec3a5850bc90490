"""Endpoint limits and the run's budget, shared in Redis by every process of a run.

With ``llm.limiter: redis`` (the Celery broker's Redis, ``$AIRFLOW__CELERY__BROKER_URL``) or
``llm.limiter: redis://host:6379/0``, eight Celery workers with ``max_concurrency: 16`` send
at most 16 requests at once to the endpoint, not 128, and stop together at the budget. The
default, ``llm.limiter: process``, keeps everything in the process (ise_core.llm.limits).

Keys (``ise:`` prefix; ``{endpoint}`` is a hash of base URL and model):

- ``ise:ep:{endpoint}:slots`` — a sorted set with one member per request in flight, scored by
  the expiry of its lease (Redis server time, ms). A slot is taken only while fewer than
  ``max_concurrency`` unexpired members exist; the holder renews its lease every third of
  ``LEASE_S`` while the request runs, so a holder that dies (SIGKILL, a lost machine) stops
  renewing and its slots free themselves within ``LEASE_S``.
- ``ise:ep:{endpoint}:rpm`` / ``:tpm`` — token buckets (level, last update) with the
  in-process limiter's semantics: a tenth of a minute's allowance as burst, tokens reserved
  from an estimate and settled from the reported usage.
- ``ise:ep:{endpoint}:resume`` — no attempt starts before this time (a 429's Retry-After).
- ``ise:budget:{run}`` — tokens and estimated cost sent by every process of the run.

Every check-and-take is one Lua script, executed atomically by Redis against Redis' own
clock, so two processes never take the last slot together and machines' clocks do not matter.

With ``llm.adaptive: true`` each process also keeps an adaptive cap of its own
(ise_core.llm.adaptive) and holds at most that many of the shared slots: the fleet never
exceeds ``max_concurrency`` together, and every process that meets the endpoint's 429s or
timeouts lowers its own share. The cap itself is not shared.

The budget is checked before each request is sent and charged when its reply arrives, as in
one process: requests already in flight when the cap is crossed finish, so a run overshoots
by at most the requests its processes had in flight (one per process when each sends one at
a time). ``llm.budget_key`` names the run whose processes share a budget; the Airflow DAG
sets it to the DAG run's id. Without it the budget is this process's own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import random
import socket
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ise_core.errors import ConfigError
from ise_core.llm.accounting import Accountant
from ise_core.llm.adaptive import AdaptiveCap, Attempt
from ise_core.llm.base import Usage
from ise_core.llm.limits import BURST_FRACTION, LatencyTally, LimitSettings, SlotGate

if TYPE_CHECKING:
    from ise_core.config import LLMSettings, PriceSettings

log = logging.getLogger(__name__)

BROKER_ENV = "AIRFLOW__CELERY__BROKER_URL"
PREFIX = "ise"
LEASE_S = 20.0  # a dead holder's slot is free again after at most this long
POLL_S = (0.002, 0.008)  # a waiting process asks again after a random delay in this range
MAX_BATCH = 256  # waiters one script call may grant slots to
HANDOFF_LIMIT = 8  # a slot passes straight to this process's next request at most this often

# KEYS: slots, resume, waiting. ARGV: max in flight, lease ms, owner, then one member (named
# "<owner>:<id>") per waiting request of that process. Takes as many slots as are free for the
# members, but while other processes wait no more than a fair share (max / processes waiting
# or holding); records the owner as waiting while it gets fewer than it asked for.
# Returns {taken, other processes waiting, ms until the endpoint's pause ends (0: none)}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max, lease, owner = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local others = redis.call('ZCARD', KEYS[3]) - (redis.call('ZSCORE', KEYS[3], owner) and 1 or 0)
local resume = tonumber(redis.call('GET', KEYS[2]) or '0')
if resume > now then return {0, others, resume - now} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local holders = redis.call('ZRANGE', KEYS[1], 0, -1)
local free = max - #holders
local allowed = free
if others > 0 then
  local mine, owners = 0, {}
  for _, m in ipairs(holders) do
    local o = string.match(m, '^(.*):[^:]*$')
    owners[o] = true
    if o == owner then mine = mine + 1 end
  end
  owners[owner] = true
  local n = others
  for o, _ in pairs(owners) do
    if redis.call('ZSCORE', KEYS[3], o) == false then n = n + 1 end
  end
  allowed = math.max(0, math.ceil(max / n) - mine)
end
local taken = 0
for i = 4, #ARGV do
  if taken >= free or taken >= allowed then break end
  redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  taken = taken + 1
end
if taken > 0 then redis.call('PEXPIRE', KEYS[1], lease * 3) end
if taken < #ARGV - 3 then
  redis.call('ZADD', KEYS[3], now + 500, owner)
  redis.call('PEXPIRE', KEYS[3], 5000)
else
  redis.call('ZREM', KEYS[3], owner)
end
return {taken, others, 0}
"""
# KEYS: slots. ARGV: member, lease ms. Returns 1 when the lease was still held.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 3)
return held
"""
# KEYS: slots. ARGV: member. Gives a slot back.
_RELEASE = """
return redis.call('ZREM', KEYS[1], ARGV[1])
"""
# KEYS: bucket. ARGV: units per ms, capacity, amount, mode ('take' or 'adjust').
# 'take' reserves the amount at once, letting the level go below zero, and returns the ms until
# the refill has paid that debt (0: no wait). A later request queues behind every earlier one's
# debt, across processes, so a large request is not overtaken by a stream of small ones (as in
# ise_core.llm.limits.TokenBucket). 'adjust' charges (positive) or refunds (negative) only.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local level = tonumber(redis.call('HGET', KEYS[1], 'level') or cap)
local updated = tonumber(redis.call('HGET', KEYS[1], 'updated') or now)
level = math.min(cap, level + math.max(0, now - updated) * rate)
local mode = ARGV[4]
local amount = tonumber(ARGV[3])
local wait = 0
if mode == 'take' then
  amount = math.min(amount, cap)
  level = level - amount
  if level < 0 then wait = math.ceil(-level / rate) end
else
  level = math.min(cap, level - amount)
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 60000)
return wait
"""
# KEYS: resume. ARGV: ms from now. Only ever moves the pause later.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ms > current then redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000) end
return 0
"""


def redact_url(url: str) -> str:
    """``url`` without its password (for messages)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def resolve_redis_url(limiter: str, environ: Mapping[str, str] | None = None) -> str:
    """The Redis URL ``llm.limiter`` names: ``redis`` means the Celery broker's."""
    if limiter != "redis":
        return limiter
    env = os.environ if environ is None else environ
    broker = env.get(BROKER_ENV, "").strip()
    if not broker:
        raise ConfigError(
            f"llm.limiter: 'redis' shares the limits through the Celery broker's Redis, but "
            f"{BROKER_ENV} is not set in this process; give the URL instead "
            "(llm.limiter: redis://host:6379/0) or use 'process'"
        )
    if not broker.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"llm.limiter: 'redis' needs a Redis broker, but {BROKER_ENV} is "
            f"{redact_url(broker)!r}; give a Redis URL instead (llm.limiter: redis://host:6379/0)"
        )
    return broker


def _sync_client(url: str) -> Any:
    """A connected client for ``url``, or ConfigError saying why Redis cannot be reached."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigError(
            f"llm.limiter: cannot reach Redis at {redact_url(url)}: {exc}"
        ) from None
    return client


def endpoint_id(endpoint: str, model: str) -> str:
    return hashlib.sha256(f"{endpoint.rstrip('/')}|{model}".encode()).hexdigest()[:16]


class RedisEndpointLimiter:
    """The ``EndpointLimiter`` interface (``slot``, ``pause``, ``settle_tokens``, ``stats``,
    ``limits``) with the in-flight cap, the rate windows and the pause kept in Redis."""

    def __init__(
        self, url: str, endpoint: str, model: str, limits: LimitSettings, lease_s: float = LEASE_S
    ) -> None:
        self.url = url
        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self.limits = limits
        self.lease_ms = max(1, round(lease_s * 1000))
        _sync_client(url).close()  # fail when the limiter is built, not mid-run
        base = f"{PREFIX}:ep:{endpoint_id(self.endpoint, model)}"
        self.keys = {
            name: f"{base}:{name}" for name in ("slots", "resume", "waiting", "rpm", "tpm")
        }
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]
        self._clients = weakref.WeakKeyDictionary()
        self._scripts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]]
        self._scripts = weakref.WeakKeyDictionary()
        self._queues: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, collections.deque[asyncio.Future[str]]
        ]
        self._queues = weakref.WeakKeyDictionary()
        self._pumps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]]
        self._pumps = weakref.WeakKeyDictionary()
        self._released: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event]
        self._released = weakref.WeakKeyDictionary()
        self._handoffs: dict[str, int] = {}
        self._others_waiting = False
        self._resume_at = 0.0
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._background: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = 0
        self.waited_s = 0.0
        self.lost_leases = 0
        self.latency = LatencyTally()
        self.adaptive = (
            AdaptiveCap(limits.max_in_flight, f"{self.endpoint} model {model} (this process)")
            if limits.adaptive
            else None
        )
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SlotGate]
        self._gates = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"RedisEndpointLimiter({self.endpoint!r}, {self.model!r}, {redact_url(self.url)})"

    def _client(self) -> Any:
        """This event loop's asyncio client (a client is bound to the loop it was made on)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                import redis.asyncio

                client = redis.asyncio.Redis.from_url(
                    self.url, socket_timeout=10, socket_connect_timeout=5
                )
                self._scripts[loop] = {
                    name: client.register_script(source)
                    for name, source in (
                        ("acquire", _ACQUIRE),
                        ("renew", _RENEW),
                        ("bucket", _BUCKET),
                        ("pause", _PAUSE),
                        ("release", _RELEASE),
                    )
                }
                self._clients[loop] = client
            return client

    def _client_scripts(self) -> dict[str, Any]:
        self._client()
        return self._scripts[asyncio.get_running_loop()]

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> int:
        return int(await self._client_scripts()[name](keys=keys, args=args))

    async def _take(self, bucket: str, per_minute: int, amount: float) -> float:
        """Take ``amount`` units of a shared bucket in arrival order; returns the seconds waited."""
        rate = per_minute / 60_000.0  # units per ms
        capacity = max(1.0, per_minute * BURST_FRACTION)
        args = [repr(rate), repr(capacity)]
        wait_ms = await self._script("bucket", [self.keys[bucket]], [*args, repr(amount), "take"])
        if wait_ms <= 0:
            return 0.0
        try:
            await asyncio.sleep(wait_ms / 1000)
        except asyncio.CancelledError:
            # A cancelled waiter gives its reservation back to those still coming.
            refund = repr(-min(amount, capacity))
            self._in_background("bucket", [self.keys[bucket]], [*args, refund, "adjust"])
            raise
        return wait_ms / 1000

    async def _acquire(self) -> tuple[str, float]:
        """Take one shared slot: (its lease's member, seconds waited).

        The process's waiters queue here; one pump asks Redis for as many slots as there are
        waiters in one script call, so a burst of releases costs one round trip."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[str] = loop.create_future()
        queue = self._queues.setdefault(loop, collections.deque())
        queue.append(granted)
        pump = self._pumps.get(loop)
        if pump is None or pump.done():
            self._pumps[loop] = loop.create_task(self._pump(queue))
        member = await granted
        return member, time.monotonic() - started

    async def _pump(self, queue: collections.deque[asyncio.Future[str]]) -> None:
        loop = asyncio.get_running_loop()
        released = self._released.setdefault(loop, asyncio.Event())
        while True:
            while queue and queue[0].done():  # cancelled while waiting
                queue.popleft()
            if not queue:
                return
            wanted = min(len(queue), MAX_BATCH)
            members = [f"{self.owner}:{uuid.uuid4().hex}" for _ in range(wanted)]
            released.clear()
            reply = await self._client_scripts()["acquire"](
                keys=[self.keys["slots"], self.keys["resume"], self.keys["waiting"]],
                args=[self.limits.max_in_flight, self.lease_ms, self.owner, *members],
            )
            taken, others, paused_ms = (int(value) for value in reply)
            self._others_waiting = others > 0
            for member in members[:taken]:
                self._grant(queue, member)
            if paused_ms:
                await asyncio.sleep(paused_ms / 1000)
            elif taken == 0:
                # Ask again after a short random delay, or as soon as this process gives a
                # slot back.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(released.wait(), random.uniform(*POLL_S))

    def _grant(self, queue: collections.deque[asyncio.Future[str]], member: str) -> bool:
        """Give ``member``'s slot to the first live waiter; False when none is left (the
        caller gives the slot back to Redis)."""
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(member)
                return True
        self._in_background("release", [self.keys["slots"]], [member])
        return False

    def _hand_over(self, member: str) -> bool:
        """Pass a finished request's slot straight to a waiter of this process (no round
        trip) while no other process waits for one, at most ``HANDOFF_LIMIT`` times in a row
        (then it goes back through Redis, which hears of waiting processes again); never
        while the endpoint is paused here."""
        queue = self._queues.get(asyncio.get_running_loop())
        count = self._handoffs.pop(member, 0)
        if (
            not queue
            or count >= HANDOFF_LIMIT
            or self._others_waiting
            or time.monotonic() < self._resume_at
        ):
            return False
        if not any(not future.done() for future in queue):
            return False
        self._handoffs[member] = count + 1
        return self._grant(queue, member)

    async def _renew(self, member: str) -> None:
        """Keep the lease of a slot alive while its request runs."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            with contextlib.suppress(Exception):  # Redis away: the lease may lapse, no more
                held = await self._script("renew", [self.keys["slots"]], [member, self.lease_ms])
                if not held:
                    self.lost_leases += 1

    def _own_gate(self) -> SlotGate | None:
        """This process's adaptive share of the shared slots (None: not adaptive)."""
        adaptive = self.adaptive
        if adaptive is None:
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            gate = self._gates.get(loop)
            if gate is None:
                gate = self._gates[loop] = SlotGate(lambda: adaptive.cap)
            return gate

    @contextlib.asynccontextmanager
    async def slot(self, estimated_tokens: int = 0) -> AsyncIterator[Attempt]:
        """Hold one of the endpoint's shared in-flight slots for one attempt."""
        self._client()
        if self.limits.requests_per_minute:
            self.waited_s += await self._take("rpm", self.limits.requests_per_minute, 1)
        if self.limits.tokens_per_minute and estimated_tokens > 0:
            self.waited_s += await self._take(
                "tpm", self.limits.tokens_per_minute, estimated_tokens
            )
        gate = self._own_gate()
        if gate is not None:
            await gate.acquire()
        try:
            async with self._shared_slot() as attempt:
                yield attempt
        finally:
            if gate is not None:
                gate.release()

    @contextlib.asynccontextmanager
    async def _shared_slot(self) -> AsyncIterator[Attempt]:
        member, waited = await self._acquire()
        self.waited_s += waited
        renewal = asyncio.create_task(self._renew(member))
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
            renewal.cancel()
            if not self._hand_over(member):
                with contextlib.suppress(Exception):  # else the lease frees it
                    await asyncio.shield(self._script("release", [self.keys["slots"]], [member]))
                released = self._released.get(asyncio.get_running_loop())
                if released is not None:
                    released.set()

    def _in_background(self, name: str, keys: list[str], args: list[Any]) -> None:
        """Run a script without waiting (``pause`` and ``settle_tokens`` are synchronous)."""
        try:
            task = asyncio.get_running_loop().create_task(self._script(name, keys, args))
        except RuntimeError:  # no loop: not called from a request
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def pause(self, seconds: float) -> None:
        """No process starts an attempt on this endpoint within ``seconds``."""
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)
        self._in_background("pause", [self.keys["resume"]], [max(1, round(seconds * 1000))])

    def settle_tokens(self, estimated: int, actual: int) -> None:
        if not self.limits.tokens_per_minute or estimated <= 0:
            return
        capacity = max(1.0, self.limits.tokens_per_minute * BURST_FRACTION)
        delta = actual - min(estimated, capacity)
        rate = self.limits.tokens_per_minute / 60_000.0
        self._in_background(
            "bucket", [self.keys["tpm"]], [repr(rate), repr(capacity), repr(delta), "adjust"]
        )

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "endpoint": self.endpoint,
            "model": self.model,
            "limiter": "redis",
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "attempts_started": self.started,
            "waited_s": round(self.waited_s, 3),
            "lost_leases": self.lost_leases,
            **self.latency.stats(),
        }
        if self.adaptive is not None:
            data["adaptive"] = self.adaptive.stats()
        return data


_LIMITERS: dict[tuple[str, str, str, LimitSettings], RedisEndpointLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def redis_limiter(
    limiter: str, endpoint: str, model: str, limits: LimitSettings
) -> RedisEndpointLimiter:
    """The process's shared-limit client for (Redis, endpoint, model, limits)."""
    url = resolve_redis_url(limiter)
    key = (url, endpoint.rstrip("/"), model, limits)
    with _LIMITERS_LOCK:
        found = _LIMITERS.get(key)
        if found is None:
            found = _LIMITERS[key] = RedisEndpointLimiter(url, endpoint, model, limits)
        return found


def redis_limiters() -> list[RedisEndpointLimiter]:
    """The shared-limit clients this process made so far (for a run's statistics)."""
    with _LIMITERS_LOCK:
        return list(_LIMITERS.values())


def reset_redis_limiters() -> None:
    with _LIMITERS_LOCK:
        _LIMITERS.clear()


class SharedAccountant(Accountant):
    """An ``Accountant`` whose budget counts what every process of the run sent.

    Its own tallies (by role, model, episode) stay this process's, for its statistics; the
    run's totals live in ``ise:budget:{run}`` and decide when the budget is reached.
    """

    def __init__(
        self,
        url: str,
        run: str,
        prices: Mapping[str, PriceSettings] | None = None,
        *,
        budget_tokens: int | None = None,
        budget_cost: float | None = None,
    ) -> None:
        super().__init__(prices, budget_tokens=budget_tokens, budget_cost=budget_cost)
        self.url = url
        self.run = run
        self.key = f"{PREFIX}:budget:{run}"
        self._redis = _sync_client(url)

    @classmethod
    def from_llm(cls, llm: LLMSettings) -> Accountant:
        """A shared accountant when the run has a name, else a process's own."""
        url = resolve_redis_url(llm.limiter)
        if not llm.budget_key:
            if llm.budget.tokens is not None or llm.budget.cost is not None:
                log.warning(
                    "llm.limiter is shared but llm.budget_key is not set: the budget counts "
                    "this process only"
                )
            return Accountant(
                llm.prices, budget_tokens=llm.budget.tokens, budget_cost=llm.budget.cost
            )
        return cls(
            url,
            llm.budget_key,
            llm.prices,
            budget_tokens=llm.budget.tokens,
            budget_cost=llm.budget.cost,
        )

    def record(
        self,
        *,
        role: str,
        model: str,
        usage: Usage,
        cached: bool = False,
        retries: int = 0,
        malformed: bool = False,
        episode: str | None = None,
        billable: bool = True,
    ) -> None:
        super().record(
            role=role,
            model=model,
            usage=usage,
            cached=cached,
            retries=retries,
            malformed=malformed,
            episode=episode,
            billable=billable,
        )
        if cached or not billable:
            return  # the budget caps requests sent to an endpoint, as in one process
        cost = self.cost_of(model, usage) or 0.0
        pipe = self._redis.pipeline(transaction=True)
        pipe.hincrby(self.key, "tokens", usage.prompt_tokens + usage.completion_tokens)
        if cost:
            pipe.hincrbyfloat(self.key, "cost", cost)
        pipe.expire(self.key, 30 * 86400)
        pipe.execute()

    def spent(self) -> tuple[int, float]:
        """Tokens and estimated cost sent by the whole run so far."""
        tokens, cost = self._redis.hmget(self.key, "tokens", "cost")
        return int(tokens or 0), float(cost or 0.0)

    def budget_reason(self) -> str | None:
        if self.budget_tokens is None and self.budget_cost is None:
            return None
        tokens, cost = self.spent()
        if self.budget_tokens is not None and tokens >= self.budget_tokens:
            return (
                f"{tokens:,} tokens sent by run {self.run!r} of a budget of "
                f"{self.budget_tokens:,}"
            )
        if self.budget_cost is not None and cost >= self.budget_cost:
            return (
                f"estimated cost {cost:.4f} of run {self.run!r} of a budget of "
                f"{self.budget_cost:.4f}"
            )
        return None

    def snapshot(self) -> dict[str, Any]:
        data = super().snapshot()
        tokens, cost = self.spent()
        data["budget"].update({"run": self.run, "run_tokens": tokens, "run_cost": round(cost, 6)})
        return data
