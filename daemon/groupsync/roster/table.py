"""One CSV file, parsed strictly with the stdlib csv module: header names, then rows.

Columns are found by their header name, in any order; unknown columns are ignored. UTF-8 with
or without a byte-order mark, LF or CRLF. A quoted field may hold commas (OneRoster's
multi-values) and line breaks. What csv would quietly repair is an error here, at file:row: an
unterminated quote (which would swallow the rest of the file into one field) and a row whose
number of fields differs from the header's (a shifted column puts emails where usernames go).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from groupsync.roster.issues import Problems

_BOM = "\ufeff"
_UNTERMINATED = "a quote opened in this row is never closed (the file may be cut short)"


@dataclass(frozen=True, slots=True)
class Table:
    """A parsed file: `rows` are (line where the record starts, fields), in file order."""

    file: str
    header: tuple[str, ...]
    rows: list[tuple[int, list[str]]]

    def index(self, name: str) -> int | None:
        try:
            return self.header.index(name)
        except ValueError:
            return None

    def column(self, name: str) -> int:
        """The index of a required column (`parse` checked it is there)."""
        return self.header.index(name)


def parse(data: bytes, file: str, required: Sequence[str], problems: Problems) -> Table | None:
    """The table, or None when it cannot be used at all (errors are added to `problems`)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        problems.error(file, line, f"is not UTF-8 text (byte {data[e.start]:#04x})")
        return None
    records = _records(text.removeprefix(_BOM), file, problems)
    first = next(records, None)
    if first is None:
        problems.error(file, None, "is empty: it has no header row")
        return None
    _, header = first
    missing = [name for name in required if name not in header]
    if missing:
        columns = ", ".join(repr(m) for m in missing)
        problems.error(file, 1, f"has no {columns} column (the header is {','.join(header)})")
        return None
    rows = []
    width = len(header)
    for line, fields in records:
        if len(fields) != width:
            problems.error(file, line, f"has {len(fields)} fields, the header has {width}")
            continue
        rows.append((line, fields))
    return Table(file, tuple(header), rows)


def _records(text: str, file: str, problems: Problems) -> Iterator[tuple[int, list[str]]]:
    """(start line, fields) per record; blank lines skipped; a parse error ends the file."""
    source = io.StringIO(text, newline="")
    reader = csv.reader(source, strict=True)
    line = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            # Only an open quote makes csv run out of input mid-record.
            why = _UNTERMINATED if source.read() == "" else str(e)
            problems.error(file, line, f"cannot be parsed: {why}")
            return
        if fields:
            yield line, fields
        line = reader.line_num + 1
