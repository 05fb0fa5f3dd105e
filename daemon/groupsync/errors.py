"""The error every layer raises for the user; its exit code comes from `outcomes.ExitCode`."""

from __future__ import annotations

from groupsync.outcomes import ExitCode


class GroupsyncError(Exception):
    """An error meant for the user: its message is printed as is, without a traceback."""

    exit_code = ExitCode.ERROR
