"""The spec as a git checkout: which commit each run applied, and `git pull --ff-only` before a run.

Recording the commit makes the journal answer "which merged change did this?"; the dirty flag
says when a run applied edits that are in no commit. Both look only at the spec path, so a
journal or a scratch file elsewhere in the same work tree does not mark every run dirty.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
from pathlib import Path

from groupsync.errors import GroupsyncError
from groupsync.spec import Spec, load_spec

log = logging.getLogger(__name__)

GIT_TIMEOUT_S = 10.0
PULL_TIMEOUT_S = 60.0
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")


Source = tuple[str | None, bool | None]  # (commit, dirty) of the spec's work tree


class GitPullError(GroupsyncError):
    """The pull failed; the checkout is as it was, so the last good spec is still there."""


class InvalidCommit(GroupsyncError):
    """The pulled commit's spec does not load; `error` holds its problems, at file:line."""

    def __init__(self, commit: str | None, error: GroupsyncError) -> None:
        super().__init__(f"spec at commit {commit} is invalid: {error}")
        self.commit = commit
        self.error = error


def _git(cwd: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        # Unattended: never wait for a password or a host key confirmation.
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
        "LC_ALL": "C",
    }
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def git_info(path: Path) -> Source:
    """(commit, dirty) of the work tree holding `path`; (None, None) outside git or without git."""
    cwd = _folder(path)
    try:
        head = _git(cwd, "rev-parse", "--verify", "--quiet", "HEAD", timeout=GIT_TIMEOUT_S)
        if head.returncode != 0:
            return None, None
        status = _git(
            cwd,
            "status",
            "--porcelain",
            "--untracked-files=normal",
            "--",
            str(path.resolve()),
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("cannot read the spec's git state: %s", e)
        return None, None
    if status.returncode != 0:
        return head.stdout.strip(), None
    return head.stdout.strip(), bool(status.stdout.strip())


def git_pull(path: Path, *, timeout: float = PULL_TIMEOUT_S) -> str | None:
    """Fast-forward the checkout holding `path`; returns the new commit.

    `--ff-only` refuses a diverged history instead of merging: the daemon must apply what was
    merged upstream, never a merge it made itself. Raises GitPullError saying why.
    """
    cwd = _folder(path)
    try:
        r = _git(cwd, "pull", "--ff-only", "--quiet", timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise GitPullError(f"git pull --ff-only in {cwd} timed out after {timeout:g}s") from e
    except OSError as e:
        raise GitPullError(f"git pull --ff-only in {cwd} could not run: {e}") from e
    if r.returncode != 0:
        # A remote URL may carry a token (https://user:token@host): it must not reach the log.
        why = _URL_CREDENTIALS.sub(r"\1***@", " ".join((r.stderr or r.stdout).split()))
        why = why or f"exit status {r.returncode}"
        raise GitPullError(f"git pull --ff-only in {cwd} failed: {why}")
    return git_info(path)[0]


class SpecPuller:
    """`spec.git_pull`: fast-forward the checkout before a run, and load the spec if it moved.

    Raises GitPullError or InvalidCommit, and the caller keeps the spec it has: the daemon
    applies what was merged and loads, never half of it.
    """

    def __init__(self, path: Path, *, timeout_s: float = PULL_TIMEOUT_S) -> None:
        self.path = path
        self.timeout_s = timeout_s

    async def pull(self, since: str | None) -> tuple[Spec, Source] | None:
        """The spec and its source when the checkout moved past commit `since`; else None.

        In threads: git and a big spec take a while, and the event loop must keep answering
        signals meanwhile.
        """
        commit = await asyncio.to_thread(git_pull, self.path, timeout=self.timeout_s)
        if commit == since:
            return None
        try:
            spec = await asyncio.to_thread(load_spec, self.path)
        except GroupsyncError as e:
            raise InvalidCommit(commit, e) from e
        return spec, await asyncio.to_thread(git_info, self.path)
