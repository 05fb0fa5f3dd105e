"""The error every layer raises for the user, and the exit codes the CLI maps it to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_UNSAFE = 3
# click uses 2 for usage errors; design.md reserves 2 for "changes pending".
EXIT_USAGE = 64


class GroupsyncError(Exception):
    """An error meant for the user: its message is printed as is, without a traceback."""

    exit_code = EXIT_ERROR
