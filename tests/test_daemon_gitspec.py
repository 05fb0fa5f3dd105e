"""The spec from git: commit and dirty flag per run, and `git pull --ff-only` that fails safely."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from groupsync.gitspec import GitPullError, git_info, git_pull
from helpers import git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

SPEC = "groups:\n  chess:\n    name: Chess Club\n"


@pytest.fixture
def origin_and_clone(tmp_path: Path) -> tuple[Path, Path]:
    """A work repo pushed to a bare origin, and the daemon's clone of it."""
    origin = tmp_path / "origin.git"
    work = tmp_path / "work"
    clone = tmp_path / "clone"
    git(tmp_path, "init", "--bare", "-b", "main", str(origin))
    git(tmp_path, "init", "-b", "main", str(work))
    (work / "groups").mkdir()
    (work / "groups" / "clubs.yaml").write_text(SPEC)
    git(work, "add", ".")
    git(work, "commit", "-m", "first")
    git(work, "push", str(origin), "main")
    git(tmp_path, "clone", str(origin), str(clone))
    return work, clone


def test_outside_git_there_is_nothing_to_record(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert git_info(spec) == (None, None)


def test_commit_and_dirty_flag_of_the_spec_path(origin_and_clone: tuple[Path, Path]) -> None:
    _, clone = origin_and_clone
    spec_dir = clone / "groups"
    head = git(clone, "rev-parse", "HEAD")
    assert git_info(spec_dir) == (head, False)
    assert git_info(spec_dir / "clubs.yaml") == (head, False)

    # Elsewhere in the tree (a journal, say): the spec itself is still clean.
    (clone / "groupsync.db").write_text("x")
    assert git_info(spec_dir) == (head, False)

    (spec_dir / "clubs.yaml").write_text(SPEC + "  go:\n    name: Go Club\n")
    assert git_info(spec_dir) == (head, True)
    (spec_dir / "clubs.yaml").write_text(SPEC)
    (spec_dir / "new.yaml").write_text("groups: {}\n")
    assert git_info(spec_dir) == (head, True)


def test_pull_fast_forwards_to_the_merged_commit(origin_and_clone: tuple[Path, Path]) -> None:
    work, clone = origin_and_clone
    origin = clone.parent / "origin.git"
    (work / "groups" / "clubs.yaml").write_text(SPEC + "  go:\n    name: Go Club\n")
    git(work, "commit", "-am", "add go")
    git(work, "push", str(origin), "main")

    assert git_pull(clone / "groups") == git(work, "rev-parse", "HEAD")
    assert "Go Club" in (clone / "groups" / "clubs.yaml").read_text()


def test_a_diverged_pull_fails_and_keeps_the_checkout(
    origin_and_clone: tuple[Path, Path],
) -> None:
    work, clone = origin_and_clone
    origin = clone.parent / "origin.git"
    (work / "groups" / "clubs.yaml").write_text(SPEC + "  upstream:\n    name: Up\n")
    git(work, "commit", "-am", "upstream")
    git(work, "push", str(origin), "main")
    (clone / "groups" / "clubs.yaml").write_text(SPEC + "  local:\n    name: Local\n")
    git(clone, "commit", "-am", "local")
    before = git(clone, "rev-parse", "HEAD")

    with pytest.raises(GitPullError, match="ff-only"):
        git_pull(clone / "groups")
    assert git(clone, "rev-parse", "HEAD") == before
    assert "Local" in (clone / "groups" / "clubs.yaml").read_text()


def test_an_unreachable_remote_says_why_without_credentials(
    origin_and_clone: tuple[Path, Path],
) -> None:
    _, clone = origin_and_clone
    git(clone, "remote", "set-url", "origin", "https://deploy:s3cr3t@127.0.0.1:9/spec.git")
    with pytest.raises(GitPullError) as caught:
        git_pull(clone / "groups", timeout=30)
    assert "s3cr3t" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_not_a_repository_is_a_pull_error(tmp_path: Path) -> None:
    with pytest.raises(GitPullError):
        git_pull(tmp_path)
