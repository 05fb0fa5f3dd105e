"""Pydantic errors -> file:line:column issues a person can act on.

Spec and config share this: pydantic knows what is wrong and at which path (`loc`), the strict
YAML Document knows where that path was written. Messages are rewritten for someone editing
YAML, not for a Python developer (no "Input should be a valid string").
"""

from __future__ import annotations

import datetime as dt
import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from groupsync.yamlstrict import Document, Issue, PathT, format_path


class StrictModel(BaseModel):
    """No unknown fields, no type coercion (YAML already typed the values), immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def no_default(schema: dict[str, Any]) -> None:
    """Omitted and null mean different things; a schema default of null would blur that."""
    schema.pop("default", None)


def did_you_mean(word: str, candidates: Iterable[str], *, prefix: str = "") -> str:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{match[0]}'?)" if match else ""


def describe(value: Any) -> str:
    """How YAML read a value, in YAML's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, dt.date):
        return f"the date {value.isoformat()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"the string {value!r}"


_EXPECTED = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "a whole number",
    "float_type": "a number",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def _unwrap(tp: Any) -> Any:
    """Optional[X] / Annotated[X, ...] -> X, so the walk below can follow a loc."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the mapping at `loc` (to list its fields for did-you-mean)."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) in (list, tuple):
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def issues_from(
    error: ValidationError,
    doc: Document,
    root: type[BaseModel],
    messages: typing.Callable[[str, PathT, Any], str | None] | None = None,
) -> list[Issue]:
    """One Issue per pydantic error, placed at the key or value it is about.

    `messages(type, path, input)` may supply a domain-specific message (e.g. the key pattern
    explained in words); returning None falls back to the generic wording below.
    """
    out: list[Issue] = []
    for err in error.errors():
        loc = tuple(err["loc"])
        on_key = bool(loc) and loc[-1] == "[key]"
        path: PathT = tuple(p for p in loc if p != "[key]")
        kind, value = err["type"], err.get("input")
        custom = messages(kind, path, value) if messages else None
        if custom is not None:
            out.append(doc.issue(path, custom, key=on_key))
        elif kind == "extra_forbidden":
            model = _model_at(root, path[:-1])
            hint = did_you_mean(str(path[-1]), model.model_fields) if model else ""
            out.append(doc.issue(path, f"unknown field {path[-1]!r}{hint}", key=True))
        elif kind == "missing":
            where = doc.where(path[:-1], key=True)
            out.append(Issue(where, format_path(path[:-1]), f"missing {path[-1]!r}"))
        elif kind in _EXPECTED:
            message = f"expected {_EXPECTED[kind]}, got {describe(value)}"
            if kind == "string_type" and path in doc.plain:
                message += " (put it in quotes to make it a string)"
            out.append(doc.issue(path, message))
        else:
            out.append(doc.issue(path, err["msg"][0].lower() + err["msg"][1:], key=on_key))
    return out
