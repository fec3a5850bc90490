"""SFT export: dataset formats, redaction, statistics, plots and the dataset card."""

from __future__ import annotations

from ise_core.export.card import PUBLISHED, render_card
from ise_core.export.formats import to_openai_record, to_sharegpt_record
from ise_core.export.redact import Redactor, build_redactor
from ise_core.export.stage import build_records, export_stage, split_by_intent
from ise_core.export.statistics import conversation_measures, sft_statistics

__all__ = [
    "PUBLISHED",
    "Redactor",
    "build_records",
    "build_redactor",
    "conversation_measures",
    "export_stage",
    "render_card",
    "sft_statistics",
    "split_by_intent",
    "to_openai_record",
    "to_sharegpt_record",
]
