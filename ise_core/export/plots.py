"""PNG plots for the dataset card: turn histograms, tool co-occurrence, the Vendi curve.

Rendered with matplotlib's Agg backend (no display needed) to bytes, so callers write them
atomically. PNG metadata carries no timestamp, so equal statistics give equal files.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

_PNG_METADATA = {"Software": None}


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return fig, ax


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", metadata=_PNG_METADATA)
    plt.close(fig)
    return buffer.getvalue()


def histogram_png(
    dist: dict[str, Any],
    title: str,
    xlabel: str,
    published_mean: float | None = None,
) -> bytes:
    """Bar histogram of an integer distribution, with this export's and the published mean."""
    fig, ax = _figure(7, 4)
    histogram = {int(k): v for k, v in dist.get("histogram", {}).items()}
    if histogram:
        values = list(range(min(histogram), max(histogram) + 1))
        ax.bar(values, [histogram.get(v, 0) for v in values], color="#4C72B0", width=0.85)
        ax.axvline(dist["mean"], color="#DD8452", linestyle="-", label=f"mean {dist['mean']:.2f}")
    else:
        ax.text(0.5, 0.5, "no conversations", ha="center", va="center", transform=ax.transAxes)
    if published_mean is not None:
        ax.axvline(
            published_mean, color="#55A868", linestyle="--", label=f"published {published_mean}"
        )
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("conversations")
    if histogram or published_mean is not None:
        ax.legend(loc="upper right")
    return _png(fig)


def cooccurrence_png(cooc: dict[str, Any]) -> bytes:
    """Heatmap of how many conversations used each pair of tools."""
    tools: Sequence[str] = cooc.get("tools", [])
    counts: Sequence[Sequence[int]] = cooc.get("counts", [])
    size = max(4.0, 0.55 * len(tools) + 2.5)
    fig, ax = _figure(size, size * 0.85)
    if tools:
        image = ax.imshow(counts, cmap="viridis", vmin=0)
        ax.set_xticks(range(len(tools)), labels=list(tools), rotation=45, ha="right")
        ax.set_yticks(range(len(tools)), labels=list(tools))
        peak = max((max(row) for row in counts), default=0)
        for i, row in enumerate(counts):
            for j, value in enumerate(row):
                color = "black" if value > 0.6 * peak else "white"
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7, color=color)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="conversations")
    else:
        ax.text(0.5, 0.5, "no tool calls", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Tool co-occurrence (conversations using both)")
    return _png(fig)


def vendi_curve_png(curve: Sequence[dict[str, Any]], published: tuple[int, float]) -> bytes:
    """Vendi score against the number of intents, with the published point for scale."""
    fig, ax = _figure(7, 4)
    points = sorted((int(p["n"]), float(p["vendi_score"])) for p in curve)
    if points:
        ax.plot([n for n, _ in points], [v for _, v in points], marker="o", label="this run")
    ax.scatter(
        [published[0]],
        [published[1]],
        color="#C44E52",
        marker="*",
        s=120,
        label=f"published ({published[0]:,} intents, {published[1]})",
    )
    ax.set_xscale("log")
    ax.set_xlabel("intents (log scale)")
    ax.set_ylabel("Vendi score (q = 1)")
    ax.set_title("Intent diversity vs. sample size")
    ax.legend(loc="lower right")
    return _png(fig)


def growth_png(rows: Sequence[dict[str, Any]]) -> bytes:
    """Kept conversations per refresh period (bars) and their running total (line)."""
    fig, ax = _figure(max(6.0, 0.5 * len(rows) + 3), 4)
    labels = [str(row["period"]) for row in rows]
    positions = list(range(len(rows)))
    ax.bar(positions, [row["kept"] for row in rows], color="#4C72B0", label="kept in the period")
    total = ax.twinx()
    total.plot(
        positions,
        [row["cumulative_kept"] for row in rows],
        color="#DD8452",
        marker="o",
        label="cumulative",
    )
    from matplotlib.ticker import MaxNLocator

    for axis in (ax, total):
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylim(bottom=0)
    ax.set_xticks(positions, labels=labels, rotation=45 if len(rows) > 6 else 0, ha="right")
    ax.set_xlabel("refresh period (base: intents.count)")
    ax.set_ylabel("kept conversations in the period")
    total.set_ylabel("kept conversations, cumulative")
    ax.set_title("Dataset growth per refresh period")
    handles = ax.get_legend_handles_labels()
    more = total.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left")
    return _png(fig)
