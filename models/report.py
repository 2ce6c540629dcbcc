"""The evaluation report: metrics.json (DVC metrics), a Markdown table and PNG plots."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from models import plots
from models.evaluate import ModelRun

TABLE_METRICS = ["precision", "recall", "ndcg", "hit", "mrr", "coverage", "ild", "novelty"]


def to_metrics(results: dict[str, list[ModelRun]]) -> dict:
    """{protocol: {model: {metric: value, ..., params, fit_s, predict_s, users}}}."""
    out: dict = {}
    for protocol, runs in results.items():
        out[protocol] = {
            run.name: {
                **{k: _round(v) for k, v in run.test.items()},
                "valid_target": _round(run.valid),
                "params": run.params,
                "fit_s": run.fit_s,
                "predict_s": run.predict_s,
                "users": run.users,
                "segments": {s: {k: _round(v) for k, v in m.items()} for s, m in run.segments.items()},
            }
            for run in runs
        }
    return out


def _round(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 4)


def markdown(metrics: dict, dataset: str, k: int) -> str:
    lines = [f"# Evaluation: {dataset}", ""]
    for protocol, models in metrics.items():
        users = next(iter(models.values()))["users"] if models else 0
        lines += [f"## {protocol} (test, @{k}, {users:,} users)", ""]
        head = ["model", "chosen", *[f"{m}@{k}" for m in TABLE_METRICS], "fit s", "predict s"]
        lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for name, row in models.items():
            chosen = ", ".join(f"{a}={b}" for a, b in row["params"].items()) or "-"
            cells = [_fmt(row.get(f"{m}_at_{k}")) for m in TABLE_METRICS]
            lines.append(f"| {name} | {chosen} | " + " | ".join(cells) + f" | {row['fit_s']:.2f} | {row['predict_s']:.2f} |")
        lines += ["", f"NDCG@{k} by segment:", ""]
        recall_only = ["long_tail_items", "cold_items"]  # recall on those target items alone
        segments = sorted({s for row in models.values() for s in row["segments"]} - set(recall_only))
        lines += [
            "| model | " + " | ".join(segments) + " | long-tail recall | cold-item recall |",
            "|" + " --- |" * (len(segments) + 3),
        ]
        for name, row in models.items():
            seg = row["segments"]
            cells = [f"{_fmt(seg[s].get('ndcg'))} ({int(seg[s]['users'])})" for s in segments]
            cells += [_fmt(seg.get(s, {}).get("recall")) for s in recall_only]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["![metrics](plots/metrics_by_model.png)", "![segments](plots/segments.png)",
              "![decay](plots/decay_curves.png)", "![scores](plots/score_distributions.png)", ""]
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def plot_all(results: dict[str, list[ModelRun]], metrics: dict, out: Path, k: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [plots.comparison(metrics, k, out / "metrics_by_model.png"), plots.segments(metrics, k, out / "segments.png")]

    # The decay curves the tuned models use.
    fig, ax = plt.subplots(figsize=(6, 4))
    days = np.linspace(0, 730, 500)
    seen = set()
    for protocol, runs in results.items():
        for run in runs:
            half_life = run.params.get("half_life_days")
            if half_life and (run.name, half_life) not in seen:
                seen.add((run.name, half_life))
                ax.plot(days, 0.5 ** (days / half_life), label=f"{run.name} ({protocol}): half-life {half_life} d")
    ax.plot(days, np.maximum(0, 1 - days / 365), "k--", label="linear, 1 - t/365 (reference)")
    ax.set_xlabel("age of the event (days)")
    ax.set_ylabel("weight")
    ax.set_title("Decay curves in use")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "decay_curves.png"))

    # Distribution of each user's best score, scaled per model (models' scales differ).
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (protocol, runs) in zip(axes[0], results.items()):
        for run in runs:
            scores = run.top_scores[np.isfinite(run.top_scores)] if run.top_scores is not None else np.empty(0)
            if len(scores) and scores.max() > scores.min():
                scaled = (scores - scores.min()) / (scores.max() - scores.min())
                ax.hist(scaled, bins=30, histtype="step", label=run.name)
        ax.set_xlabel("top-1 score, min-max scaled per model")
        ax.set_ylabel("users")
        ax.set_title(f"{protocol}: score distributions")
        ax.legend(fontsize=8)
    paths.append(_save(fig, out / "score_distributions.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_report(results: dict[str, list[ModelRun]], dataset: str, out: Path, k: int) -> dict:
    """Write metrics.json, report.md and plots/*.png under ``out``; return the metrics."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = to_metrics(results)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    plot_all(results, metrics, out / "plots", k)
    (out / "report.md").write_text(markdown(metrics, dataset, k))
    return metrics
