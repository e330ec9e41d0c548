"""Checks of a composed config before anything is built or written: every bad value in one message, each naming the
value and what is accepted. (Hydra checks the config's shape; these are the values' types, ranges and signs, which
a structured config schema would only half cover: union types such as ``limit_train_batches: int | float`` and
cross-field rules are not expressible there.)

Data itself (images vs labels, label range, readable files) is checked where it is loaded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from kd_lightning.errors import ConfigError

log = logging.getLogger(__name__)
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true", "64")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(minimum: int) -> tuple[Callable, str]:
    return (lambda v: _is_int(v) and v >= minimum), f"a whole number >= {minimum}"


def _number(low: float, high: float = math.inf, low_open: bool = False) -> tuple[Callable, str]:
    def ok(v):
        return _is_number(v) and (v > low if low_open else v >= low) and v <= high

    bound = f"> {low:g}" if low_open else f">= {low:g}"
    return ok, f"a finite number {bound}" + (f" and <= {high:g}" if high < math.inf else "")


def _limit(v) -> bool:  # Lightning's limit_*_batches: a fraction in [0, 1] or a whole number of batches
    return (_is_int(v) and v >= 0) or (_is_number(v) and 0.0 <= v <= 1.0)


RULES: dict[str, tuple[Callable, str]] = {
    "seed": _int(0),
    "trainer.max_epochs": ((lambda v: _is_int(v) and (v >= 1 or v == -1)), "a whole number >= 1 (or -1: no limit)"),
    "trainer.max_steps": ((lambda v: _is_int(v) and (v >= 1 or v == -1)), "a whole number >= 1 (or -1: no limit)"),
    "trainer.log_every_n_steps": _int(1),
    "trainer.accumulate_grad_batches": _int(1),
    "trainer.precision": ((lambda v: str(v) in PRECISIONS), f"one of {', '.join(PRECISIONS)}"),
    "trainer.devices": ((lambda v: (_is_int(v) and v >= 1) or v in ("auto", -1) or isinstance(v, (list, ListConfig))),
                        "a whole number of devices >= 1, a list of device ids, or auto"),
    "trainer.limit_train_batches": (_limit, "a fraction in [0, 1] or a whole number of batches >= 0"),
    "trainer.limit_val_batches": (_limit, "a fraction in [0, 1] or a whole number of batches >= 0"),
    "trainer.limit_test_batches": (_limit, "a fraction in [0, 1] or a whole number of batches >= 0"),
    "trainer.fast_dev_run": ((lambda v: isinstance(v, bool) or (_is_int(v) and v >= 0)), "true, false or a number of batches"),
    "data.batch_size": _int(1),
    "data.eval_batch_size": _int(1),
    "data.val_size": _int(1),
    "data.num_workers": _int(0),
    "data.num_classes": _int(2),
    "data.crop_padding": _int(0),
    "data.max_train_samples": ((lambda v: v is None or (_is_int(v) and v >= 1)), "null or a whole number >= 1"),
    "data.source.num_train": _int(2),
    "data.source.num_test": _int(1),
    "data.steps_per_epoch": _int(1),
    "optimizer.lr": _number(0.0, 10.0, low_open=True),
    "optimizer.weight_decay": _number(0.0),
    "optimizer.momentum": _number(0.0, 1.0),
    "callbacks.last_checkpoint.minutes": _number(0.0, low_open=True),
    "callbacks.loss_guard.factor": _number(1.0, low_open=True),
}
BOOLEANS = ("resume", "retrain", "test", "data.resident", "data.hflip", "teacher.train_if_missing")


def _select(cfg: DictConfig, key: str):
    try:
        return OmegaConf.select(cfg, key, default="<absent>", throw_on_missing=True)
    except Exception as err:  # an interpolation that does not resolve
        return err


def _problems(cfg: DictConfig) -> list[str]:
    problems = []
    for key, (ok, accepted) in RULES.items():
        value = _select(cfg, key)
        if isinstance(value, str) and value == "<absent>":
            continue
        if isinstance(value, Exception) or not ok(value):
            problems.append(f"{key}={value!r} (a {type(value).__name__}): expected {accepted}")
    for key in BOOLEANS:
        value = _select(cfg, key)
        if not (isinstance(value, str) and value == "<absent>") and not isinstance(value, bool):
            problems.append(f"{key}={value!r}: expected true or false")
    for stat in ("mean", "std"):
        values = _select(cfg, f"data.{stat}")
        if isinstance(values, (list, ListConfig)):
            if not values or not all(_is_number(v) and (stat == "mean" or v > 0) for v in values):
                problems.append(f"data.{stat}={list(values)!r}: expected a list of finite numbers"
                                + (", each > 0" if stat == "std" else ""))
    problems += _term_problems(cfg)
    problems += _teacher_problems(cfg)
    problems += _recipe_problems(cfg)
    return problems


def _recipe_problems(cfg: DictConfig) -> list[str]:
    """``recipe.epochs`` / ``recipe.steps`` set with no recipe selected (``recipe=none``) would be ignored silently: a
    problem. Under a recipe, a trainer length set apart from the recipe's keeps the published milestones: a warning
    (``+debug=...`` and benchmarks do it on purpose)."""
    problems = []
    for unit, limit in (("epochs", "max_epochs"), ("steps", "max_steps")):
        value = _select(cfg, f"recipe.{unit}")
        if value is None or value == "<absent>":
            continue
        trainer = cfg.get("trainer")
        raw = OmegaConf.to_container(trainer, resolve=False).get(limit) if isinstance(trainer, DictConfig) else None
        if raw == f"${{recipe.{unit}}}":
            continue
        if _select(cfg, "recipe.name") == "none":
            users = sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml")
                           if f"{limit}: ${{recipe.{unit}}}" in p.read_text())
            problems.append(f"recipe.{unit}={value!r}: no recipe is selected, so nothing takes its length from it "
                            f"(trainer.{limit} is {raw!r}); recipes measured in {unit}: {', '.join(users)} "
                            f"(recipe=NAME or an experiment that selects one)")
        else:
            log.warning("trainer.%s=%s is set apart from the recipe's length (recipe.%s=%s): the schedule's milestones "
                        "stay where the recipe puts them; recipe.%s=%s would scale them", limit, raw, unit, value, unit,
                        raw)
    return problems


def _term_problems(cfg: DictConfig) -> list[str]:
    terms = _select(cfg, "distill.terms")
    if not isinstance(terms, DictConfig):
        return []
    problems = []
    for name in terms:
        for field, (ok, accepted) in {
            "weight": _number(0.0),
            "temperature": _number(0.0, low_open=True),
        }.items():
            value = _select(cfg, f"distill.terms.{name}.{field}")
            if isinstance(value, str) and value == "<absent>":
                continue
            if isinstance(value, Exception) or not ok(value):
                problems.append(f"distill.terms.{name}.{field}={value!r}: expected {accepted}"
                                + (" (a term you do not want: remove it with ~distill.terms." + name + ")"
                                   if field == "weight" else ""))
    return problems


def _teacher_problems(cfg: DictConfig) -> list[str]:
    experiment = _select(cfg, "teacher.run.experiment")
    if isinstance(experiment, str) and experiment != "<absent>" and _select(cfg, "teacher.checkpoint") is None:
        folder = CONF_DIR / "experiment"
        known = sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))
        if experiment not in known:
            return [f"teacher.run.experiment={experiment!r}: expected one of {', '.join(known)}"]
    return []


def validate(cfg: DictConfig) -> None:
    """Raises :class:`ConfigError` listing every bad value of ``cfg``, before anything is built."""
    problems = _problems(cfg)
    if problems:
        raise ConfigError("invalid config, nothing was trained:\n  " + "\n  ".join(problems))
