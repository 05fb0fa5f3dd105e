"""Strict YAML for hand-edited files: plain data plus the file:line:column of every value.

PyYAML's SafeLoader keeps the last of two duplicate keys, honours tags, expands aliases without
bound and forgets where each value came from. A spec edited by hand needs the opposite: every
mistake rejected and reported where it is. So we compose nodes ourselves (rejecting tags and
deep nesting on the way), then walk them into plain values, recording positions and refusing
duplicates, cycles and alias expansions past a bound.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
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


try:  # libyaml parses several times faster; our Python composer runs on its events either way
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


class _Composer(Composer, _Parser, SafeConstructor, Resolver):
    """Builds the node graph only; records tags and over-deep nesting instead of obeying them.

    Not libyaml's own composer (CParser.get_single_node): it hands back the anchored node itself
    for an alias, losing the alias's position, resolves the '!' tag silently, has no depth
    limit of ours, and still calls the Python resolver for every scalar (it measured slower)."""

    def __init__(self, text: str, file: str) -> None:
        _Parser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.file = file
        self.issues: list[Issue] = []
        self.depth = 0

    def _may_resolve(self, value: str) -> bool:
        """Whether an implicit resolver could match: most values ('ada', 'CS 101') start with
        a letter no resolver claims, and skipping resolve() for them halves composing."""
        resolvers = self.yaml_implicit_resolvers
        return value[:1] in resolvers or None in resolvers

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        return self._compose(self.get_event())

    def _compose(self, event: yaml.Event) -> yaml.Node:
        """PyYAML's compose_node, minus what a spec never uses (path resolvers, guessing the type
        of quoted scalars or collections, peeking at each event before taking it): it runs once
        per value, so it dominates load time."""
        kind = event.__class__
        if kind is yaml.AliasEvent:
            return self._alias(event)
        anchor = event.anchor
        tag = event.tag
        if tag is not None:
            message = f"YAML tags are not allowed (found {tag!r})"
            self.issues.append(Issue(_location(self.file, event.start_mark), "", message))
        if self.depth >= MAX_DEPTH:
            raise yaml.MarkedYAMLError(
                problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=event.start_mark
            )
        if anchor is not None and anchor in self.anchors:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                self.anchors[anchor].start_mark,
                "second occurrence",
                event.start_mark,
            )
        if kind is yaml.ScalarEvent:
            value = event.value
            if tag is None or tag == "!":
                tag = (
                    self.resolve(yaml.ScalarNode, value, event.implicit)
                    if event.implicit[0] and self._may_resolve(value)
                    else self.DEFAULT_SCALAR_TAG
                )
            node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
            if anchor is not None:
                self.anchors[anchor] = node
            return node
        return self._collection(event, tag)

    def _collection(self, event: yaml.Event, tag: str | None) -> yaml.Node:
        """A sequence or mapping node and, recursively, its children."""
        sequence = event.__class__ is yaml.SequenceStartEvent
        anchor = event.anchor
        if tag is None or tag == "!":
            tag = self.DEFAULT_SEQUENCE_TAG if sequence else self.DEFAULT_MAPPING_TAG
        node_class = yaml.SequenceNode if sequence else yaml.MappingNode
        node = node_class(tag, [], event.start_mark, None, event.flow_style)
        if anchor is not None:
            self.anchors[anchor] = node  # before the children: a recursive alias finds it
        items = node.value
        end = yaml.SequenceEndEvent if sequence else yaml.MappingEndEvent
        self.depth += 1
        event = self.get_event()
        while event.__class__ is not end:
            item = self._compose(event)
            items.append(item if sequence else (item, self._compose(self.get_event())))
            event = self.get_event()
        self.depth -= 1
        node.end_mark = event.end_mark
        return node

    def _alias(self, event: yaml.AliasEvent) -> yaml.Node:
        """A shallow copy of the anchored node: it carries the alias's own position but shares
        the children, so nothing is expanded here."""
        if event.anchor not in self.anchors:
            raise ComposerError(
                None, None, f"found undefined alias {event.anchor!r}", event.start_mark
            )
        clone = copy.copy(self.anchors[event.anchor])
        clone.start_mark, clone.end_mark = event.start_mark, event.end_mark
        clone.via_alias = True
        return clone


class _AliasBomb(Exception):
    def __init__(self, mark: yaml.Mark) -> None:
        self.mark = mark


class _Walker:
    """Node graph -> plain values, recording marks, duplicates and cycles as it goes."""

    def __init__(self, doc: Document, constructor: yaml.SafeLoader) -> None:
        self.doc = doc
        self.depth = doc.depth
        self.constructor = constructor
        self.issues: list[Issue] = []
        self.aliased = 0
        self.alias_start: yaml.Mark | None = None  # the outermost alias being expanded
        self.open: set[int] = set()  # collections on the current path (cycle detection)

    def walk(self, node: yaml.Node, path: PathT, in_alias: bool) -> Any:
        if not in_alias and getattr(node, "via_alias", False):
            in_alias = True
            self.alias_start = node.start_mark
        if in_alias:
            self.aliased += 1
            if self.aliased > MAX_ALIAS_NODES:
                raise _AliasBomb(self.alias_start)
        record = self.depth is None or len(path) <= self.depth
        if record:
            self.doc.value_marks[path] = _pack(node.start_mark)
        kind = node.__class__
        if kind is yaml.ScalarNode:
            if not node.style and node.tag in _TYPED_SCALARS:
                if record:
                    self.doc.plain.add(path)
                return self.constructor.construct_object(node)
            return node.value
        if id(node.value) in self.open:
            self.issue_at(path, "an alias refers to itself (recursive anchor)")
            return None
        self.open.add(id(node.value))
        try:
            if kind is yaml.SequenceNode:
                walk = self.walk
                return [walk(item, (*path, i), in_alias) for i, item in enumerate(node.value)]
            return self.mapping(node, path, in_alias)
        finally:
            self.open.discard(id(node.value))

    def mapping(self, node: yaml.MappingNode, path: PathT, in_alias: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        key_marks = self.doc.key_marks
        for key_node, value_node in node.value:
            if key_node.__class__ is not yaml.ScalarNode:
                self.issue(key_node, path, "keys must be plain strings")
                continue
            key = key_node.value  # keys are names: never let YAML turn `on` or `101` into a type
            child = (*path, key)
            if key == "<<" and not key_node.style:
                self.issue(key_node, path, "YAML merge keys ('<<') are not supported")
                continue
            if key in out:
                if child not in key_marks:
                    raise _NeedPositions
                first = key_marks[child] // _LINE + 1
                self.issue(key_node, path, f"duplicate key {key!r} (first defined at line {first})")
                continue
            if self.depth is None or len(child) <= self.depth:
                key_marks[child] = _pack(key_node.start_mark)
            out[key] = self.walk(value_node, child, in_alias)
        return out

    def issue(self, key_node: yaml.Node, path: PathT, message: str) -> None:
        location = _location(self.doc.file, key_node.start_mark)
        self.issues.append(Issue(location, format_path(path), message))

    def issue_at(self, path: PathT, message: str) -> None:
        if path not in self.doc.value_marks:
            raise _NeedPositions
        self.issues.append(self.doc.issue(path, message))


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
    composer: _Composer | None = None
    try:
        composer = _Composer(text, file)
        node = composer.get_single_node()
    except yaml.MarkedYAMLError as e:
        problem = f"{e.context}, {e.problem}" if e.context else e.problem
        mark = e.problem_mark or e.context_mark
        issue = Issue(_location(file, mark), "", f"YAML syntax error: {problem}")
        raise YamlError([*(composer.issues if composer else []), issue]) from None
    except yaml.YAMLError as e:  # no position known (libyaml reader errors)
        raise YamlError([Issue(Location(file, 1, 1), "", f"YAML error: {e}")]) from None
    finally:
        if composer is not None:
            composer.dispose()
    if composer.issues:
        raise YamlError(composer.issues)
    if node is None:
        return doc
    walker = _Walker(doc, composer)
    try:
        doc.data = walker.walk(node, (), False)
    except _AliasBomb as bomb:
        message = f"aliases expand to more than {MAX_ALIAS_NODES} values (alias bomb?)"
        location = _location(file, bomb.mark)
        raise YamlError([Issue(location, "", message)]) from None
    except _NeedPositions:
        return parse(text, file)
    if walker.issues:
        raise YamlError(walker.issues)
    return doc


def load_file(path: Path, display: str, *, too_big: str = "") -> Document:
    return parse(read_text(path, display, too_big=too_big), display)
