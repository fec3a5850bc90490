"""LLM client throughput: does the client keep an endpoint as busy as its concurrency allows?

1,000 requests at concurrency 32 against the loopback OpenAI-compatible server with a fixed
200 ms reply latency. The ideal is concurrency / latency = 160 requests/s; the figure of merit
is achieved / ideal (target >= 0.9). The server runs in a subprocess, so the CPU time measured
(time.process_time) is the client's own: request building, the SDK, the limiter, parsing and
accounting. The response cache is off (every request reaches the server). For context the
same load is then sent through the SDK's HTTP library alone (no SDK, no limiter): the
efficiency this machine allows at all, since on a busy 2-core machine the client and the
server compete with everything else for the CPU.

    python benchmarks/llm_throughput.py [--requests N] [--concurrency C] [--latency S]
                                        [--repeat R] [--json OUT] [--strict] [--no-baseline]

Each of ``--repeat`` runs (default 3) sends the 1,000 requests; the median run is reported,
with every run's efficiency alongside. Writes the figures to ``--json`` (default
benchmarks/results/llm_throughput.json). With ``--strict`` the exit code is 1 when the target
is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tests" / "fakes" / "openai_server.py"  # stdlib only: runs as a plain script
TARGET = 0.9
KEY_ENV = "ISE_BENCH_KEY"


def start_server(latency_s: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--latency", str(latency_s)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the loopback server did not start")
    return proc, json.loads(line)["base_url"]


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # the server stops when its stdin closes
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of another process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_stats(base_url: str) -> dict[str, Any]:
    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/_stats", timeout=10) as reply:  # loopback only
        stats: dict[str, Any] = json.loads(reply.read())
    return stats


async def run_requests(chat: Any, count: int, offset: int = 0) -> list[Any]:
    from ise_core.records import Message

    calls = [
        chat.complete([Message(role="user", content=f"request {offset + index}")])
        for index in range(count)
    ]
    return await asyncio.gather(*calls)


async def measure(base_url: str, requests: int, concurrency: int) -> dict[str, Any]:
    from ise_core.llm.accounting import Accountant
    from ise_core.llm.limits import LimitSettings
    from ise_core.llm.openai_chat import OpenAIChat

    accountant = Accountant()
    chat = OpenAIChat(
        "agent",
        model="fake-model",
        base_url=base_url,
        api_key_env=KEY_ENV,
        sampling={"temperature": 0.0, "seed": 7},
        limits=LimitSettings(max_in_flight=concurrency, backoff_base_s=0.05),
        timeout_s=30.0,
        cache=None,
        accountant=accountant,
    )
    # Warm-up (SDK import, connection pool) is not part of the measurement.
    await run_requests(chat, concurrency, offset=-concurrency)
    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    results = await run_requests(chat, requests)
    wall_s = time.perf_counter() - wall_started
    cpu_s = time.process_time() - cpu_started
    await chat.aclose()
    return {
        "wall_s": wall_s,
        "client_cpu_s": cpu_s,
        "retries": sum(result.retries for result in results),
        "client_max_in_flight": chat.limiter.max_in_flight,
        "accounted_requests": accountant.snapshot()["requests"],
    }


async def measure_bare_transport(base_url: str, requests: int, concurrency: int) -> dict[str, Any]:
    """The same load through the SDK's HTTP library alone: the floor this machine allows."""
    import openai

    from ise_core.llm.openai_chat import _http_response_class

    library = _http_response_class().__module__.split(".")[0]
    gate = asyncio.Semaphore(concurrency)
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}]}
    async with openai.DefaultAsyncHttpxClient() as client:

        async def one() -> None:
            async with gate:
                reply = await client.post(f"{base_url}/chat/completions", json=body)
                reply.raise_for_status()
                reply.json()

        await asyncio.gather(*(one() for _ in range(concurrency)))
        cpu_started = time.process_time()
        wall_started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        wall_s = time.perf_counter() - wall_started
        cpu_s = time.process_time() - cpu_started
    return {"library": library, "wall_s": wall_s, "client_cpu_s": cpu_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per reply")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs; the median run is reported (default 3)"
    )
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "llm_throughput.json"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the same load through the bare HTTP library (the machine's floor)",
    )
    args = parser.parse_args(argv)

    os.environ[KEY_ENV] = "sk-benchmark-not-a-real-key"
    ideal = args.concurrency / args.latency
    runs: list[dict[str, Any]] = []
    bare_runs: list[dict[str, Any]] = []
    proc, base_url = start_server(args.latency)
    try:
        # Client and bare-transport runs alternate, so both meet the same background load.
        for _ in range(max(1, args.repeat)):
            runs.append(asyncio.run(measure(base_url, args.requests, args.concurrency)))
            if not args.no_baseline:
                bare_runs.append(
                    asyncio.run(measure_bare_transport(base_url, args.requests, args.concurrency))
                )
        served = server_stats(base_url)
        server_cpu_s = process_cpu_s(proc.pid)  # includes warm-ups and baselines; context only
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    finally:
        stop_server(proc)

    import openai

    from ise_core.records import write_json

    def efficiency(run: dict[str, Any]) -> float:
        return float(args.requests / run["wall_s"] / ideal)

    def cpu_ms(run: dict[str, Any]) -> float:
        return round(1000 * run["client_cpu_s"] / args.requests, 3)

    median = sorted(runs, key=efficiency)[len(runs) // 2]
    bare = sorted(bare_runs, key=efficiency)[len(bare_runs) // 2] if bare_runs else None
    figures = {
        "benchmark": "llm_throughput",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "server_latency_s": args.latency,
        "repeat": len(runs),
        "wall_s": round(median["wall_s"], 3),
        "throughput_rps": round(args.requests / median["wall_s"], 2),
        "ideal_rps": round(ideal, 2),
        "efficiency": round(efficiency(median), 4),
        "efficiency_runs": [round(efficiency(run), 4) for run in runs],
        "target": TARGET,
        "target_met": efficiency(median) >= TARGET,
        "client_cpu_s": round(median["client_cpu_s"], 3),
        "client_cpu_ms_per_request": cpu_ms(median),
        "client_max_in_flight": median["client_max_in_flight"],
        "server_max_in_flight": served["max_in_flight"],
        "server_requests": served["requests"],
        "server_cpu_s": round(server_cpu_s, 3) if server_cpu_s is not None else None,
        "retries": sum(run["retries"] for run in runs),
        "accounted_requests": median["accounted_requests"],
        "bare_transport": None
        if bare is None
        else {
            "library": bare["library"],
            "efficiency": round(efficiency(bare), 4),
            "efficiency_runs": [round(efficiency(run), 4) for run in bare_runs],
            "client_cpu_ms_per_request": cpu_ms(bare),
        },
        "load_average_1m": round(load, 2) if load is not None else None,
        "python": platform.python_version(),
        "openai_sdk": openai.__version__,
        "cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(args.json, figures)
    print(
        f"llm_throughput: {figures['throughput_rps']} req/s of an ideal {ideal:.0f} "
        f"(efficiency {figures['efficiency']}, runs {figures['efficiency_runs']}, target "
        f"{TARGET}); client CPU {figures['client_cpu_ms_per_request']} ms/request; max in "
        f"flight {served['max_in_flight']}; load average {figures['load_average_1m']}; "
        f"written to {args.json}"
    )
    if bare is not None:
        floor = figures["bare_transport"]
        print(
            f"  same load through bare {floor['library']}: efficiency {floor['efficiency']} "
            f"(runs {floor['efficiency_runs']}), {floor['client_cpu_ms_per_request']} ms "
            "CPU/request (what this machine allows without the SDK)"
        )
    if args.strict and efficiency(median) < TARGET:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
