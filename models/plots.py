"""The comparison plots: every model (baselines, the scorer, the sequence model) side by side.

Each metric gets its own panel and scale: NDCG@10 of 0.04 beside an intra-list diversity of
0.7 on one axis hid every difference that matters. Segment panels name each group's size,
since a segment of 12 users says little. Input is plain tables (``{protocol: {model: row}}``
with rows as in metrics.json), so the evaluation report and the training summary share them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# What a person compares models on: accuracy first, then what it costs in variety.
PANELS = (("ndcg", "NDCG"), ("recall", "recall"), ("coverage", "catalogue coverage"), ("ild", "intra-list diversity"))
SEGMENTS = ("all", "cold_users", "active_users")
TRAINED = ("scorer", "sequence")  # drawn in their own colours; baselines in grey


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def comparison(table: dict[str, dict[str, dict]], k: int, path: Path) -> Path:
    """One row per protocol, one panel per metric of ``PANELS``: horizontal bars, best on top."""
    plt = _pyplot()
    rows, cols = len(table), len(PANELS)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 0.32 * max(len(m) for m in table.values()) * rows + 1.4 * rows),
                             squeeze=False)
    for r, (protocol, models) in enumerate(table.items()):
        for c, (metric, title) in enumerate(PANELS):
            ax = axes[r][c]
            values = {name: row.get(f"{metric}_at_{k}") for name, row in models.items()}
            order = sorted((v, n) for n, v in values.items() if v is not None)
            names = [n for _, n in order]
            ax.barh(names, [v for v, _ in order], color=[_colour(n) for n in names])
            for y, (v, _) in enumerate(order):
                ax.text(v, y, f" {v:.3f}", va="center", fontsize=7)
            ax.set_title(f"{protocol}: {title}@{k}", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.margins(x=0.25)
    return _save(fig, path)


def segments(table: dict[str, dict[str, dict]], k: int, path: Path) -> Path:
    """NDCG@k per user segment and model, one panel per protocol; each segment says its n."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(table), figsize=(7 * len(table), 4.6), squeeze=False)
    for ax, (protocol, models) in zip(axes[0], table.items()):
        names = [n for n in models if models[n].get("segments")]
        width = 0.8 / max(len(names), 1)
        shown = [s for s in SEGMENTS if any(s in models[n]["segments"] for n in names)]
        for j, name in enumerate(names):
            seg = models[name]["segments"]
            ax.bar(np.arange(len(shown)) + j * width, [seg.get(s, {}).get("ndcg") or 0.0 for s in shown], width,
                   label=name, color=_colour(name, j))
        sizes = [max((models[n]["segments"].get(s, {}).get("users", 0) for n in names), default=0) for s in shown]
        ax.set_xticks(np.arange(len(shown)) + 0.4 - width / 2, [f"{s}\n(n={int(n):,})" for s, n in zip(shown, sizes)])
        ax.set_ylabel(f"NDCG@{k}")
        ax.set_title(f"{protocol}: NDCG@{k} by user segment")
        ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)  # off the bars
    return _save(fig, path)


def _colour(name: str, index: int | None = None) -> str:
    if name in TRAINED:
        return {"scorer": "tab:red", "sequence": "tab:blue"}[name]
    if index is None:
        return "0.6"
    return str(0.35 + 0.5 * (index % 6) / 6)  # baselines: shades of grey


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path
