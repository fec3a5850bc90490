"""How many threads the numeric libraries of this process may use, and pinning them to it.

Embedding, de-duplication and the Vendi score each run thread pools of their own: PyTorch's
intra-op pool, ONNX Runtime's, FAISS's OpenMP pool and the BLAS under numpy and scipy. Each
sizes itself to every core of the *machine* by default, which oversubscribes a container or a
Celery worker limited to fewer cores (and two pools active at once fight for the same cores).
``pinned_threads(n)`` sets all of them to ``n`` for the duration of a block, where ``n``
defaults to ``available_cores()``: the cores this process may actually run on (its CPU
affinity, capped by a cgroup CPU quota when one is set), not ``os.cpu_count()``.

The number is the ``embedding.threads`` setting (null: available cores).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

_CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
_CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _cgroup_cpu_limit() -> float | None:
    """Cores' worth of CPU time the cgroup allows (``None``: no quota, or not readable)."""
    try:
        quota, period = _CGROUP_V2_MAX.read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(_CGROUP_V1_QUOTA.read_text())
        period_us = int(_CGROUP_V1_PERIOD.read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup quota; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        # A quota of 1.5 cores keeps 2 threads busy at 75%: round up, never to zero.
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def resolve_threads(threads: int | None) -> int:
    """``threads`` when set, else ``available_cores()``."""
    return threads if threads is not None else available_cores()


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """Limit PyTorch (when imported), BLAS/OpenMP and FAISS to ``threads`` inside the block.

    ONNX Runtime sessions take their count when built (see onnx_backend). Yields the count.
    """
    count = resolve_threads(threads)
    with ExitStack() as stack:
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(limits=count))
        _pin_torch(count, stack)
        _pin_faiss(count, stack)
        yield count


def _pin_torch(count: int, stack: ExitStack) -> None:
    import sys

    torch = sys.modules.get("torch")  # only when already imported: importing it costs seconds
    if torch is None:
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    stack.callback(torch.set_num_threads, previous)


def _pin_faiss(count: int, stack: ExitStack) -> None:
    import sys

    faiss = sys.modules.get("faiss")
    if faiss is None:
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    stack.callback(faiss.omp_set_num_threads, previous)
