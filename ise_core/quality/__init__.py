"""Quality gates between stages: Great Expectations suites written in code.

Each ``gate_<stage>(settings) -> GateReport`` validates that stage's output, writes the full
validation result as ``gate_result.json`` beside it and returns ``passed`` plus a readable
report; a failed gate raises nothing (the caller decides the exit code). A missing input
file raises ``InputError`` naming it. Which gate follows which stage is said once, in the
stage table (``ise_core.stages``), which also runs them (``run_gate``).
"""

from __future__ import annotations

from ise_core.quality.eval_gate import gate_eval
from ise_core.quality.intents_gate import gate_intents
from ise_core.quality.runner import Expect, GateReport, Table, run_gate
from ise_core.quality.sft_gate import gate_sft
from ise_core.quality.trajectories_gate import gate_trajectories

__all__ = [
    "Expect",
    "GateReport",
    "Table",
    "gate_eval",
    "gate_intents",
    "gate_sft",
    "gate_trajectories",
    "run_gate",
]
