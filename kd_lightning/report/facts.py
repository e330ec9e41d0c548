"""The few resolved settings that tell runs apart in tables, TensorBoard's HPARAMS view and exports.

``run_config(cfg)`` goes into every ``summary.json`` as ``config``. Its keys split in two: *method* keys
(``method``, ``teacher``, ``terms``: what distillation does) and *setting* keys (everything else: dataset,
model, optimizer, schedule, budget). A result table compares a row with the CE-only run whose settings are
equal (:mod:`kd_lightning.report.table`).
"""

from __future__ import annotations

from collections.abc import Mapping

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

METHOD_KEYS = ("method", "teacher", "terms")

Scalar = (int, float, str, bool)


def _choices() -> Mapping[str, str]:
    """The config group options picked (``model: light_nn``), when Hydra runs the job."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices
    return {}


def _target_name(node) -> str | None:
    if not isinstance(node, Mapping) or "_target_" not in node:
        return None
    return str(node["_target_"]).rsplit(".", 1)[-1]


def _scalars(node: Mapping) -> dict:
    """A term's scalar settings (weight, temperature, ...): nested adapters and layer paths are not compared."""
    return {k: v for k, v in node.items() if k != "_target_" and isinstance(v, Scalar) and "layer" not in k}


def _model_name(node: Mapping, choice: str | None) -> str | None:
    """``light_nn`` under Hydra; outside it the class plus its scalar/list arguments (``MLP(hidden=[128])``).
    A library model is its factory and name (``torchvision_model:resnet18``), also inside a TeacherAdapter."""
    if isinstance(node, Mapping) and isinstance(node.get("net"), Mapping):  # an adapter around the real network
        return _model_name(node["net"], None)
    if isinstance(node, Mapping) and isinstance(node.get("name"), str) and "_target_" in node:
        return f"{_target_name(node)}:{node['name']}"
    if choice:
        return choice
    name = _target_name(node)
    if name is None:
        return None
    args = {k: v for k, v in node.items() if k not in ("_target_", "num_classes") and isinstance(v, (*Scalar, list))}
    return f"{name}({', '.join(f'{k}={v}' for k, v in args.items())})" if args else name


def _teacher_name(net: Mapping | None, choice: str | None) -> str | None:
    """The teacher config's name (``mnist_mlp``), unless it is a generic one around a library model."""
    from_net = _model_name(net, None) if net is not None else None
    return from_net if (from_net and ":" in from_net) or not choice else choice


def _scheduler_name(cfg: DictConfig, choices: Mapping) -> str | None:
    if not cfg.get("scheduler"):
        return None
    return choices.get("scheduler") or _target_name(OmegaConf.to_container(cfg.scheduler))


def run_config(cfg: DictConfig) -> dict:
    """What a results table groups runs by (resolved values; no paths, seeds or speed switches)."""
    choices = _choices()
    container = OmegaConf.to_container
    distill = cfg.get("distill") or {}
    terms = container(distill.terms, resolve=True) if distill.get("terms") else {}
    model = container(cfg.model, resolve=True)
    teacher = cfg.get("teacher")
    teacher_net = container(teacher.net, resolve=True) if teacher is not None and "net" in teacher else None
    optimizer = cfg.get("optimizer") or {}
    return {
        "dataset": cfg.data.get("name"),
        "model": _model_name(model, choices.get("model")),
        "teacher": _teacher_name(teacher_net, choices.get("teacher")) if teacher is not None else None,
        "method": choices.get("distill") or _target_name(container(distill)) if distill else None,
        "terms": {name: _scalars(term) for name, term in terms.items() if isinstance(term, Mapping)},
        "optimizer": choices.get("optimizer") or _target_name(container(optimizer)),
        "lr": optimizer.get("lr"),
        "weight_decay": optimizer.get("weight_decay"),
        "scheduler": _scheduler_name(cfg, choices),
        "epochs": cfg.trainer.get("max_epochs"),
        "batch_size": cfg.data.get("batch_size"),
        "max_train_samples": cfg.data.get("max_train_samples"),
        "precision": cfg.trainer.get("precision"),
        "limit_train_batches": cfg.trainer.get("limit_train_batches"),
    }


def flatten(config: Mapping, prefix: str = "") -> dict:
    """``{"terms": {"kd": {"weight": .3}}}`` → ``{"terms.kd.weight": .3}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, Mapping):
            flat[f"{prefix}{key}"] = value
    return flat


def is_method_key(key: str) -> bool:
    return key.split(".", 1)[0] in METHOD_KEYS


def is_ce_only(config: Mapping) -> bool:
    """A labels-only run without a teacher: the baseline a distilled student is compared with."""
    return config.get("teacher") is None and set(config.get("terms") or {}) <= {"ce"} and (
        config.get("method") in (None, "none", "SupervisedModule")
    )


def safe_run_config(cfg: DictConfig) -> dict | None:
    """:func:`run_config`, or ``None`` for a config that does not resolve (its run fails for that reason)."""
    try:
        return run_config(cfg)
    except Exception:
        return None
