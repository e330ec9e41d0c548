"""A run's identity: what in its resolved config can change its result, hashed; and the folder that follows.

One configuration, one folder: ``<log_dir>/<run_name><run_tag>/<readable>-<hash>``. ``<hash>`` is the first 8 hex
digits of the SHA-256 of :func:`identity` (the resolved config minus ``identity_exclude``, the data file's checksum
instead of its path, the teacher's own identity instead of its lookup); ``<readable>`` is ``seed<seed>`` plus the
overrides that change the result, trimmed, for people and TensorBoard only: a folder whose name ends in the same
hash is the same run, however its overrides were spelt (``lr=1e-3`` or ``lr=0.001``).

Why an OmegaConf resolver (``${kd_run_folder:}`` in ``paths.output_dir``, which ``hydra.run.dir`` and
``hydra.sweep.subdir`` use) rather than a folder computed in train.py: Hydra then creates, logs into and reports
the job's real folder (``hydra.runtime.output_dir``, which the sweep's table reads), Lightning's DDP launcher passes
that same folder to its child processes, and a config composed outside Hydra (tests, notebooks) resolves to the
same folder as the command line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

HASH_LENGTH = 8
MAX_READABLE = 80   # characters of the readable part of a folder name (file systems allow 255 per name)
MAX_RUN_NAME = 80
# overrides never shown in a folder name: they pick the folder's parent, or are shown otherwise
NOT_IN_NAME = ("experiment", "sweep", "hparams_search", "seed", "hydra", "retrain", "teacher.train_if_missing",
               "teacher.run.inherit")
GROUPS_NOT_IN_NAME = ("trainer",)  # trainer=cpu|gpu: where it runs (trainer.* values that matter are shown)


# ---------------------------------------------------------------------------------------------------- checksums
def _checksum_cache_file() -> Path:
    root = Path(os.environ.get("KD_LIGHTNING_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                               / "kd_lightning"))
    return root / "checksums.json"


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    """SHA-256 of a file; remembered on disk by (path, mtime, size), so a 170 MB dataset is read once, not per run."""
    key = f"{path}|{mtime_ns}|{size}"
    cache_file = _checksum_cache_file()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    cache[key] = digest.hexdigest()
    try:  # best effort: a read-only cache folder only costs the next run a re-read
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=0))
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return cache[key]


def file_checksum(path: str | Path) -> str | None:
    """``sha256:<hex>`` of an existing file, None if there is none."""
    path = Path(path).expanduser().resolve()
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return "sha256:" + _file_sha256(str(path), stat.st_mtime_ns, stat.st_size)


# ----------------------------------------------------------------------------------------------------- identity
def _excluded(path: str, excludes: Sequence[str]) -> bool:
    return any(path == e or path.startswith(e + ".") for e in excludes)


def _collect(node, prefix: str, excludes: Sequence[str]):
    """The resolved values of ``node`` without the excluded paths (never resolving those: ``paths.output_dir``
    refers back to this folder)."""
    if isinstance(node, DictConfig):
        out = {}
        for key in node.keys():
            path = f"{prefix}.{key}" if prefix else str(key)
            if _excluded(path, excludes):
                continue
            out[str(key)] = "???" if OmegaConf.is_missing(node, key) else _collect(node[key], path, excludes)
        return out
    if isinstance(node, ListConfig):
        return [_collect(node[i], f"{prefix}.{i}", excludes) for i in range(len(node))]
    return node


# set while an identity is collected: a value placed inside the run's folder (a callback's ``${paths.output_dir}``
# that identity_exclude does not list, e.g. one a user adds) resolves to this name there instead of recursing
_identifying = threading.local()
RUN_FOLDER_IN_IDENTITY = "<run folder>"


def identity(cfg: DictConfig) -> dict:
    """Everything in ``cfg`` that can change the run's result (see the module docstring)."""
    depth = getattr(_identifying, "depth", 0)
    _identifying.depth = depth + 1
    try:
        return _identity(cfg)
    finally:
        _identifying.depth = depth


def _identity(cfg: DictConfig) -> dict:
    excludes = list(cfg.get("identity_exclude") or [])
    # the teacher's networks are identified by the teacher's own identity (below); an ensemble's weights and
    # temperature (distill.teacher.weights, .temperature) change the result and stay in
    excludes += ["hydra", "identity_exclude", "teacher", "distill.teacher.teachers", "distill.teachers"]
    distill = cfg.get("distill")
    if isinstance(distill, DictConfig) and "teacher" in distill and OmegaConf.is_interpolation(distill, "teacher"):
        excludes.append("distill.teacher")
    content = json.loads(json.dumps(_collect(cfg, "", excludes), default=str))
    source = cfg.get("data", {}).get("source") if cfg.get("data") else None
    if source is not None and "path" in source:
        path = source.path
        content.setdefault("data", {}).setdefault("source", {})["file"] = file_checksum(path) or f"missing: {path}"
    if cfg.get("teacher"):
        from kd_lightning.runs.teachers import teacher_identity

        content["teacher"] = teacher_identity(cfg)
    return content


def config_hash(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:HASH_LENGTH]


# -------------------------------------------------------------------------------------------------- folder names
def task_overrides(cfg: DictConfig | None = None) -> list[str]:
    """The command line's overrides of this job (Hydra's ``overrides.task``); [] outside a Hydra run."""
    if cfg is not None and "hydra" in cfg:
        return list(OmegaConf.select(cfg, "hydra.overrides.task", default=[]) or [])
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


def override_key(override: str) -> str:
    """``+distill.terms.kd.temperature=2`` → ``distill.terms.kd.temperature``; ``data/source=npz`` → ``data.source``."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key.split("@", 1)[0].replace("/", ".")


def _clean(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_")


def readable_name(seed, overrides: Iterable[str], excludes: Sequence[str]) -> str:
    """``seed<seed>`` plus ``key-value`` for each override that changes the result (``distill.terms.`` dropped,
    path values by their file name), without ``=`` or ``,`` (so the path pastes into an override) and trimmed."""
    parts = [f"seed{_clean(str(seed))}"]
    for override in overrides:
        key = override_key(override)
        if "=" not in override or key in GROUPS_NOT_IN_NAME or _excluded(key, [*excludes, *NOT_IN_NAME]):
            continue
        value = override.split("=", 1)[1].strip("'\"")
        if "/" in value:
            value = Path(value).name
        short = key.removeprefix("distill.terms.")
        parts.append(f"{_clean(short)}-{_clean(value)}"[:40])
    return "_".join(parts)[:MAX_READABLE].rstrip("_-.")


def run_parent(cfg: DictConfig) -> Path:
    name = _clean(f"{cfg.get('run_name', 'run')}{cfg.get('run_tag', '')}")[:MAX_RUN_NAME] or "run"
    return Path(str(cfg.paths.log_dir)) / name


def find_run(parent: Path, digest: str) -> Path | None:
    """An existing folder of the run with hash ``digest`` under ``parent`` (the oldest, if copies were made)."""
    if not parent.is_dir():
        return None
    found = sorted((p for p in parent.glob(f"*-{digest}") if p.is_dir()), key=lambda p: (p.stat().st_mtime, p.name))
    return found[0] if found else None


def run_folder(cfg: DictConfig) -> tuple[Path, str]:
    """``(folder, hash)`` of the run ``cfg`` describes: its existing folder, or a new name."""
    excludes = list(cfg.get("identity_exclude") or [])
    digest = config_hash(identity(cfg))
    parent = run_parent(cfg)
    existing = find_run(parent, digest)
    if existing is not None:
        return existing, digest
    return parent / f"{readable_name(cfg.get('seed'), task_overrides(cfg), excludes)}-{digest}", digest


def _resolve_run_folder(*, _root_: DictConfig) -> str:
    if getattr(_identifying, "depth", 0):
        return RUN_FOLDER_IN_IDENTITY
    folder, _ = run_folder(_root_)
    return str(folder.resolve())


def register_resolvers() -> None:
    """``${kd_run_folder:}``: the run's folder (absolute or relative like ``paths.log_dir``); ``${kd_scale:...}``: a
    recipe's milestones at another length (:mod:`kd_lightning.recipe`)."""
    from kd_lightning.recipe import register_resolver

    if not OmegaConf.has_resolver("kd_run_folder"):
        OmegaConf.register_new_resolver("kd_run_folder", _resolve_run_folder)
    register_resolver()
