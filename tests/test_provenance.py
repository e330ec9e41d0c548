"""Which commit a run records: git in a checkout, the ``git archive`` stamp outside one, nothing when neither says."""
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from kd_lightning.runs.store import git_commit

REPO = Path(__file__).resolve().parents[1]
HEX = "0123456789abcdef0123456789abcdef01234567"


def _stamp(root: Path, text: str) -> Path:
    (root / "kd_lightning").mkdir(parents=True, exist_ok=True)
    (root / "kd_lightning" / "ARCHIVE_COMMIT").write_text(text + "\n")
    return root


def test_an_archive_reports_its_stamped_commit(tmp_path):
    assert git_commit(_stamp(tmp_path, HEX)) == HEX + " (archive)"


@pytest.mark.parametrize("text", ["$Format:%H$", "", "not-a-commit"])
def test_an_unstamped_tree_reports_no_commit(tmp_path, text):
    assert git_commit(_stamp(tmp_path, text)) is None


def test_an_archive_inside_another_checkout_is_not_that_checkouts_commit(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run(git + ["init", "-q"], check=True)
    (tmp_path / "other.txt").write_text("x")
    subprocess.run(git + ["add", "other.txt"], check=True)
    subprocess.run(git + ["commit", "-qm", "other project"], check=True)
    assert git_commit(_stamp(tmp_path / "vendored" / "kd", HEX)) == HEX + " (archive)"
    other = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(tmp_path) == other  # the checkout's own root still reports the checkout (untracked files ignored)


def test_git_archive_stamps_the_commit_it_exports():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "kd_lightning/ARCHIVE_COMMIT"],
                            capture_output=True, text=True)
    if head.returncode or not listed.stdout.strip():
        pytest.skip("not a git checkout with kd_lightning/ARCHIVE_COMMIT committed")
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD", "kd_lightning/ARCHIVE_COMMIT"],
                         capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        stamped = t.extractfile("kd_lightning/ARCHIVE_COMMIT").read().decode().strip()
    assert stamped == head.stdout.strip()
