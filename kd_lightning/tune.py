"""``python -m kd_lightning.tune +experiment=NAME hparams_search=optuna [overrides]``: an Optuna study over train().

hydra-optuna-sweeper (the Hydra plugin) requires optuna<3, so this drives Optuna's own API instead: a TPE
sampler, median pruning on the validation metric after each epoch, and an SQLite study (``optuna.storage``)
that the same command continues. Every trial is a normal run (summary.json, checkpoints, TensorBoard events)
in ``<log_dir>/optuna/<study>/trial<N>``; at the end the best trial is named and a table of all trials is
written beside them (:func:`kd_lightning.report.files.write_report`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import hydra
import lightning.pytorch as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from kd_lightning.errors import ConfigError, NonFiniteLossError
from kd_lightning.report.files import write_report
from kd_lightning.report.table import read_summaries
from kd_lightning.train import train

log = logging.getLogger(__name__)


class PruningCallback(L.Callback):
    """Reports ``monitor`` to the running trial after each validation epoch; stops a trial Optuna prunes.

    (optuna-integration has the same callback; it is a separate package whose Lightning support lags, and this
    is the whole of it.) Raising ``TrialPruned`` inside Lightning's loop would skip its teardown, so the trial
    is stopped with ``trainer.should_stop`` and the study is told after ``train()`` returns.
    """

    trial = None  # the running trial, set by the objective (trials run one at a time in this process)

    def __init__(self, monitor: str = "val/acc"):
        self.monitor, self.pruned = monitor, False
        PruningCallback.last = self

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or PruningCallback.trial is None:
            return
        PruningCallback.trial.report(float(value), step=trainer.current_epoch)
        if PruningCallback.trial.should_prune():
            self.pruned, trainer.should_stop = True, True


def suggest(trial, params: Mapping) -> dict:
    """One trial's overrides from the search space (``type``: float, int or categorical)."""
    values = {}
    for key, spec in params.items():
        kind = spec.get("type", "float")
        if kind == "float":
            values[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec.get("log", False))
        elif kind == "int":
            values[key] = trial.suggest_int(key, spec["low"], spec["high"], log=spec.get("log", False))
        elif kind == "categorical":
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
        else:
            raise ConfigError(f"optuna.params.{key}.type={kind!r}; accepted: float, int, categorical")
    return values


def _storage(url: str | None) -> str | None:
    if url and url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return url


def run_study(cfg: DictConfig, base_overrides: list[str]):
    import optuna

    options = cfg.get("optuna")
    if options is None:
        raise ConfigError("no search space: add hparams_search=optuna (conf/hparams_search/optuna.yaml) or your own")
    study_dir = Path(cfg.paths.log_dir) / "optuna" / options.study_name
    study = optuna.create_study(
        study_name=options.study_name, storage=_storage(options.storage), load_if_exists=True,
        direction=options.direction, pruner=optuna.pruners.MedianPruner(**options.pruner),
    )
    # seeded by the study's length: a continued study gets new suggestions, not the first ones again
    study.sampler = optuna.samplers.TPESampler(seed=options.sampler_seed + len(study.trials))
    finished = [t for t in study.trials if t.state.is_finished()]
    remaining = max(0, options.n_trials - len(finished))
    log.info("Study %s: %d finished trials, running %d more", options.study_name, len(finished), remaining)
    base = [o for o in base_overrides if not o.lstrip("+~").startswith("optuna")]  # the search's own settings

    def objective(trial) -> float:
        values = suggest(trial, options.params)
        output_dir = study_dir / f"trial{trial.number}"
        overrides = [*base, *(f"{k}={v}" for k, v in values.items()), f"paths.output_dir={output_dir}", "resume=false"]
        trial_cfg = hydra.compose(config_name="train", overrides=overrides)
        with open_dict(trial_cfg):
            trial_cfg.callbacks = trial_cfg.get("callbacks") or {}
            trial_cfg.callbacks.optuna_pruning = {"_target_": f"{__name__}.PruningCallback", "monitor": options.metric}
        trial.set_user_attr("output_dir", str(output_dir))
        PruningCallback.trial = trial
        try:
            summary = train(trial_cfg)
        finally:
            PruningCallback.trial = None
        if PruningCallback.last.pruned:
            raise optuna.TrialPruned()
        value = summary.get(options.metric)
        if value is None:
            raise ConfigError(f"trial {trial.number} logged no {options.metric} (optuna.metric)")
        return value

    # a trial whose loss turns NaN (e.g. too high a learning rate) is marked failed; the study goes on
    study.optimize(objective, n_trials=remaining, catch=(NonFiniteLossError,))
    return study, study_dir


def report(study, study_dir: Path) -> dict:
    states = [t.state for t in study.trials]
    best = study.best_trial
    result = {
        "study": study.study_name, "best_trial": best.number, "best_value": best.value, "best_params": best.params,
        "best_dir": best.user_attrs.get("output_dir"),
        "trials": {state.name.lower(): states.count(state) for state in set(states)},
    }
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "best.json").write_text(json.dumps(result, indent=2) + "\n")
    summaries = read_summaries([study_dir])
    if summaries:
        write_report(summaries, study_dir, "trials", metric="val/acc")
    frame = study.trials_dataframe(attrs=("number", "value", "params", "state"))
    log.info("Trials:\n%s", frame.to_string(index=False))
    print(f"Best trial: #{best.number} {study.direction.name.lower()} value {best.value:.4f} with "
          f"{', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in best.params.items())} "
          f"({result['best_dir']}); {result['trials']}; table: {study_dir / 'trials.md'}")
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    overrides = list(HydraConfig.get().overrides.task)
    study, study_dir = run_study(cfg, overrides)
    return report(study, study_dir)["best_value"]


if __name__ == "__main__":
    main()
