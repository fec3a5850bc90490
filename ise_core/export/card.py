"""The dataset card (``data/sft/README.md``) in the Hugging Face dataset-card layout.

A YAML header (license, task categories, language, size category, configs with data files)
followed by how the data was made, the statistics side by side with the published ISE run,
and the plots. Pure: it renders text from statistics and settings; the stage writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from ise_core.catalog import FORMAT_FILES
from ise_core.config import ROLES, Settings
from ise_core.refresh.history import growth_rows
from ise_core.refresh.periods import BASE

# DESIGN §1: the published ISE run (arXiv 2606.11520).
PUBLISHED: dict[str, float] = {
    "trajectories": 23_132,
    "user_turns_mean": 8.12,
    "user_turns_median": 8,
    "user_turns_max": 23,
    "user_turns_share_6_10": 0.911,
    "dialogue_turns_mean": 68.24,
    "tool_calls_mean": 29.26,
    "distinct_tools_mean": 4.69,
    "role_drift_rate": 0.0002,
    "vendi_score": 61.57,
    "vendi_intents": 43_956,
}

SCRIPTED_LABEL = "scripted (deterministic offline program, not a model)"


def size_category(n: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ]
    for limit, label in bounds:
        if n < limit:
            return label
    return "10M<n<100M"


def role_backend(settings: Settings, role: str) -> str:
    resolved = settings.llm.role(role)  # type: ignore[arg-type]
    if resolved["provider"] == "scripted":
        return SCRIPTED_LABEL
    model = resolved.get("model") or "(model not set)"
    sampling = f"temperature {resolved.get('temperature')}"
    if resolved.get("top_p") is not None:
        sampling += f", top_p {resolved['top_p']}"
    return f"`{model}` through an OpenAI-compatible endpoint ({sampling})"


def card_header(settings: Settings, stats: Mapping[str, Any]) -> str:
    configs = []
    for fmt in settings.export.formats:
        train_file, valid_file = FORMAT_FILES[fmt]
        files = [{"split": "train", "path": train_file}]
        if stats["n_valid"]:
            files.append({"split": "validation", "path": valid_file})
        entry: dict[str, Any] = {
            "config_name": "default" if fmt == "openai" else fmt,
            "data_files": files,
        }
        if fmt == "openai":
            entry["default"] = True
        configs.append(entry)
    header = {
        "license": settings.export.license,
        "pretty_name": settings.export.pretty_name,
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["agents", "tool-use", "function-calling", "multi-turn", "synthetic"],
        "size_categories": [size_category(int(stats["n_total"]))],
        "configs": configs,
    }
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n"


def _fmt(value: Any, digits: int = 2, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    if percent:
        return f"{100 * float(value):.{max(digits - 1, 1)}f}%"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and digits == 0):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def comparison_rows(
    stats: Mapping[str, Any],
    intents_stats: Mapping[str, Any] | None,
    trajectory_stats: Mapping[str, Any] | None,
) -> list[tuple[str, str, str]]:
    """(metric, this dataset, published ISE) rows of the side-by-side table."""
    p = PUBLISHED
    drift = (trajectory_stats or {}).get("role_drift_rate")
    vendi = (intents_stats or {}).get("vendi_score")
    n_unique = (intents_stats or {}).get("n_unique")
    ours_vendi = "n/a" if vendi is None else f"{float(vendi):.2f} over {int(n_unique or 0):,}"
    return [
        ("trajectories (exported)", _fmt(stats["n_total"], 0), _fmt(int(p["trajectories"]), 0)),
        ("user turns, mean", _fmt(stats["user_turns"]["mean"]), _fmt(p["user_turns_mean"])),
        (
            "user turns, median",
            _fmt(stats["user_turns"]["median"], 1),
            _fmt(p["user_turns_median"], 0),
        ),
        ("user turns, max", _fmt(stats["user_turns"]["max"], 0), _fmt(int(p["user_turns_max"]), 0)),
        (
            "share with 6–10 user turns",
            _fmt(stats["user_turns_share_6_10"], percent=True),
            _fmt(p["user_turns_share_6_10"], percent=True),
        ),
        (
            "dialogue turns, mean",
            _fmt(stats["dialogue_turns"]["mean"]),
            _fmt(p["dialogue_turns_mean"]),
        ),
        ("tool calls, mean", _fmt(stats["tool_calls"]["mean"]), _fmt(p["tool_calls_mean"])),
        (
            "distinct tools, mean",
            _fmt(stats["distinct_tools"]["mean"]),
            _fmt(p["distinct_tools_mean"]),
        ),
        (
            "role-drift rate",
            _fmt(drift, 3, percent=True) if drift is not None else "n/a",
            _fmt(p["role_drift_rate"], 3, percent=True),
        ),
        (
            "Vendi score over intents",
            ours_vendi,
            f"{p['vendi_score']:.2f} over {int(p['vendi_intents']):,}",
        ),
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _redactions(stats: Mapping[str, Any]) -> str:
    """ " (12 replacements: host_path 10, json_web_token 2)", or "" before any were counted."""
    redactions = stats.get("redactions") or {}
    by_kind = redactions.get("by_kind") or {}
    if not isinstance(by_kind, Mapping):
        return ""
    total = int(redactions.get("total") or 0)
    if total == 0:
        return " (none were found)"
    detail = ", ".join(f"{kind} {n:,}" for kind, n in by_kind.items())
    plural = "s" if total != 1 else ""
    return f" ({total:,} replacement{plural}{': ' + detail if detail else ''})"


def render_card(
    settings: Settings,
    stats: Mapping[str, Any],
    intents_stats: Mapping[str, Any] | None,
    trajectory_stats: Mapping[str, Any] | None,
    workspace_backend: str,
    plots: Mapping[str, str],
) -> str:
    """The full README.md text. ``plots`` maps a caption to a path relative to the card."""
    parts = [
        card_header(settings, stats),
        f"# {settings.export.pretty_name}\n",
        "Multi-turn conversations of a role-locked simulated user and a tool-using agent, "
        "synthesised with the ISE recipe (Intent → Simulate → Execute). Every tool call ran "
        "for real in an isolated workspace, so tool errors and recoveries are genuine.\n",
        *_how_it_was_made(settings, stats, intents_stats, trajectory_stats, workspace_backend),
        *_statistics(stats, intents_stats, trajectory_stats),
        *_periods(intents_stats, trajectory_stats),
        "## Plots\n",
        *[f"![{caption}]({path})\n" for caption, path in plots.items()],
        *_format(settings),
    ]
    return "\n".join(parts).rstrip() + "\n"


def _how_it_was_made(
    settings: Settings,
    stats: Mapping[str, Any],
    intents_stats: Mapping[str, Any] | None,
    trajectory_stats: Mapping[str, Any] | None,
    workspace_backend: str,
) -> list[str]:
    fingerprints = [("export", str(stats.get("params_fingerprint", "")))]
    for stage, upstream in (("intents", intents_stats), ("simulate", trajectory_stats)):
        if upstream and upstream.get("params_fingerprint"):
            fingerprints.append((stage, str(upstream["params_fingerprint"])))
    roles = [(role, role_backend(settings, role)) for role in ROLES]
    return [
        "## How it was made\n",
        "1. **Intent** — structured intents sampled from persona × domains × tasks × "
        "complexity, written out as requests, de-duplicated (exact, then semantic).",
        "2. **Simulate** — a role-locked user talks to the agent until it declares the task "
        "complete; only completed, successful sessions are kept.",
        "3. **Execute** — each tool call runs in a fresh workspace restored from a template.\n",
        _table(
            ["role", "backend"],
            [(f"{r} (LLM role)", b) for r, b in roles] + [("workspace", workspace_backend)],
        ),
        "",
        _table(["stage", "params fingerprint"], [(s, f"`{f}`") for s, f in fingerprints]),
        "",
        f"Split by intent (seed {settings.seed}, validation fraction "
        f"{settings.export.valid_fraction}); no intent appears in both splits. Secrets and "
        f"host paths were redacted from all text before export{_redactions(stats)}.\n",
    ]


def _statistics(
    stats: Mapping[str, Any],
    intents_stats: Mapping[str, Any] | None,
    trajectory_stats: Mapping[str, Any] | None,
) -> list[str]:
    tokens = stats["tokens"]
    return [
        "## Statistics\n",
        _table(
            ["metric", "this dataset", "published ISE"],
            comparison_rows(stats, intents_stats, trajectory_stats),
        ),
        "",
        "The Vendi score grows with the number of intents, so compare it at equal sample "
        "sizes (see the curve below).\n",
        _table(
            ["split", "conversations", "estimated tokens (chars / 4)"],
            [
                ("train", _fmt(stats["n_train"], 0), _fmt(tokens["estimated_text"]["train"], 0)),
                (
                    "validation",
                    _fmt(stats["n_valid"], 0),
                    _fmt(tokens["estimated_text"]["valid"], 0),
                ),
            ],
        ),
        "",
        f"Recorded LLM usage: {tokens['recorded']['prompt']:,} prompt + "
        f"{tokens['recorded']['completion']:,} completion tokens. Tool errors: "
        f"{stats['tool_errors_total']:,}, of which recovered: {stats['recovered_errors_total']:,}."
        "\n",
        _table(["complexity", "conversations"], sorted(stats["complexity"].items())),
        "",
        _table(["domain", "conversations"], sorted(stats["domains"].items())),
        "",
        _table(["stop reason", "conversations"], sorted(stats["stop_reasons"].items())),
        "",
    ]


LAST_PERIODS = 10  # rows of the card's table of refresh periods


def _periods(
    intents_stats: Mapping[str, Any] | None, trajectory_stats: Mapping[str, Any] | None
) -> list[str]:
    """The last refresh periods, when the dataset grew by periods (ise_core/refresh)."""
    rows = growth_rows(
        (intents_stats or {}).get("periods") or {},
        (trajectory_stats or {}).get("periods") or {},
    )
    if not rows:
        return []
    shown = rows[-LAST_PERIODS:]
    periods = sum(1 for row in rows if row["period"] != BASE)
    earlier = len(rows) - len(shown)
    note = f" (the last {len(shown)} rows; {earlier} earlier ones are in the plot)"
    note = note if earlier else ""
    return [
        "## Refresh periods\n",
        f"The dataset was built over {periods} refresh period{'s' if periods != 1 else ''} of "
        "the schedule; `base` is the initial `intents.count` intents. Each period's intents "
        f"and conversations carry its id in `metadata.period`{note}.\n",
        _table(
            ["period", "mode", "intents added", "conversations", "kept", "kept, cumulative",
             "tokens", "estimated cost"],
            [
                (
                    row["period"],
                    row["mode"],
                    _fmt(row["intents_added"], 0),
                    _fmt(row["episodes"], 0),
                    _fmt(row["kept"], 0),
                    _fmt(row["cumulative_kept"], 0),
                    _fmt(row["tokens"], 0),
                    _fmt(row["cost"], 4),
                )
                for row in shown
            ],
        ),
        "",
    ]


def _format(settings: Settings) -> list[str]:
    parts = [
        "## Format\n",
        "Each line of `train.jsonl` / `valid.jsonl` holds `messages` (OpenAI chat layout: "
        "system first; assistant `tool_calls` with `function.arguments` as a JSON string; tool "
        "messages with `tool_call_id`, `name`, `content`, `success`), `tools` (function "
        "schemas), `final_output` and `metadata` (intent and session ids, persona, domains, "
        "tasks, complexity, turn and tool counts, token usage).\n",
    ]
    if "sharegpt" in settings.export.formats:
        parts.append(
            "ShareGPT (`sharegpt/`, LLaMA-Factory's layout): `conversations` of "
            "`{from, value}` turns alternating `human`/`observation` and "
            "`gpt`/`function_call`; parallel tool calls form one `function_call` (a JSON "
            "list) and their results one `observation`; `system`, and `tools` / `metadata` "
            "as JSON strings. Text an assistant wrote alongside tool calls is only in the "
            "OpenAI layout.\n"
        )
    if "parquet" in settings.export.formats:
        parts.append(
            "Parquet (`parquet/`): the OpenAI layout with `tools` and `metadata` as JSON strings.\n"
        )
    return parts
