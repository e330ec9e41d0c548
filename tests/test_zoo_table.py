"""The CIFAR-10 zoo table (sweep=cifar10_zoo_table): recipes shortened by one override keep their schedule's shape,
the sweep composes every job, its students all find the one seed-0 teacher that the sweep trains first."""

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from kd_lightning.errors import ConfigError
from kd_lightning.recipe import scale_schedule
from kd_lightning.runs.identity import run_folder
from kd_lightning.shared_gpu import job_waves
from kd_lightning.runs.teachers import teacher_runs
from kd_lightning.train import _scheduler

from conftest import CONF

TABLE = [e.strip() for e in yaml.safe_load((CONF / "sweep" / "cifar10_zoo_table.yaml").read_text())
         ["hydra"]["sweeper"]["params"]["+experiment"].split(",")]


def test_scale_schedule_rounds_each_milestone_half_up():
    assert scale_schedule([150, 180, 210], 240, 240) == [150, 180, 210]  # the published length: unchanged
    assert scale_schedule([150, 180, 210], 30, 240) == [19, 23, 26]      # 18.75, 22.5, 26.25
    assert scale_schedule([60, 120, 160], 20, 200) == [6, 12, 16]
    assert scale_schedule(15320, 30, 240) == 1915                        # DKD's warm-up: exactly 1/8
    assert scale_schedule([32000, 48000], 6400, 64000) == [3200, 4800]
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ConfigError, match="whole number >= 1"):
            scale_schedule([150], bad, 240)


def learning_rates(cfg, epochs: list[int]) -> dict[int, float]:
    import torch

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.optimizer.lr)
    scheduler = _scheduler(cfg.scheduler)(optimizer)["scheduler"]
    rates = {}
    for epoch in range(max(epochs) + 1):
        if epoch in epochs:
            rates[epoch] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    return rates


def test_recipe_epochs_shortens_the_crd_schedule_and_dkds_warmup(make_config):
    cfg = make_config("+experiment=cifar10/dkd", "recipe.epochs=30", fast=False)
    assert cfg.trainer.max_epochs == 30 and list(cfg.scheduler.milestones) == [19, 23, 26]
    assert cfg.distill.terms.dkd.warmup_steps == 1915  # 20 of 240 epochs → 2.5 of 30, at 766 steps an epoch
    assert learning_rates(cfg, [0, 18, 19, 22, 23, 25, 26, 29]) == pytest.approx(
        {0: 0.05, 18: 0.05, 19: 5e-3, 22: 5e-3, 23: 5e-4, 25: 5e-4, 26: 5e-5, 29: 5e-5})
    published = make_config("+experiment=cifar10/dkd", fast=False)
    assert published.trainer.max_epochs == 240 and list(published.scheduler.milestones) == [150, 180, 210]
    assert published.distill.terms.dkd.warmup_steps == 15320


def test_recipe_length_scales_the_other_recipes_too(make_config):
    wrn = make_config("data=cifar10", "model=wrn_16_2", "recipe=at_wrn", "recipe.epochs=20", fast=False)
    assert (wrn.trainer.max_epochs, list(wrn.scheduler.milestones)) == (20, [6, 12, 16])
    he = make_config("+experiment=cifar10/he_resnet", "recipe.steps=6400", fast=False)
    assert (he.trainer.max_steps, list(he.scheduler.milestones)) == (6400, [3200, 4800])


def test_a_multiruns_recipe_length_composes_before_the_jobs_pick_their_recipe():
    """Hydra composes a multirun's command line once without the swept experiments (no recipe yet): recipe.epochs=30
    failed there ("Key 'recipe' is not in struct"), so the README's shortened table never started."""
    from kd_lightning.validate import validate

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        base = compose("train", overrides=["sweep=cifar10_zoo_table", "recipe.epochs=30"])
        assert base.recipe.epochs == 30
        alone = compose("train", overrides=["+experiment=cifar10_kd", "recipe.epochs=30"])  # no recipe uses it
        stepped = compose("train", overrides=["+experiment=cifar10/he_resnet", "recipe.steps=640"])
    with pytest.raises(ConfigError, match=r"recipe.epochs=30: no recipe is selected.*trainer.max_epochs is 10.* at_wrn, crd"):
        validate(alone)
    validate(stepped)


def test_a_students_sweep_takes_another_teacher_with_double_plus(tmp_path):
    """The README's teacher.checkpoint in a multirun over student experiments: Hydra composes the command line once
    without them, where a plain override of the teacher they add fails; ++ composes, and each job gets the path."""
    from hydra.errors import ConfigCompositionException

    checkpoint = str(tmp_path / "teacher.ckpt")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        with pytest.raises(ConfigCompositionException, match="Could not override 'teacher.checkpoint'"):
            compose("train", overrides=[f"teacher.checkpoint={checkpoint}"])
        compose("train", overrides=[f"++teacher.checkpoint={checkpoint}"])
        for experiment in ("cifar10/kd", "cifar10/dkd"):
            job = compose("train", overrides=[f"+experiment={experiment}", f"++teacher.checkpoint={checkpoint}"])
            assert job.teacher.checkpoint == checkpoint and job.teacher.run.seed == 0


def test_a_trainer_length_apart_from_the_recipe_warns_that_the_milestones_stay(make_config, caplog):
    """trainer.max_epochs=30 under recipe=crd trains 30 epochs at a constant rate (milestones 150/180/210)."""
    from kd_lightning.validate import validate

    cfg = make_config("+experiment=cifar10/kd", "trainer.max_epochs=30", fast=False)
    validate(cfg)
    assert "trainer.max_epochs=30 is set apart from the recipe's length (recipe.epochs=240)" in caplog.text
    assert "recipe.epochs=30 would scale them" in caplog.text
    caplog.clear()
    validate(make_config("+experiment=cifar10/kd", "recipe.epochs=30", fast=False))
    assert "set apart" not in caplog.text


def table_jobs(tmp_path, *overrides):
    jobs = []
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        for experiment in TABLE:
            task = [f"+experiment={experiment}", *overrides, f"paths.log_dir={tmp_path}"]
            jobs.append(compose("train", overrides=task, return_hydra_config=True))
        folders = [run_folder(cfg)[0].resolve() for cfg in jobs]
        teachers = [[run.folder.resolve() for run in teacher_runs(cfg)] for cfg in jobs]
    return jobs, folders, teachers


def test_the_table_sweep_composes_every_job_and_trains_the_teacher_first(tmp_path):
    """17 jobs composed as the sweep composes them (~1 s each: the one slow test of this file)."""
    jobs, folders, teachers = table_jobs(tmp_path, "recipe.epochs=30")
    methods = [cfg.run_name.removeprefix("cifar10_zoo_") for cfg in jobs]
    assert methods == ["teacher_resnet56", *["ce"] * 3, *["kd"] * 3, "fitnets", "at", "sp", "pkt", "rkd", "crd", "dkd",
                       *["dist"] * 3]
    seeds = [cfg.seed for cfg in jobs]
    assert seeds[1:7] == [0, 1, 2, 0, 1, 2] and seeds[-3:] == [0, 1, 2] and set(seeds[7:-3]) == {0}
    assert [cfg.data.seed for cfg in jobs] == seeds  # each seed its own data order too
    assert len(set(folders)) == len(TABLE)  # every job its own run
    for cfg in jobs:
        assert (cfg.data.name, cfg.data.num_classes, cfg.data.batch_size, cfg.trainer.max_epochs) == ("cifar10", 10, 64, 30)
        assert list(cfg.scheduler.milestones) == [19, 23, 26] and cfg.optimizer.lr == 0.05
    assert jobs[0].model.depth == 56 and all(cfg.model.depth == 20 for cfg in jobs[1:])
    # every student, whatever its seed, distils from the teacher job's run (seed 0, the same 30 epochs)
    assert teachers[0] == [] and all(t == [] for t in teachers[1:4])
    assert all(t == [folders[0]] for t in teachers[4:])
    assert job_waves(folders, teachers) == [[0, 1, 2, 3], list(range(4, len(TABLE)))]
    for cfg in jobs[4:]:  # every student's loss builds: CE plus its method's term(s)
        terms = instantiate(cfg.distill.terms)
        assert "ce" in terms and len(terms) >= 2, cfg.run_name


def test_cifar10_crd_draws_uniform_negatives_and_cifar100_the_loaders_other_classes(make_config):
    """Ten classes: other-class negatives leave out a tenth of the candidates (87.76 % against 89.84 % uniform,
    H200, 30 epochs); RepDistiller's CIFAR-100 setting stays as published."""
    cifar10 = make_config("+experiment=cifar10/crd", fast=False)
    assert cifar10.data.num_classes == 10 and cifar10.distill.terms.crd.negatives == "uniform"
    assert instantiate(cifar10.distill.terms.crd).negatives == "uniform"
    assert make_config("+experiment=cifar100/crd", fast=False).distill.terms.crd.negatives == "other_class"
