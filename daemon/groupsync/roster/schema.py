"""The spec's `rosters:` and `generate:` sections: their shape, which is also the JSON Schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from groupsync.roster.generate import template_fields
from groupsync.strictmodel import StrictModel, no_default

UsernameColumn = Literal["username", "email", "identifier", "sourcedId"]
Role = Literal[
    "administrator", "aide", "guardian", "parent", "proctor", "relative", "student", "teacher"
]
SOURCE_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}\.classes$"


def _template(text: str) -> str:
    try:
        template_fields(text)
    except ValueError as e:
        raise PydanticCustomError("template", str(e)) from None
    return text


Template = Annotated[str, StringConstraints(min_length=1), AfterValidator(_template)]


class UsernameModel(StrictModel):
    column: UsernameColumn = Field(description="The users.csv column that holds the username.")
    strip_domain: bool = Field(False, description='true: "ada@uni.edu" becomes "ada".')


class RosterModel(StrictModel):
    """Exactly one of `oneroster` and `csv`; a relative path is relative to this spec file."""

    oneroster: str | None = Field(
        None,
        description="A OneRoster 1.1 CSV bulk export: a folder or a .zip holding manifest.csv,"
        " classes.csv, users.csv and enrollments.csv.",
    )
    csv: str | None = Field(
        None, description="A CSV with a header naming 'group' and 'username' columns."
    )
    username: UsernameColumn | UsernameModel = Field(
        "username", description="OneRoster only: the users.csv column that is the username."
    )

    @model_validator(mode="after")
    def _one_source(self) -> RosterModel:
        if (self.oneroster is None) == (self.csv is None):
            raise PydanticCustomError("roster", "set either 'oneroster' or 'csv'")
        if self.csv is not None and "username" in self.model_fields_set:
            raise PydanticCustomError("roster", "'username' is for a OneRoster roster only")
        return self


class GenerateModel(StrictModel):
    """One group per class of a OneRoster roster."""

    source: Annotated[str, StringConstraints(pattern=SOURCE_PATTERN)] = Field(
        alias="from", description="'<roster>.classes': the classes of a OneRoster roster."
    )
    where: dict[str, str] = Field(
        default_factory=dict, description="Only classes whose classes.csv columns equal these."
    )
    key: Template = Field(
        description="Each class's key, from classes.csv fields ('class-{classCode}'); lower-cased,"
        " other characters become '-'. Never from the title: the key is the group's identity."
    )
    name: Template = Field(description="The group's name, e.g. '{title} ({classCode})'.")
    description: Template | None = Field(
        None,
        description="Omitted: left alone. null: cleared.",
        json_schema_extra=no_default,
    )
    members: list[Role] = Field(
        default_factory=lambda: ["teacher", "student"],
        description="The enrollment roles that become members.",
    )


def message(kind: str, path: tuple[str | int, ...], value: Any) -> str | None:
    """Wording for pydantic errors in these sections; None keeps the generic one."""
    if kind == "string_pattern_mismatch" and path[-1] == "from":
        return f"{value!r} is not '<roster>.classes' (e.g. 'sis.classes')"
    return None
