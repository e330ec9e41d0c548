"""Experiments cannot drift: every experiment of a sweep composes from one base, so the comparison's data, split,
schedule, batch size and optimizer agree unless an experiment declares the difference (finding 5)."""

import functools

import pytest
import yaml
from hydra import compose, initialize_config_dir

from kd_lightning.runs.identity import _collect

from conftest import CONF

SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
COMPARED = ("data", "trainer", "optimizer", "scheduler", "seed")


def sweep_experiments(sweep: str) -> list[str]:
    params = yaml.safe_load((CONF / "sweep" / f"{sweep}.yaml").read_text())["hydra"]["sweeper"]["params"]
    return [e.strip() for e in str(params["+experiment"]).split(",")]


def flat(node, prefix="") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


@functools.lru_cache(maxsize=None)
def compared_values(experiment: str) -> tuple[dict, list[str]]:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=[f"+experiment={experiment}"])
    values = {}
    for key in COMPARED:  # what cannot change a result (identity_exclude: output folders, workers) is not compared
        values.update(flat({key: _collect(cfg.get(key), key, list(cfg.identity_exclude))}))
    return values, list(cfg.differs_from_base)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_experiment_of_a_sweep_agrees_on_data_split_schedule_and_optimizer(sweep):
    experiments = sweep_experiments(sweep)
    assert len(experiments) >= 5
    reference, _ = compared_values(experiments[0])
    for experiment in experiments[1:]:
        values, declared = compared_values(experiment)
        differing = {k for k in reference.keys() | values.keys() if reference.get(k) != values.get(k)}
        undeclared = {k for k in differing if not any(k == d or k.startswith(d + ".") for d in declared)}
        assert not undeclared, f"{experiment} differs from {experiments[0]} in {sorted(undeclared)} without declaring it"


def test_every_cifar10_experiment_holds_out_the_same_1000_images():
    """Finding 5: at, dist, dkd, fsp, pkt, rkd, sp and standardized_kd trained on 45,000 images, the others on 49,000."""
    for path in sorted((CONF / "experiment").glob("cifar10_*.yaml")):
        values, declared = compared_values(path.stem)
        assert "data.val_size" not in declared
        assert values["data.val_size"] == 1000, path.stem
        assert values["trainer.max_epochs"] == 10 and values["data.batch_size"] == 128, path.stem


def test_a_declared_difference_is_the_only_one():
    values, declared = compared_values("mnist_data_free")
    base, _ = compared_values("mnist_ce")
    differing = {k for k in base.keys() | values.keys() if base.get(k) != values.get(k)}
    assert differing and all(any(k == d or k.startswith(d + ".") for d in declared) for k in differing)


def test_experiments_compose_from_a_base():
    """Directly, or through the experiment they extend (cifar100_<method> extends cifar100_ce)."""
    experiments = {p.stem: yaml.safe_load(p.read_text())["defaults"] for p in (CONF / "experiment").glob("*.yaml")}

    def has_base(name: str) -> bool:
        defaults = [d for d in experiments[name] if isinstance(d, str)]
        return any(d.startswith("/experiment/base/") for d in defaults) or any(has_base(d) for d in defaults
                                                                              if d in experiments)

    for name, defaults in sorted(experiments.items()):
        assert has_base(name), name
        assert not any("override /data" in str(d) for d in defaults), f"{name}: the data belongs to the base"
