"""TensorBoard's HPARAMS tab: one row per run, the settings a person compares against ``val/acc``/``test/acc``.

TensorBoard expects *one* experiment definition (the hyperparameter and metric columns) per log folder and
one session (a run's values) per run folder; with several definitions it picks an arbitrary one. Lightning's
``TensorBoardLogger.log_hyperparams(params, metrics)`` writes a definition into every run, so a sweep's table
would show the columns of whichever run TensorBoard found first (a CE run has no temperature) and writes
``metrics`` as extra scalar points. So each run here writes only its session (:func:`log_session`), and
:func:`write_experiment` keeps one definition in ``<log_dir>/hparams/`` covering every run under ``log_dir``:
the union of their hyperparameters, those that differ between runs first (TensorBoard shows the first five),
and exactly two metric columns, ``val/acc`` and ``test/acc``. (TensorBoard orders the columns by
name within the differing and the constant ones.)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from kd_lightning.report.facts import flatten, run_config
from kd_lightning.report.table import read_summaries

METRICS = ("val/acc", "test/acc")
COMPARED = ("method", "model", "teacher", "terms", "lr", "epochs", "seed", "dataset")  # in this order


def hparams_of(config: Mapping | None, seed) -> dict:
    """The flat hyperparameters a person compares, from a summary's ``config``: str/float/bool values only."""
    flat = flatten(config or {})
    chosen = {k: v for key in COMPARED for k, v in flat.items() if k == key or k.startswith(f"{key}.")}
    params = {**chosen, "seed": seed}  # the run's name is TensorBoard's Trial ID already
    return {k.removeprefix("terms."): v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in params.items()}


def hparams(cfg: DictConfig) -> dict:
    return hparams_of(run_config(cfg), cfg.seed)


@rank_zero_only
def log_session(loggers: list[Logger], cfg: DictConfig) -> None:
    """Record this run's hyperparameters (TensorBoard: a session; other loggers: their own hparams)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    params = hparams(cfg)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            _, start, end = hparams_summaries({k: v for k, v in params.items() if v is not None}, {})
            writer = logger.experiment._get_file_writer()  # Trainer.test closed it: this opens a new events file
            writer.add_summary(start)
            writer.add_summary(end)
        else:
            logger.log_hyperparams(params)
        logger.finalize("success")


def _rank(name: str) -> int:
    """Column order: COMPARED's order (a term's settings where ``terms`` stands)."""
    first = name.split(".", 1)[0]
    return COMPARED.index(first) if first in COMPARED else COMPARED.index("terms")


def _info(name: str, values: list):
    from tensorboard.plugins.hparams import api_pb2
    from google.protobuf import struct_pb2

    present = [v for v in values if v is not None]
    distinct = set(map(repr, values))  # a setting some runs lack (a term's weight) differs too
    if all(isinstance(v, bool) for v in present):
        kind = api_pb2.DATA_TYPE_BOOL
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        kind = api_pb2.DATA_TYPE_FLOAT64
    else:
        kind = api_pb2.DATA_TYPE_STRING
    info = api_pb2.HParamInfo(name=name, type=kind, differs=len(distinct) > 1)
    if kind == api_pb2.DATA_TYPE_STRING:
        info.domain_discrete.CopyFrom(struct_pb2.ListValue(values=[struct_pb2.Value(string_value=str(v))
                                                                   for v in sorted({str(v) for v in present})]))
    return info


@rank_zero_only
def write_experiment(log_dir: str | Path) -> Path | None:
    """(Re)write the one HPARAMS definition for every run with a summary under ``log_dir``."""
    from tensorboard.plugins.hparams import api_pb2
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(log_dir)
    sessions = [hparams_of(s.get("config"), s.get("seed")) for s in read_summaries([log_dir])
                if s.get("status") == "done"]
    if not sessions:
        return None
    names = list(dict.fromkeys(k for session in sessions for k in session))
    infos = [_info(name, [session.get(name) for session in sessions]) for name in names]
    infos.sort(key=lambda info: (not info.differs, _rank(info.name)))
    folder = log_dir / "hparams"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=tag) for tag in METRICS]
    with SummaryWriter(str(folder)) as writer:
        writer._get_file_writer().add_summary(_experiment_summary(infos, metrics))
    return folder


def _experiment_summary(infos, metrics):
    """The experiment definition as a summary (tensorboard's own helper for this imports TensorFlow)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=time.time())
    content = plugin_data_pb2.HParamsPluginData(experiment=experiment, version=metadata.PLUGIN_DATA_VERSION)
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    return Summary(value=[Summary.Value(tag=metadata.EXPERIMENT_TAG, metadata=SummaryMetadata(plugin_data=plugin))])


def log_hparams(loggers: list[Logger], cfg: DictConfig) -> None:
    """After a run: its session, then the log folder's experiment definition (TensorBoard loggers only)."""
    log_session(loggers, cfg)
    if any(isinstance(logger, TensorBoardLogger) for logger in loggers):
        write_experiment(cfg.paths.log_dir)
