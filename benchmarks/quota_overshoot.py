"""How far a fast disk filler gets past the workspace quota before the sandbox stops it.

Opens a workspace with ``disk_quota_mb`` 64 (``--quota-mb``) on every backend that runs here
and, ``--runs`` times, runs the shell loop of ``tests/security/test_abuse.py``: 8 MB files
from /dev/zero, one after another, as fast as the disk takes them. It prints what the
workspace holds when the command comes back (allocated blocks, as the supervisor counts them),
how long that took, and the write rate it implies. The quota is measured by polling (see
``Supervisor.quota_wait``), so the overshoot is what the writer manages between the last two
measures; a page-cache write on a quick machine runs at about 1 GiB/s.

    python benchmarks/quota_overshoot.py
    python benchmarks/quota_overshoot.py --runs 20 --backends local --json /tmp/overshoot.json

Target: at most quota + 48 MB (the bound of the test), on every backend.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workspace_overhead import docker_engine_for_run  # noqa: E402

from benchmarks._common import RESULTS, load_average, now_iso  # noqa: E402
from ise_core.records import write_json  # noqa: E402
from ise_core.workspace import open_workspace  # noqa: E402
from ise_core.workspace.local import local_available  # noqa: E402
from tests.workspace.fixtures import (  # noqa: E402
    DISK_FILLER,
    QUOTA_OVERSHOOT_MB,
    allocated_mb,
    make_settings,
)


def one_run(backend: str, quota_mb: int, image: str | None) -> tuple[float, float]:
    """(MB in the workspace when the filler was stopped, seconds it ran)."""
    with tempfile.TemporaryDirectory() as root:
        # The test's sandbox limits (tests/security/test_abuse.py), with this quota.
        settings = make_settings(
            Path(root),
            disk_quota_mb=quota_mb,
            max_file_mb=16,
            call_timeout_s=20,
            **({"docker_image": image} if image else {}),
        )
        with open_workspace(settings, base_dir=ROOT, backend=backend) as workspace:
            workspace.open()
            started = time.monotonic()
            result = workspace.call("exec", {"command": DISK_FILLER})
            took = time.monotonic() - started
            if "workspace quota exceeded" not in result.content:
                raise SystemExit(f"{backend}: the filler was not stopped by the quota")
            return allocated_mb(workspace.workspace_dir), took


def skip_reason(backend: str) -> tuple[str | None, str | None]:
    """(docker image, why the backend cannot run here)."""
    if backend == "docker":
        return docker_engine_for_run(allow_private=True)
    ok, why = local_available()
    return None, None if ok else why


def measure(backend: str, runs: int, quota_mb: int) -> dict[str, Any]:
    image, reason = skip_reason(backend)
    if reason:
        print(f"{backend:<7} skipped: {reason}")
        return {"skipped": reason}
    measured = [one_run(backend, quota_mb, image) for _ in range(runs)]
    held = [round(mb, 1) for mb, _ in measured]
    figures: dict[str, Any] = {
        "held_mb": held,
        "max_overshoot_mb": round(max(held) - quota_mb, 1),
        "writer_mb_per_s": round(statistics.median(mb / took for mb, took in measured)),
    }
    figures["within_bound"] = figures["max_overshoot_mb"] <= QUOTA_OVERSHOOT_MB
    print(
        f"{backend:<7} held {min(held):6.1f}–{max(held):6.1f} MB (median "
        f"{statistics.median(held):6.1f}) at a {quota_mb} MB quota; overshoot ≤ "
        f"{figures['max_overshoot_mb']:5.1f} MB; writer ~{figures['writer_mb_per_s']:5} MB/s"
    )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--quota-mb", type=int, default=64)
    parser.add_argument(
        "--backends", nargs="+", choices=("local", "docker"), default=["local", "docker"]
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "quota_overshoot.json")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "measured_at": now_iso(),
        "load_average_before": load_average(),
        "quota_mb": args.quota_mb,
        "runs": args.runs,
        "bound_mb": QUOTA_OVERSHOOT_MB,
        "filler": DISK_FILLER,
    }
    print(f"load {results['load_average_before']}; quota {args.quota_mb} MB; {args.runs} runs")
    results["backends"] = {b: measure(b, args.runs, args.quota_mb) for b in args.backends}
    results["load_average_after"] = load_average()
    write_json(args.json, results)
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
