"""The run summary posted to `notify.admin_group`'s conversation, and when it is posted.

Admins learn of a run that changed something, failed or was refused without reading logs. A
refusal or error that repeats unchanged is posted once, not on every tick, and `resolved` is
posted when it clears; the journal's outbox remembers what was last reported.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from groupsync.api import ApiError, Client
from groupsync.apply import ApplyResult
from groupsync.canonical import canonical_json
from groupsync.journal import Journal
from groupsync.notify import cap
from groupsync.outbox import Courier
from groupsync.outcomes import RunOutcome
from groupsync.plan import Action, Cause, Plan

log = logging.getLogger("groupsync.runsummary")

MAX_KEYS = 30  # keys named in a summary; the rest are counted
_VERBS = {
    Action.CREATE: "created",
    Action.ADOPT: "adopted",
    Action.UPDATE: "updated",
    Action.RESTORE: "restored",
    Action.ARCHIVE: "archived",
    Action.DELETE: "deleted",
}


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What a summary says about one run."""

    run_id: int
    outcome: RunOutcome
    plan: Plan | None
    result: ApplyResult | None
    error: str | None
    commit: str | None


@dataclass(frozen=True, slots=True)
class Post:
    kind: str  # "summary" or "resolved"
    text: str
    problems: str | None = None  # the summary's problems (canonical JSON), kept by the journal


def problems_of(facts: RunFacts) -> list[str]:
    """Refusals and errors, in words that stay the same while the problem does."""
    plan, out = facts.plan, []
    if plan is not None:
        out += [f"refused: {r}" for r in plan.refusals]
        out += [f"{e.key}: {e.message}" for e in plan.errors]
    if facts.result is not None:
        out += [f"{key}: {why}" for key, why in facts.result.failures]
    if facts.outcome is RunOutcome.ERROR and facts.error:
        out.append(f"error: {facts.error}")
    return out


def _changed(facts: RunFacts) -> list[str]:
    """The keys whose change applied, a drift repair marked."""
    if facts.plan is None or facts.result is None:
        return []
    failed = {key for key, _ in facts.result.failures}
    return [
        c.key + (" (drift)" if c.cause is Cause.DRIFT else "")
        for c in facts.plan.changes
        if c.writes and c.key not in failed
    ]


def _counts(facts: RunFacts) -> str:
    counts: dict[str, int] = {}
    if facts.plan is not None and facts.result is not None:
        failed = {key for key, _ in facts.result.failures}
        for c in facts.plan.changes:
            if c.writes and c.key not in failed:
                verb = _VERBS[c.action]
                counts[verb] = counts.get(verb, 0) + 1
        if facts.result.failed:
            counts["failed"] = facts.result.failed
    return ", ".join(f"{n} {verb}" for verb, n in counts.items()) or "nothing changed"


def compose(facts: RunFacts, problems: Sequence[str]) -> str:
    commit = f" at commit {facts.commit[:10]}" if facts.commit else ""
    lines = [f"groupsync run {facts.run_id}: {facts.outcome}{commit}", _counts(facts)]
    changed = _changed(facts)
    if changed:
        more = f" and {len(changed) - MAX_KEYS} more" if len(changed) > MAX_KEYS else ""
        lines.append("Changed: " + ", ".join(changed[:MAX_KEYS]) + more)
    if problems:
        lines.append("Problems:")
        lines += [f"- {p}" for p in problems]
    return cap("\n".join(lines))


def posts(facts: RunFacts, open_problems: str | None) -> list[Post]:
    """What to post for this run, given the problems the last summary reported (or None)."""
    if facts.outcome in (RunOutcome.INTERRUPTED, RunOutcome.DECLINED):
        return []  # a person stopped or declined it: they know
    problems = problems_of(facts)
    signature = canonical_json(problems) if problems else None
    changed = bool(_changed(facts))
    out = []
    if changed or (signature is not None and signature != open_problems):
        out.append(Post("summary", compose(facts, problems), signature))
    if open_problems is not None and signature is None:
        was = "\n".join(f"- {p}" for p in json.loads(open_problems))
        out.append(Post("resolved", cap(f"groupsync run {facts.run_id}: resolved\n{was}")))
    return out


def due(journal: Journal, admin_key: str, facts: RunFacts) -> list[Post]:
    return posts(facts, journal.open_problems(admin_key))


async def post_summary(
    client: Client, journal: Journal, admin_key: str, facts: RunFacts, todo: list[Post]
) -> None:
    """Post `todo` into the admin group's conversation (read now: the run may have made it)."""
    group_id = journal.managed().get(admin_key)
    conversation = None
    if group_id is not None:
        try:
            conversation = (await client.get_group(group_id.group_id)).conversation_id
        except ApiError as exc:
            log.warning("run summary not posted: cannot read the admin group: %s", exc)
    courier = Courier(client, journal, facts.run_id)
    for post in todo:
        if conversation is None:
            why = f"not posted: the admin group {admin_key!r} has no conversation yet"
            courier.record(admin_key, post.kind, post.text, None, why)
            continue
        await courier.post(admin_key, post.kind, post.text, conversation, problems=post.problems)
