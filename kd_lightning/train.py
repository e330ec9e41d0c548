"""Entry point: ``python -m kd_lightning.train +experiment=NAME [overrides]``.

Compose the config → datamodule, module, callbacks, loggers, Trainer → fit (resuming from the run's
``last.ckpt`` if present) → test → write the run's ``summary.json``.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from pathlib import Path

import hydra
import lightning.pytorch as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from kd_lightning.errors import KDError
from kd_lightning.export.checkpoint import rebuild_facts
from kd_lightning.lr_find import find_lr
from kd_lightning.modules.supervised import lightning_scheduler
from kd_lightning.report import EpochThroughput
from kd_lightning.report.facts import safe_run_config
from kd_lightning.report.hparams import log_hparams
from kd_lightning.report.loggers import instantiate_loggers

log = logging.getLogger(__name__)

def train(cfg: DictConfig) -> dict:
    """Run one training job described by ``cfg``; returns its summary (also written to ``summary.json``)."""
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    module.save_hyperparameters(rebuild_facts(cfg), logger=False)  # what kd_lightning.export rebuilds the net from
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()] + [instantiate(cfg.speed)]
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    if cfg.get("lr_find"):  # +tune=lr_find: Lightning's learning-rate finder instead of training
        return find_lr(trainer, module, datamodule, cfg.lr_find, output_dir)

    last = output_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if cfg.resume and last.is_file() else None
    if resume_from:
        log.info("Resuming from %s", resume_from)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    summary = {
        **_identity(cfg),
        "status": "interrupted" if trainer.interrupted else "done",
        "resumed_from": resume_from,
        "params": sum(p.numel() for p in module.net.parameters()),
        "epochs": trainer.current_epoch,
        "train_time_s": round(time.perf_counter() - start, 2),
        "val/acc": _metric(trainer.callback_metrics.get("val/acc")),
        "images_per_s": _metric(_steady_images_per_s(trainer)),
    }
    if trainer.interrupted:
        log.warning("Interrupted: run the same command again to resume from %s", last)
    elif cfg.test:
        test_metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
        summary.update({key: _metric(value) for key, value in test_metrics.items()})
    _write_summary(output_dir, summary)
    log_hparams(loggers, cfg)  # TensorBoard's HPARAMS tab: this run's settings against its val/test accuracy
    return summary


def build_module(cfg: DictConfig) -> L.LightningModule:
    """The training scheme (``distill``) with its network, optimizer and scheduler, as the config says."""
    return instantiate(cfg.distill, net=instantiate(cfg.model), optimizer=instantiate(cfg.optimizer),
                       scheduler=_scheduler(cfg.get("scheduler")))


def _scheduler(cfg: DictConfig | None):
    """The scheduler config (``_target_`` a torch scheduler, plus ``interval``: epoch or step, and ``frequency``)
    as a factory of Lightning's scheduler dict."""
    if not cfg:
        return None
    options = OmegaConf.to_container(cfg, resolve=True)
    timing = {key: options.pop(key) for key in ("interval", "frequency") if key in options}
    return functools.partial(lightning_scheduler, instantiate(options), **timing)


def _steady_images_per_s(trainer: L.Trainer) -> float | None:
    """The training rate free of start-up costs, if an EpochThroughput callback measured it."""
    throughput = next((c for c in trainer.callbacks if isinstance(c, EpochThroughput)), None)
    return throughput.steady_images_per_s if throughput else None


def _metric(value) -> float | None:
    return None if value is None else round(float(value), 6)


def _identity(cfg: DictConfig) -> dict:
    """What tells runs apart in tables: name, seed and the overrides in the run's folder name."""
    overrides = HydraConfig.get().job.override_dirname if HydraConfig.initialized() else ""
    return {"run_name": cfg.run_name + cfg.run_tag, "seed": cfg.seed, "overrides": overrides,
            "config": safe_run_config(cfg)}


def _write_summary(output_dir: Path, summary: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _user_error(err: BaseException | None) -> BaseException | None:
    """The user-facing error behind ``err`` (Hydra wraps errors raised while instantiating), if any."""
    while err is not None:
        if isinstance(err, KDError):
            return err
        err = err.__cause__
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = train(cfg)
    except Exception as err:
        cause = _user_error(err)
        _write_summary(Path(cfg.paths.output_dir), {**_identity(cfg), "status": "failed", "error": str(cause or err)})
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        if cause is not None:
            log.error("%s", cause)
        elif multirun:
            log.exception("job failed")  # a bug, not the user's input: the stack belongs in the job's log
        else:
            raise
        if multirun:
            # the job's summary says it failed; the sweep goes on, its table marks the job, and the sweep's
            # exit status is non-zero (SummaryTable.on_multirun_end)
            return None
        sys.exit(1)
    return summary.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
