"""Saved plans (`plan -o FILE`, `apply FILE`): what was planned, and from what state.

A saved plan is only a promise about the state it was computed from. Applying it later is safe
only if that state is unchanged, so the file keeps the spec digest and a fingerprint of every
group the plan touches; `apply` recomputes the plan and refuses a file that no longer matches.
No secret is ever written: the plan holds group data only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from groupsync.canonical import canonical_json
from groupsync.errors import GroupsyncError
from groupsync.models import Group
from groupsync.plan import Plan

FORMAT = "groupsync-plan"
FORMAT_VERSION = 1


class StalePlan(GroupsyncError):
    """The saved plan no longer describes what applying it would do."""


def fingerprint(group: Group) -> str:
    state = [
        group.id,
        group.name,
        group.description,
        group.avatar_url,
        sorted(group.members),
        group.archived_at,
    ]
    return hashlib.sha256(canonical_json(state).encode("utf-8")).hexdigest()


def touched_fingerprints(plan: Plan, actual: dict[str, Group]) -> dict[str, str]:
    ids = {c.group_id for c in plan.changes if c.group_id is not None}
    return {gid: fingerprint(actual[gid]) for gid in sorted(ids) if gid in actual}


def dump(plan: Plan, spec_digest: str, actual: dict[str, Group]) -> str:
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "checksum": plan.checksum,
        "spec_digest": spec_digest,
        "fingerprints": touched_fingerprints(plan, actual),
        "plan": plan.to_dict(),
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


class _SavedChange(BaseModel):
    key: str
    group_id: str | None = None


class _SavedPlan(BaseModel):
    changes: list[_SavedChange]


class _Saved(BaseModel):
    """The parts of a plan file `apply` relies on; anything malformed is refused up front."""

    checksum: str
    spec_digest: str
    fingerprints: dict[str, str]
    plan: _SavedPlan


def load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GroupsyncError(f"{path}: not a readable plan file: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GroupsyncError(f"{path}: not a groupsync plan file")
    if doc.get("format_version") != FORMAT_VERSION:
        raise GroupsyncError(
            f"{path}: plan format version {doc.get('format_version')!r} is not supported "
            f"(this groupsync reads version {FORMAT_VERSION})"
        )
    try:
        _Saved.model_validate(doc)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise GroupsyncError(f"{path}: damaged plan file (bad or missing {fields})") from None
    return doc


def _key_of(saved: dict[str, Any], group_id: str) -> str:
    """The key a saved plan changes `group_id` under, as a person knows the group."""
    keys = sorted({c["key"] for c in saved["plan"]["changes"] if c.get("group_id") == group_id})
    return ", ".join(keys) or "no key"


def check_fresh(
    saved: dict[str, Any], plan: Plan, spec_digest: str, actual: dict[str, Group]
) -> None:
    """Raise StalePlan naming what changed since the plan was saved."""
    if saved["spec_digest"] != spec_digest:
        raise StalePlan("saved plan is stale: the spec changed since it was made; plan again")
    for gid, old in sorted(saved["fingerprints"].items()):
        if gid not in actual or fingerprint(actual[gid]) != old:
            what = "changed" if gid in actual else "was deleted"
            raise StalePlan(
                f"saved plan is stale: group {_key_of(saved, gid)} (id {gid}) {what} since"
                " the plan was made; plan again"
            )
    if saved["checksum"] != plan.checksum:
        raise StalePlan(
            f"saved plan is stale: it has checksum {saved['checksum'][:12]}, the plan now "
            f"computed has {plan.checksum[:12]}; plan again"
        )
