"""Soak: many episodes in one process, watching for what a week-long run would leak.

    python -m tests.reliability.soak --episodes 500 --concurrency 16 --out soak.json

Intents are sampled from the taxonomy and written out by the scripted writer (no embedding
model needed), then simulated in batches by ``simulate_stage`` in this process with the
scripted roles and the local sandbox. After every batch (all its sandboxes closed) it
records the open file descriptors, the live descendant processes and the resident memory of
this process, and the batch's throughput; during a batch a sampler thread records the peaks.
Leaks show as growth between the level after the first ``--baseline`` episodes and the end.

Resident memory also holds what glibc's per-thread malloc arenas keep after a batch's worker
threads are gone; that part levels off (and stays flat with ``MALLOC_ARENA_MAX=2``), while
the count of live Python objects shows whether anything the pipeline made is still held.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Sample:
    episodes: int
    fds: int
    children: int
    rss_mb: float
    objects: int  # live Python objects after a collection: a leak of records shows here


@dataclass
class Batch:
    episodes: int
    seconds: float
    kept: int
    failed: int
    peak_fds: int
    peak_children: int

    @property
    def per_second(self) -> float:
        return self.episodes / self.seconds if self.seconds else 0.0


@dataclass
class SoakReport:
    episodes: int
    concurrency: int
    batch_size: int
    seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)

    def at(self, episodes: int) -> Sample:
        """The first sample taken once ``episodes`` were done."""
        return next(s for s in self.samples if s.episodes >= episodes)

    def growth(self, baseline: int) -> dict[str, float]:
        """End level over the level after ``baseline`` episodes, per resource (1.0 = flat)."""
        start, end = self.at(baseline), self.samples[-1]
        return {
            "fds": end.fds / max(start.fds, 1),
            "children": (end.children + 1) / (start.children + 1),
            "rss": end.rss_mb / start.rss_mb,
            "objects": end.objects / start.objects,
        }

    def throughput(self) -> list[float]:
        return [round(b.per_second, 3) for b in self.batches]

    def as_dict(self, baseline: int) -> dict[str, Any]:
        data = asdict(self)
        data["growth_since_baseline"] = {k: round(v, 4) for k, v in self.growth(baseline).items()}
        data["baseline_episodes"] = baseline
        data["episodes_per_second"] = self.throughput()
        data["episodes_per_second_median"] = round(statistics.median(self.throughput()), 3)
        return data


# --- what this process holds -----------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def descendants() -> int:
    """Live processes below this one (bwrap, the sandboxes' supervisors and commands)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent_of[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    me, count = os.getpid(), 0
    for pid in parent_of:
        seen, current = 0, pid
        while current in parent_of and seen < 64:
            current, seen = parent_of[current], seen + 1
            if current == me:
                count += 1
                break
    return count


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample(episodes: int) -> Sample:
    gc.collect()
    return Sample(episodes, open_fds(), descendants(), round(rss_mb(), 1), len(gc.get_objects()))


class PeakSampler:
    """Records the highest fd and descendant counts while a batch runs."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.peak_fds = self.peak_children = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_fds = max(self.peak_fds, open_fds())
            self.peak_children = max(self.peak_children, descendants())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the run ----------------------------------------------------------------------------------


def soak_settings(root: Path, episodes: int, concurrency: int) -> Any:
    from ise_core.config import settings_from_dict

    data = {
        "seed": 11,
        "intents": {"count": episodes, "taxonomy": str(REPO / "ise_core" / "taxonomy")},
        "llm": {"provider": "scripted"},
        "workspace": {
            "backend": "local",
            "template": str(REPO / "ise_core" / "workspace" / "template"),
            "root": str(root / "sandboxes"),
        },
        "simulate": {"concurrency": concurrency},
    }
    return settings_from_dict(data, "soak params", base_dir=root)


def write_intents(settings: Any) -> list[str]:
    """Sample and write out ``intents.count`` intents with the scripted writer."""
    from ise_core.intents.render import render_intents
    from ise_core.intents.sample import sample_intents
    from ise_core.intents.taxonomy import load_taxonomy
    from ise_core.records import write_jsonl
    from ise_core.scripted import ScriptedChat

    taxonomy = load_taxonomy(settings.path(settings.intents.taxonomy))
    samples = sample_intents(taxonomy, settings.intents, settings.seed)
    writer = ScriptedChat("writer", seed=settings.seed)
    outcome = asyncio.run(render_intents(samples, writer, max_attempts=3, concurrency=16))
    write_jsonl(settings.path(settings.intents.out_dir) / "intents.jsonl", outcome.intents)
    return [intent.id for intent in outcome.intents]


def run_soak(
    root: Path,
    *,
    episodes: int,
    concurrency: int,
    batch_size: int,
    log: Any = None,
) -> SoakReport:
    from ise_core.simulate.stage import simulate_stage

    settings = soak_settings(root, episodes, concurrency)
    ids = write_intents(settings)
    report = SoakReport(episodes=len(ids), concurrency=concurrency, batch_size=batch_size)
    started = time.monotonic()
    report.samples.append(sample(0))
    done = 0
    for start in range(0, len(ids), batch_size):
        batch_ids = ids[start : start + batch_size]
        with PeakSampler() as peaks:
            batch_started = time.monotonic()
            result = simulate_stage(
                settings, only=batch_ids, concurrency=concurrency, progress=False
            )
            seconds = time.monotonic() - batch_started
        done += result.n_run
        report.batches.append(
            Batch(
                result.n_run,
                round(seconds, 3),
                result.n_kept,
                result.n_failed,
                peaks.peak_fds,
                peaks.peak_children,
            )
        )
        report.samples.append(sample(done))
        if log is not None:
            last = report.samples[-1]
            log(
                f"{done:5d} episodes  {result.n_run / seconds:5.2f} ep/s  fds {last.fds}  "
                f"children {last.children}  rss {last.rss_mb:.0f} MB  objects {last.objects}  "
                f"(peaks: fds {peaks.peak_fds}, children {peaks.peak_children})"
            )
    report.seconds = round(time.monotonic() - started, 3)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--baseline", type=int, default=50, help="episodes before the baseline")
    parser.add_argument("--out", type=Path, default=None, help="write the report (JSON) here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="ise-soak-") as tmp:
        report = run_soak(
            Path(tmp),
            episodes=args.episodes,
            concurrency=args.concurrency,
            batch_size=args.batch_size,
            log=log,
        )
    data = report.as_dict(args.baseline)
    text = json.dumps(data, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    growth = data["growth_since_baseline"]
    print(
        f"soak: {report.episodes} episodes at concurrency {report.concurrency} in "
        f"{report.seconds:.0f} s; end vs after {args.baseline} episodes: fds x{growth['fds']}, "
        f"children x{growth['children']}, rss x{growth['rss']}, python objects "
        f"x{growth['objects']}; episodes/s per batch "
        f"{data['episodes_per_second']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
