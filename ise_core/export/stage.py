"""The export stage: kept trajectories → SFT splits, statistics, plots and the dataset card.

Reads ``<simulate.out_dir>/trajectories.jsonl`` (and, when present, the intents and
trajectories ``stats.json`` and ``vendi_curve.png`` for the card); writes into
``export.out_dir``::

    train.jsonl valid.jsonl             OpenAI layout (always)
    sharegpt/{train,valid}.jsonl        when "sharegpt" is in export.formats
    parquet/{train,valid}.parquet       when "parquet" is in export.formats
    stats.json README.md plots/*.png plots/*.csv

Every file is written atomically; equal input and params give byte-identical JSONL.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ise_core.atomic import atomic_write_bytes, atomic_write_text, remove_stale_temp_files
from ise_core.catalog import FORMAT_FILES, Catalog
from ise_core.config import Settings
from ise_core.export.card import PUBLISHED, render_card
from ise_core.export.formats import (
    jsonl_text,
    parquet_bytes,
    to_openai_records,
    to_sharegpt_record,
)
from ise_core.export.plots import cooccurrence_png, growth_png, histogram_png, vendi_curve_png
from ise_core.export.redact import Redactor, build_redactor
from ise_core.export.statistics import (
    DISTRIBUTIONS,
    cooccurrence_rows,
    histogram_rows,
    sft_statistics,
)
from ise_core.records import Trajectory, read_json, read_jsonl, write_json
from ise_core.refresh.history import growth_rows
from ise_core.refresh.periods import BASE
from ise_core.simulate.metrics import episode_count
from ise_core.stages import StageOptions, StageResult, stage


def _unit_hash(seed: int, intent_id: str) -> float:
    digest = hashlib.sha256(f"{seed}:{intent_id}".encode()).hexdigest()
    return int(digest[:16], 16) / 16**16


def split_by_intent(
    intent_ids: Sequence[str], valid_fraction: float, seed: int, *, at_least_one: bool = True
) -> tuple[set[str], set[str]]:
    """Seeded split of intent ids into (train, valid); an intent lands in exactly one.

    An intent is in validation when its seeded hash falls below ``valid_fraction``, so its
    split depends only on its id and the seed: a refresh that adds intents never moves an
    earlier validation intent into train. With a non-zero fraction, at least two intents and
    ``at_least_one``, each split gets at least one (the one pulled in may move back once
    intents are added, so a dataset grown by refresh periods does without).
    """
    unique = sorted(set(intent_ids))
    scores = {i: _unit_hash(seed, i) for i in unique}
    valid = {i for i in unique if scores[i] < valid_fraction}
    if at_least_one and valid_fraction > 0 and len(unique) >= 2:
        if not valid:
            valid = {min(unique, key=lambda i: (scores[i], i))}
        elif len(valid) == len(unique):
            valid.discard(max(unique, key=lambda i: (scores[i], i)))
    return set(unique) - valid, valid


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def cell(value: Any) -> str:
        text = str(value)
        return f'"{text}"' if "," in text or '"' in text else text

    lines = [",".join(columns)] + [",".join(cell(r[c]) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


def _optional_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    value = read_json(path)
    return value if isinstance(value, dict) else None


def _workspace_backend(
    settings: Settings, trajectories: Sequence[Trajectory], traj_stats: dict[str, Any] | None
) -> str:
    """The backend that actually ran the tools, as recorded; else what params asked for."""
    recorded = Counter(
        str(t.metadata.get("backend") or t.metadata.get("workspace_backend"))
        for t in trajectories
        if t.metadata.get("backend") or t.metadata.get("workspace_backend")
    )
    if recorded:
        return ", ".join(f"{name} ({n} conversations)" for name, n in sorted(recorded.items()))
    if traj_stats and traj_stats.get("workspace_backend"):
        return str(traj_stats["workspace_backend"])
    backend = settings.workspace.backend
    if backend == "auto":
        return "auto (docker when an engine answers, else the local bubblewrap sandbox)"
    return backend


def _write_plots(
    files: Catalog, stats: dict[str, Any], intents_stats: dict[str, Any] | None
) -> dict[str, str]:
    """PNG plots for the card and CSV series for ``dvc plots``; returns caption → path."""
    plots_dir = files.plots_dir
    plots: dict[str, str] = {}
    for name, title, published in (
        ("user_turns", "User turns per conversation", PUBLISHED["user_turns_mean"]),
        ("dialogue_turns", "Dialogue turns per conversation", PUBLISHED["dialogue_turns_mean"]),
    ):
        atomic_write_bytes(
            plots_dir / f"{name}.png",
            histogram_png(stats[name], title, name.replace("_", " "), published),
        )
        plots[title] = f"plots/{name}.png"
    for name in DISTRIBUTIONS:
        atomic_write_text(
            plots_dir / f"{name}.csv", _csv(histogram_rows(stats[name], name), [name, "count"])
        )
    atomic_write_bytes(
        plots_dir / "tool_cooccurrence.png", cooccurrence_png(stats["tool_cooccurrence"])
    )
    atomic_write_text(
        plots_dir / "tool_cooccurrence.csv",
        _csv(cooccurrence_rows(stats["tool_cooccurrence"]), ["tool_a", "tool_b", "count"]),
    )
    plots["Tool co-occurrence"] = "plots/tool_cooccurrence.png"
    source_png = files.vendi_curve
    curve = (intents_stats or {}).get("vendi_curve") or []
    if source_png.is_file():
        atomic_write_bytes(plots_dir / "vendi_curve.png", source_png.read_bytes())
    elif curve:
        reference = (int(PUBLISHED["vendi_intents"]), PUBLISHED["vendi_score"])
        atomic_write_bytes(plots_dir / "vendi_curve.png", vendi_curve_png(curve, reference))
    if (plots_dir / "vendi_curve.png").is_file() and (source_png.is_file() or curve):
        plots["Vendi score vs. number of intents"] = "plots/vendi_curve.png"
    if curve:
        atomic_write_text(
            plots_dir / "vendi_curve.csv",
            _csv(
                [{"n": p["n"], "vendi_score": p["vendi_score"]} for p in curve],
                ["n", "vendi_score"],
            ),
        )
    return plots


def _write_growth(files: Catalog, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The growth plot of a dataset grown by refresh periods (none, and no stale file
    left, for a dataset of no period)."""
    png, csv = files.plots_dir / "growth.png", files.plots_dir / "growth.csv"
    if not rows:
        png.unlink(missing_ok=True)
        csv.unlink(missing_ok=True)
        return {}
    atomic_write_bytes(png, growth_png(rows))
    atomic_write_text(csv, _csv(rows, ["period", "kept", "cumulative_kept"]))
    return {"Kept conversations per refresh period": "plots/growth.png"}


def _write_formats(
    files: Catalog,
    formats: Sequence[str],
    train: list[dict[str, Any]],
    valid: list[dict[str, Any]],
) -> list[str]:
    written: list[str] = []
    for fmt in FORMAT_FILES:
        paths = files.format_files(fmt)
        if fmt not in formats:
            # A format dropped from params must not leave last run's files looking current.
            for stale in paths:
                stale.unlink(missing_ok=True)
            continue
        for path, records in zip(paths, (train, valid), strict=True):
            if fmt == "openai":
                atomic_write_text(path, jsonl_text(records))
            elif fmt == "sharegpt":
                atomic_write_text(path, jsonl_text([to_sharegpt_record(r) for r in records]))
            else:
                atomic_write_bytes(path, parquet_bytes(records))
            written.append(str(path.relative_to(files.sft_dir)))
    return written


def exported_trajectories(
    trajectories: Sequence[Trajectory], text_tool_calls: str = "keep"
) -> list[Trajectory]:
    """The kept trajectories the export holds, ordered by intent and session; with
    ``text_tool_calls`` "drop", none whose agent wrote a tool call as text."""
    kept = sorted((t for t in trajectories if t.kept), key=lambda t: (t.intent_id, t.session_id))
    if text_tool_calls == "drop":
        kept = [t for t in kept if not episode_count(t, "text_tool_calls")]
    return kept


def build_records(
    trajectories: Sequence[Trajectory],
    redactor: Redactor,
    *,
    reasoning: bool = True,
    context: str = "seen",
) -> list[dict[str, Any]]:
    """Trajectories as redacted OpenAI-layout records (one per trajectory, or per part of a
    compacted one with ``context`` "seen"), in the given order."""
    return [
        redactor.value(record)
        for t in trajectories
        for record in to_openai_records(t, reasoning=reasoning, context=context)
    ]


def run_export(settings: Settings, options: StageOptions) -> StageResult:
    """The stage table's entry point for stage 4."""
    return StageResult.of("export", export_stage(settings), ("n_train", "n_valid", "formats"))


def export_stage(settings: Settings) -> dict[str, Any]:
    """Run the export; returns counts and paths (small enough for an XCom)."""
    files = Catalog.of(settings)
    for folder in files.sft_folders():
        remove_stale_temp_files(folder)  # left by an export that was killed mid-write
    trajectories = read_jsonl(files.trajectories, Trajectory)

    redactor = build_redactor(
        project_dir=settings.base_dir.resolve(),
        sandbox_root=files.sandbox_root.resolve(),
    )
    exported = exported_trajectories(trajectories, settings.export.text_tool_calls)
    records = build_records(
        exported,
        redactor,
        reasoning=settings.export.reasoning == "keep",
        context=settings.export.context,
    )
    intents_stats = _optional_json(files.intents_stats)
    traj_stats = _optional_json(files.trajectories_stats)
    # Refresh periods (ise_core/refresh): kept conversations per period, for the card.
    growth = growth_rows(
        (intents_stats or {}).get("periods") or {}, (traj_stats or {}).get("periods") or {}
    )
    train_ids, _ = split_by_intent(
        [r["metadata"]["intent_id"] for r in records],
        settings.export.valid_fraction,
        settings.seed,
        # A dataset that grows by periods never moves an intent between the splits, so no
        # intent is pulled into a split to keep it non-empty.
        at_least_one=not growth,
    )
    train = [r for r in records if r["metadata"]["intent_id"] in train_ids]
    valid = [r for r in records if r["metadata"]["intent_id"] not in train_ids]

    formats = list(settings.export.formats)
    written = _write_formats(files, formats, train, valid)
    stats = sft_statistics(train, valid, formats, stage("export").fingerprint(settings))
    kept = sum(1 for t in trajectories if t.kept)
    stats["n_skipped_not_kept"] = len(trajectories) - kept
    stats["n_dropped_text_tool_calls"] = kept - len(exported)
    stats["redactions"] = redactor.summary()  # the records only, before the card is redacted
    plots = {**_write_plots(files, stats, intents_stats), **_write_growth(files, growth)}
    stats["plots"] = sorted(plots.values())
    if growth:
        stats["periods"] = [row["period"] for row in growth if row["period"] != BASE]
        stats["n_periods"] = len(stats["periods"])
    write_json(files.sft_stats, stats)
    card = render_card(
        settings,
        stats,
        intents_stats,
        traj_stats,
        _workspace_backend(settings, trajectories, traj_stats),
        plots,
    )
    atomic_write_text(files.card, redactor.text(card))
    return {
        "out_dir": str(files.sft_dir),
        "n_train": len(train),
        "n_valid": len(valid),
        "formats": formats,
        "files": [*written, "stats.json", "README.md", *sorted(plots.values())],
    }
