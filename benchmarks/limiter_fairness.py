"""Tokens-per-minute limiter fairness: how long a large request waits in a stream of small ones.

Workers send small requests back to back through one ``EndpointLimiter`` with a
tokens-per-minute limit (the bucket drained first, so the figures are the sustained rate); one
large request arrives ``--arrive`` seconds in. Two policies run side by side on the same
stream:

- ``fifo``: the limiter as shipped (reservations in arrival order);
- ``greedy``: the previous policy, kept here as the reference: a waiter sleeps until its
  tokens would be there and tries again, so small requests keep taking the refill a large one
  waits for.

Figures per policy: the large request's wait, the bound arrival order gives it
(``(workers × small + large) / rate``) and the tokens granted per second against the limit
(throughput must stay the same). No network and almost no CPU: the run is sleeps.

    python benchmarks/limiter_fairness.py [--tpm 60000] [--seconds 20] [--small 800]
                                          [--large 5000] [--workers 4] [--arrive 1.0]
                                          [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, load_average, now_iso
from ise_core.llm.limits import EndpointLimiter, LimitSettings, TokenBucket
from ise_core.records import write_json


class GreedyBucket(TokenBucket):
    """The pre-fairness policy: wait, then retry against whoever arrived meanwhile."""

    async def take(self, amount: float) -> float:
        waited = 0.0
        while True:
            wait = self.try_take(amount)
            if wait <= 0:
                return waited
            await asyncio.sleep(wait)
            waited += wait


async def _stream(limiter: EndpointLimiter, args: argparse.Namespace) -> dict[str, Any]:
    granted = 0

    async def small_worker(stop: float) -> None:
        nonlocal granted
        while time.monotonic() < stop:
            async with limiter.slot(args.small):
                granted += args.small
                await asyncio.sleep(0)

    async def large() -> float:
        await asyncio.sleep(args.arrive)
        asked = time.monotonic()
        async with limiter.slot(args.large):
            return time.monotonic() - asked

    async with limiter.slot(10**12):  # drain the burst
        pass
    started = time.monotonic()
    stop = started + args.seconds
    waited, *_ = await asyncio.gather(large(), *(small_worker(stop) for _ in range(args.workers)))
    elapsed = time.monotonic() - started
    rate = args.tpm / 60
    return {
        "large_wait_s": round(waited, 3),
        "large_wait_bound_s": round((args.workers * args.small + args.large) / rate, 3),
        "tokens_per_s": round((granted + args.large) / elapsed, 1),
        "throughput_ratio": round((granted + args.large) / elapsed / rate, 4),
        "elapsed_s": round(elapsed, 3),
    }


def run_policy(policy: str, args: argparse.Namespace) -> dict[str, Any]:
    limits = LimitSettings(max_in_flight=1024, tokens_per_minute=args.tpm)
    limiter = EndpointLimiter("http://bench/v1", "bench", limits)
    if policy == "greedy":
        limiter._tokens = GreedyBucket(args.tpm)  # the reference policy, same limits
    return asyncio.run(_stream(limiter, args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tpm", type=int, default=60_000, help="tokens per minute")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the stream runs")
    parser.add_argument("--small", type=int, default=800, help="tokens per small request")
    parser.add_argument("--large", type=int, default=5_000, help="tokens of the large request")
    parser.add_argument("--workers", type=int, default=4, help="small requests at once")
    parser.add_argument("--arrive", type=float, default=1.0, help="when the large one arrives")
    parser.add_argument("--json", type=Path, default=RESULTS / "limiter_fairness.json")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "measured_at": now_iso(),
        "load_average_before": load_average(),
        "params": {k: v for k, v in vars(args).items() if k != "json"},
    }
    for policy in ("greedy", "fifo"):
        result[policy] = run_policy(policy, args)
        print(f"{policy:>6}: {json.dumps(result[policy])}", flush=True)
    result["load_average_after"] = load_average()
    fifo = result["fifo"]
    result["target_met"] = (
        fifo["large_wait_s"] <= fifo["large_wait_bound_s"] + 0.5
        and fifo["throughput_ratio"] >= 0.95 * result["greedy"]["throughput_ratio"]
    )
    write_json(args.json, result)
    print(f"written to {args.json}; target met: {result['target_met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
