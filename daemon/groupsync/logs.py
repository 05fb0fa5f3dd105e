"""Logging on stderr: for the daemon (`setup_logging`), and for a command a person runs
(`setup_console_logging`).

Every line is masked of the secrets the process holds (`redact_secrets`), tracebacks included:
an exception's text can carry what a server or a library echoed.

Under systemd, stderr goes to journald, which stamps every line itself and reads a `<N>`
syslog priority prefix (SyslogLevelPrefix=, on by default): there, lines carry the prefix and no
timestamp. Elsewhere (a terminal, a file, a container log) they carry an ISO-8601 UTC timestamp.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TextIO

from groupsync.outcomes import ChangeStatus
from groupsync.secret import redact_secrets

if TYPE_CHECKING:
    from groupsync.plan import Change

# Every attribute a plain LogRecord has; anything else came in through `extra=` and is data.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

# syslog(3) priorities for journald's `<N>` prefix.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}

# Libraries that log every request or every tick at INFO: one line per change and one per run
# is the contract, so they speak only when something is wrong.
_CHATTY = ("httpx", "httpcore", "apscheduler", "uvicorn.access")

RUN_LOGGER = "groupsync.run"
"""The one line per run (reconcile logs it): the daemon's record of each run. A command says the
outcome in its own words, so at a console this line shows only with --verbose."""


def under_journald(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when `stream` is the journald stream systemd handed us (see systemd.exec(5)).

    JOURNAL_STREAM is inherited by children whose stderr may go elsewhere, so the device and
    inode it names must be the stream's own.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class TextFormatter(logging.Formatter):
    """`<time> LEVEL logger: message key=value...`, or `<N>LEVEL logger: ...` for journald."""

    def __init__(self, *, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            # One record stays one journald entry: indent the traceback instead of new lines.
            line = f"{line}\n{self.formatException(record.exc_info)}".replace("\n", "\n    ")
        line = redact_secrets(line)
        if self.journald:
            return f"<{_PRIORITY.get(record.levelno, 3)}>{line}"
        return f"{_timestamp(record)} {line}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: fields passed with `extra=` become keys."""

    def __init__(self, *, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {} if self.journald else {"ts": _timestamp(record)}
        out |= {"level": record.levelname.lower(), "logger": record.name}
        out["msg"] = record.getMessage()
        out |= _extras(record)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        line = redact_secrets(json.dumps(out, default=str, ensure_ascii=False))
        return f"<{_PRIORITY.get(record.levelno, 3)}>{line}" if self.journald else line


def setup_logging(
    fmt: Literal["text", "json"] = "text",
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Install one stderr handler in the chosen format on the root logger.

    Called again on reload, so a changed `log.format` takes effect without a restart: the handler
    installed last time is replaced; handlers others installed (pytest's, say) are left alone.
    """
    stream = sys.stderr if stream is None else stream
    journald = under_journald(stream, environ)
    handler = logging.StreamHandler(stream)
    handler.setLevel(level)
    handler.setFormatter(
        JsonFormatter(journald=journald) if fmt == "json" else TextFormatter(journald=journald)
    )
    _install(handler)
    logging.getLogger().setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    return handler


class MessageFormatter(logging.Formatter):
    """The message alone, as a command's own output reads; masked like every other line."""

    def format(self, record: logging.LogRecord) -> str:
        line = record.getMessage()
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return redact_secrets(line)


def setup_console_logging(*, verbose: bool, stream: TextIO | None = None) -> logging.Handler:
    """Logging for a command a person runs: its own output comes first.

    By default only groupsync's warnings and errors show, as plain lines ("recovered: ..."),
    and never the run's line, which repeats what the command prints (RUN_LOGGER). `verbose`
    shows groupsync's debug lines too, the client's requests and retries among them, as
    octodns's --debug does, each with its time, level and logger. The libraries' own request
    lines stay off: groupsync's say the same, without the query string's noise.
    """
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    if verbose:
        handler.setFormatter(TextFormatter(journald=False))
    else:
        handler.setLevel(logging.WARNING)
        handler.setFormatter(MessageFormatter())
        handler.addFilter(lambda record: record.name != RUN_LOGGER)
    _install(handler)
    logging.getLogger("groupsync").setLevel(logging.DEBUG if verbose else logging.NOTSET)
    return handler


def _install(handler: logging.Handler) -> None:
    """Make `handler` the root's groupsync handler: the one installed before is replaced, and
    handlers others installed (pytest's, say) are left alone."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        if getattr(old, "_groupsync", False):
            root.removeHandler(old)
            old.close()
    handler._groupsync = True  # type: ignore[attr-defined]
    root.addHandler(handler)


_change_log = logging.getLogger("groupsync.change")


def log_change(change: Change, status: ChangeStatus) -> None:
    """The one line per change: `applied update chess` plus what changed, as fields.

    Fit for reconcile's `on_progress`. Only names and counts: member lists can be long, and the
    journal has them in full.
    """
    fields: dict[str, Any] = {"group_id": change.group_id, "cause": str(change.cause)}
    if change.fields:
        fields["fields"] = ",".join(f.field for f in change.fields)
    if change.members_add or change.members_remove:
        fields["members"] = f"+{len(change.members_add)}/-{len(change.members_remove)}"
    if change.set_archived is not None:
        fields["archived"] = change.set_archived
    level = (
        logging.INFO if status in (ChangeStatus.APPLIED, ChangeStatus.SKIPPED) else logging.WARNING
    )
    _change_log.log(level, "%s %s %s", status, change.action, change.key, extra=fields)
