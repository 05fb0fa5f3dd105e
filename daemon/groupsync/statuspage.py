"""The daemon's status page and group pages: server-rendered HTML, readable without CSS.

No script and no build step: an operator opens the page in any browser, or reads it with curl.
Every value the journal, the spec or the API gave is escaped where it enters the HTML (`_e`):
group names and error texts are written by people and servers, not by groupsync.
"""

from __future__ import annotations

import enum
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from groupsync.journal import ChangeRecord, RunRecord
from groupsync.outcomes import RunOutcome
from groupsync.plan import ManagedGroup
from groupsync.reconcile import RunReport

RUNS_SHOWN = 20
CHANGES_SHOWN = 30
REFUSALS_SHOWN = 10
WEBHOOK_REPAIRS_SHOWN = 10


class Health(enum.StrEnum):
    """The daemon's state in one word, as the page's first line says it."""

    STARTING = "starting"  # no run has finished since the daemon started
    OK = "ok"
    ERROR = "error"
    REFUSED = "refused"


_HEALTH_OF = {
    RunOutcome.NOOP: Health.OK,
    RunOutcome.APPLIED: Health.OK,
    RunOutcome.DECLINED: Health.OK,
    RunOutcome.REFUSED: Health.REFUSED,
}


@dataclass(frozen=True, slots=True)
class DaemonView:
    """What the daemon knows beyond its journal, swapped whole after each run and reload (the
    HTTP service reads it from its own thread)."""

    health: Health = Health.STARTING
    reason: str = "no run has finished yet"
    spec_commit: str | None = None
    spec_dirty: bool | None = None
    spec_groups: int = 0
    run_id: int | None = None  # the run the lists below come from
    drifted: tuple[str, ...] = ()  # keys the last plan found edited outside groupsync
    errors: tuple[tuple[str, str], ...] = ()  # (key, what went wrong) in the last run

    def after_run(self, report: RunReport, drifted: Iterable[str]) -> DaemonView:
        health = _HEALTH_OF.get(report.outcome, Health.ERROR)
        errors = [(e.key, e.message) for e in report.plan.errors] if report.plan else []
        errors += list(report.result.failures) if report.result else []
        return DaemonView(
            health=health,
            reason=report.error or f"last run {report.outcome}",
            spec_commit=self.spec_commit,
            spec_dirty=self.spec_dirty,
            spec_groups=self.spec_groups,
            run_id=report.run_id,
            drifted=tuple(sorted(drifted)),
            errors=tuple(sorted(errors)),
        )


@dataclass(frozen=True, slots=True)
class StatusData:
    """What the status page shows, read from the journal in one go (off the daemon's loop)."""

    view: DaemonView
    problem: str | None  # what makes the daemon unhealthy now (a lost journal), or None
    managed: int
    runs: Sequence[RunRecord]
    refusals: Sequence[RunRecord]
    changes: Sequence[ChangeRecord]
    webhook_repairs: Sequence[RunRecord] = ()  # runs of keys a webhook named, newest first


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}</body></html>\n"
    )


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;max-width:72em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".ok{color:#176f2c}.error,.failed{color:#b00020}.refused,.interrupted{color:#a15c00}"
    "code{font-size:.95em}h2{margin-top:1.2em}td.t{white-space:nowrap}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:.3em 1em}dd{margin:0}"
)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> str:
    """`rows` hold HTML already escaped; a table with no rows is one sentence instead."""
    lines = ["<tr>" + "".join(rows_) + "</tr>" for rows_ in rows]
    if not lines:
        return f"<p>{_e(empty)}</p>\n"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>\n"
        + "\n".join(lines)
        + "\n</tbody></table>\n"
    )


def _td(value: object, cls: str | None = None) -> str:
    return f'<td class="{_e(cls)}">{_e(value)}</td>' if cls else f"<td>{_e(value)}</td>"


def _when(iso: str | None) -> str:
    """The journal's `2026-11-27T01:53:47.123Z` as `2026-11-27 01:53:47` (UTC, as headed)."""
    return "-" if iso is None else iso[:19].replace("T", " ")


def _group_link(key: str) -> str:
    return f'<a href="/groups/{_e(key)}">{_e(key)}</a>'


def _counts(counts: dict[str, int] | object) -> str:
    items = sorted(counts.items()) if isinstance(counts, dict) else []
    return " ".join(f"{k}={v}" for k, v in items if v) or "-"


def _duration(run: RunRecord) -> str:
    if run.finished_at is None:
        return "running" if run.outcome is None else "-"
    return _seconds_between(run.started_at, run.finished_at)


def _seconds_between(start: str, end: str) -> str:
    """Both are the journal's ISO-8601 UTC text with milliseconds."""
    t0, t1 = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end))
    return f"{(t1 - t0).total_seconds():.1f} s"


def _run_row(run: RunRecord) -> list[str]:
    outcome = str(run.outcome) if run.outcome is not None else "unfinished"
    return [
        _td(run.id, "n"),
        _td(_when(run.started_at), "t"),
        _td(run.trigger),
        _td(outcome, outcome),
        _td(_counts(dict(run.counts))),
        _td(_duration(run), "n"),
    ]


def _change_row(change: ChangeRecord) -> list[str]:
    return [
        _td(_when(change.finished_at or change.started_at), "t"),
        _td(change.run_id, "n"),
        f"<td>{_group_link(change.key)}</td>",
        _td(change.action),
        _td(change.cause),
        _td(change.status, str(change.status)),
        _td(change.summary),
    ]


def _header(data: StatusData) -> str:
    view = data.view
    health, reason = view.health, view.reason
    if data.problem is not None:
        health, reason = Health.ERROR, data.problem
    if view.spec_commit is None:
        spec = "not in git"
    else:
        spec = view.spec_commit + (" (dirty: uncommitted edits)" if view.spec_dirty else "")
    return (
        "<h1>groupsync</h1>\n<dl>\n"
        f'<dt>State</dt><dd id="state" class="{_e(health)}"><strong>{_e(health)}</strong>: '
        f"{_e(reason)}</dd>\n"
        f'<dt>Spec commit</dt><dd id="spec"><code>{_e(spec)}</code>'
        f" ({_e(view.spec_groups)} groups)</dd>\n"
        f'<dt>Managed groups</dt><dd id="managed">{_e(data.managed)}</dd>\n'
        "</dl>\n"
    )


def _section(section_id: str, title: str, table: str, intro: str = "") -> str:
    """A heading and its table, in a <section> a reader (or a test) finds by its id."""
    intro_html = f"<p>{_e(intro)}</p>\n" if intro else ""
    return f'<section id="{section_id}">\n<h2>{_e(title)}</h2>\n{intro_html}{table}</section>\n'


def render_status(data: StatusData) -> str:
    view = data.view
    runs = (_run_row(r) for r in data.runs)
    drifted = [[f"<td>{_group_link(k)}</td>", _td(view.run_id, "n")] for k in view.drifted]
    errors = [[f"<td>{_group_link(k)}</td>", _td(message)] for k, message in view.errors]
    refusals = [
        [_td(r.id, "n"), _td(_when(r.started_at), "t"), _td(r.error)] for r in data.refusals
    ]
    changes = (_change_row(c) for c in data.changes)
    run_columns = ["run", "started (UTC)", "trigger", "outcome", "counts", "duration"]
    change_columns = ["finished (UTC)", "run", "group", "action", "cause", "status", "what"]
    body = (
        _header(data)
        + _section("runs", f"Last {RUNS_SHOWN} runs", _table(run_columns, runs, "No run yet."))
        + _section(
            "drifted",
            "Drifted groups",
            _table(["group", "found by run"], drifted, "None."),
            "Edited outside groupsync, as the last run found them (it puts them back).",
        )
        + _section(
            "webhook-repairs",
            f"Recent webhook repairs (last {WEBHOOK_REPAIRS_SHOWN})",
            _table(run_columns, (_run_row(r) for r in data.webhook_repairs), "None."),
            "Groups an eCampus event named, read again and put back at once.",
        )
        + _section("errors", "Groups in error", _table(["group", "error"], errors, "None."))
        + _section(
            "refusals",
            "Safety refusals",
            _table(["run", "started (UTC)", "reason"], refusals, "None."),
        )
        + _section(
            "changes",
            f"Recent changes (last {CHANGES_SHOWN})",
            _table(change_columns, changes, "No change yet."),
        )
    )
    return _page("groupsync status", body)


def render_group(
    key: str, managed: tuple[ManagedGroup, str] | None, runs: Sequence[RunRecord]
) -> str:
    if managed is None:
        facts = "<p>Not managed by groupsync now; its history follows.</p>\n"
    else:
        group, since = managed
        applied = group.applied
        members = (
            "not managed" if applied is None or applied.members is None else len(applied.members)
        )
        facts = (
            "<dl>\n"
            f'<dt>Group id</dt><dd id="group-id"><code>{_e(group.group_id)}</code></dd>\n'
            f'<dt>Name</dt><dd id="name">{_e(applied.name if applied else "-")}</dd>\n'
            f'<dt>Members</dt><dd id="members">{_e(members)}</dd>\n'
            f"<dt>Archived</dt><dd>{_e('yes' if applied and applied.archived else 'no')}</dd>\n"
            f"<dt>Managed since</dt><dd>{_e(_when(since))} UTC</dd>\n"
            "</dl>\n"
        )
    rows = [
        [
            _td(run.id, "n"),
            _td(_when(c.finished_at or c.started_at), "t"),
            _td(c.status, str(c.status)),
            _td(c.summary),
        ]
        for run in runs
        for c in run.changes
    ]
    body = (
        f'<p><a href="/">&larr; status</a></p>\n<h1>Group <code>{_e(key)}</code></h1>\n'
        + facts
        + _section(
            "history",
            "History",
            _table(["run", "finished (UTC)", "status", "change"], rows, "No change journaled."),
        )
    )
    return _page(f"groupsync: {key}", body)
