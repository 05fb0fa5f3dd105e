"""The spec's `notify:` section: which message each kind of change posts, and how it reads.

A template is Python `str.format` text whose fields come from a fixed list per kind, checked
when the spec loads: a message is posted to real people, so a typo must fail `validate`, not
reach a chat as `{nmae}`. Fields are plain names only: an attribute, an index, a conversion or a
format spec could reach into Python objects or pad a message to any size.
"""

from __future__ import annotations

import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError

from groupsync.desired import KEY_PATTERN
from groupsync.roster.generate import template_fields
from groupsync.strictmodel import StrictModel, did_you_mean, no_default

Kind = Literal["welcome", "on_archive", "on_restore", "on_rename"]
KINDS: tuple[Kind, ...] = ("welcome", "on_archive", "on_restore", "on_rename")

_COMMON = ("name", "key", "members", "count", "commit")
FIELDS: Mapping[str, tuple[str, ...]] = {
    "welcome": _COMMON,
    "on_archive": (*_COMMON, "reason"),
    "on_restore": _COMMON,
    "on_rename": (*_COMMON, "old_name"),
}
"""The fields each kind's template may use. `members` and `count`: the members welcomed, or
the group's members for the other kinds."""

MAX_MESSAGE = 4000  # characters in one posted message
MAX_MENTIONS = 20  # `{members}` names this many, then "and N more"


def check_template(kind: str, template: str) -> None:
    """Raise ValueError saying what in `template` a `kind` message cannot hold."""
    allowed = FIELDS[kind]
    try:
        names = template_fields(template, expect="a plain field of " + kind)
    except ValueError as e:
        raise ValueError(f"{e}: {', '.join('{' + f + '}' for f in allowed)}") from None
    for name in names:
        if name not in allowed:
            hint = did_you_mean(name, allowed)
            fields = ", ".join("{" + f + "}" for f in allowed)
            raise ValueError(f"{{{name}}} is not a field of {kind}{hint}: use {fields}")
    literal = sum(len(text) for text, *_ in string.Formatter().parse(template))
    if literal > MAX_MESSAGE:
        raise ValueError(f"{literal} characters of text; a message holds at most {MAX_MESSAGE:,}")


def mentions(usernames: Collection[str]) -> str:
    """`@a, @b and @c`; past MAX_MENTIONS names, `... and N more`: a welcome for 300 members
    must not be a wall of names."""
    names = [f"@{u}" for u in sorted(usernames)]
    if len(names) > MAX_MENTIONS:
        return ", ".join(names[:MAX_MENTIONS]) + f" and {len(names) - MAX_MENTIONS} more"
    if len(names) > 1:
        return ", ".join(names[:-1]) + " and " + names[-1]
    return "".join(names)


def cap(text: str) -> str:
    """At most MAX_MESSAGE characters: the end is cut and marked."""
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def render(template: str, values: Mapping[str, Any]) -> str:
    """The message: `members` (a collection of usernames) as mentions, capped."""
    shown = {
        k: mentions(v) if k == "members" else ("" if v is None else v) for k, v in values.items()
    }
    return cap(template.format_map(shown))


# --- the spec section (also the published JSON Schema) -----------------------------------------


def _template(kind: str) -> Any:
    def check(text: str) -> str:
        try:
            check_template(kind, text)
        except ValueError as e:
            raise PydanticCustomError("template", str(e)) from None
        return text

    return Annotated[str, StringConstraints(min_length=1), AfterValidator(check)]


_DESCRIPTIONS = {
    "welcome": "Posted once per run into a group the spec added members to: {members} joined.",
    "on_archive": "Posted into a group just before the spec archives it ({reason}: why).",
    "on_restore": "Posted into a group the spec brought back from the archive.",
    "on_rename": "Posted into a group the spec renamed ({old_name}: its name before).",
}


def _kind_field(kind: str) -> Any:
    fields = ", ".join("{" + f + "}" for f in FIELDS[kind])
    return Field(
        None,
        description=f"{_DESCRIPTIONS[kind]} Fields: {fields}. null: not posted.",
        json_schema_extra=no_default,
    )


class GroupNotifyModel(StrictModel):
    """One group's messages: each kind set here replaces the spec's default; null turns it off."""

    welcome: _template("welcome") | None = _kind_field("welcome")  # type: ignore[valid-type]
    on_archive: _template("on_archive") | None = _kind_field("on_archive")  # type: ignore[valid-type]
    on_restore: _template("on_restore") | None = _kind_field("on_restore")  # type: ignore[valid-type]
    on_rename: _template("on_rename") | None = _kind_field("on_rename")  # type: ignore[valid-type]


class NotifyModel(GroupNotifyModel):
    """The messages groupsync posts; omitted kinds are not posted."""

    admin_group: Annotated[str, StringConstraints(pattern=KEY_PATTERN)] | None = Field(
        None,
        description="A group key of this spec: a summary of each run that changed something,"
        " failed or was refused is posted into its conversation.",
    )


# --- the loaded value ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notify:
    """What the spec says to post. `overrides`: key -> the kinds that group sets (None: off)."""

    admin_group: str | None = None
    defaults: Mapping[str, str] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)

    def template(self, key: str, kind: str) -> str | None:
        """The template a group posts for `kind`, or None when it posts nothing."""
        override = self.overrides.get(key)
        if override is not None and kind in override:
            return override[kind]
        return self.defaults.get(kind)


def notify_from(
    defaults: Mapping[str, Any] | None, overrides: Mapping[str, Mapping[str, Any]]
) -> Notify:
    """The value from the YAML as written: a kind written as null is kept, to turn it off."""
    defaults = defaults or {}
    return Notify(
        admin_group=defaults.get("admin_group"),
        defaults={k: v for k in KINDS if isinstance(v := defaults.get(k), str)},
        overrides={key: {k: raw[k] for k in KINDS if k in raw} for key, raw in overrides.items()},
    )
