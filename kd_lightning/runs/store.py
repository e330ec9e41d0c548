"""A run folder's files: its summary written atomically, a lock while a process writes, provenance."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

from kd_lightning.errors import KDError


class RunLockedError(KDError, RuntimeError):
    """Another process is writing this run folder."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write beside, then rename: a reader (or a kill -9) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_summary(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def is_done(summary: dict | None) -> bool:
    """Whether a run's summary (as read, or None) is a finished run's."""
    return (summary or {}).get("status") == "done"


def finished(folder: Path) -> bool:
    """Whether ``folder`` holds a finished run (its summary says ``done``)."""
    return is_done(read_summary(folder))


def result_line(summary: dict) -> str:
    """A run's result in one line: ``test/acc 0.93, val/acc 0.94, epochs 240, ...`` (the keys it has)."""
    keys = ("test/acc", "val/acc", "epochs", "train_time_s", "finished")
    return ", ".join(f"{k} {summary[k]}" for k in keys if summary.get(k) is not None)


def write_summary(folder: Path, summary: dict, *, replace_done: bool = False) -> bool:
    """Writes ``summary.json`` unless the folder holds a finished run (``replace_done``: a run that just finished
    again, after ``retrain``); returns whether it wrote."""
    current = read_summary(folder)
    if is_done(current) and not replace_done:
        return False
    atomic_write_text(Path(folder) / "summary.json", json.dumps(summary, indent=2) + "\n")
    return True


class RunLock:
    """An exclusive ``fcntl`` lock on ``<folder>/.lock`` for as long as a process trains into the folder.

    The kernel drops it when the process dies (kill -9 included), so a stale lock file never blocks a resume.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self.file = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise RunLockedError(
                f"run folder {self.path.parent} is being written by {holder}: wait for it to finish (the same command "
                f"then prints its result), or stop that process; two processes never train one run at once."
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {platform.node()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()

    @staticmethod
    def held(folder: Path) -> bool:
        """Whether a process holds ``folder``'s lock now (is training into it); False for a folder without one."""
        try:
            with open(Path(folder) / ".lock") as file:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released on close
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(root: Path | None = None) -> str | None:
    """The commit of the kd_lightning source tree: from git in a checkout (``+dirty`` with uncommitted changes), else
    the one ``git archive`` wrote into ``kd_lightning/ARCHIVE_COMMIT`` (``export-subst`` in ``.gitattributes``: a
    GitHub tarball or a ``git archive`` export knows its commit, though not whether its files were edited since);
    None when neither says."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    try:
        # the toplevel must be root itself: an archive unpacked inside some other checkout is not that commit
        top, _, commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
                                        capture_output=True, text=True, timeout=10).stdout.strip().partition("\n")
        if commit and Path(top).resolve() == root.resolve():
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    stamped = root / "kd_lightning" / "ARCHIVE_COMMIT"
    text = stamped.read_text().strip() if stamped.is_file() else ""
    return text + " (archive)" if re.fullmatch(r"[0-9a-f]{40}", text) else None


def provenance(trainer=None) -> dict:
    """Package versions, git commit, device and precision of this process."""
    import torch

    device = None
    if trainer is not None:
        root = trainer.strategy.root_device
        device = torch.cuda.get_device_name(root) if root.type == "cuda" else f"{root.type} ({platform.processor() or platform.machine()})"
    return {
        "versions": {p: _version(p) for p in ("torch", "lightning", "hydra-core", "omegaconf", "kd_lightning")},
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "device": device,
        "num_devices": trainer.world_size if trainer is not None else None,
        "precision": str(trainer.precision) if trainer is not None else None,
    }
