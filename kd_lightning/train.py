"""Entry point: ``python -m kd_lightning.train +experiment=NAME [overrides]``.

Compose the config → check every value (:mod:`kd_lightning.validate`) → the run's identity folder
(:mod:`kd_lightning.runs`): finished there → print the stored result, train nothing; else lock it, find the
teacher by its own identity, build datamodule, module, callbacks, loggers, Trainer → fit (resuming exactly from
the folder's ``last.ckpt`` if there is one) → test → write ``summary.json`` with the run's provenance.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shlex
import sys
import time
import zipfile
from pathlib import Path

import hydra
import lightning.pytorch as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from kd_lightning.errors import ConfigError, KDError
from kd_lightning.export.checkpoint import rebuild_facts
from kd_lightning.lr_find import find_lr
from kd_lightning.modules.supervised import lightning_scheduler
from kd_lightning.callbacks import EpochThroughput
from kd_lightning.report.facts import safe_run_config
from kd_lightning.report.hparams import log_hparams
from kd_lightning.report.loggers import instantiate_loggers
from kd_lightning.runs import (
    AtomicCheckpointIO,
    RunLock,
    config_hash,
    identity,
    is_ddp_child,
    locate_teachers,
    provenance,
    read_summary,
    task_overrides,
    write_summary,
)
from kd_lightning.runs.identity import NOT_IN_NAME, file_checksum, override_key
from kd_lightning.runs.store import atomic_write_text, is_done, result_line
from kd_lightning.validate import validate

log = logging.getLogger(__name__)


def command(overrides: list[str]) -> str:
    return "python -m kd_lightning.train " + shlex.join(overrides) if overrides else "the same command"


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Run the training job ``cfg`` describes (``overrides``: its command line, default Hydra's); returns its
    summary, also in ``<run folder>/summary.json``. A finished run is not trained again (``retrain=true`` does)."""
    if overrides is None:
        overrides = task_overrides(cfg)
    elif "hydra" not in cfg:  # a config composed outside Hydra: its identity (its teacher's) needs its overrides
        with open_dict(cfg):
            cfg.hydra = {"overrides": {"task": list(overrides)}}
    validate(cfg)
    output_dir = Path(cfg.paths.output_dir)
    with open_dict(cfg):  # pinned: finding the teacher below fills teacher.checkpoint, which is not the identity
        cfg.paths.output_dir = str(output_dir)
    content = identity(cfg)
    child = is_ddp_child()
    stored = read_summary(output_dir)
    if stored and stored.get("config_hash") not in (None, config_hash(content)) and stored.get("status") != "failed":
        raise ConfigError(
            f"paths.output_dir={output_dir} holds the run of another configuration (hash {stored['config_hash']}, "
            f"{stored.get('status')}; this one is {config_hash(content)}): leave paths.output_dir unset (each "
            f"configuration gets its own folder) or choose an empty folder"
        )
    if is_done(stored) and not child:
        if not cfg.retrain:
            log.info("Already trained (%s): %s\n%s", output_dir, result_line(stored),
                     "Nothing was trained; add retrain=true to train it again.")
            return stored
        replaced = output_dir.with_name(f"{output_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        output_dir.rename(replaced)
        log.info("retrain=true: the finished run moved to %s; training again in %s", replaced, output_dir)
    teachers = locate_teachers(cfg, overrides, train_missing=_train_teacher)
    with contextlib.nullcontext() if child else RunLock(output_dir), _run_log(output_dir, child):
        return _fit_and_test(cfg, overrides, output_dir, content, teachers, child)


def _fit_and_test(cfg: DictConfig, overrides: list[str], output_dir: Path, content: dict, teachers: list[dict],
                  child: bool) -> dict:
    digest = config_hash(content)
    record = {**_record(cfg, overrides), "config_hash": digest, "command": command(overrides)}
    if not child and not cfg.get("lr_find"):  # +tune=lr_find trains nothing: no run files
        atomic_write_text(output_dir / "identity.json", json.dumps(content, indent=2, sort_keys=True) + "\n")
        atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        atomic_write_text(output_dir / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides)))
        write_summary(output_dir, {**record, "status": "running", "started": time.strftime("%Y-%m-%d %H:%M:%S")},
                      replace_done=True)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    module.save_hyperparameters(rebuild_facts(cfg), logger=False)  # what kd_lightning.export rebuilds the net from
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None] + [instantiate(cfg.speed)]
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    if cfg.get("lr_find"):  # +tune=lr_find: Lightning's learning-rate finder instead of training
        return find_lr(trainer, module, datamodule, cfg.lr_find, output_dir)

    last = output_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if cfg.resume and last.is_file() else None
    if resume_from:
        _check_checkpoint(last)
        log.info("Resuming from %s", resume_from)
    start = time.perf_counter()
    with _ddp_job(overrides):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        except (SystemExit, KeyboardInterrupt):  # Ctrl+C (Lightning turns it into sys.exit(1)) or SIGTERM
            if not child:
                _write_interrupted(output_dir, record, trainer, last, overrides)
            raise
        summary = {
            **record,
            "status": "interrupted" if trainer.interrupted else "done",
            "resumed_from": resume_from,
            "params": sum(p.numel() for p in module.net.parameters()),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "train_time_s": round(_train_seconds(trainer, start), 2),  # a resumed run: all its fits
            "val/acc": _metric(trainer.callback_metrics.get("val/acc")),
            "images_per_s": _metric(_steady_images_per_s(trainer)),
            "data": _data_record(cfg),
            "teachers": teachers,
            **provenance(trainer),
        }
        if trainer.interrupted:
            _write_interrupted(output_dir, record, trainer, last, overrides)
            return summary
        if cfg.test:
            test_metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
            summary.update({key: _metric(value) for key, value in test_metrics.items()})
        summary["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if not child and trainer.is_global_zero:
            write_summary(output_dir, summary, replace_done=True)
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


def _write_interrupted(output_dir: Path, record: dict, trainer, last: Path, overrides: list[str]) -> None:
    where = f"epoch {trainer.current_epoch}, step {trainer.global_step}"
    hint = f"resume with: {command(overrides)}" + (f" (from {last})" if last.is_file() else " (no checkpoint yet)")
    write_summary(output_dir, {**record, "status": "interrupted", "interrupted_at": where, "resume": hint})
    log.warning("Interrupted at %s; %s", where, hint)


def _check_checkpoint(path: Path) -> None:
    """A checkpoint that cannot be resumed from (truncated, not a torch file) is refused by name, not by traceback."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ConfigError(
            f"cannot resume from {path}: it is damaged ({err}). Checkpoints are written atomically, so this one was "
            f"cut by something else. Delete it to start over, or add resume=false."
        ) from None


@contextlib.contextmanager
def _run_log(output_dir: Path, child: bool):
    """``train.log`` in the run folder while this process trains into it (Hydra's own log file is off)."""
    if child:
        yield
        return
    handler = logging.FileHandler(output_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def _ddp_job(overrides: list[str]):
    """One multirun job's DDP ranks, and nothing more.

    Lightning's DDP launcher starts the other ranks with this process's ``sys.argv``: inside a multirun, the whole
    multirun. While the job fits and tests, it sees the job's own command instead (a single run, which the launcher
    pins to this job's folder with ``hydra.run.dir``). Afterwards the process group and the rank variables the
    launcher exported go: with ``LOCAL_RANK`` left set, the next job's launcher would think its ranks were started
    by someone else and wait for them forever.
    """
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    saved_argv, saved_env = sys.argv, {key: os.environ.get(key) for key in DDP_ENV}
    if multirun:
        sys.argv = ddp_child_argv(saved_argv[0], overrides)
    try:
        yield
    finally:
        sys.argv = saved_argv
        if multirun and not is_ddp_child():
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def ddp_child_argv(program: str, overrides: list[str]) -> list[str]:
    """The command line of one job of a multirun, as a single run."""
    jobs_own = [o for o in overrides if override_key(o) not in ("sweep", "hparams_search")]
    return [program, *jobs_own, "hydra.mode=RUN"]


def _train_teacher(config: DictConfig, overrides: list[str], folder: Path) -> None:
    """``teacher.train_if_missing``: train the teacher run in this process, with the config its command composes."""
    config = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    with open_dict(config):
        config.pop("hydra", None)
        config.paths.output_dir = str(folder)
    summary = train(config, overrides)
    log.info("Teacher trained (%s): %s", folder, result_line(summary))


def _record(cfg: DictConfig, overrides: list[str]) -> dict:
    """What tells runs apart in tables: name, seed and the overrides that change the result."""
    excludes = [*(cfg.get("identity_exclude") or []), *NOT_IN_NAME]
    shown = [o for o in overrides
             if not any(override_key(o) == e or override_key(o).startswith(e + ".") for e in excludes)]
    return {"run_name": cfg.run_name + cfg.run_tag, "seed": cfg.seed, "overrides": ",".join(shown),
            "run_dir": str(Path(cfg.paths.output_dir).resolve()), "config": safe_run_config(cfg)}


def _data_record(cfg: DictConfig) -> dict:
    source = cfg.data.get("source") or {}
    path = source.get("path")
    return {"dataset": cfg.data.get("name"), "source": str(source.get("_target_", "")).rsplit(".", 1)[-1],
            "path": str(Path(path).resolve()) if path else None, "sha256": file_checksum(path) if path else None,
            "val_size": cfg.data.get("val_size")}


def _throughput(trainer: L.Trainer) -> EpochThroughput | None:
    return next((c for c in trainer.callbacks if isinstance(c, EpochThroughput)), None)


def _steady_images_per_s(trainer: L.Trainer) -> float | None:
    """The training rate free of start-up costs, if an EpochThroughput callback measured it."""
    throughput = _throughput(trainer)
    return throughput.steady_images_per_s if throughput else None


def _train_seconds(trainer: L.Trainer, start: float) -> float:
    """The run's training time by the EpochThroughput clock that its checkpoints keep (so a resumed run counts the
    fits it continues); without that callback, this fit's since ``start``."""
    throughput = _throughput(trainer)
    return throughput.train_seconds if throughput else time.perf_counter() - start


def _metric(value) -> float | None:
    return None if value is None else round(float(value), 6)


def _user_error(err: BaseException | None) -> BaseException | None:
    """The user-facing error behind ``err`` (Hydra wraps errors raised while instantiating), if any."""
    while err is not None:
        if isinstance(err, KDError):
            return err
        err = err.__cause__ or err.__context__
    return None


def _record_failure(cfg: DictConfig, err: BaseException) -> None:
    """``failed`` in the run's summary, unless the folder holds a finished run (never overwritten) or cannot be
    written (the message says why)."""
    try:
        output_dir = Path(cfg.paths.output_dir)
        write_summary(output_dir, {**_record(cfg, task_overrides(cfg)), "status": "failed", "error": str(err)})
    except Exception:  # the failure itself may be that the folder cannot be written
        pass


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        summary = train(cfg)
    except Exception as err:
        cause = _user_error(err)
        if not is_ddp_child():
            _record_failure(cfg, cause or err)
        if cause is None and not multirun:
            raise
        if cause is None:  # a bug, not a user error: the whole stack, and the sweep goes on to its table
            log.exception("job failed: %s", err)
        else:
            log.error("%s", cause)
        if multirun:
            # the job's summary says it failed; the sweep goes on, its table marks the job, and the sweep's
            # exit status is non-zero (SummaryTable.on_multirun_end)
            return None
        sys.exit(1)
    return summary.get(cfg.optimized_metric)


if __name__ == "__main__":
    main()
