"""Plan -> text (terminal), JSON (tools) and Markdown (pull-request comment).

Rendering never decides anything: every number and word comes from the Plan, so what a reviewer
reads in a pull request is what `apply --checksum` will do.

JSON document (`render_json`, `format_version` 1; new fields may be added, a field's meaning or
removal bumps the version):

    format_version  1
    checksum        SHA-256 hex of the plan (see groupsync.plan: changes + errors, canonical JSON)
    refused         true when a safety limit refused the plan (apply needs --force)
    empty           true when there is nothing to change and no error
    counts          {"create", "adopt", "update", "restore", "archive", "delete", "forget": int,
                     "errors": int}
    plan            Plan.to_dict():
      changes       ordered by (phase, key); each: key, action, cause ("spec"|"drift"), name,
                    group_id (null for create), phase (-1 forgets (journal only), 0 creates/
                    restores, 1 updates/additions, 2 removals, 3 archives/deletes),
                    fields [{field, old, new, cause}],
                    members_add, members_remove (sorted), members_cause, members (the full sorted
                    list to send, or null when membership is unchanged/unmanaged), set_archived
                    (true archive, false restore, null leave), archived_cause, note
      errors        [{key, message}] sorted by key: those keys are not changed
      refusals      [message]: safety limits exceeded
      managed_count keys the journal manages
      checksum      as above
      messages      [{key, kind, text, count, group_id, conversation_id}]: what applying would
                    post (notify:); never a change, not in the checksum
    state           where the plan's managed groups came from (`StateLine.to_dict`):
      source        "journal", "snapshot" or "none"
      location      the journal's path or the snapshot's file or URL; null for none
      run_id        the journal's newest run then; null for none or before the first run
      managed_count managed groups in that state
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from groupsync.plan import Action, Change, Message, Plan

FORMAT_VERSION = 1
MARKER = "<!-- groupsync-plan -->"
"""First line of the Markdown comment: a CI job finds its own comment by it and edits it."""

MEMBERS_SHOWN = 10
VALUE_WIDTH = 120
MARKDOWN_DETAILS_BUDGET = 60_000
"""GitHub rejects comments over 65,536 characters; past this the details are cut."""

SYMBOLS = {
    Action.CREATE: "+",
    Action.ADOPT: "@",
    Action.UPDATE: "~",
    Action.RESTORE: ">",
    Action.ARCHIVE: "-",
    Action.DELETE: "x",
    Action.FORGET: ".",
}
_COLORS = {
    Action.CREATE: "32",  # green
    Action.ADOPT: "36",  # cyan
    Action.UPDATE: "33",  # yellow
    Action.RESTORE: "36",
    Action.ARCHIVE: "31",  # red
    Action.DELETE: "1;31",  # bold red
    Action.FORGET: "2",  # dim
}
_ORDER = (
    Action.CREATE,
    Action.ADOPT,
    Action.UPDATE,
    Action.ARCHIVE,
    Action.RESTORE,
    Action.DELETE,
    Action.FORGET,
)
_ALWAYS = frozenset({Action.CREATE, Action.UPDATE, Action.ARCHIVE, Action.RESTORE})
"""Counted even at zero; adopt, delete and forget appear only when they happen."""


_CONTROL = {
    c: f"\\u{c:04x}"
    for c in (*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))
}
"""Control and bidi-override characters: a name edited by hand must not drive the terminal."""


def _clean(text: str) -> str:
    return text.translate(_CONTROL)


@dataclass(frozen=True, slots=True)
class StateLine:
    """Where a plan's managed groups came from; every plan says it, in every format.

    A plan without state sees no managed group: a renamed group looks new and a removed key
    archives nothing, so the reader must be told before reading the changes.
    """

    source: Literal["journal", "snapshot", "none"]
    location: str | None = None  # the journal's path, the snapshot's file or URL
    run_id: int | None = None
    managed_count: int = 0

    def text(self) -> str:
        if self.source == "none":
            return "State: none — every key is new; renames and removals cannot be seen"
        run = "no run yet" if self.run_id is None else f"run {self.run_id}"
        where = _clean(self.location or "")
        return f"State: {self.source} {where} ({run}, {self.managed_count} managed)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "location": self.location,
            "run_id": self.run_id,
            "managed_count": self.managed_count,
        }


def want_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def show_value(value: str | None) -> str:
    """A field's value as plan and history show it: quoted, escaped, cut; None is `null`."""
    if value is None:
        return "null"
    text = _clean(json.dumps(value, ensure_ascii=False))
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 2] + '…"'


def show_members(add: Iterable[str], remove: Iterable[str]) -> str:
    """`+hector -cliff`, each side cut at MEMBERS_SHOWN so 1,000 members stay one readable line."""
    parts: list[str] = []
    for sign, names, verb in (("+", list(add), "added"), ("-", list(remove), "removed")):
        parts += [f"{sign}{_clean(n)}" for n in names[:MEMBERS_SHOWN]]
        if len(names) > MEMBERS_SHOWN:
            parts.append(f"... and {len(names) - MEMBERS_SHOWN} more {verb}")
    return " ".join(parts)


def _shown_counts(plan: Plan) -> list[tuple[Action, int]]:
    counts = plan.counts
    return [(a, counts[a.value]) for a in _ORDER if a in _ALWAYS or counts[a.value]]


def summary_line(plan: Plan) -> str:
    """`Plan: 2 to create, 3 to update, 1 to archive, 0 to restore. 1 error.`"""
    parts = [f"{n} to {a.value}" for a, n in _shown_counts(plan)]
    line = "Plan: " + ", ".join(parts) + "."
    if plan.errors:
        n = len(plan.errors)
        line += f" {n} error{'s' if n != 1 else ''}."
    if plan.changes and not any(c.writes for c in plan.changes):
        line += " The account itself does not change (apply only records this in the journal)."
    return line


def _change_lines(change: Change, color: bool) -> list[str]:
    sym = SYMBOLS[change.action]
    head = f"{sym} {change.action.value} {change.key}"
    head = _paint(head, _COLORS[change.action], color)
    where = f" [{_clean(change.group_id)}]" if change.group_id else ""
    why = change.cause.value + (f": {_clean(change.note)}" if change.note else "")
    lines = [f"{head} {show_value(change.name)}{where} ({why})"]

    def tag(cause: Any) -> str:
        # A part's own cause is shown only where it differs from the change's.
        return f"  ({cause.value})" if cause is not None and cause is not change.cause else ""

    for f in change.fields:
        if change.action is Action.CREATE:
            lines.append(f"    {f.field}: {show_value(f.new)}")
        else:
            lines.append(f"    {f.field}: {show_value(f.old)} -> {show_value(f.new)}{tag(f.cause)}")
    if change.members_add or change.members_remove:
        members = show_members(change.members_add, change.members_remove)
        lines.append(f"    members: {members}{tag(change.members_cause)}")
    elif change.members == () and change.action is Action.CREATE:
        lines.append("    members: (none)")
    if change.set_archived is not None:
        new = "true" if change.set_archived else "false"
        old = "false" if change.set_archived else "true"
        if change.action is Action.CREATE:
            lines.append(f"    archived: {new}")
        elif len(lines) > 1 or change.action is Action.ADOPT or tag(change.archived_cause):
            # The header alone does not say it: other parts are listed, or causes differ.
            lines.append(f"    archived: {old} -> {new}{tag(change.archived_cause)}")
    return lines


def message_line(message: Message) -> str:
    """`✉ cs101: welcome (3 members)`."""
    who = f" ({message.count} member{'s' if message.count != 1 else ''})"
    return f"✉ {message.key}: {message.kind}" + (who if message.kind == "welcome" else "")


def _message_lines(plan: Plan) -> list[str]:
    if not plan.messages:
        return []
    title = "Messages to post (after their change applies; an archive's, before it):"
    return [title] + [f"  {message_line(m)}" for m in plan.messages]


def _body_lines(plan: Plan, color: bool) -> list[str]:
    lines: list[str] = []
    for change in plan.changes:
        lines += _change_lines(change, color)
    if plan.messages:
        lines += ["", *_message_lines(plan)]
    if plan.errors:
        if lines:
            lines.append("")
        lines.append(_paint("Errors (these groups are left as they are):", "1;31", color))
        lines += [f"  ! {e.key}: {_clean(e.message)}" for e in plan.errors]
    return lines


def _refusal_lines(plan: Plan, color: bool) -> list[str]:
    if not plan.refused:
        return []
    title = "REFUSED by safety limits: nothing will be applied without --force:"
    return [_paint(title, "1;31", color)] + [
        _paint(f"  ! {r}", "1;31", color) for r in plan.refusals
    ]


def render_text(plan: Plan, *, color: bool = False, state: StateLine | None = None) -> str:
    """Terraform-like: the state line, one symbol per action, `old -> new` per field, causes,
    then totals."""
    head = [] if state is None else [state.text(), ""]
    if not plan.changes and not plan.errors:
        return "\n".join(
            [*head, f"No changes. {plan.managed_count} managed groups are up to date."]
        )
    lines = head + _body_lines(plan, color)
    lines.append("")
    refusals = _refusal_lines(plan, color)
    if refusals:
        lines += [*refusals, ""]
    lines.append(_paint(summary_line(plan), "1", color))
    lines.append(f"Checksum: {plan.checksum}")
    return "\n".join(lines)


def document(plan: Plan, state: StateLine | None = None) -> dict[str, Any]:
    """The JSON document (see the module docstring): versioned, stable for tools."""
    return {
        "format_version": FORMAT_VERSION,
        "checksum": plan.checksum,
        "refused": plan.refused,
        "empty": plan.empty,
        "counts": plan.counts,
        "plan": plan.to_dict(),
        "state": None if state is None else state.to_dict(),
    }


def render_json(plan: Plan, *, state: StateLine | None = None) -> str:
    return json.dumps(document(plan, state), indent=2, sort_keys=True, ensure_ascii=False)


def _fence(text: str) -> str:
    """A code fence longer than any backtick run inside, so no group name can break out."""
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _state_markdown(state: StateLine | None) -> list[str]:
    if state is None:
        return []
    line = _escape(state.text())
    return [f"> [!WARNING]\n> {line}", ""] if state.source == "none" else [line, ""]


def render_markdown(plan: Plan, *, state: StateLine | None = None) -> str:
    """A pull-request comment: marker, state, verdict, counts table, errors, collapsed details."""
    out = [MARKER, "### groupsync plan", "", *_state_markdown(state)]
    if plan.refused:
        out.append("> [!CAUTION]")
        out.append("> **Refused by safety limits**: `apply` needs `--force`.")
        out += [f"> - {_escape(r)}" for r in plan.refusals]
        out.append("")
    if not plan.changes and not plan.errors:
        out.append(f"No changes. {plan.managed_count} managed groups are up to date.")
    else:
        out += ["| action | groups |", "|---|---:|"]
        out += [f"| {a.value} | {n} |" for a, n in _shown_counts(plan)]
        if plan.errors:
            out.append(f"| **errors** | **{len(plan.errors)}** |")
        out.append("")
    if plan.errors:
        out.append("**Errors** (these groups are left as they are):")
        out += [f"- `{e.key}`: {_escape(_clean(e.message))}" for e in plan.errors]
        out.append("")
    if plan.messages:
        out.append("**Messages** to post:")
        out += [f"- {_escape(_clean(message_line(m)))}" for m in plan.messages]
        out.append("")
    if plan.changes:
        body = "\n".join(line for c in plan.changes for line in _change_lines(c, False))
        if len(body) > MARKDOWN_DETAILS_BUDGET:
            body = body[:MARKDOWN_DETAILS_BUDGET].rsplit("\n", 1)[0]
            body += "\n... (cut: run `groupsync plan` for the full plan)"
        fence = _fence(body)
        out += [
            f"<details><summary>{len(plan.changes)} changes</summary>",
            "",
            f"{fence}diff",
            body,
            fence,
            "",
            "</details>",
            "",
        ]
    out.append(f"Checksum: `{plan.checksum}`")
    return "\n".join(out) + "\n"
