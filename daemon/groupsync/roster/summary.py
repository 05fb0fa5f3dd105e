"""One roster as read for one run: its digest and what it held and yielded.

`validate` and `plan` print it, the journal keeps it per run (`history` shows it), and the
safety check compares what a roster yields now with what it yielded at the last applied run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

_SHOWN_KEYS = 5


@dataclass(frozen=True, slots=True)
class RosterSummary:
    name: str
    kind: Literal["oneroster", "csv"]
    digest: str  # SHA-256 of the files read
    files: int
    rows: int
    classes: int = 0
    users: int = 0
    enrollments: int = 0
    groups: int = 0  # groups it yields: generated (OneRoster) or listed (CSV)
    members: int = 0  # memberships in those groups
    generated: tuple[str, ...] = ()  # keys of the groups generated from it

    def to_json(self) -> dict[str, Any]:
        """The journal's form: everything but the generated keys (the changes name those)."""
        data = asdict(self)
        del data["generated"]
        return data

    def line(self) -> str:
        """`roster sis (oneroster, digest 1a2b3c4d5e6f): 4 files, 63 rows, ... -> 3 groups, ...`"""
        counts = [_n(self.files, "file"), _n(self.rows, "row")]
        if self.kind == "oneroster":
            counts += [
                _n(self.classes, "class"),
                _n(self.users, "user"),
                _n(self.enrollments, "enrollment"),
            ]
        text = (
            f"roster {self.name} ({self.kind}, digest {self.digest[:12]}): {', '.join(counts)}"
            f" -> {_n(self.groups, 'group')}, {_n(self.members, 'member')}"
        )
        if self.generated:
            keys = ", ".join(self.generated[:_SHOWN_KEYS])
            more = len(self.generated) - _SHOWN_KEYS
            text += f" (generated: {keys}{f' and {more} more' if more > 0 else ''})"
        return text


def _n(count: int, noun: str) -> str:
    plural = "es" if noun.endswith("s") else "s"
    return f"{count} {noun}{'' if count == 1 else plural}"


def history_line(data: dict[str, Any]) -> str:
    """A journaled summary (`to_json`) on one line, for `history`."""
    return RosterSummary(**data).line()
