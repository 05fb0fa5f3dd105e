"""A value that must never be printed, logged, journaled or written to a plan file.

Text that may hold a secret (an error page that echoes the request, say) goes through
`Secret.redact` where it enters the program; `redact_secrets` masks every secret still alive
where text leaves it (log lines, journal rows), as a second line of defence.
"""

from __future__ import annotations

import re
import string
import weakref

PIECE = 8
"""The shortest run of a secret's characters that counts as a leak."""
MASK = "**********"
# RFC 6750's b64token alphabet: what a bearer token is made of, so what an echo of one runs on.
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-._~+/")

_alive: weakref.WeakValueDictionary[int, Secret] = weakref.WeakValueDictionary()


class Secret:
    """Holds a token; repr() and str() hide it, so an f-string or a log call cannot leak it.

    `source` says where the value came from (e.g. "api.token_file '/etc/token'"), so an error
    about the value can point at what to fix without showing it.
    """

    __slots__ = ("__weakref__", "_pieces", "_run_chars", "_value", "source")

    def __init__(self, value: str, *, source: str | None = None) -> None:
        self._value = value
        self._pieces: re.Pattern[str] | None = None
        self._run_chars = (_TOKEN_CHARS | set(value)) - set(string.whitespace)
        self.source = source
        _alive[id(self)] = self

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """`text` with every run of token characters that holds an 8-character piece of the
        secret masked whole.

        Replacing the whole secret is not enough: a cut, a partial echo or a line break inside
        it leaves pieces that still give most of it away. A secret shorter than a piece is
        masked wherever it occurs whole.
        """
        if not self._value:
            return text
        if self._pieces is None:
            size = min(PIECE, len(self._value))
            pieces = {self._value[i : i + size] for i in range(len(self._value) - size + 1)}
            self._pieces = re.compile("|".join(map(re.escape, sorted(pieces))))
        out: list[str] = []
        done = 0  # text[:done] is settled: copied to `out` or masked
        for match in self._pieces.finditer(text):
            start, end = max(match.start(), done), match.end()
            if end <= done:  # inside the run masked last
                continue
            while start > done and text[start - 1] in self._run_chars:
                start -= 1
            while end < len(text) and text[end] in self._run_chars:
                end += 1
            out += (text[done:start], MASK)
            done = end
        return "".join(out) + text[done:] if out else text

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def redact_secrets(text: str) -> str:
    """`text` with every secret this process still holds masked (see `Secret.redact`)."""
    for secret in list(_alive.values()):
        text = secret.redact(text)
    return text
