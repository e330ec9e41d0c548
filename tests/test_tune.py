"""The Optuna driver: trials are train() runs, the study persists in SQLite, pruning stops a trial."""

from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import CONF, FAST

optuna = pytest.importorskip("optuna")

from kd_lightning.errors import ConfigError  # noqa: E402
from kd_lightning.tune import PruningCallback, report, run_study, suggest  # noqa: E402


def study_overrides(tmp_path, n_trials):
    return [*FAST, "+experiment=mnist_ce", "hparams_search=optuna", f"paths.log_dir={tmp_path}",
            f"optuna.n_trials={n_trials}", "~optuna.params",
            "+optuna.params={optimizer.lr: {type: float, low: 1e-4, high: 1e-2, log: true}}"]


def test_study_runs_trials_names_the_best_and_continues_from_sqlite(tmp_path):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        overrides = study_overrides(tmp_path, 2)
        study, study_dir = run_study(compose(config_name="train", overrides=overrides), overrides)
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
        result = report(study, study_dir)
        assert result["best_value"] == max(t.value for t in study.trials)
        assert (study_dir / f"trial{result['best_trial']}" / "summary.json").is_file()
        assert (study_dir / "best.json").is_file() and (study_dir / "trials.md").is_file()
        assert (tmp_path / "optuna" / "optuna.db").is_file()
        # the same command with a larger budget continues the stored study: one more trial, new suggestion
        overrides = study_overrides(tmp_path, 3)
        study, _ = run_study(compose(config_name="train", overrides=overrides), overrides)
    lrs = [t.params["optimizer.lr"] for t in study.trials]
    assert len(lrs) == 3 and len(set(lrs)) == 3


class FakeTrial:
    def __init__(self, prune):
        self.reports, self.prune = [], prune

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return self.prune


@pytest.mark.parametrize("prune", [False, True])
def test_pruning_callback_reports_each_epoch_and_stops_a_pruned_trial(prune):
    callback = PruningCallback("val/acc")
    PruningCallback.trial = trial = FakeTrial(prune)
    trainer = SimpleNamespace(callback_metrics={"val/acc": torch.tensor(0.75)}, sanity_checking=False,
                              current_epoch=2, should_stop=False)
    try:
        callback.on_validation_end(trainer, None)
        trainer.sanity_checking = True
        callback.on_validation_end(trainer, None)  # the sanity check reports nothing
    finally:
        PruningCallback.trial = None
    assert trial.reports == [(2, 0.75)]
    assert trainer.should_stop is prune and callback.pruned is prune


def test_suggest_kinds_and_errors():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    values = suggest(trial, {"a": {"type": "int", "low": 1, "high": 3}, "b": {"type": "categorical", "choices": ["x"]}})
    assert values["b"] == "x" and values["a"] in (1, 2, 3)
    with pytest.raises(ConfigError, match="type='grid'; accepted: float, int, categorical"):
        suggest(study.ask(), {"c": {"type": "grid"}})
