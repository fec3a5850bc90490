"""A project on the local model server: params.local.yaml pointed at a running server, sized,
with every path inside the project. Used by the real-model tests and benchmarks/real_model.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ise_core.config import deep_merge, load_raw
from ise_core.llm.local_server import LocalModelServer

REPO = Path(__file__).resolve().parents[2]


def local_model_params(
    project: Path,
    server: LocalModelServer,
    *,
    intents: int,
    concurrency: int,
    simulate: dict[str, Any] | None = None,
) -> Path:
    """Write ``project/params.yaml`` and return its path; ``simulate`` overrides that section."""
    base = load_raw(REPO / "params.local.yaml")
    override = {
        "intents": {"count": intents, "taxonomy": str(REPO / "ise_core/taxonomy"),
                    "out_dir": "data/intents"},
        "llm": {"base_url": server.base_url, "max_concurrency": concurrency,
                "cache_dir": ".cache/llm"},
        "workspace": {"backend": "local", "root": str(project / "sandboxes"),
                      "template": str(REPO / "ise_core/workspace/template")},
        "simulate": {"concurrency": concurrency, "out_dir": "data/trajectories",
                     **(simulate or {})},
        "export": {"out_dir": "data/sft"},
    }  # fmt: skip
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(deep_merge(base, override)), encoding="utf-8")
    return path
