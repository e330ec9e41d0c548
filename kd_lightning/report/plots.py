"""Figures of a results table (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kd_lightning.report.curves import read_scalars  # noqa: E402
from kd_lightning.report.table import natural_key  # noqa: E402


def _label(row: dict) -> str:
    return f"{row['run']} {row['distinct_overrides']}".strip()


def accuracy_bars(rows: list[dict], metric: str, path: Path) -> Path:
    """Mean ``metric`` per configuration with ±std error bars over seeds, Δ to the matched CE run on each bar."""
    rows = [r for r in rows if r[f"{metric} mean"] is not None]
    labels = [_label(r) for r in rows]
    means = [100 * r[f"{metric} mean"] for r in rows]
    stds = [100 * r[f"{metric} std"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(rows) + 2), 4.5))
    colors = ["tab:gray" if r["is_baseline"] else "tab:blue" for r in rows]
    bars = ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color=colors, alpha=0.85)
    for bar, row, std in zip(bars, rows, stds):
        text = "CE only" if row["is_baseline"] else f"{row['delta_pp']:+.2f}" if row["delta_pp"] is not None else ""
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height() + std), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(range(len(rows)), labels, rotation=40, ha="right", fontsize=8)
    low = min(m - s for m, s in zip(means, stds)) if means else 0
    ax.set_ylim(max(0.0, low - 5), min(100.0, max(means, default=100) + 5))
    ax.set_ylabel(f"{metric} % (mean ± std over seeds)")
    ax.set_title(f"{metric}; numbers: Δ (pp) vs the CE-only run (grey) with the same settings", fontsize=9)
    return _save(fig, path)


def swept_values(rows: list[dict]) -> dict[str, list[float]]:
    """Numeric settings (temperature, weight, lr, ...) that take several values among rows of one run name."""
    by_key: dict[str, set] = {}
    for run in dict.fromkeys(r["run"] for r in rows):
        groups = [r["_group"] for r in rows if r["run"] == run]
        for key in dict.fromkeys(k for g in groups for k in g.swept):
            values = {g.swept.get(key) for g in groups}
            if any(isinstance(v, bool) for v in values):
                continue
            try:
                numbers = {float(v) for v in values}
            except (TypeError, ValueError):
                continue
            if len(numbers) > 1:
                by_key.setdefault(key, set()).update(numbers)
    return {k: sorted(v) for k, v in by_key.items()}


def accuracy_vs(rows: list[dict], key: str, metric: str, path: Path) -> Path:
    """``metric`` against the swept value ``key``: one line per run name and the rest of its settings."""
    records = []
    for row in rows:
        value = row["_group"].swept.get(key)
        if value is None or row[f"{metric} mean"] is None:
            continue
        others = {k: v for k, v in row["_group"].swept.items() if k != key}
        records.append({"line": f"{row['run']} {_short(others, rows, key)}".strip(), "x": float(value),
                        "mean": 100 * row[f"{metric} mean"], "std": 100 * row[f"{metric} std"]})
    frame = pd.DataFrame(records).sort_values(["line", "x"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for line, part in frame.groupby("line", sort=False):
        ax.errorbar(part["x"], part["mean"], yerr=part["std"], marker="o", capsize=3, label=line)
    for name in dict.fromkeys(r["baseline"] for r in rows if r["baseline"] and r["_group"].swept.get(key) is not None):
        base = next(r for r in rows if r["run"] == name and r["is_baseline"])
        ax.axhline(100 * base[f"{metric} mean"], color="grey", linestyle="--", label=f"{name} (CE only)")
    if frame["x"].gt(0).all() and frame["x"].max() / frame["x"].min() >= 100:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(f"{metric} % (mean ± std over seeds)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _short(others: dict, rows: list[dict], key: str) -> str:
    """The other swept values of a line, so lines of one run name stay apart."""
    swept = swept_values(rows)
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in others.items() if k in swept and k != key)


def validation_curves(rows: list[dict], path: Path, tag: str = "val/acc") -> Path | None:
    """Every run's ``tag`` against the training step, overlaid; ``None`` when no run logged it."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    drawn = 0
    for row in sorted(rows, key=lambda r: natural_key(_label(r))):
        for run in row["_group"].runs:
            if "_dir" not in run:
                continue
            series = read_scalars(run["_dir"], tag)
            if not series.empty:
                ax.plot(series["step"], 100 * series["value"], marker=".", alpha=0.8,
                        label=f"{_label(row)} s{run['seed']}")
                drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(f"{tag} %")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=2 if drawn > 16 else 1)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # room for long tick labels and an outside legend
    plt.close(fig)
    return path
