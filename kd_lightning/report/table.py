"""Result tables from runs' ``summary.json`` files: one row per configuration, mean ± std over seeds.

Grouping: by run name and the summary's ``config`` dict (:func:`kd_lightning.report.facts.run_config`) when
present, else by run name and the overrides in the run folder's name. Each row's Δ is against the CE-only run
with the *same settings* (dataset, model, optimizer, lr, schedule, epochs, batch size, ...) over the row's own
seeds; a row without such a run gets no Δ and a note says why. Rows sort by run name (first seen) and then by
their overrides with numbers compared as numbers (T=2 before T=10).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kd_lightning.report.facts import flatten, is_ce_only, is_method_key

_METHOD_OVERRIDE = re.compile(r"^\+*(distill|teacher)\b")
_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)")


def read_summaries(paths: Iterable[Path]) -> list[dict]:
    """Every ``summary.json`` in or under ``paths`` (files or folders); ``_dir`` holds the run folder."""
    found = []
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(path.rglob("summary.json"))
        found += [{**json.loads(f.read_text()), "_dir": str(f.parent)} for f in files]
    return found


def natural_key(text: str) -> tuple:
    """Sort key comparing embedded numbers as numbers: ``T=2`` < ``T=10``, ``lr=1e-4`` < ``lr=0.001``."""
    parts = _NUMBER.split(text)
    return tuple((0, float(p)) if i % 2 else (1, p) for i, p in enumerate(parts) if p)


def split_overrides(overrides: str) -> dict[str, str]:
    """Hydra's ``override_dirname`` (``a=1,b=x``) as a dict; a comma inside a value stays with it."""
    items: dict[str, str] = {}
    key = None
    for part in overrides.split(",") if overrides else []:
        if "=" in part:
            key, value = part.split("=", 1)
            items[key] = value
        elif key is not None:
            items[key] += "," + part
    return items


@dataclass
class Group:
    """The runs of one configuration (all seeds)."""

    run: str
    overrides: str
    config: dict | None
    runs: list[dict] = field(default_factory=list)

    @property
    def settings(self) -> dict:
        """What must match for a fair comparison: every non-method setting."""
        if self.config is not None:
            return {k: v for k, v in flatten(self.config).items() if not is_method_key(k)}
        other = {k: v for k, v in split_overrides(self.overrides).items() if not _METHOD_OVERRIDE.match(k)}
        epochs = sorted({r["epochs"] for r in self.runs if r.get("epochs") is not None})
        return {**other, **({"epochs": epochs[0] if len(epochs) == 1 else tuple(epochs)} if epochs else {})}

    @property
    def swept(self) -> dict:
        """Every value that could be swept: the flat config, else the overrides."""
        return flatten(self.config) if self.config is not None else split_overrides(self.overrides)

    def values(self, metric: str) -> dict[int, float]:
        return {r["seed"]: r[metric] for r in self.runs if r.get(metric) is not None}

    def mean_std(self, metric: str) -> tuple[float | None, float | None]:
        values = list(self.values(metric).values())
        if not values:
            return None, None
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class Comparison:
    """A row's matched baseline and Δ (percentage points), or why there is none."""

    baseline: Group | None = None
    delta: float | None = None
    reason: str = ""


def group_runs(summaries: list[dict]) -> list[Group]:
    groups: dict[tuple, Group] = {}
    for summary in summaries:
        config = summary.get("config")
        key = (summary["run_name"], json.dumps(config, sort_keys=True) if config else summary.get("overrides", ""))
        if key not in groups:
            groups[key] = Group(summary["run_name"], summary.get("overrides", ""), config)
        groups[key].runs.append(summary)
    first_seen = {g.run: i for i, g in reversed(list(enumerate(groups.values())))}
    for group in groups.values():
        group.runs.sort(key=lambda r: r["seed"])
    return sorted(groups.values(), key=lambda g: (first_seen[g.run], natural_key(g.overrides)))


def common_overrides(groups: list[Group]) -> dict[str, str]:
    """The overrides every row shares (shown once above the table, not in every row)."""
    if len(groups) < 2:
        return {}
    items = [split_overrides(g.overrides) for g in groups]
    return {k: v for k, v in items[0].items() if all(other.get(k) == v for other in items[1:])}


def short_overrides(group: Group, common: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in split_overrides(group.overrides).items() if common.get(k) != v)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _describe(settings: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in settings.items())


def _labels(groups: list[Group], common: dict[str, str]) -> list[str]:
    """Each row's distinct overrides; rows that would look alike (same run name and overrides, e.g. Optuna
    trials) also show the config values that tell them apart."""
    base = [short_overrides(g, common) for g in groups]
    labels = list(base)
    for i, group in enumerate(groups):
        twins = [g for j, g in enumerate(groups) if (g.run, base[j]) == (group.run, base[i]) and g.config]
        if len(twins) > 1 and group.config:
            flats = [flatten(g.config) for g in twins]
            keys = [k for k in dict.fromkeys(k for f in flats for k in f) if len({repr(f.get(k)) for f in flats}) > 1]
            extra = _describe({k.removeprefix("terms."): flatten(group.config).get(k) for k in keys})
            labels[i] = ",".join(part for part in (labels[i], extra) if part)
    return labels


def compare(groups: list[Group], metric: str, baseline: str | None = None) -> dict[int, Comparison]:
    """Each group's Δ against the CE-only group with the same settings (``baseline``: only runs of that name).

    Without ``config`` in the summaries, CE-only runs are not recognisable: then only ``baseline`` names them.
    """

    def is_baseline(group: Group) -> bool:
        if baseline is not None and group.run != baseline:
            return False
        return is_ce_only(group.config) if group.config is not None else baseline is not None

    bases = [g for g in groups if is_baseline(g)]
    result = {}
    for i, group in enumerate(groups):
        values = group.values(metric)
        matching = [b for b in bases if b.settings == group.settings]
        if not bases:
            result[i] = Comparison()
        elif not matching:
            differing = {k: v for k, v in group.settings.items() if any(b.settings.get(k) != v for b in bases)}
            result[i] = Comparison(reason=f"no CE-only run with {_describe(differing) or 'these settings'}")
        elif not values:
            result[i] = Comparison(matching[0])
        else:
            base = next((b for b in matching if set(values) <= set(b.values(metric))), None)
            if base is None:
                have = sorted(set().union(*(b.values(metric) for b in matching)))
                result[i] = Comparison(matching[0], reason=f"seeds {sorted(values)} but CE-only has {have}")
            else:
                reference = statistics.mean(base.values(metric)[s] for s in values)
                result[i] = Comparison(base, 100 * (statistics.mean(values.values()) - reference))
    return result


def _varying(groups: list[Group]) -> dict[str, list]:
    """Settings that differ between rows, with their values in row order."""
    keys = dict.fromkeys(k for g in groups for k in g.settings)
    varying = {}
    for key in keys:
        values = list(dict.fromkeys(json.dumps(g.settings.get(key)) for g in groups))
        if len(values) > 1:
            varying[key] = [json.loads(v) for v in values]
    return varying


def table_rows(summaries: list[dict], metric: str = "test/acc", baseline: str | None = None) -> list[dict]:
    """The table as records (one per configuration): what the markdown and CSV files show."""
    groups = group_runs(summaries)
    comparisons = compare(groups, metric, baseline)
    common = common_overrides(groups)
    labels = _labels(groups, common)
    rows = []
    for i, group in enumerate(groups):
        mean, std = group.mean_std(metric)
        done = [r for r in group.runs if r.get(metric) is not None]
        times = [r["train_time_s"] for r in done if r.get("train_time_s") is not None]
        comparison = comparisons[i]
        rows.append({
            "run": group.run,
            "overrides": group.overrides,
            "distinct_overrides": labels[i],
            "seeds": len(done),
            f"{metric} mean": mean,
            f"{metric} std": std,
            "delta_pp": comparison.delta,
            "is_baseline": comparison.baseline is group,
            "baseline": comparison.baseline.run if comparison.baseline else None,
            "no_delta_because": comparison.reason or None,
            "per_seed": {r["seed"]: r.get(metric) if r.get(metric) is not None else r.get("status", "?").upper()
                         for r in group.runs},
            "params": done[0].get("params") if done else None,
            "train_time_s": statistics.mean(times) if times else None,
            **{f"setting.{k}": v for k, v in group.settings.items()},
            **{f"method.{k}": v for k, v in flatten(group.config or {}).items() if is_method_key(k)},
            "_group": group,
        })
    return rows


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def markdown_table(summaries: list[dict], metric: str = "test/acc", baseline: str | None = None) -> str:
    """Rows per configuration; a header line says which settings the rows share or differ in."""
    rows = table_rows(summaries, metric, baseline)
    groups = [row["_group"] for row in rows]
    with_delta = any(row["baseline"] or row["no_delta_because"] for row in rows)
    bases = list(dict.fromkeys(row["baseline"] for row in rows if row["baseline"] and not row["is_baseline"]))
    versus = bases[0] if len(bases) == 1 else "the CE-only run with the same settings"
    lines = []
    varying = _varying(groups)
    if varying:
        differ = "; ".join(f"{k}: {', '.join(map(_fmt, v))}" for k, v in varying.items())
        lines.append(f"Settings differ between rows ({differ}): each Δ is against a CE-only run with the same "
                     f"settings and seeds; '–' where none ran.\n")
    elif groups and groups[0].config is not None:
        lines.append(f"Settings: {_describe(groups[0].settings)}\n")
    common = common_overrides(groups)
    if common:
        lines.append(f"Every run: {','.join(f'{k}={v}' for k, v in common.items())}\n")
    lines += [
        f"| run | overrides | {metric} % (mean ± std) |" + (f" Δ vs {versus} (pp) |" if with_delta else "")
        + " per seed | params | train time (s, mean) |",
        "|---|---|---|" + ("---|" if with_delta else "") + "---|---|---|",
    ]
    notes = []
    for row in rows:
        mean, std = row[f"{metric} mean"], row[f"{metric} std"]
        spread = "–" if mean is None else f"{100 * mean:.2f}"
        if mean is not None and row["seeds"] > 1:  # one seed has no spread to show
            spread += f" ± {100 * std:.2f}"
        per_seed = ", ".join(f"s{s}: {_pct(v) if isinstance(v, float) else v}" for s, v in row["per_seed"].items())
        delta = ""
        if with_delta:
            delta = f" {row['delta_pp']:+.2f} |" if row["delta_pp"] is not None else " – |"
            if row["is_baseline"]:
                delta = " baseline |"
            if row["no_delta_because"]:
                label = f"{row['run']} {row['distinct_overrides']}".strip()
                notes.append(f"No Δ for {label}: {row['no_delta_because']}.")
        params = f"{row['params']:,}" if row["params"] is not None else "–"
        time = f"{row['train_time_s']:.1f}" if row["train_time_s"] is not None else "–"
        overrides = row["distinct_overrides"] or "–"
        lines.append(f"| {row['run']} | {overrides} | {spread} |{delta} {per_seed} | {params} | {time} |")
    lines += [f"\n{note}" for note in notes]
    for summary in summaries:
        if summary.get("status") == "failed":
            lines.append(f"\nFAILED {summary['run_name']} seed {summary['seed']}: {summary.get('error', '')}")
    return "\n".join(lines) + "\n"
