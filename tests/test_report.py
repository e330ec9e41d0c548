"""Result tables, their CSV and figures, the config facts they group by, the sweep's end-of-run report."""

import json
from types import SimpleNamespace

import pandas as pd
import pytest
from omegaconf import OmegaConf

from kd_lightning.report import SummaryTable, markdown_table, run_config, table_rows
from kd_lightning.report.__main__ import main as report_main
from kd_lightning.report.curves import read_scalars
from kd_lightning.report.facts import is_ce_only
from kd_lightning.report.files import write_report
from kd_lightning.report.table import natural_key


def run(name, seed, acc, overrides="", status="done", config=None, epochs=None):
    summary = {"run_name": name, "seed": seed, "overrides": overrides, "status": status, "params": 1000,
               "train_time_s": 10.0 + seed, "test/acc": acc}
    if config is not None:
        summary["config"] = config
    if epochs is not None:
        summary["epochs"] = epochs
    return summary


def cfg(method="none", epochs=2, teacher=None, **terms):
    return {"dataset": "cifar10", "model": "light_nn", "teacher": teacher, "method": method,
            "terms": {"ce": {"weight": 1.0}, **terms}, "optimizer": "adam", "lr": 0.001, "epochs": epochs}


def rows_of(table):
    lines = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| run ")]
    return {(line.split("|")[1].strip(), line.split("|")[2].strip()): line for line in lines}


def test_rows_group_seeds_and_compare_with_the_baseline_of_the_same_overrides():
    table = markdown_table(
        [run("ce", 0, 0.70), run("ce", 1, 0.72), run("kd", 0, 0.71), run("kd", 1, 0.75), run("kd", 0, 0.60, "lr=1")],
        baseline="ce",
    )
    rows = rows_of(table)
    assert "| 71.00 ± 1.41 | baseline | s0: 70.00, s1: 72.00 | 1,000 | 10.5 |" in rows["ce", "–"]
    assert "| 73.00 ± 2.83 | +2.00 |" in rows["kd", "–"]
    # lr=1 is a different setting: no CE run has it, so no Δ (the old table said -11.00)
    assert "| 60.00 | – |" in rows["kd", "lr=1"]  # one seed: no spread to show
    assert "No Δ for kd lr=1: no CE-only run with lr=1." in table
    assert table.startswith("Settings differ between rows (lr: None, 1)")


def test_failed_runs_are_listed_with_their_error():
    failed = {**run("kd", 1, None, status="failed"), "error": "no teacher checkpoint"}
    table = markdown_table([run("kd", 0, 0.7), failed])
    assert "s0: 70.00, s1: FAILED" in table and "FAILED kd seed 1: no teacher checkpoint" in table


def test_delta_is_against_the_ce_run_with_the_same_epochs():
    kd = {"kd": {"weight": 0.5, "temperature": 4.0}}
    summaries = [
        run("ce", 0, 0.80, config=cfg(epochs=2)), run("ce", 1, 0.82, config=cfg(epochs=2)),
        run("ce", 0, 0.60, "trainer.max_epochs=1", config=cfg(epochs=1)),
        run("kd", 0, 0.65, "trainer.max_epochs=1", config=cfg("kd", epochs=1, teacher="deep_nn", **kd)),
        run("kd", 0, 0.90, "trainer.max_epochs=5", config=cfg("kd", epochs=5, teacher="deep_nn", **kd)),
    ]
    table = markdown_table(summaries)
    rows = rows_of(table)
    assert "| 65.00 | +5.00 |" in rows["kd", "trainer.max_epochs=1"]  # 65 − 60, not 65 − 81
    assert "| 90.00 | – |" in rows["kd", "trainer.max_epochs=5"]
    assert "No Δ for kd trainer.max_epochs=5: no CE-only run with epochs=5." in table
    assert table.startswith("Settings differ between rows (epochs: 2, 1, 5)")
    assert "Δ vs ce (pp)" in table


def test_delta_pairs_seeds_and_refuses_seeds_the_baseline_lacks():
    summaries = [run("ce", s, a, config=cfg()) for s, a in [(0, 0.70), (1, 0.80), (2, 0.90)]]
    summaries += [run("kd", 1, 0.83, config=cfg("kd", teacher="t", kd={"weight": 1.0})),
                  run("kd", 2, 0.93, config=cfg("kd", teacher="t", kd={"weight": 1.0})),
                  run("kd", 7, 0.50, "seed7", config=cfg("kd", teacher="t", kd={"weight": 2.0}))]
    rows = {(r["run"], r["overrides"]): r for r in table_rows(summaries)}
    assert rows["kd", ""]["delta_pp"] == pytest.approx(100 * (0.88 - 0.85))  # against CE seeds 1, 2 only
    assert rows["kd", "seed7"]["delta_pp"] is None
    assert rows["kd", "seed7"]["no_delta_because"] == "seeds [7] but CE-only has [0, 1, 2]"
    assert markdown_table(summaries).startswith("Settings: dataset=cifar10, model=light_nn, optimizer=adam")


def test_swept_numbers_sort_as_numbers():
    temps = ["10", "2", "0.5", "1e-1"]
    summaries = [run("kd", 0, 0.7, f"distill.terms.kd.temperature={t}") for t in temps]
    order = [r["overrides"].split("=")[1] for r in table_rows(summaries)]
    assert order == ["1e-1", "0.5", "2", "10"]
    assert natural_key("T=2") < natural_key("T=10")


def test_run_config_of_composed_experiments(make_config):
    kd = run_config(make_config("+experiment=mnist_kd"))
    assert kd["terms"] == {"ce": {"weight": 0.7}, "kd": {"weight": 0.3, "temperature": 5.0}}
    assert (kd["dataset"], kd["epochs"], kd["lr"], kd["batch_size"]) == ("mnist", 1, 0.001, 64)
    assert kd["teacher"] == "MLP(in_features=784, hidden=[512, 256], dropout=0.5)" and not is_ce_only(kd)
    ce = run_config(make_config("+experiment=mnist_ce"))
    assert ce["model"] == kd["model"] == "MLP(in_features=784, hidden=[128])" and is_ce_only(ce)


def write_curve(folder, values):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for step, value in values:
            writer.add_scalar("val/acc", value, step)


def sweep_summaries(tmp_path):
    summaries = []
    for t, accs in [("2", (0.70, 0.72)), ("10", (0.60, 0.64))]:
        for seed, acc in enumerate(accs):
            folder = tmp_path / f"kd_T{t}_s{seed}"
            write_curve(folder, [(10, acc - 0.1), (20, acc)])
            summaries.append({**run("kd", seed, acc, f"distill.terms.kd.temperature={t}",
                                    config=cfg("kd", teacher="t", kd={"weight": 0.5, "temperature": float(t)})),
                              "_dir": str(folder)})
    summaries += [{**run("ce", s, 0.65, config=cfg()), "_dir": str(tmp_path / "missing")} for s in (0, 1)]
    return summaries


def test_write_report_writes_markdown_csv_and_figures(tmp_path):
    written = write_report(sweep_summaries(tmp_path), tmp_path / "out", "t")
    names = sorted(p.name for p in written)
    assert names == ["t.csv", "t.md", "t_accuracy.png", "t_val_acc.png", "t_vs_terms.kd.temperature.png"]
    frame = pd.read_csv(tmp_path / "out" / "t.csv")
    temperature = "distill.terms.kd.temperature"
    assert list(frame["overrides"].fillna("")) == [f"{temperature}=2", f"{temperature}=10", ""]
    assert frame["delta_pp"].round(6).tolist()[:2] == [pytest.approx(6.0), pytest.approx(-3.0)]
    assert frame["test/acc mean"].tolist() == pytest.approx([0.71, 0.62, 0.65])
    assert all(p.stat().st_size > 5000 for p in written if p.suffix == ".png")


def test_read_scalars_from_tensorboard_and_csv(tmp_path):
    write_curve(tmp_path / "tb", [(5, 0.5), (9, 0.75)])
    assert read_scalars(tmp_path / "tb").values.tolist() == [[5, 0.5], [9, 0.75]]
    (tmp_path / "csv" / "version_0").mkdir(parents=True)
    (tmp_path / "csv" / "version_0" / "metrics.csv").write_text("epoch,step,val/acc,train/loss\n0,3,,1.0\n0,4,0.25,\n")
    assert read_scalars(tmp_path / "csv").values.tolist() == [[4, 0.25]]
    assert read_scalars(tmp_path / "csv", "nope").empty


def test_cli_reads_run_folders(tmp_path, capsys):
    for summary in sweep_summaries(tmp_path):
        folder = tmp_path / "runs" / summary["run_name"] / summary["overrides"].replace("=", "_") / str(summary["seed"])
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "_dir"}))
    report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--no-plots"])
    assert "| kd | distill.terms.kd.temperature=10 | 62.00 ± 2.83 | -3.00 |" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["table.csv", "table.md"]


def test_sweep_callback_writes_table_as_jobs_end_and_figures_at_the_end(tmp_path):
    callback = SummaryTable()
    callback.on_multirun_start(OmegaConf.create({"paths": {"log_dir": str(tmp_path)}}))
    for i, summary in enumerate(sweep_summaries(tmp_path)):
        job_dir = tmp_path / summary["_dir"]  # its curves are there (the CE runs' folders have none)
        job_dir.mkdir(exist_ok=True)
        (job_dir / "summary.json").write_text(json.dumps(summary))
        callback.on_job_end(None, SimpleNamespace(hydra_cfg=OmegaConf.create(
            {"hydra": {"runtime": {"output_dir": str(job_dir)}}})))
        if i == 0:
            assert sorted(p.suffix for p in (tmp_path / "tables").iterdir()) == [".csv", ".md"]
    callback.on_multirun_end(OmegaConf.create({"paths": {"log_dir": str(tmp_path)}}))
    assert sorted(p.suffix for p in (tmp_path / "tables").iterdir()) == [".csv", ".md", ".png", ".png", ".png"]


def test_runs_alike_but_for_their_config_are_labelled_by_it():
    trials = [run("kd", 0, acc, config=cfg("kd", teacher="t", kd={"weight": w, "temperature": t}))
              for acc, w, t in [(0.9, 0.5, 2.0), (0.8, 0.25, 4.0)]]
    labels = [row["distinct_overrides"] for row in table_rows(trials)]
    assert labels == ["kd.weight=0.5, kd.temperature=2", "kd.weight=0.25, kd.temperature=4"]
