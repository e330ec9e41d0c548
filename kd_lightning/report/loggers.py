"""Loggers from ``conf/logger/``, with a clear message when a logger's package is missing."""

from __future__ import annotations

from collections.abc import Mapping

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger

from kd_lightning.errors import ConfigError

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
