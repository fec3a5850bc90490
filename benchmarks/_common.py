"""What the saturation benchmarks share: the machine, the loopback server, projects, runs.

Not a benchmark itself (``make bench`` skips files starting with ``_``). The server runs in
its own process (tests/fakes/both_roles.py) so that every CPU figure measured here belongs
to the pipeline; the pipeline runs in its own process too (``run_simulate``), measured from
inside with ``time.process_time`` (this process's threads) and ``RUSAGE_CHILDREN`` (the
sandbox processes it started and reaped).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
KEY_ENV = "ISE_BENCH_KEY"  # the loopback server checks no key; the client wants a variable
MODEL = "fake-model"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """nproc, memory, CPU model, Python and the load average right now."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "nproc": usable,
        "memory_gib": _memory_gib(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": load_average(),
    }


# --- the loopback server ------------------------------------------------------------------------


class LoopbackServer:
    """tests/fakes/both_roles.py in a subprocess; ``report()`` after ``stop()``."""

    def __init__(
        self,
        *,
        latency_s: float,
        user_turns: int,
        tool_calls: int,
        limit: int,
        report: Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.report_path = report
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.both_roles",
                "--latency",
                str(latency_s),
                "--user-turns",
                str(user_turns),
                "--tool-calls",
                str(tool_calls),
                "--limit",
                str(limit),
                "--report",
                str(report),
                *extra_args,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise SystemExit("the loopback server did not start")
        self.base_url: str = json.loads(line)["base_url"]

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # the server stops (and writes its report) on EOF
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.report_path.read_text(encoding="utf-8"))
        return data


def bare_client_ceiling(latency_s: float, limit: int, seconds: float = 8.0) -> dict[str, Any]:
    """The efficiency this machine allows right now, with no pipeline at all: ``limit``
    requests kept in flight through the SDK's HTTP library alone, for about ``seconds``,
    against the plain loopback server (tests/fakes/openai_server.py, its own process)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "fakes" / "openai_server.py"),
            "--latency",
            str(latency_s),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = json.loads(proc.stdout.readline())["base_url"]
        requests = max(limit, round(seconds * limit / latency_s))
        wall_s, cpu_s = asyncio.run(_bare_load(base_url, limit, requests))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=20)
    ideal = limit / latency_s
    return {
        "requests": requests,
        "efficiency": round(requests / wall_s / ideal, 4),
        "cpu_ms_per_request": round(1000 * cpu_s / requests, 3),
        "load_average": load_average(),
    }


async def _bare_load(base_url: str, limit: int, requests: int) -> tuple[float, float]:
    import openai

    gate = asyncio.Semaphore(limit)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    async with openai.DefaultAsyncHttpxClient() as client:

        async def one() -> None:
            async with gate:
                reply = await client.post(f"{base_url}/chat/completions", json=body)
                reply.raise_for_status()
                reply.json()

        await asyncio.gather(*(one() for _ in range(limit)))  # warm the connection pool
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one() for _ in range(requests)))
        return time.perf_counter() - wall0, time.process_time() - cpu0


# --- projects -----------------------------------------------------------------------------------


def bench_params(
    project: Path,
    base_url: str,
    *,
    intents: int,
    max_concurrency: int,
    episodes_at_once: int | None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A complete params.yaml in ``project``: scripted writer, user and agent on the loopback
    endpoint, local sandboxes under the project, a fresh response cache (read_write: every
    request is a miss and is written, as on a first run), gates sized for a fake model.
    ``episodes_at_once`` None leaves ``simulate.concurrency`` at its default (from
    ``llm.max_concurrency``)."""
    from ise_core.config import deep_merge, settings_from_dict
    from tests.fakes.params import MANUAL_AIRFLOW, PERMISSIVE_GATES

    params: dict[str, Any] = {
        "seed": 7,
        "intents": {"count": intents, "taxonomy": str(ROOT / "ise_core" / "taxonomy")},
        "embedding": {"model": "all-MiniLM-L6-v2", "batch_size": 64},
        "llm": {
            "provider": "openai",
            "base_url": base_url,
            "model": MODEL,
            "api_key_env": KEY_ENV,
            "max_concurrency": max_concurrency,
            "cache": "read_write",
            "cache_dir": str(project / ".cache" / "llm"),
            "timeout_s": 60.0,
            "backoff_base_s": 0.05,
            "backoff_max_s": 1.0,
            "roles": {"writer": {"provider": "scripted"}},
        },
        "workspace": {
            "backend": "local",
            "template": str(ROOT / "ise_core" / "workspace" / "template"),
            "root": str(project / ".cache" / "sandboxes"),
        },
        # The loopback agent does not do the intents' real work: checks still run, but an
        # episode is kept on the user's word alone.
        "simulate": {"concurrency": episodes_at_once, "require_checks": False},
        "export": {"valid_fraction": 0.0},
        "gates": copy.deepcopy(PERMISSIVE_GATES),
        "airflow": dict(MANUAL_AIRFLOW),
    }
    params = deep_merge(params, extra or {})
    complete = settings_from_dict(params, "benchmark params").model_dump(mode="json")
    project.mkdir(parents=True, exist_ok=True)
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(complete, sort_keys=False), encoding="utf-8")
    return path


def write_scripted_intents(params: Path) -> int:
    """intents.jsonl straight from the scripted writer (no embedding, no de-duplication)."""
    from ise_core.config import load_settings
    from ise_core.intents.render import render_intents
    from ise_core.intents.sample import sample_intents
    from ise_core.intents.taxonomy import load_taxonomy
    from ise_core.records import write_jsonl
    from ise_core.scripted import ScriptedChat

    settings = load_settings(params)
    taxonomy = load_taxonomy(settings.path(settings.intents.taxonomy))
    samples = sample_intents(taxonomy, settings.intents, settings.seed)
    outcome = asyncio.run(
        render_intents(
            samples,
            ScriptedChat("writer", settings.seed),
            max_attempts=settings.intents.max_render_attempts,
        )
    )
    write_jsonl(settings.path(settings.intents.out_dir) / "intents.jsonl", outcome.intents)
    return len(outcome.intents)


# --- the measured simulate process ---------------------------------------------------------------

# `ise simulate` in a fresh interpreter, with CPU accounting around it. The imports it would
# make lazily anyway (the stage, the SDK) happen first and are reported as start-up.
_RUNNER = r"""
import json, resource, sys, time
wall0, cpu0 = time.perf_counter(), time.process_time()
import openai  # noqa: F401
import ise_core.simulate.stage  # noqa: F401
from ise_core.cli import main
cpu_startup = time.process_time() - cpu0
profile_path, out_path, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
profiler = cprofiler = None
if profile_path.endswith(".prof"):  # cProfile: CPU per function of the event-loop thread
    import cProfile
    cprofiler = cProfile.Profile()
    cprofiler.enable()
elif profile_path:  # pyinstrument: where the event-loop thread spends its wall-clock time
    from pyinstrument import Profiler
    profiler = Profiler(interval=0.002, async_mode="disabled")
    profiler.start()
wall1, cpu1 = time.perf_counter(), time.process_time()
code = main(argv)
wall_s, cpu_s = time.perf_counter() - wall1, time.process_time() - cpu1
if cprofiler is not None:
    cprofiler.disable()
    cprofiler.dump_stats(profile_path)
if profiler is not None:
    profiler.stop()
    with open(profile_path, "w") as handle:
        handle.write(profiler.output_text(unicode=False, color=False, show_all=False))
    profiler.last_session.save(profile_path + ".pyisession")  # re-render: pyinstrument --load
children = resource.getrusage(resource.RUSAGE_CHILDREN)
this = resource.getrusage(resource.RUSAGE_SELF)
with open(out_path, "w") as handle:
    json.dump({
        "exit_code": code,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "startup_wall_s": wall1 - wall0,
        "startup_cpu_s": cpu_startup,
        "children_cpu_s": (children.ru_utime + children.ru_stime)
        - (children0.ru_utime + children0.ru_stime),
        "peak_rss_mib": this.ru_maxrss / 1024,
    }, handle)
sys.exit(code)
"""


def run_simulate(
    params: Path,
    concurrency: int | None,
    *,
    log: Path,
    profile: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout_s: float = 1800,
) -> dict[str, Any]:
    """``ise simulate --params P [--concurrency N]`` in its own process; its figures."""
    out = log.with_suffix(".figures.json")
    env = dict(os.environ, **{KEY_ENV: "sk-benchmark-not-a-real-key"})
    env["PYTHONPATH"] = str(ROOT)
    argv = ["simulate", "--params", str(params)]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    with log.open("w", encoding="utf-8") as handle:
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER, str(profile or ""), str(out), *argv, *extra_args],
            cwd=params.parent,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
        )
    if done.returncode != 0 or not out.exists():
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"ise simulate failed (exit {done.returncode}):\n{tail}")
    figures: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return figures


def episode_counts(params: Path) -> dict[str, Any]:
    """collect over the project: kept, rejected, failed, tool calls."""
    from ise_core.config import load_settings
    from ise_core.simulate.stage import collect_stage

    stats = collect_stage(load_settings(params))
    return {
        "n_episodes": stats["n_episodes"],
        "n_kept": stats["n_kept"],
        "n_failed": stats["n_failed"],
        "user_turns_mean": stats["user_turns"]["mean"],
        "dialogue_turns_mean": stats["dialogue_turns"]["mean"],
        "tool_calls_mean": stats["tool_calls"]["mean"],
        "stop_reasons": stats["stop_reasons"],
        "requests_recorded": stats["llm_usage"].get("requests"),
    }


def rounded(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


def elapsed_since(started: float) -> float:
    return round(time.perf_counter() - started, 3)
