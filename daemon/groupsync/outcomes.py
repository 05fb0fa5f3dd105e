"""How runs and changes end, and the one mapping from a run's outcome to an exit code.

Every module decides on these members, never on message text: the words a person reads may
change, the outcome a daemon or a CI job acts on may not.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The process exit codes; click keeps 2 for usage errors, groupsync uses 2 for changes."""

    OK = 0
    ERROR = 1
    CHANGES = 2  # `plan --detailed-exitcode`: the account would change
    UNSAFE = 3  # a safety limit refused the plan
    USAGE = 64  # EX_USAGE from sysexits.h: bad options or arguments
    INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class RunOutcome(enum.StrEnum):
    """How one reconcile ended: the journal's `runs.outcome` and the metrics' label."""

    NOOP = "noop"
    APPLIED = "applied"
    FAILED = "failed"  # some changes or groups failed; the rest applied
    REFUSED = "refused"  # a safety limit refused the plan; nothing written
    DECLINED = "declined"  # the person at the prompt said no
    ERROR = "error"  # the run could not plan or apply at all (API, journal, spec)
    INTERRUPTED = "interrupted"  # stopped by a signal or a deadline before it finished

    @property
    def exit_code(self) -> ExitCode:
        return _RUN_EXIT[self]


_RUN_EXIT = {
    RunOutcome.NOOP: ExitCode.OK,
    RunOutcome.APPLIED: ExitCode.OK,
    RunOutcome.DECLINED: ExitCode.OK,
    RunOutcome.FAILED: ExitCode.ERROR,
    RunOutcome.ERROR: ExitCode.ERROR,
    RunOutcome.REFUSED: ExitCode.UNSAFE,
    RunOutcome.INTERRUPTED: ExitCode.INTERRUPTED,
}


class ChangeStatus(enum.StrEnum):
    """A journaled change: `pending` before its API call, one of the others after."""

    PENDING = "pending"
    APPLIED = "applied"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # a crashed run's pending row, settled by the next run
    SKIPPED = "skipped"  # never sent: the run was stopped before this change started
    UNKNOWN = "unknown"  # sent, but the run ended before its answer; the next plan re-checks


class MessageStatus(enum.StrEnum):
    """A message in the journal's outbox: `pending` before its POST, one of the others after."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # the API refused it, or it provably never left: not posted
    UNKNOWN = "unknown"  # its answer was lost (or the run died): maybe posted, never sent again
    SKIPPED = "skipped"  # not posted: its change failed, or it was already posted


class Failure(enum.StrEnum):
    """Why a run ended in `error`: what a daemon does next depends on it."""

    AUTH = "auth"  # the API refused the token: retrying will not help, a person must act
    API = "api"  # the API could not be reached or answered wrongly: back off and retry
    JOURNAL = "journal"  # the journal cannot be written: stop writing
    ROSTER = "roster"  # a roster could not be read whole: the next run reads it again
    BUG = "bug"  # anything unexpected: a traceback is logged
