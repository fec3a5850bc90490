"""Per-call overhead of the workspace backends against a plain subprocess, in one run.

For a plain ``sh -c 'echo hi'`` subprocess and for every backend that can run here, times at
least 200 calls of the ``exec`` tool running ``echo hi`` (after a short warm-up) and reports
median and p95 latency and the ratio to the plain subprocess; then times opening and closing
a workspace (template laid out, sandbox started, everything torn down) and reports the same.
The docker backend uses the engine at DOCKER_HOST, or a private dockerd started for the run
(as root, like the tests; ``--no-private-engine`` turns that off), and is skipped with the
reason when neither works.

    python benchmarks/workspace_overhead.py
    python benchmarks/workspace_overhead.py --calls 500 --json /tmp/overhead.json

Then, side by side, what an episode waits for before its first tool call: a cold open (a new
sandbox started, template laid out) against taking a sandbox from a warm pool
(``workspace.pool_size``: acquire + template laid out), and what giving it back costs (the
wipe: processes killed, files, /tmp and IPC emptied) after an episode-like use (a file
written, a background process started).

Targets: local ≤ 10 ms median per call and ≤ 50 ms open+close; docker exec ≤ 80 ms;
acquire from the pool ≤ 20 ms local and ≤ 50 ms docker.
Timings are wall clock and depend on what else the machine is doing: the load average at
the start and the end of the run is recorded next to them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.workspace.docker_engine provides the private dockerd

from ise_core.config import WorkspaceSettings  # noqa: E402
from ise_core.records import write_json  # noqa: E402
from ise_core.workspace import WorkspacePool, backend_status, open_workspace  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "workspace_overhead.json"
TARGETS_MS = {
    "local": {"exec": 10.0, "open_close": 50.0, "pool_acquire": 20.0},
    "docker": {"exec": 80.0, "pool_acquire": 50.0},
}
# An episode's leftovers, so that giving the sandbox back has something to wipe.
EPISODE_TRACE = "echo data > out.txt && mkdir -p build && echo x > /tmp/scratch && (sleep 60 &)"


def summarise(samples_s: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(p95 * 1000, 3),
        "min_ms": round(ordered[0] * 1000, 3),
    }


def time_calls(call: Callable[[], object], count: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def plain_subprocess(count: int) -> dict[str, float]:
    def call() -> None:
        subprocess.run(["sh", "-c", "echo hi"], capture_output=True, check=True)

    return summarise(time_calls(call, count))


def measure_backend(
    name: str, settings: WorkspaceSettings, calls: int, open_close: int
) -> dict[str, Any]:
    workspace = open_workspace(settings, base_dir=ROOT, backend=name)
    with workspace:
        workspace.open()

        def call() -> None:
            result = workspace.call("exec", {"command": "echo hi"})
            if not result.ok or result.content != "hi\n":
                raise RuntimeError(f"{name}: unexpected result {result}")

        exec_stats = summarise(time_calls(call, calls))

    def cycle() -> None:
        with open_workspace(settings, base_dir=ROOT, backend=name) as fresh:
            fresh.open()

    open_stats = summarise(time_calls(cycle, open_close, warmup=2))
    return {
        "exec": exec_stats,
        "open_close": open_stats,
        **measure_pool(name, settings, open_close),
    }


def measure_pool(name: str, settings: WorkspaceSettings, cycles: int) -> dict[str, Any]:
    """Cold open vs acquire from a warm pool, in alternation, plus the close and wipe costs."""
    samples: dict[str, list[float]] = {k: [] for k in ("cold_open", "cold_close")}
    samples.update({k: [] for k in ("pool_acquire", "pool_release")})
    with WorkspacePool(settings, base_dir=ROOT, backend=name, size=1) as pool:
        pool.fill()
        for index in range(cycles + 2):  # the first two of each are warm-up
            started = time.perf_counter()
            cold = open_workspace(settings, base_dir=ROOT, backend=name)
            cold.open()
            opened = time.perf_counter()
            cold.call("exec", {"command": EPISODE_TRACE})
            closing = time.perf_counter()
            cold.close()
            closed = time.perf_counter()

            taken_at = time.perf_counter()
            warm = pool.acquire()
            warm.open()
            ready = time.perf_counter()
            warm.call("exec", {"command": EPISODE_TRACE})
            returning = time.perf_counter()
            warm.close()
            returned = time.perf_counter()
            if index >= 2:
                samples["cold_open"].append(opened - started)
                samples["cold_close"].append(closed - closing)
                samples["pool_acquire"].append(ready - taken_at)
                samples["pool_release"].append(returned - returning)
        if pool.stats.cold:
            raise RuntimeError(f"{name}: the pool started {pool.stats.cold} sandboxes cold")
    return {key: summarise(values) for key, values in samples.items()}


def print_backend(name: str, measured: dict[str, Any]) -> None:
    ex, oc = measured["exec"], measured["open_close"]
    print(
        f"{name:<20} exec median {ex['median_ms']:8.2f} ms  p95 {ex['p95_ms']:8.2f} ms  "
        f"= {measured['exec_ratio_to_plain']:.1f}x plain   "
        f"open+close median {oc['median_ms']:8.2f} ms  p95 {oc['p95_ms']:8.2f} ms"
    )
    cold, warm = measured["cold_open"], measured["pool_acquire"]
    close, wipe = measured["cold_close"], measured["pool_release"]
    print(
        f"{'':<20} cold open median {cold['median_ms']:8.2f} ms  p95 {cold['p95_ms']:8.2f} ms  "
        f"| pool acquire median {warm['median_ms']:8.2f} ms  p95 {warm['p95_ms']:8.2f} ms  "
        f"({measured['cold_open_ratio_to_pool_acquire']:.1f}x faster)"
    )
    print(
        f"{'':<20} cold close median {close['median_ms']:7.2f} ms  "
        f"| pool release (wipe) median {wipe['median_ms']:8.2f} ms  p95 {wipe['p95_ms']:8.2f} ms"
    )


def docker_engine_for_run(allow_private: bool) -> tuple[str | None, str | None]:
    """(image, reason): the docker image to use, or why docker is skipped."""
    from tests.workspace import docker_engine

    if not allow_private and "DOCKER_HOST" not in os.environ:
        return None, "no engine at DOCKER_HOST and --no-private-engine was given"
    engine = docker_engine.engine()
    if isinstance(engine, str):
        return None, engine
    os.environ["DOCKER_HOST"] = engine.docker_host
    return engine.image, None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="exec calls per backend (≥200)")
    parser.add_argument("--open-close", type=int, default=30, help="open+close cycles")
    parser.add_argument(
        "--backends", nargs="+", choices=("local", "docker"), default=["local", "docker"]
    )
    parser.add_argument(
        "--no-private-engine",
        action="store_true",
        help="do not start a private dockerd when no engine answers",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT, help="where to write results")
    args = parser.parse_args(argv)
    if args.calls < 200:
        parser.error("--calls must be at least 200")

    load_before = os.getloadavg()
    results: dict[str, Any] = {
        "calls": args.calls,
        "open_close_cycles": args.open_close,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_before": [round(x, 2) for x in load_before],
        "targets_ms": TARGETS_MS,
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="ise-bench-") as tmp:
        settings = WorkspaceSettings(root=str(Path(tmp) / "sandboxes"))
        plain = plain_subprocess(args.calls)
        results["plain_subprocess"] = plain
        print(
            f"plain subprocess     exec median {plain['median_ms']:8.2f} ms  "
            f"p95 {plain['p95_ms']:8.2f} ms"
        )
        for name in args.backends:
            backend_settings = settings
            if name == "docker":
                image, reason = docker_engine_for_run(not args.no_private_engine)
                if image is None:
                    results["backends"][name] = {"skipped": reason}
                    print(f"{name:<20} skipped: {reason}")
                    continue
                backend_settings = settings.model_copy(update={"docker_image": image})
            else:
                reason = backend_status(settings)[name]
                if reason is not None:
                    results["backends"][name] = {"skipped": reason}
                    print(f"{name:<20} skipped: {reason}")
                    continue
            measured = measure_backend(name, backend_settings, args.calls, args.open_close)
            measured["exec_ratio_to_plain"] = round(
                measured["exec"]["median_ms"] / plain["median_ms"], 2
            )
            measured["exec_p95_ratio_to_plain"] = round(
                measured["exec"]["p95_ms"] / plain["p95_ms"], 2
            )
            measured["cold_open_ratio_to_pool_acquire"] = round(
                measured["cold_open"]["median_ms"] / measured["pool_acquire"]["median_ms"], 1
            )
            results["backends"][name] = measured
            print_backend(name, measured)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    write_json(args.json, results)
    print(f"load average {results['load_average_before']} -> {results['load_average_after']}")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
