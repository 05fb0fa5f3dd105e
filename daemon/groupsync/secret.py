"""A value that must never be printed, logged, journaled or written to a plan file."""

from __future__ import annotations


class Secret:
    """Holds a token; repr() and str() hide it, so an f-string or a log call cannot leak it.

    `source` says where the value came from (e.g. "api.token_file '/etc/token'"), so an error
    about the value can point at what to fix without showing it.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, *, source: str | None = None) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
