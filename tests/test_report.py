"""Result tables from run summaries."""

from kd_lightning.report import markdown_table


def run(name, seed, acc, overrides="", status="done"):
    return {"run_name": name, "seed": seed, "overrides": overrides, "status": status, "params": 1000,
            "train_time_s": 10.0 + seed, "test/acc": acc}


def test_rows_group_seeds_and_compare_with_the_baseline():
    table = markdown_table(
        [run("ce", 0, 0.70), run("ce", 1, 0.72), run("kd", 0, 0.71), run("kd", 1, 0.75), run("kd", 0, 0.60, "lr=1")],
        baseline="ce",
    )
    rows = {line.split("|")[1].strip() + line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert "| 71.00 ± 1.41 | +0.00 | s0: 70.00, s1: 72.00 | 1,000 | 10.5 |" in rows["ce–"]
    assert "| 73.00 ± 2.83 | +2.00 |" in rows["kd–"]
    assert "| 60.00 ± 0.00 | -11.00 |" in rows["kdlr=1"]


def test_failed_runs_are_listed_with_their_error():
    failed = {**run("kd", 1, None, status="failed"), "error": "no teacher checkpoint"}
    table = markdown_table([run("kd", 0, 0.7), failed])
    assert "s0: 70.00, s1: FAILED" in table and "FAILED kd seed 1: no teacher checkpoint" in table
