"""The viewer at the published scale: p95 of the episode list and episode pages at 50,000.

1. A small real run makes the source episodes: the scripted writer writes out intents, and
   ``simulate`` runs each one (the scripted user and agent, every tool call in the local
   sandbox).
2. A data root of ``--episodes`` episodes is synthesized from them: each new episode is a
   source episode's real conversation under a new intent id, with its own persona (from the
   taxonomy's 965), its own outcome (kept, rejected for several reasons, failed) and its own
   intent line in intents.jsonl, so every filter has a realistic spread of values. The
   episode index is written by the same function collect calls (``--collect`` runs the
   collect stage itself over all the files instead, and times it).
3. ``ise view`` serves it on 127.0.0.1 in its own process; this process requests list pages
   (a mix of filters, sorts and pages, including deep pages) and episode pages (random
   ids), one at a time, and reports median, p95 and max of each, timed from request to the
   last byte of the response.

    python benchmarks/viewer_scale.py                      # 50,000 episodes, 300 requests each
    python benchmarks/viewer_scale.py --episodes 5000 --requests 100
    python benchmarks/viewer_scale.py --keep /tmp/viewer-50k   # keep the data root to re-run
    python benchmarks/viewer_scale.py --reuse /tmp/viewer-50k  # serve a kept data root again

Targets on this machine: list page p95 ≤ 300 ms, episode page p95 ≤ 200 ms. The figures are
wall clock on a shared machine: the load average before and after is recorded with them.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from benchmarks._common import load_average, machine_info, now_iso  # noqa: E402
from ise_core.records import write_json  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "viewer_scale.json"
TARGETS_MS = {"list": 300.0, "episode": 200.0}
SOURCE_INTENTS = 12
# Outcomes by position in a cycle of 20: about the published run's kept share (0.53).
OUTCOMES = (
    [("kept", "completed")] * 11
    + [("rejected", "max_turns")] * 5
    + [("rejected", "empty_query"), ("rejected", "user_error"), ("rejected", "role_drift")]
    + [("failed", "llm_error")]
)


def log(message: str) -> None:
    print(f"[viewer_scale] {message}", file=sys.stderr, flush=True)


# --- the data root ---------------------------------------------------------------------------


def source_run(project: Path) -> Path:
    """A real scripted run of SOURCE_INTENTS intents in ``project``; returns its params."""
    from benchmarks._common import write_scripted_intents
    from ise_core.config import load_settings
    from ise_core.simulate.stage import simulate_stage

    params = {
        "seed": 11,
        "intents": {"count": SOURCE_INTENTS, "taxonomy": str(ROOT / "ise_core" / "taxonomy")},
        "llm": {"provider": "scripted"},
        "workspace": {
            "backend": "local",
            "template": str(ROOT / "ise_core" / "workspace" / "template"),
            "root": str(project / ".cache" / "sandboxes"),
        },
        "simulate": {"concurrency": 2},
    }
    project.mkdir(parents=True, exist_ok=True)
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    write_scripted_intents(path)
    report = simulate_stage(load_settings(path), progress=False)
    log(f"source run: {report.summary()}")
    return path


def _personas() -> list[dict[str, Any]]:
    text = (ROOT / "ise_core" / "taxonomy" / "personas.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def synthesize(params: Path, count: int) -> Iterator[Any]:
    """Write ``count`` episodes (and their intents and timings) into the project of
    ``params``, built from its source episodes; yields each Trajectory as it is written."""
    from ise_core.catalog import Catalog, intent_hash
    from ise_core.config import load_settings
    from ise_core.records import Intent, Trajectory, read_jsonl

    files = Catalog.of(load_settings(params))
    episodes, timings = files.episodes_dir, files.timing_dir
    source_intents = {i.id: i for i in read_jsonl(files.intents, Intent)}
    sources = [
        (
            source_intents[p.stem],
            json.loads(p.read_text(encoding="utf-8")),
            json.loads((timings / p.name).read_text(encoding="utf-8")),
        )
        for p in sorted(episodes.glob("*.json"))
    ]
    for folder in (episodes, timings):
        shutil.rmtree(folder)
        folder.mkdir()
    personas = _personas()
    with files.intents.open("w", encoding="utf-8") as intents_file:
        for i in range(count):
            intent, episode, timing = sources[i % len(sources)]
            persona = personas[(i * 7) % len(personas)]
            new_id = f"it-{i:06d}-{(i * 2654435761) % 16**6:06x}"
            new_intent = Intent.model_validate(
                {**intent.model_dump(), "id": new_id, "index": i, "persona": persona}
            )
            status, stop = OUTCOMES[i % len(OUTCOMES)]
            data = dict(episode)
            metadata = dict(data["metadata"], persona=persona, intent_hash=intent_hash(new_intent))
            if i % 50 == 0:
                metadata["text_tool_calls"] = 2
            if i % 70 == 0:
                metadata["compactions"] = 1
            data.update(
                intent_id=new_id,
                session_id=f"{new_id}-{data['params_fingerprint'][:8]}",
                status=status,
                stop_reason=stop,
                kept=status == "kept",
                completed=status == "kept",
                metadata=metadata,
            )
            text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            (episodes / f"{new_id}.json").write_text(text, encoding="utf-8")
            (timings / f"{new_id}.json").write_text(json.dumps(timing), encoding="utf-8")
            intents_file.write(new_intent.model_dump_json() + "\n")
            if i and i % 10_000 == 0:
                log(f"synthesized {i:,} episodes")
            yield Trajectory.model_validate(data)


def build_root(folder: Path, count: int, run_collect: bool) -> tuple[Path, dict[str, Any]]:
    """The synthesized project; returns its params and how long each part took."""
    from ise_core.catalog import Catalog
    from ise_core.config import load_settings
    from ise_core.simulate.episode_index import write_index

    started = time.perf_counter()
    params = source_run(folder / "project")
    timings: dict[str, Any] = {"source_run_s": round(time.perf_counter() - started, 1)}
    settings = load_settings(params)
    files = Catalog.of(settings)
    started = time.perf_counter()
    if run_collect:
        for _ in synthesize(params, count):
            pass
        timings["synthesize_s"] = round(time.perf_counter() - started, 1)
        from ise_core.simulate.stage import collect_stage

        started = time.perf_counter()
        collect_stage(settings)
        timings["collect_s"] = round(time.perf_counter() - started, 1)
    else:
        write_index(files.episode_index, synthesize(params, count))
        timings["synthesize_and_index_s"] = round(time.perf_counter() - started, 1)
    size = sum(p.stat().st_size for p in files.episodes_dir.iterdir())
    timings["episode_files_gib"] = round(size / 2**30, 2)
    log(f"data root ready: {count:,} episodes, {timings}")
    return params, timings


# --- serving and timing ----------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
        if response.status != 200:
            raise SystemExit(f"{url}: HTTP {response.status}")
    return time.perf_counter() - started


def summary(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def list_queries(rows: Sequence[dict[str, Any]], count: int, rng: random.Random) -> list[str]:
    """A mix of what people ask the list: filters alone and combined, sorts, deep pages."""
    domains = sorted({d for r in rows[:2000] for d in r["domains"]})
    tools = sorted({t for r in rows[:2000] for t in r["tools"]})
    personas = [r["persona"].split(" (")[0] for r in rows[:500]]
    shapes = [
        lambda: {},
        lambda: {"status": "kept"},
        lambda: {"status": "rejected", "sort": "tool_calls", "desc": "1"},
        lambda: {"stop_reason": rng.choice(["max_turns", "role_drift", "llm_error"])},
        lambda: {"domain": rng.choice(domains), "complexity": "complex"},
        lambda: {"tool": rng.choice(tools), "tool_errors": "any"},
        lambda: {"recovered_errors": "any", "sort": "user_turns", "desc": "1"},
        lambda: {"persona": rng.choice(personas)},
        lambda: {"text_tool_calls": "any"},
        lambda: {"compactions": "any", "status": "kept"},
        lambda: {"q": rng.choice(["invoice", "report", "backup", "csv"])},
        lambda: {"sort": "dialogue_turns", "desc": "1", "per_page": "200"},
    ]
    queries = []
    for _ in range(count):
        params = shapes[rng.randrange(len(shapes))]()
        params["page"] = str(rng.choice([1, 1, 2, 5, 40, 400]))
        queries.append("/episodes?" + urllib.parse.urlencode(params))
    return queries


def measure(params: Path, requests: int, seed: int) -> dict[str, Any]:
    from ise_core.catalog import Catalog
    from ise_core.config import load_settings
    from ise_core.simulate.episode_index import read_index

    rows = read_index(Catalog.of(load_settings(params)).episode_index)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = params.parent / "ise-view.log"
    started = time.perf_counter()
    with server_log.open("w", encoding="utf-8") as handle:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ise_core.cli",
                "view",
                "--params",
                str(params),
                "--port",
                str(port),
            ],
            cwd=params.parent,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        while True:
            try:
                timed_get(base + "/static/viewer.css")
                break
            except OSError:
                if server.poll() is not None or time.perf_counter() - started > 600:
                    raise SystemExit(server_log.read_text()[-3000:]) from None
                time.sleep(0.2)
        ready_s = time.perf_counter() - started
        rng = random.Random(seed)
        queries = list_queries(rows, requests, rng)
        first_seen: set[str] = set()
        cold, all_list = [], []
        for query in queries:
            elapsed = timed_get(base + query)
            all_list.append(elapsed)
            key = "&".join(
                p for p in query.split("?", 1)[1].split("&") if not p.startswith("page=")
            )
            if key not in first_seen:
                first_seen.add(key)
                cold.append(elapsed)
        ids = [rows[rng.randrange(len(rows))]["id"] for _ in range(requests)]
        first_episode = timed_get(f"{base}/episodes/{ids[0]}")
        episode = [timed_get(f"{base}/episodes/{i}") for i in ids[1:]]
        rss = _rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    startup = [line for line in server_log.read_text().splitlines() if "episodes from" in line]
    return {
        "server_ready_s": round(ready_s, 2),
        "server_startup_log": startup,
        "list": summary(all_list),
        "list_first_request_per_filter": summary(cold),
        "episode": summary(episode),
        "first_episode_ms": round(first_episode * 1000, 1),
        "server_rss_mib": rss,
    }


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=300, help="per page type")
    parser.add_argument("--collect", action="store_true", help="index with the collect stage")
    parser.add_argument("--keep", type=Path, help="build the data root here and keep it")
    parser.add_argument("--reuse", type=Path, help="serve a data root kept by --keep")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    load_before = load_average()
    result: dict[str, Any] = {"measured_at": now_iso(), "machine": machine_info()}
    folder = args.reuse or args.keep or Path(tempfile.mkdtemp(prefix="ise-viewer-scale-"))
    try:
        if args.reuse:
            params = args.reuse / "project" / "params.yaml"
            result["build"] = {"reused": str(args.reuse)}
        else:
            params, result["build"] = build_root(folder, args.episodes, args.collect)
        figures = measure(params, args.requests, args.seed)
    finally:
        if not (args.keep or args.reuse):
            shutil.rmtree(folder, ignore_errors=True)
    result.update(figures)
    result["episodes"] = args.episodes
    result["targets_ms"] = TARGETS_MS
    result["met"] = {page: figures[page]["p95_ms"] <= limit for page, limit in TARGETS_MS.items()}
    result["load_average"] = {"before": load_before, "after": load_average()}
    write_json(args.json, result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "list",
                    "list_first_request_per_filter",
                    "episode",
                    "first_episode_ms",
                    "met",
                    "load_average",
                )
            },
            indent=2,
        )
    )
    return 0 if all(result["met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
