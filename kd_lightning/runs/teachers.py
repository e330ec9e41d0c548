"""A student's teacher, found by the teacher's own identity.

``teacher.run`` names the teacher's experiment, the overrides that make that teacher (``teacher.run.overrides``)
and which of the student's command-line overrides the teacher shares (``teacher.run.inherit``: by default its data,
trainer, speed profile and output options, never its loss, model or optimizer). The teacher's config is composed
exactly as ``python -m kd_lightning.train +experiment=<experiment> <those overrides> seed=<seed>`` would compose it,
so its folder (and hash) is the one that command trains into: a student sweep over its own options
(``distill.terms.kd.temperature=2,5,10``) finds the one teacher, and the missing-teacher message prints that command.
``teacher.checkpoint=PATH`` bypasses the lookup.
"""

from __future__ import annotations

import functools
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from kd_lightning.errors import MissingTeacherError
from kd_lightning.runs.identity import config_hash, file_checksum, identity, override_key, run_folder, task_overrides
from kd_lightning.runs.store import read_summary

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
NEVER_INHERITED = ("experiment", "seed", "paths.output_dir", "sweep", "hparams_search", "retrain", "teacher")


@dataclass
class TeacherRun:
    """One teacher a student needs: its member name (``first``/``second`` for a pair, ``teacher`` alone)."""

    name: str
    overrides: list[str]
    config: DictConfig
    folder: Path
    digest: str

    @property
    def command(self) -> str:
        return "python -m kd_lightning.train " + shlex.join(self.overrides)

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"

    def status(self) -> str | None:
        summary = read_summary(self.folder)
        return summary.get("status") if summary else None


def _member_seeds(teacher: DictConfig, seed: int) -> dict[str, int]:
    """Member name → seed (``load_teachers``' members: name → seed offset, modulo ``num_seeds``); a single teacher
    has the student's seed unless ``teacher.run.seed`` fixes it."""
    members = teacher.get("members")
    if not members:
        fixed = (teacher.get("run") or {}).get("seed")  # teacher.run.seed: one teacher for every student seed
        return {"teacher": int(seed if fixed is None else fixed)}
    num_seeds = teacher.get("num_seeds")
    return {str(name): (int(seed) + int(offset)) % num_seeds if num_seeds else int(seed) + int(offset)
            for name, offset in members.items()}


def _inherited(overrides: list[str], inherit: list[str]) -> list[str]:
    kept = []
    for override in overrides:
        key = override_key(override)
        if any(key == n or key.startswith(n + ".") for n in NEVER_INHERITED):
            continue
        if any(key == i or key.startswith(i + ".") for i in inherit):
            kept.append(override)
    return kept


@functools.lru_cache(maxsize=32)
def _compose(overrides: tuple[str, ...]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def teacher_overrides(cfg: DictConfig, seed: int, student_overrides: list[str] | None = None) -> list[str]:
    run = cfg.teacher.run
    student = task_overrides(cfg) if student_overrides is None else student_overrides
    return [f"+experiment={run.experiment}", *_inherited(student, list(run.get("inherit") or [])),
            *[str(o) for o in (run.get("overrides") or [])], f"seed={seed}"]


def teacher_runs(cfg: DictConfig, student_overrides: list[str] | None = None) -> list[TeacherRun]:
    """The teacher runs ``cfg``'s student needs (empty when ``teacher.checkpoint`` is given or there is no teacher)."""
    teacher = cfg.get("teacher")
    if not teacher or teacher.get("checkpoint") is not None or teacher.get("run") is None:
        return []
    runs = []
    for name, seed in _member_seeds(teacher, cfg.seed).items():
        overrides = teacher_overrides(cfg, seed, student_overrides)
        config = OmegaConf.create(OmegaConf.to_container(_compose(tuple(overrides)), resolve=False))
        folder, digest = run_folder(config)
        runs.append(TeacherRun(name, overrides, config, folder, digest))
    return runs


def teacher_identity(cfg: DictConfig) -> dict:
    """What of the teacher enters the student's identity: each teacher run's hash, or the given checkpoint's bytes."""
    teacher = cfg.teacher
    net = OmegaConf.to_container(teacher.net, resolve=True) if "net" in teacher else None
    checkpoint = teacher.get("checkpoint")
    if checkpoint is not None:
        paths = OmegaConf.to_container(checkpoint, resolve=True) if not isinstance(checkpoint, str) else [checkpoint]
        paths = list(paths.values()) if isinstance(paths, dict) else paths
        members = _member_seeds(teacher, cfg.seed)
        files = sorted({str(p).replace("{seed}", str(s)) for p in paths for s in members.values()})
        return {"net": net, "checkpoint": {f: file_checksum(f) or "missing" for f in files}}
    return {"net": net, "runs": {run.name: run.digest for run in teacher_runs(cfg)}}


def locate_teachers(cfg: DictConfig, student_overrides: list[str] | None = None, train_missing=None) -> list[dict]:
    """Sets ``cfg.teacher.checkpoint`` to the finished teacher runs' ``last.ckpt`` (one path, or member → path).

    A teacher that is missing or unfinished raises :class:`MissingTeacherError` with the command that trains
    exactly it, unless ``teacher.train_if_missing`` is true: then ``train_missing(config, overrides)`` trains it
    first, in this process. Returns what the student's summary records about each teacher.
    """
    runs = teacher_runs(cfg, student_overrides)
    records = []
    for run in runs:
        if run.status() != "done" or not run.checkpoint.is_file():
            if cfg.teacher.get("train_if_missing") and train_missing is not None:
                log.info("Training the missing teacher first: %s", run.command)
                train_missing(run.config, run.overrides, run.folder)
            status = run.status()  # after training it, when train_if_missing asked for that
            if status == "failed":  # in a sweep the teacher's job ran first: one line says why its students fail
                error = (read_summary(run.folder) or {}).get("error") or "no error recorded"
                raise MissingTeacherError(f"not trained: its teacher's run failed ({run.folder}: {error.splitlines()[0]})")
            who = f"teacher {run.name!r} ({run.overrides[0].split('=', 1)[1]}, seed {run.config.seed})"
            if status != "done":
                state = f"is {status}" if status else "has not been trained"
                raise MissingTeacherError(
                    f"{who} {state}: no finished run at {run.folder}. Train it with:\n  {run.command}\nor add "
                    f"teacher.train_if_missing=true to train it first, or set teacher.checkpoint=PATH."
                )
            if not run.checkpoint.is_file():
                raise MissingTeacherError(
                    f"{who} finished without a checkpoint: {run.checkpoint} is missing (a run with "
                    f"trainer.fast_dev_run or trainer.enable_checkpointing=false saves none, and a teacher run "
                    f"inherits the student's trainer settings by default: teacher.run.inherit). Train the student "
                    f"without them (a short run: trainer.max_epochs=1 trainer.limit_train_batches=2), or set "
                    f"teacher.checkpoint=PATH."
                )
        records.append({"name": run.name, "checkpoint": str(run.checkpoint.resolve()),
                        "sha256": file_checksum(run.checkpoint), "config_hash": run.digest, "command": run.command})
    if runs:
        with open_dict(cfg.teacher):
            paths = {r["name"]: r["checkpoint"] for r in records}
            cfg.teacher.checkpoint = paths["teacher"] if list(paths) == ["teacher"] else paths
    elif cfg.get("teacher") and cfg.teacher.get("checkpoint") is not None:
        for path, checksum in teacher_identity(cfg)["checkpoint"].items():
            records.append({"name": "teacher", "checkpoint": str(Path(path).resolve()), "sha256": checksum})
    return records


def config_digest(cfg: DictConfig) -> str:
    return config_hash(identity(cfg))
