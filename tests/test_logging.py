"""What a run logs: HPARAMS against val/test accuracy, train/lr, other loggers, debug options, the LR finder."""

import importlib.util

import pytest
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from kd_lightning.errors import ConfigError
from kd_lightning.report.curves import read_scalars
from kd_lightning.report.loggers import instantiate_loggers
from kd_lightning.train import train


def hparams_plugin(run_dir):
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")
    return accumulator, {tag: plugin_data_pb2.HParamsPluginData.FromString(data) for tag, data in content.items()}


def test_hparams_tab_gets_the_settings_against_val_and_test_accuracy(make_config, teacher_state, tmp_path):
    cfg = make_config("+experiment=mnist_kd")
    teacher = f"teacher.checkpoint={teacher_state(instantiate(cfg.teacher.net))}"
    summary = train(make_config("+experiment=mnist_kd", "distill.terms.kd.temperature=3", teacher))
    accumulator, plugin = hparams_plugin(tmp_path / "run")
    assert set(plugin) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}  # no per-run definition
    session = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert session["kd.temperature"].number_value == 3.0
    assert session["kd.weight"].number_value == pytest.approx(0.3)
    assert session["ce.weight"].number_value == pytest.approx(0.7)
    assert (session["seed"].number_value, session["lr"].number_value, session["epochs"].number_value) == (0, 1e-3, 1)
    assert session["teacher"].string_value.startswith("MLP(") and "run" not in session
    tags = accumulator.Tags()["scalars"]
    assert "train/lr" in tags and not any(t.startswith("lr-") for t in tags)
    assert [e.value for e in accumulator.Scalars("val/acc")][-1] == pytest.approx(summary["val/acc"], abs=1e-6)

    # a second run (a CE baseline): the one definition in <log_dir>/hparams covers both, differing columns first
    train(make_config("+experiment=mnist_ce", f"paths.output_dir={tmp_path}/ce"))
    _, plugin = hparams_plugin(tmp_path / "hparams")
    experiment = plugin["_hparams_/experiment"].experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/acc", "test/acc"]
    infos = [(h.name, h.differs) for h in experiment.hparam_infos]
    assert infos[:5] == [("method", True), ("teacher", True), ("ce.weight", True), ("kd.weight", True),
                         ("kd.temperature", True)]  # the five TensorBoard shows at first
    assert ("model", False) in infos and ("lr", False) in infos and ("seed", False) in infos


def test_csv_logger_writes_curves_the_report_reads(make_config, tmp_path):
    train(make_config("+experiment=mnist_ce", "logger=many", "trainer.max_epochs=2"))
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()
    curve = read_scalars(tmp_path / "run" / "csv")
    assert len(curve) == 2 and curve["step"].tolist() == [3, 7]  # 4 training batches per epoch, steps from 0


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_missing_logger_package_is_a_clear_error(make_config):
    with pytest.raises(ConfigError, match=r"logger.wandb \(WandbLogger\) needs the wandb package.*\[wandb\]"):
        instantiate_loggers(make_config("logger=wandb").logger)


@pytest.mark.parametrize("option", ["fdr", "limit", "overfit", "profiler"])
def test_debug_options_compose_into_short_cpu_runs(make_config, option):
    cfg = make_config("+experiment=mnist_ce", f"+debug={option}", fast=False)
    assert cfg.trainer.accelerator == "cpu" and cfg.resume is False
    expected = {"fdr": ("fast_dev_run", True), "limit": ("limit_train_batches", 5),
                "overfit": ("overfit_batches", 3), "profiler": ("max_epochs", 1)}[option]
    assert cfg.trainer[expected[0]] == expected[1]


def test_lr_find_prints_a_suggestion_and_plots(make_config, tmp_path, capsys):
    result = train(make_config("+experiment=mnist_ce", "+tune=lr_find", "lr_find.num_training=20",
                               "trainer.limit_train_batches=20"))
    assert 1e-6 <= result["lr_suggestion"] <= 1.0
    assert (tmp_path / "run" / "lr_find.png").stat().st_size > 5000
    assert "Suggested learning rate" in capsys.readouterr().out
    assert not (tmp_path / "run" / "summary.json").exists()  # nothing was trained
