"""``llm.limiter: redis``: one in-flight cap, rate window and budget for every process of a run.

A real ``redis-server`` (Debian's package) on a free loopback port, the loopback fake endpoint
in this process, and separate OS processes (tests/llm/redis_driver.py) as the run's workers.
When redis-server cannot start, the tests fail with the reason.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ise_core.config import LLMSettings, settings_from_dict
from ise_core.errors import ConfigError
from ise_core.llm.accounting import Accountant
from ise_core.llm.factory import build_accountant
from ise_core.llm.limits import EndpointLimiter, LimitSettings
from ise_core.llm.openai_chat import OpenAIChat
from ise_core.llm.redis_limits import (
    RedisEndpointLimiter,
    SharedAccountant,
    reset_redis_limiters,
    resolve_redis_url,
)
from scripts.airflow_celery import Redis, free_port
from tests.fakes import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[2]
LATENCY_S = 2.0  # seconds per reply: a short LLM answer
CAP = 8


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="ise-redis-"))
    server = Redis(folder, free_port())
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh(redis_url: str) -> Iterator[None]:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    reset_redis_limiters()
    yield
    reset_redis_limiters()


def _drivers(n: int, *args: str) -> list[subprocess.Popen[str]]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.llm.redis_driver", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for _ in range(n)
    ]
    return procs


def _wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            break
    stderr = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"driver did not print {expected}: exit {proc.poll()}\n{stderr[-3000:]}")


def _run_together(procs: list[subprocess.Popen[str]], timeout: float = 120) -> list[dict[str, Any]]:
    """Start every driver at once (after all are READY); their JSON results."""
    for proc in procs:
        _wait_line(proc, "READY")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_four_processes_never_exceed_the_shared_cap_and_keep_it_busy(redis_url: str) -> None:
    per_process = 12
    with FakeOpenAIServer(latency_s=LATENCY_S) as server:
        procs = _drivers(
            4,
            "--base-url", server.base_url, "--redis", redis_url, "--mode", "load",
            "--max-concurrency", str(CAP), "--requests", str(per_process),
        )  # fmt: skip
        results = _run_together(procs)
        stats = server.stats()
    assert stats["completed"] == 4 * per_process
    # Each process alone may send 8 at once; together they still send at most 8.
    assert stats["max_in_flight"] <= CAP, stats
    window = max(r["ended_at"] for r in results) - min(r["started_at"] for r in results)
    saturation = stats["completed"] * LATENCY_S / (CAP * window)
    print(f"4 processes, cap {CAP}: {stats['completed']} requests in {window:.2f} s, "
          f"saturation {saturation:.3f} of {CAP}/latency")  # fmt: skip
    assert saturation >= 0.9, f"only {saturation:.2f} of {CAP}/latency ({window:.2f} s)"
    assert all(r["limiter"]["limiter"] == "redis" for r in results)


def test_a_shared_budget_stops_three_processes_within_one_request_each(redis_url: str) -> None:
    with FakeOpenAIServer(latency_s=0.05) as server:
        # What one request costs (the fake endpoint reports usage from the request's size).
        probe = _drivers(
            1, "--base-url", server.base_url, "--redis", redis_url, "--mode", "load",
            "--requests", "1",
        )  # fmt: skip
        _run_together(probe)
        per_request = _tokens_of_one(server)
        server.reset()
        budget = 30 * per_request + per_request // 2
        procs = _drivers(
            3, "--base-url", server.base_url, "--redis", redis_url, "--mode", "budget",
            "--max-concurrency", "1", "--budget-tokens", str(budget), "--budget-key", "run-7",
        )  # fmt: skip
        results = _run_together(procs)
        sent_at_server = server.stats()["completed"]
    assert all(r["stopped"] and "budget reached" in r["stopped"] for r in results), results
    assert all("run 'run-7'" in r["stopped"] for r in results)
    sent = sum(r["sent"] for r in results)
    assert sent == sent_at_server
    # The cap was reached, and overshot by at most one request per process.
    needed = math.ceil(budget / per_request)
    assert needed <= sent <= needed + len(procs) - 1, (sent, needed)
    assert all(r["sent"] > 0 for r in results), "every process shared the work"


def _tokens_of_one(server: FakeOpenAIServer) -> int:
    from tests.fakes.openai_server import completion

    usage = completion(server.bodies[0])["usage"]
    return int(usage["total_tokens"])


def test_a_dead_holders_slots_expire_by_lease(redis_url: str) -> None:
    lease = 1.0
    limits = LimitSettings(max_in_flight=2)
    holder = _drivers(
        1, "--base-url", "http://127.0.0.1:9/v1", "--redis", redis_url, "--mode", "hold",
        "--max-concurrency", "2", "--lease", str(lease),
    )[0]  # fmt: skip
    try:
        _wait_line(holder, "HOLDING")
        limiter = RedisEndpointLimiter(redis_url, "http://127.0.0.1:9/v1", "fake-model", limits)

        async def take_one(timeout: float) -> bool:
            try:
                async with asyncio.timeout(timeout), limiter.slot():
                    return True
            except TimeoutError:
                return False

        # Alive, the holder renews its leases: nothing is free, even after several leases.
        assert asyncio.run(take_one(3 * lease)) is False
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        killed = time.monotonic()
        assert asyncio.run(take_one(lease + 2.0)) is True
        assert time.monotonic() - killed <= lease + 2.0
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.communicate(timeout=10)


def test_rate_window_is_shared_between_limiters(redis_url: str) -> None:
    """Two limiters (two processes' worth) on one endpoint share its requests-per-minute."""
    limits = LimitSettings(max_in_flight=50, requests_per_minute=60)  # burst: 6 requests

    async def burst(limiter: RedisEndpointLimiter) -> int:
        started = 0

        async def one() -> None:
            nonlocal started
            async with limiter.slot():
                started += 1

        tasks = [asyncio.create_task(one()) for _ in range(6)]
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return started

    async def both() -> list[int]:
        a = RedisEndpointLimiter(redis_url, "http://x/v1", "m", limits)
        b = RedisEndpointLimiter(redis_url, "http://x/v1", "m", limits)
        return list(await asyncio.gather(burst(a), burst(b)))

    started = asyncio.run(both())
    # 6 in the burst plus at most one more refilled during the half second.
    assert 6 <= sum(started) <= 7, started


def test_a_large_request_is_not_overtaken_by_other_processes_small_ones(redis_url: str) -> None:
    """Two limiters (two processes' worth) stream 800-token requests for 3 s against a shared
    600k tokens/minute; a 5,000-token request arrives 0.2 s in. Served in arrival order across
    processes, it waits for the requests queued ahead of it and its own refill, not for the
    streams to end, and the endpoint still gets its full rate."""
    tpm, small, large, workers = 600_000, 800, 5_000, 4
    per_s = tpm / 60
    limits = LimitSettings(max_in_flight=64, tokens_per_minute=tpm)
    granted = 0

    async def stream(limiter: RedisEndpointLimiter, stop: float) -> None:
        nonlocal granted
        while time.monotonic() < stop:
            async with limiter.slot(small):
                granted += small

    async def big(limiter: RedisEndpointLimiter) -> float:
        await asyncio.sleep(0.2)
        asked = time.monotonic()
        async with limiter.slot(large):
            return time.monotonic() - asked

    async def go() -> tuple[float, float]:
        a = RedisEndpointLimiter(redis_url, "http://x/v1", "m", limits)
        b = RedisEndpointLimiter(redis_url, "http://x/v1", "m", limits)
        async with a.slot(10**9):  # drain the burst: the figures are the sustained rate
            pass
        started = time.monotonic()
        streams = [stream((a, b)[i % 2], started + 3.0) for i in range(workers)]
        waited, *_ = await asyncio.gather(big(b), *streams)
        return waited, (granted + large) / (time.monotonic() - started)

    waited, throughput = asyncio.run(go())
    bound = (workers * small + large) / per_s
    assert waited <= bound + 0.3, f"the large request waited {waited:.2f} s (bound {bound} s)"
    assert 0.85 * per_s <= throughput <= 1.05 * per_s, throughput


def test_the_default_stays_in_process() -> None:
    llm = LLMSettings.model_validate(
        {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    )
    assert llm.limiter == "process"
    chat = OpenAIChat.from_settings("agent", llm, base_dir=Path("."), seed=1)
    assert isinstance(chat.limiter, EndpointLimiter)
    assert type(build_accountant(llm)) is Accountant


def test_a_redis_limiter_is_wired_from_settings(redis_url: str) -> None:
    llm = LLMSettings.model_validate(
        {
            "provider": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
            "limiter": redis_url, "budget": {"tokens": 100}, "budget_key": "r1",
        }
    )  # fmt: skip
    chat = OpenAIChat.from_settings("agent", llm, base_dir=Path("."), seed=1)
    assert isinstance(chat.limiter, RedisEndpointLimiter)
    accountant = build_accountant(llm)
    assert isinstance(accountant, SharedAccountant) and accountant.run == "r1"


def test_limiter_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"llm\.limiter"):
        settings_from_dict({"llm": {"limiter": "memcached://x"}}, "p.yaml")
    monkeypatch.delenv("AIRFLOW__CELERY__BROKER_URL", raising=False)
    with pytest.raises(ConfigError, match="AIRFLOW__CELERY__BROKER_URL is not set"):
        resolve_redis_url("redis")
    monkeypatch.setenv("AIRFLOW__CELERY__BROKER_URL", "sqs://queue")
    with pytest.raises(ConfigError, match="needs a Redis broker"):
        resolve_redis_url("redis")
    monkeypatch.setenv("AIRFLOW__CELERY__BROKER_URL", "redis://127.0.0.1:1/0")
    assert resolve_redis_url("redis") == "redis://127.0.0.1:1/0"
    # An unreachable Redis is a configuration error naming it, without its password.
    port = free_port()
    with pytest.raises(ConfigError, match=r"cannot reach Redis") as caught:
        RedisEndpointLimiter(
            f"redis://:s3cret@127.0.0.1:{port}/0", "http://x/v1", "m", LimitSettings()
        )
    assert "s3cret" not in str(caught.value)


def test_adaptive_caps_compose_with_the_shared_limit(redis_url: str, planted_key: str) -> None:
    """Two processes' limiters on one endpoint that serves 4 at once (shared ceiling 8): each
    lowers its own cap on the 429s it meets, so together they keep about 4 out, not 8."""
    from ise_core.records import Message
    from tests.llm.conftest import KEY_ENV

    limits = LimitSettings(
        max_in_flight=8, adaptive=True, max_retries=30, backoff_base_s=0.02, backoff_max_s=0.5
    )
    seconds, settle = 16.0, 6.0
    with FakeOpenAIServer(latency_s=0.3, capacity=4, capacity_retry_after="0.05") as server:
        limiters = [
            RedisEndpointLimiter(redis_url, server.base_url, "fake-model", limits) for _ in range(2)
        ]
        chats = [
            OpenAIChat(
                "agent", model="fake-model", base_url=server.base_url, api_key_env=KEY_ENV,
                limits=limits, limiter=limiter, timeout_s=30.0,
            )
            for limiter in limiters
        ]  # fmt: skip
        samples: list[tuple[float, int]] = []

        async def worker(chat: OpenAIChat, name: str, stop: float) -> None:
            n = 0
            while time.monotonic() < stop:
                n += 1
                await chat.complete([Message(role="user", content=f"{name} {n}")])

        async def sample(started: float, stop: float) -> None:
            while time.monotonic() < stop:
                samples.append(
                    (time.monotonic() - started, sum(lim.in_flight for lim in limiters))
                )
                await asyncio.sleep(0.02)

        async def run() -> None:
            started = time.monotonic()
            stop = started + seconds
            workers = [
                worker(chat, f"p{i} w{j}", stop) for i, chat in enumerate(chats) for j in range(6)
            ]
            await asyncio.gather(sample(started, stop), *workers)

        asyncio.run(run())
        served = server.stats()
    caps = [limiter.stats()["adaptive"] for limiter in limiters]
    late = [in_flight for t, in_flight in samples if t >= seconds - settle]
    report = {"served": served, "caps": caps, "late_mean": sum(late) / len(late)}
    assert all(cap["decreases"] >= 1 for cap in caps), report
    assert sum(late) / len(late) <= 5.0, report  # about the endpoint's 4, not the ceiling's 8
    # Each process probes on its own (the cap is per process), and both start at the shared
    # ceiling, twice what the endpoint takes: more 429s than one process alone would meet.
    assert served["over_capacity"] / served["requests"] < 0.15, report
