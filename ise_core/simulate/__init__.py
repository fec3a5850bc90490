"""Stages 2–3: a role-locked user simulator and a tool-using agent talk over many turns while
every tool call runs in a live workspace; complete, verified episodes are kept.

- ``drift``       the role-drift detector (documented heuristics)
- ``user_sim``    the user simulator: JSON turns, retries, drift regeneration
- ``agent_loop``  one agent turn: model call → tool calls in the workspace → repeat
- ``episode``     one episode end to end, stop reasons, checks, metadata
- ``metrics``     conversation shape counts, their summaries and the collect statistics
- ``stage``       ``simulate_stage`` (resumable, concurrent) and ``collect_stage``
"""

from __future__ import annotations

from ise_core.simulate.agent_loop import AgentTurn, run_agent_turn
from ise_core.simulate.drift import DriftHit, detect_role_drift
from ise_core.simulate.episode import EpisodeResult, run_episode
from ise_core.simulate.metrics import conversation_metrics, summarize, trajectory_stats
from ise_core.simulate.stage import SimulateReport, collect_stage, simulate_stage
from ise_core.simulate.user_sim import UserSimulator, UserTurn, parse_user_turn

__all__ = [
    "AgentTurn",
    "DriftHit",
    "EpisodeResult",
    "SimulateReport",
    "UserSimulator",
    "UserTurn",
    "collect_stage",
    "conversation_metrics",
    "detect_role_drift",
    "parse_user_turn",
    "run_agent_turn",
    "run_episode",
    "simulate_stage",
    "summarize",
    "trajectory_stats",
]
