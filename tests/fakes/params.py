"""Parameter blocks shared by the tests and benchmarks that build tiny projects.

Tiny runs (a handful of intents) cannot meet the production gates' statistical bars, so they
share one permissive gate block; the Airflow block makes the DAG manual and fail fast.
"""

from __future__ import annotations

from typing import Any

PERMISSIVE_GATES: dict[str, Any] = {
    "intents": {"min_vendi_score": 0.0, "min_unique_share": 0.0},
    "trajectories": {
        "min_kept_share": 0.0,
        "min_mean_user_turns": 0.0,
        "min_mean_dialogue_turns": 0.0,
    },
    "sft": {"min_train_rows": 0},
}

MANUAL_AIRFLOW: dict[str, Any] = {"schedule": None, "retries": 0, "retry_delay_s": 1}
