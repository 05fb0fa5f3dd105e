"""Strict YAML for hand-edited files: plain data plus the file:line:column of every value.

PyYAML's SafeLoader keeps the last of two duplicate keys, honours tags, expands aliases without
bound and forgets where each value came from. A spec edited by hand needs the opposite: every
mistake rejected and reported where it is. So we build plain values from the parser's events
ourselves, in one pass, recording positions and refusing tags, deep nesting, duplicate keys,
recursive aliases and alias expansions past a bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

MAX_BYTES = 5 * 1024 * 1024
MAX_ALIAS_NODES = 10_000  # nodes reachable through aliases; a real spec needs a few hundred
MAX_DEPTH = 64  # a spec is 4 levels deep; this only stops stack exhaustion

PathT = tuple[str | int, ...]

# What YAML 1.1 allows in a stream (PyYAML's Reader.NON_PRINTABLE): checked up front, so the
# position is exact whichever parser runs.
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)

# Scalars whose implicit YAML type we keep; anything else (merge "<<", value "=") stays a string.
_TYPED_SCALARS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "timestamp")
)


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its constructor's arguments: a spec folder's files are read by worker
        processes, and the dataclass default (state set field by field) costs twice as much."""
        return (Location, (self.file, self.line, self.column))


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in a file: where, the path inside the document, and what is wrong."""

    location: Location | None
    path: str  # inside the document, e.g. "groups.chess-club.members[2]"
    message: str

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        inside = f"{self.path}: " if self.path else ""
        return f"{where}{inside}{self.message}"

    @property
    def sort_key(self) -> tuple[int, str, int, int]:
        """By place; issues with none (a file that cannot be read) last, by message: each
        message starts with the file's name, so they come in name order too."""
        loc = self.location
        return (0, loc.file, loc.line, loc.column) if loc else (1, self.message, 0, 0)


class YamlError(Exception):
    """The file could not be read as data at all; carries the issues found so far."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Document:
    """Plain data (dict/list/str/int/float/bool/None/date) and where each piece was written.

    Positions are kept packed in one int each (a parser's Mark takes ten times the room); a
    Location is only built for the few paths a
    message or a caller asks about: building one per value would cost about a quarter of the
    load time (benchmarks/RESULTS.md). Parsed with a `depth`, only the positions of the first
    levels are kept (a spec's sections and entries): the rest, about 8 KB a group, is found
    again by parsing the text once more when a message needs it."""

    file: str
    data: Any
    value_marks: dict[PathT, int] = field(default_factory=dict)  # packed: see _pack
    key_marks: dict[PathT, int] = field(default_factory=dict)
    plain: set[PathT] = field(default_factory=set)  # unquoted scalars: YAML guessed their type
    depth: int | None = None  # positions kept for paths at most this long; None: every path

    def where(self, path: PathT, *, key: bool = False) -> Location:
        """Position of `path` (its key when asked), else of its nearest recorded ancestor."""
        mark = self.key_marks.get(path) if key else None
        if mark is None:
            mark = self.value_marks.get(path)  # the usual case: asked about a value we recorded
        end = len(path)
        while mark is None and end > 0:
            end -= 1
            mark = self.value_marks.get(path[:end])
        if mark is None:
            return Location(self.file, 1, 1)
        line, column = divmod(mark, _LINE)
        return Location(self.file, line + 1, column + 1)

    def issue(self, path: PathT, message: str, *, key: bool = False) -> Issue:
        return Issue(self.where(path, key=key), format_path(path), message)


_LINE = MAX_BYTES + 1  # a column is below this, so line * _LINE + column packs both


def _pack(mark: yaml.Mark) -> int:
    return mark.line * _LINE + mark.column


def _location(file: str, mark: yaml.Mark | None) -> Location:
    if mark is None:
        return Location(file, 1, 1)
    return Location(file, mark.line + 1, mark.column + 1)


def read_text(path: Path, display: str, *, too_big: str = "") -> str:
    """Bytes -> text, refusing oversized files and non-UTF-8 bytes with their position.

    `too_big` is appended to the size error: what to do instead, in the caller's terms."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as e:
        raise YamlError([Issue(None, "", f"{display} cannot be read: {e.strerror}")]) from None
    if len(raw) > MAX_BYTES:
        message = f"file is over the {MAX_BYTES // (1024 * 1024)} MiB limit{too_big}"
        raise YamlError([Issue(Location(display, 1, 1), "", message)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        message = f"not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start}"
        raise YamlError([Issue(Location(display, line, column), "", message)]) from None
    return text.removeprefix("\ufeff")


try:  # libyaml parses several times faster; _Builder runs on its events either way
    from yaml._yaml import CParser as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        def __init__(self, text: str) -> None:
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)


@dataclass(slots=True)
class _Anchor:
    """An anchored value, for its aliases: the value itself (shared, never copied: nothing
    mutates parsed data), how many values an alias to it stands for, and where the positions
    recorded while it was built sit in the builder's trail."""

    value: Any
    path: PathT
    text: str | None = None  # a scalar's text: an alias used as a mapping key reads it
    size: int = 0
    trail: tuple[int, int] = (0, 0)
    building: bool = True


class _Builder(_Parser, SafeConstructor, Resolver):
    """libyaml's events straight to plain values, recording positions, in one pass.

    No node graph: building PyYAML's nodes and then walking them took two thirds of the load.
    Tags, depth, duplicate keys and anchors, merge keys and recursive aliases are refused as
    met. An alias stands for its anchor's value (shared) and counts as the values it expands
    to, so an alias bomb stops at MAX_ALIAS_NODES; positions below it are those recorded while
    the anchor was built, replayed under the alias's path."""

    def __init__(self, text: str, doc: Document) -> None:
        _Parser.__init__(self, text)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.doc = doc
        self.limit = doc.depth
        # Reported in this order of precedence, as a reader fixes them: syntax (raised at
        # once), tags, an alias bomb, then the rest.
        self.tags: list[Issue] = []
        self.bomb: yaml.Mark | None = None
        self.issues: list[Issue] = []
        self.level = 0
        self.built = 0  # values built, aliases counted as what they expand to
        self.aliased = 0  # values that aliases stand for
        self.anchors: dict[str, _Anchor] = {}
        # (path, mark, kind) recorded while an anchor is being built, for its aliases to replay
        self.trail: list[tuple[PathT, int, str]] = []
        self.open_anchors = 0
        self.skipping = 0  # inside a value read only for its anchors (its key was refused)

    def document(self) -> Any:
        """The stream's one document (None if it has none)."""
        self.get_event()  # StreamStart
        if self.check_event(yaml.StreamEndEvent):
            return None
        self.get_event()  # DocumentStart
        first = self.get_event()
        value = self.value(first, (), True)
        self.get_event()  # DocumentEnd
        if not self.check_event(yaml.StreamEndEvent):
            raise ComposerError(
                "expected a single document in the stream",
                first.start_mark,
                "but found another document",
                self.get_event().start_mark,
            )
        return value

    def _record(self, path: PathT, mark: yaml.Mark, kind: str) -> None:
        packed = _pack(mark)
        if kind == "key":
            self.doc.key_marks[path] = packed
        else:
            self.doc.value_marks[path] = packed
        if self.open_anchors:
            self.trail.append((path, packed, kind))

    def _records(self, path: PathT) -> bool:
        return self.limit is None or len(path) <= self.limit

    def value(self, event: yaml.Event, path: PathT, record: bool) -> Any:
        """The value `event` starts (a scalar, or a collection read to its end)."""
        kind = event.__class__
        if kind is yaml.AliasEvent:
            return self._alias(event, path, record)
        if event.tag is not None:
            message = f"YAML tags are not allowed (found {event.tag!r})"
            self.tags.append(Issue(_location(self.doc.file, event.start_mark), "", message))
        if self.level >= MAX_DEPTH:
            raise yaml.MarkedYAMLError(
                problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=event.start_mark
            )
        anchor = self._anchor(event, path)
        self.built += 1
        before = self.built
        if record:
            self._record(path, event.start_mark, "value")
        if kind is yaml.ScalarEvent:
            value = self._scalar(event, path, record)
        elif kind is yaml.SequenceStartEvent:
            value = self._sequence(path, record, anchor)
        else:
            value = self._mapping(path, record, anchor)
        if anchor is not None:
            anchor.value = value
            anchor.size = self.built - before + 1
            anchor.trail = (anchor.trail[0], len(self.trail))
            anchor.building = False
            self.open_anchors -= 1
            if kind is yaml.ScalarEvent:
                anchor.text = event.value
        return value

    def _anchor(self, event: yaml.Event, path: PathT) -> _Anchor | None:
        name = event.anchor
        if name is None:
            return None
        if name in self.anchors:
            raise ComposerError(
                f"found duplicate anchor {name!r}; first occurrence",
                None,
                "second occurrence",
                event.start_mark,
            )
        anchor = self.anchors[name] = _Anchor(None, path, trail=(len(self.trail), 0))
        self.open_anchors += 1
        return anchor

    def _untyped(self, event: yaml.ScalarEvent) -> bool:
        """Whether YAML guesses no type for the scalar: quoted, or starting with a character no
        implicit resolver claims, as most do ('ada', 'CS 101'); resolve() is then not called."""
        if event.style or not event.implicit[0]:
            return True
        resolvers = self.yaml_implicit_resolvers
        return event.value[:1] not in resolvers and None not in resolvers

    def _text(self, event: yaml.Event) -> bool:
        """Whether `event` is a string and nothing else to check: no tag, no anchor, not too
        deep. Most values are; their position, when not kept, is all value() would add."""
        return (
            event.__class__ is yaml.ScalarEvent
            and event.tag is None
            and event.anchor is None
            and self.level < MAX_DEPTH
            and self._untyped(event)
        )

    def _scalar(self, event: yaml.ScalarEvent, path: PathT, record: bool) -> Any:
        text = event.value
        if self._untyped(event):
            return text
        tag = self.resolve(yaml.ScalarNode, text, event.implicit)
        if tag not in _TYPED_SCALARS:
            return text
        if record:
            self.doc.plain.add(path)
            if self.open_anchors:
                self.trail.append((path, 0, "plain"))
        node = yaml.ScalarNode(tag, text, event.start_mark, event.end_mark, event.style)
        return self.yaml_constructors[tag](self, node)

    def _sequence(self, path: PathT, record: bool, anchor: _Anchor | None) -> list[Any]:
        out: list[Any] = []
        if anchor is not None:
            anchor.value = out  # an alias inside it finds it open: a recursive anchor
        self.level += 1
        keep = record and self._records((*path, 0))
        event = self.get_event()
        while event.__class__ is not yaml.SequenceEndEvent:
            if not keep and self._text(event):  # a member list's usernames
                self.built += 1
                out.append(event.value)
            else:
                out.append(self.value(event, (*path, len(out)), keep))
            event = self.get_event()
        self.level -= 1
        return out

    def _mapping(self, path: PathT, record: bool, anchor: _Anchor | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if anchor is not None:
            anchor.value = out
        self.level += 1
        keep = record and self._records((*path, ""))
        event = self.get_event()
        while event.__class__ is not yaml.MappingEndEvent:
            key = self._key(event, path)
            value_event = self.get_event()
            if key is None or key in out:
                if key is not None:
                    self._duplicate(event, path, (*path, key))
                self._skip(value_event, path)
            elif keep:
                self._record((*path, key), event.start_mark, "key")
                out[key] = self.value(value_event, (*path, key), keep)
            elif self._text(value_event):  # a group's name, say
                self.built += 1
                out[key] = value_event.value
            else:
                out[key] = self.value(value_event, (*path, key), keep)
            event = self.get_event()
        self.level -= 1
        return out

    def _key(self, event: yaml.Event, path: PathT) -> str | None:
        """A mapping key: always its text (a key is a name: never let YAML turn `on` or `101`
        into a type); None, reported, for anything else."""
        if event.__class__ is yaml.AliasEvent:
            text = self._target(event).text
            if text is not None:
                return text
        if event.__class__ is not yaml.ScalarEvent:
            self.issue(event.start_mark, path, "keys must be plain strings")
            if event.__class__ is not yaml.AliasEvent:
                self._skip(event, path)
            return None
        if event.tag is not None or event.anchor is not None or self.level >= MAX_DEPTH:
            self.value(event, path, False)  # reports the tag or depth, keeps the anchor
        if event.value == "<<" and not event.style:
            self.issue(event.start_mark, path, "YAML merge keys ('<<') are not supported")
            return None
        return event.value  # type: ignore[no-any-return]

    def _skip(self, event: yaml.Event, path: PathT) -> None:
        """Read a refused key's value only for what the parser must still check (tags, depth,
        anchors later aliases use): it is not part of the data, so nothing in it is reported."""
        self.skipping += 1
        try:
            self.value(event, path, False)
        finally:
            self.skipping -= 1

    def _duplicate(self, event: yaml.Event, path: PathT, child: PathT) -> None:
        if self.skipping:
            return
        first = self.doc.key_marks.get(child)
        if first is None:
            raise _NeedPositions
        message = f"duplicate key {child[-1]!r} (first defined at line {first // _LINE + 1})"
        self.issue(event.start_mark, path, message)

    def _target(self, event: yaml.AliasEvent) -> _Anchor:
        anchor = self.anchors.get(event.anchor)
        if anchor is None:
            raise ComposerError(
                None, None, f"found undefined alias {event.anchor!r}", event.start_mark
            )
        return anchor

    def _alias(self, event: yaml.AliasEvent, path: PathT, record: bool) -> Any:
        anchor = self._target(event)
        if record:
            self._record(path, event.start_mark, "value")
        if self.skipping:
            return anchor.value
        if anchor.building:
            self.issue(event.start_mark, path, "an alias refers to itself (recursive anchor)")
            return None
        self.aliased += anchor.size
        self.built += anchor.size
        if self.aliased > MAX_ALIAS_NODES and self.bomb is None:
            self.bomb = event.start_mark  # the values are shared, not copied: read on
        if record:
            self._replay(anchor, path)
        return anchor.value

    def _replay(self, anchor: _Anchor, path: PathT) -> None:
        """The positions inside the anchor's value, under the alias's path."""
        start, end = anchor.trail
        cut = len(anchor.path)
        for recorded, packed, kind in self.trail[start:end]:
            moved = (*path, *recorded[cut:])
            if (kind == "value" and moved == path) or not self._records(moved):
                continue  # the alias's own position is where it is written
            if kind == "plain":
                self.doc.plain.add(moved)
            else:
                marks = self.doc.key_marks if kind == "key" else self.doc.value_marks
                marks[moved] = packed

    def issue(self, mark: yaml.Mark, path: PathT, message: str) -> None:
        if self.skipping:
            return
        self.issues.append(Issue(_location(self.doc.file, mark), format_path(path), message))


class _NeedPositions(Exception):
    """A problem found where positions were not kept: parse again, keeping them all."""


def parse(text: str, file: str, *, depth: int | None = None) -> Document:
    """Text -> Document; raises YamlError with every problem found (syntax stops at the first).

    `depth`: keep positions only for paths at most this long (see Document); a problem is
    always reported at its exact place."""
    doc = Document(file=file, data=None, depth=depth)
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        message = f"character U+{ord(bad.group()):04X} is not allowed in YAML"
        raise YamlError([Issue(Location(file, line, column), "", message)])
    builder: _Builder | None = None
    try:
        builder = _Builder(text, doc)
        doc.data = builder.document()
    except yaml.MarkedYAMLError as e:
        problem = f"{e.context}, {e.problem}" if e.context else e.problem
        mark = e.problem_mark or e.context_mark
        issue = Issue(_location(file, mark), "", f"YAML syntax error: {problem}")
        raise YamlError([*(builder.tags if builder else []), issue]) from None
    except yaml.YAMLError as e:  # no position known (libyaml reader errors)
        raise YamlError([Issue(Location(file, 1, 1), "", f"YAML error: {e}")]) from None
    except _NeedPositions:
        return parse(text, file)
    finally:
        if builder is not None:
            builder.dispose()
    if builder.tags:
        raise YamlError(builder.tags)
    if builder.bomb is not None:
        message = f"aliases expand to more than {MAX_ALIAS_NODES} values (alias bomb?)"
        raise YamlError([Issue(_location(file, builder.bomb), "", message)])
    if builder.issues:
        raise YamlError(builder.issues)
    return doc


def load_file(path: Path, display: str, *, too_big: str = "") -> Document:
    return parse(read_text(path, display, too_big=too_big), display)
