"""Markdown tables from runs' ``summary.json`` files: one row per configuration, mean ± std over seeds."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path


def read_summaries(paths: Iterable[Path]) -> list[dict]:
    """Every ``summary.json`` in or under ``paths`` (files or folders)."""
    found = []
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(path.rglob("summary.json"))
        found += [json.loads(f.read_text()) for f in files]
    return found


def _config_key(summary: dict) -> tuple[str, str]:
    return summary["run_name"], summary.get("overrides", "")


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * std:.2f}"


def _mean(runs: list[dict], metric: str) -> float | None:
    values = [r[metric] for r in runs if r.get(metric) is not None]
    return statistics.mean(values) if values else None


def markdown_table(summaries: list[dict], metric: str = "test/acc", baseline: str | None = None) -> str:
    """Rows grouped by (run name, overrides in the run folder's name: not the seed), in first-seen order.

    With ``baseline`` (a run name, e.g. ``cifar10_ce``), a column gives each row's mean minus the baseline's.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for summary in summaries:
        groups.setdefault(_config_key(summary), []).append(summary)
    reference = next((_mean(runs, metric) for (name, _), runs in groups.items() if name == baseline), None)
    delta_header = f" Δ vs {baseline} (pp) |" if baseline else ""
    lines = [
        f"| run | overrides | {metric} % (mean ± std) |{delta_header} per seed | params | train time (s, mean) |",
        "|---|---|---|" + ("---|" if baseline else "") + "---|---|---|",
    ]
    for (run_name, overrides), runs in groups.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        done = [r for r in runs if r.get(metric) is not None]
        per_seed = ", ".join(
            f"s{r['seed']}: {100 * r[metric]:.2f}" if r.get(metric) is not None else f"s{r['seed']}: {r['status'].upper()}"
            for r in runs
        )
        params = f"{done[0]['params']:,}" if done else "–"
        times = [r["train_time_s"] for r in done]
        mean_time = f"{statistics.mean(times):.1f}" if times else "–"
        delta = ""
        if baseline:
            mean = _mean(runs, metric)
            delta = f" {100 * (mean - reference):+.2f} |" if mean is not None and reference is not None else " – |"
        lines.append(
            f"| {run_name} | {overrides or '–'} | {_mean_std([r[metric] for r in done])} |{delta} {per_seed} | {params} "
            f"| {mean_time} |"
        )
    failed = [s for s in summaries if s.get("status") == "failed"]
    for summary in failed:
        lines.append(f"\nFAILED {summary['run_name']} seed {summary['seed']}: {summary.get('error', '')}")
    return "\n".join(lines) + "\n"
