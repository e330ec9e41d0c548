"""Loggers from ``conf/logger/`` and the hyperparameters they record.

TensorBoard's HPARAMS tab gets one row per run: the settings a person compares (method, each term's weight
and temperature, model, teacher, lr, epochs, seed, ...) against the run's final ``val/acc`` and ``test/acc``.
"""

from __future__ import annotations

from collections.abc import Mapping

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig

from kd_lightning.errors import ConfigError
from kd_lightning.report.facts import flatten, run_config

# logger class → the pip extra that installs what it needs
EXTRAS = {"WandbLogger": ("wandb", "wandb"), "MLFlowLogger": ("mlflow", "mlflow"), "CometLogger": ("comet_ml", None),
          "NeptuneLogger": ("neptune", None)}


def instantiate_loggers(logger_cfg: Mapping | None) -> list[Logger]:
    """One logger per entry of ``cfg.logger``; a logger whose package is missing is a :class:`ConfigError`."""
    loggers = []
    for name, node in (logger_cfg or {}).items():
        if node is None:
            continue
        try:
            loggers.append(instantiate(node))
        except Exception as err:
            cause = err
            while cause is not None and not isinstance(cause, (ModuleNotFoundError, ImportError)):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            cls = str(node.get("_target_", "")).rsplit(".", 1)[-1]
            package, extra = EXTRAS.get(cls, (getattr(cause, "name", None) or "its package", None))
            install = f"pip install 'kd_lightning[{extra}]'" if extra else f"pip install {package}"
            raise ConfigError(
                f"logger.{name} ({cls}) needs the {package} package, which is not installed: {install}, "
                f"or pick an installed logger: logger=tensorboard, logger=csv"
            ) from err
    return loggers


def hparams(cfg: DictConfig) -> dict:
    """The flat, TensorBoard-friendly hyperparameters of a run (str/int/float/bool values only)."""
    params = {**flatten(run_config(cfg)), "seed": cfg.seed, "run": cfg.run_name + cfg.get("run_tag", "")}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}


def log_hparams(loggers: list[Logger], cfg: DictConfig, summary: Mapping, step: int) -> None:
    """Record :func:`hparams` with the run's final ``val/acc`` and ``test/acc`` (call after testing).

    Lightning's ``log_hyperparams(params, metrics)`` also writes ``metrics`` as scalars at ``step``: called at
    the end with the last global step and the values already logged there, that adds no new point to a curve
    (called at the start with placeholders, it would put a fake point at step 0 of ``val/acc``).
    """
    params = hparams(cfg)
    metrics = {k: summary[k] for k in ("val/acc", "test/acc") if summary.get(k) is not None}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            if metrics:
                logger.log_hyperparams(params, metrics, step=step)
        else:
            logger.log_hyperparams(params)
        logger.finalize("success")  # Trainer.test closed the writers already: flush what this wrote
