"""YAML spec -> DesiredGroup values: strict loading, every error at file:line:column.

The spec is edited by hand and then trusted to rewrite a live account, so nothing is guessed:
every mistake in every file is reported in one pass, and a spec with any error yields nothing.
Warnings (harmless but probably unintended, e.g. a username listed twice) never block loading;
`groupsync validate --strict` turns them into a failure for CI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import gc
import hashlib
import logging
import multiprocessing
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, Field, StringConstraints, ValidationError
from pydantic_core import PydanticCustomError

from groupsync.canonical import canonical_json
from groupsync.desired import KEY_PATTERN, MAX_MEMBERS, MAX_NAME, DesiredGroup, name_error
from groupsync.errors import GroupsyncError
from groupsync.gcpause import paused_gc
from groupsync.models import UNSET, Members
from groupsync.notify import GroupNotifyModel, Notify, NotifyModel, notify_from
from groupsync.roster import schema as roster_schema
from groupsync.roster.oneroster import UsernameRule
from groupsync.roster.recipe import Origins, Recipe, RosterRef, RosterSource, Rule, SpecFile
from groupsync.roster.resolve import resolve
from groupsync.roster.summary import RosterSummary
from groupsync.strictmodel import StrictModel, did_you_mean, issues_from, no_default
from groupsync.yamlstrict import (
    Document,
    Issue,
    Location,
    PathT,
    YamlError,
    format_path,
    parse,
    read_text,
)

__all__ = [
    "MAX_MEMBERS",
    "MAX_NAME",
    "DesiredGroup",
    "Location",
    "Spec",
    "SpecError",
    "SpecIssue",
    "dump_spec",
    "json_schema",
    "load_spec",
    "member_origin",
    "refresh_rosters",
]

MEMBER_PATTERN = r"^@?[^\s@]\S*$"

SpecIssue = Issue  # one error or warning: location, path inside the document, message

log = logging.getLogger("groupsync.spec")

_TOO_BIG = ": split the spec into a folder of smaller *.yaml files (a folder's files are merged)"


@dataclass(frozen=True, slots=True)
class Spec:
    groups: dict[str, DesiredGroup]  # ordered by key
    digest: str  # SHA-256 of the canonical desired state
    warnings: tuple[SpecIssue, ...] = ()
    files: tuple[str, ...] = ()
    # key -> username -> (the `@roster:group` bringing it in, its text), for roster members only;
    # the others' places are found again when asked (member_origin)
    origins: dict[str, Origins] = field(default_factory=dict, compare=False, repr=False)
    rosters: tuple[RosterSummary, ...] = ()  # as read for these groups
    # What to read again for the next run's rosters; None when the spec names no roster.
    recipe: Recipe | None = field(default=None, compare=False, repr=False)
    # member set -> its usernames, and file as shown -> where it is: for member_origin
    sets: dict[str, Members] = field(default_factory=dict, compare=False, repr=False)
    spec_files: dict[str, SpecFile] = field(default_factory=dict, compare=False, repr=False)
    # What to post; not in the digest, which is the groups' desired state.
    notify: Notify = field(default_factory=Notify)

    def __repr__(self) -> str:
        """Short: asyncio formats a callback's arguments with repr (a partial holding the Spec),
        and the dataclass's would spell out every group: 2 s for 100,000 of them."""
        return (
            f"Spec({len(self.groups)} groups, digest={self.digest[:12]}, files={len(self.files)})"
        )


class SpecError(GroupsyncError):
    def __init__(self, issues: list[SpecIssue], warnings: tuple[SpecIssue, ...] = ()) -> None:
        self.issues = issues
        self.warnings = warnings  # found on the way; shown by `validate` next to the errors
        super().__init__("\n".join(str(i) for i in issues))


# --- the document shape (also the published JSON Schema) -------------------------------------

Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
Member = Annotated[
    str,
    StringConstraints(pattern=MEMBER_PATTERN),
    Field(description="A username, or '@set' for every member of a member set."),
]


def _plain_name(name: str) -> str:
    error = name_error(name)
    if error is not None:
        raise PydanticCustomError("group_name", error)
    return name


class GroupModel(StrictModel):
    name: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_NAME), AfterValidator(_plain_name)
    ] = Field(
        description="The group's name as members see it: 1..100 characters on one line, not"
        " only spaces, no control or bidirectional-control characters."
    )
    description: str | None = Field(
        None, description="Omitted: left alone. null: cleared.", json_schema_extra=no_default
    )
    avatar_url: str | None = Field(
        None, description="Omitted: left alone. null: cleared.", json_schema_extra=no_default
    )
    members: list[Member] = Field(
        None,  # type: ignore[assignment]  # omitted stays None: membership not managed
        description="Omitted: membership left alone. []: nobody. At most 1,000 after expansion.",
        json_schema_extra=no_default,
    )
    archived: bool = Field(False, description="true: keep the group archived.")
    id: Annotated[str, StringConstraints(pattern=r"^\S+$")] | None = Field(
        None, description="Pin this key to an existing group id instead of adopting by name."
    )
    notify: GroupNotifyModel | None = Field(
        None, description="This group's messages, replacing the spec's notify: defaults."
    )


class SpecDocument(StrictModel):
    """One spec file. A directory of them is merged; keys must be unique across files."""

    member_sets: dict[Key, list[Member]] = Field(
        default_factory=dict,
        description="Named lists of usernames, used in members as '@name'; may include other sets.",
        json_schema_extra={"additionalProperties": False},
    )
    groups: dict[Key, GroupModel] = Field(
        default_factory=dict,
        description="The groups, by key: the key is the group's stable identity here.",
        json_schema_extra={"additionalProperties": False},
    )
    rosters: dict[Key, roster_schema.RosterModel] = Field(
        default_factory=dict,
        description="Member lists kept elsewhere and read on every run: a OneRoster export, or"
        " a CSV used in members as '@roster:group'.",
        json_schema_extra={"additionalProperties": False},
    )
    generate: list[roster_schema.GenerateModel] = Field(
        default_factory=list,
        description="Rules that make one group per class of a OneRoster roster.",
    )
    notify: NotifyModel | None = Field(
        None,
        description="Messages groupsync posts: into groups it changes, and run summaries into"
        " an admin group. One file of a spec folder holds it.",
    )


def json_schema() -> dict[str, Any]:
    schema = SpecDocument.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _message(kind: str, path: PathT, value: Any) -> str | None:
    """Spec-specific wording for pydantic errors; None keeps the generic one."""
    custom = roster_schema.message(kind, path, value)
    if custom is not None:
        return custom
    if kind == "string_pattern_mismatch" and len(path) == 2:
        what = {"groups": "group key", "rosters": "roster name"}.get(
            str(path[0]), "member set name"
        )
        return (
            f"{value!r} is not a valid {what}: use 1..64 lowercase letters, digits, '.', '_' or"
            " '-', starting with a letter or digit"
        )
    if kind == "string_pattern_mismatch" and path[-1] == "id":
        return f"{value!r} is not a group id (ids have no spaces)"
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not a username or '@set' (no spaces, '@' only in front)"
    if kind == "string_too_short" and path[-1] == "name":
        return "name must not be empty"
    if kind == "string_too_long" and path[-1] == "name":
        return f"name is {len(value)} characters long, the limit is {MAX_NAME}"
    if kind == "list_type" and path[-1] == "members" and value is None:
        return "null is ambiguous: omit 'members' to leave membership alone, or write [] for nobody"
    return None


# --- loading ----------------------------------------------------------------------------------


@dataclass
class _Source:
    """A spec file as loaded: positions down to each entry's key (`_DEPTH`); a message about
    anything deeper parses the file again, once, keeping every position.

    Keeping every position costs about 8 KB a group, more than the group itself. If the file
    changed since it was loaded, the entry's own position stands in."""

    doc: Document
    file: SpecFile
    full: Document | None = None

    def where(self, path: PathT, *, key: bool = False) -> Location:
        depth = self.doc.depth
        doc = self.doc if depth is None or len(path) <= depth else self._full()
        return doc.where(path, key=key)

    def issue(self, path: PathT, message: str, *, key: bool = False) -> Issue:
        return Issue(self.where(path, key=key), format_path(path), message)

    def _full(self) -> Document:
        if self.full is None:
            self.full = _reread(self.file, self.doc.file) or self.doc
        return self.full


_DEPTH = 2  # ("groups", key): where each group, member set and roster is written


def _names_only(raw: Any) -> bool:
    """Whether a group as written lists no `@set` or `@roster:group` (which may be defined in
    a file not read yet)."""
    members = raw.get("members") if isinstance(raw, dict) else None
    return not isinstance(members, list) or not any(
        isinstance(item, str) and item.startswith("@") for item in members
    )


def _usernames_once(written: Any) -> bool:
    """A member list of usernames only, each once: a username is interned, and a list this
    short-cuts (most of 100,000 groups') gives the same members as `_Loader.desired`'s loop."""
    return (
        type(written) is list
        and len(written) <= MAX_MEMBERS
        and all(type(item) is str and item[:1] not in ("@", "") for item in written)
        and len(set(written)) == len(written)
    )


def _file_digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


@functools.lru_cache(maxsize=4)
def _reread(file: SpecFile, display: str) -> Document | None:
    """The file parsed again with every position, if it still holds what was loaded."""
    try:
        text = read_text(file.path, display)
        if _file_digest(text) != file.digest:
            return None
        return parse(text, display)
    except YamlError:
        return None


@dataclass(slots=True)
class _Entry:
    """A group or member set as written, with the file it came from."""

    doc: _Source
    path: PathT
    raw: Any


@dataclass
class _Loader:
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    groups: dict[str, _Entry] = field(default_factory=dict)
    built: dict[str, DesiredGroup] = field(default_factory=dict)  # groups built as read
    sets: dict[str, _Entry] = field(default_factory=dict)
    rosters: dict[str, _Entry] = field(default_factory=dict)
    rules: list[_Entry] = field(default_factory=list)
    notify: _Entry | None = None
    notify_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> as written
    folders: dict[str, Path] = field(default_factory=dict)  # file as shown -> its real folder
    refs: dict[str, tuple[RosterRef, ...]] = field(default_factory=dict)
    has_groups_key: bool = False
    expanded: dict[str, Members] = field(default_factory=dict)
    spec_files: dict[str, SpecFile] = field(default_factory=dict)  # file as shown -> where
    expanding: list[str] = field(default_factory=list)
    used_sets: set[str] = field(default_factory=set)

    def merge(self, part: _Loader) -> None:
        """One file as `read_file` read it, after the files before it: a key defined by an
        earlier file is an error here, where the second definition is."""
        self.errors += part.errors
        self.warnings += part.warnings
        self.has_groups_key |= part.has_groups_key
        self.folders |= part.folders
        self.spec_files |= part.spec_files
        for key in self._take(part.groups, self.groups, "group"):
            if key in part.built:
                self.built[key] = part.built[key]
            if key in part.notify_overrides:
                self.notify_overrides[key] = part.notify_overrides[key]
        self._take(part.sets, self.sets, "member set")
        self._take(part.rosters, self.rosters, "roster")
        self.rules += part.rules
        if part.notify is None:
            return
        if self.notify is not None:
            also = self.notify.doc.where(self.notify.path, key=True)
            message = f"notify is defined twice: also at {also}"
            self.errors.append(part.notify.doc.issue(("notify",), message, key=True))
            return
        self.notify = part.notify

    def add_groups(self, entries: dict[str, _Entry]) -> None:
        """One file's groups; those that need nothing from other files are built now."""
        self.groups = entries
        for key, entry in entries.items():
            if isinstance(entry.raw, dict) and isinstance(entry.raw.get("notify"), dict):
                self.notify_overrides[key] = entry.raw["notify"]
            if _names_only(entry.raw):  # needs no set or roster: built now, the YAML dropped
                self.built[key] = self.desired(key, entry)
                entry.raw = None

    def _take(self, entries: dict[str, _Entry], into: dict[str, _Entry], what: str) -> list[str]:
        """`entries` into `into`, but for keys it already has; the keys taken."""
        taken = []
        for key, entry in entries.items():
            first = into.get(key)
            if first is not None:
                also = first.doc.where(first.path, key=True)
                message = f"{what} {key!r} is defined twice: also at {also}"
                self.errors.append(entry.doc.issue(entry.path, message, key=True))
                continue
            into[key] = entry
            taken.append(key)
        return taken

    def notify_settings(self) -> Notify:
        """The notify section; an admin_group that is not a group key is an error."""
        defaults = self.notify.raw if self.notify is not None else None
        overrides = self.notify_overrides
        if not isinstance(defaults, dict):
            return notify_from(None, overrides)
        admin = defaults.get("admin_group")
        if isinstance(admin, str) and admin not in self.groups and self.notify is not None:
            hint = did_you_mean(admin, self.groups)
            message = f"admin_group {admin!r} is not a group key of this spec{hint}"
            self.errors.append(self.notify.doc.issue(("notify", "admin_group"), message))
        return notify_from(defaults, overrides)

    def expand_set(self, name: str) -> Members:
        """A member set's usernames, following nested @sets; a cycle is an error, reported once."""
        if name in self.expanded:
            return self.expanded[name]
        entry = self.sets[name]
        self.expanding.append(name)
        users: set[str] = set()
        for i, item, ref in self._items(entry):
            path = (*entry.path, i)
            if ref is None:
                users.add(sys.intern(item))
            elif ":" in ref:
                message = (
                    f"{item!r}: a roster's group goes in a group's members, not in a member set"
                )
                self.errors.append(entry.doc.issue(path, message))
            elif ref in self.expanding:
                chain = " -> ".join(
                    f"@{n}" for n in [*self.expanding[self.expanding.index(ref) :], ref]
                )
                self.errors.append(
                    entry.doc.issue(path, f"member sets include each other: {chain}")
                )
            elif self._known_set(entry, path, item):
                users.update(self.expand_set(ref))
        self.expanding.pop()
        self.expanded[name] = Members(users)
        return self.expanded[name]

    def _items(self, entry: _Entry) -> list[tuple[int, str, str | None]]:
        """(index, item, set name or None) for the string items of a list; warns about repeats.

        Only the same item written twice in one list warns: a username that also arrives
        through a set is normal (sets overlap) and simply counted once.
        """
        if not isinstance(entry.raw, list):
            return []
        out, seen = [], set()
        for i, item in enumerate(entry.raw):
            if not isinstance(item, str) or not item:
                continue
            if item in seen:
                self.warnings.append(entry.doc.issue((*entry.path, i), f"{item!r} is listed twice"))
            seen.add(item)
            out.append((i, item, item[1:] if item.startswith("@") else None))
        return out

    def _known_set(self, entry: _Entry, path: PathT, item: str) -> bool:
        name = item[1:]
        if name in self.sets:
            self.used_sets.add(name)
            return True
        hint = did_you_mean(name, self.sets, prefix="@")
        self.errors.append(entry.doc.issue(path, f"{item!r} is not a defined member set{hint}"))
        return False

    def _roster_ref(self, doc: _Source, path: PathT, ref: str) -> list[RosterRef]:
        """`@roster:group` -> the reference, if the roster is declared and lists groups."""
        roster, _, group = ref.partition(":")
        entry = self.rosters.get(roster)
        if entry is None:
            hint = did_you_mean(roster, self.rosters)
            self.errors.append(doc.issue(path, f"'@{ref}': no roster is named {roster!r}{hint}"))
            return []
        if isinstance(entry.raw, dict) and "csv" not in entry.raw:
            message = (
                f"'@{ref}': roster {roster!r} is not a CSV roster (a OneRoster roster's classes"
                " become groups through generate:)"
            )
            self.errors.append(doc.issue(path, message))
            return []
        if not group:
            self.errors.append(doc.issue(path, f"'@{ref}': name the roster's group after ':'"))
            return []
        return [RosterRef(roster, group, doc.where(path))]

    def sources(self) -> dict[str, RosterSource]:
        out = {}
        for name, entry in self.rosters.items():
            raw = entry.raw
            kind = "oneroster" if "oneroster" in raw else "csv"
            written = raw[kind]
            username = raw.get("username", "username")
            rule = (
                UsernameRule(username)
                if isinstance(username, str)
                else UsernameRule(username["column"], username.get("strip_domain", False))
            )
            path = self.folders[entry.doc.doc.file] / Path(written).expanduser()
            out[name] = RosterSource(name, kind, path, written, rule)
        return out

    def generate_rules(self) -> tuple[Rule, ...]:
        out = []
        used: set[str] = set()
        for entry in self.rules:
            raw = entry.raw
            roster = raw["from"].removesuffix(".classes")
            source = self.rosters.get(roster)
            if source is None or "oneroster" not in source.raw:
                hint = did_you_mean(roster, self.rosters)
                what = "no roster is named" if source is None else "not a OneRoster roster:"
                message = f"{what} {roster!r}{hint}"
                self.errors.append(entry.doc.issue((*entry.path, "from"), message))
                continue
            used.add(roster)
            out.append(
                Rule(
                    label=format_path(entry.path),
                    location=entry.doc.where(entry.path),
                    roster=roster,
                    where=dict(raw.get("where", {})),
                    key=raw["key"],
                    name=raw["name"],
                    description=raw.get("description", UNSET),
                    roles=tuple(raw.get("members", ("teacher", "student"))),
                )
            )
        used |= {ref.roster for refs in self.refs.values() for ref in refs}
        for name in sorted(set(self.rosters) - used):
            entry = self.rosters[name]
            self.warnings.append(
                entry.doc.issue(entry.path, f"roster {name!r} is never used", key=True)
            )
        return tuple(out)

    def desired(self, key: str, entry: _Entry) -> DesiredGroup:
        raw = entry.raw if isinstance(entry.raw, dict) else {}
        members: Members | None = None
        written = raw.get("members")
        if _usernames_once(written):  # the usual list: nothing to look up, nothing to warn of
            members = Members(map(sys.intern, written))
        elif "members" in raw:
            members_path = (*entry.path, "members")
            refs = []
            users: set[str] = set()
            for i, item, ref in self._items(_Entry(entry.doc, members_path, raw["members"])):
                if ref is None:
                    users.add(sys.intern(item))  # a username is in many groups
                elif ":" in ref:
                    refs += self._roster_ref(entry.doc, (*members_path, i), ref)
                elif self._known_set(entry, (*members_path, i), item):
                    users.update(self.expand_set(ref))
            members = Members(users)
            if refs:
                self.refs[key] = tuple(refs)
            if len(members) > MAX_MEMBERS:
                message = f"{len(members)} members, the limit is {MAX_MEMBERS}"
                self.errors.append(entry.doc.issue(members_path, message))
        name = raw.get("name", "")
        if isinstance(name, str) and name != name.strip() and name_error(name) is None:
            message = f"name {name!r} starts or ends with spaces, which members will see"
            self.warnings.append(entry.doc.issue((*entry.path, "name"), message))
        group = DesiredGroup(
            key=key,
            name=name,
            description=raw.get("description", UNSET),
            avatar_url=raw.get("avatar_url", UNSET),
            members=members,
            archived=raw.get("archived", False),
            id=raw.get("id"),
            location=entry.doc.where(entry.path, key=True),
        )
        return group

    def finish(self, files: tuple[str, ...]) -> tuple[Recipe, Notify]:
        """Everything the YAML says, checked; raises SpecError. Rosters are read later."""
        groups: dict[str, DesiredGroup] = {}
        pinned: dict[str, str] = {}
        for key in sorted(self.groups):
            entry = self.groups[key]
            built = self.built.pop(key, None)
            groups[key] = built if built is not None else self.desired(key, entry)
            pin = groups[key].id
            if isinstance(pin, str) and pin in pinned:
                message = f"id {pin!r} is also pinned by group {pinned[pin]!r}"
                self.errors.append(entry.doc.issue((*entry.path, "id"), message))
            elif isinstance(pin, str):
                pinned[pin] = key
        for name in sorted(self.sets):
            self.expand_set(name)  # errors in sets no group uses are still errors
            if name not in self.used_sets:
                entry = self.sets[name]
                self.warnings.append(
                    entry.doc.issue(entry.path, f"member set {name!r} is never used", key=True)
                )
        notify = self.notify_settings()
        sources = self.sources() if not self.errors else {}
        rules = self.generate_rules() if not self.errors else ()
        warnings = _sorted(self.warnings)
        if self.errors:
            raise SpecError(_sorted(self.errors), warnings)
        recipe = Recipe(
            groups, self.refs, sources, rules, files, warnings, self.expanded, self.spec_files
        )
        return recipe, notify


def read_file(path: Path, display: str, *, sets_only_ok: bool) -> _Loader:
    """One spec file on its own, for `_Loader.merge`: what it defines, the groups that need
    nothing from other files already built (their YAML dropped), and its problems.

    Independent of every other file, so files can be read side by side (see `_load`)."""
    part = _Loader()
    try:
        text = read_text(path, display, too_big=_TOO_BIG)
        light = parse(text, display, depth=_DEPTH)
    except YamlError as e:
        part.errors += e.issues
        return part
    spec_file = part.spec_files[display] = SpecFile(path, _file_digest(text))
    doc = _Source(light, spec_file)
    data = light.data
    if data is None:
        part.errors.append(
            doc.issue((), "empty file: write 'groups: {}' for a file with no groups")
        )
        return part
    try:
        SpecDocument.model_validate(data)
    except ValidationError as e:
        doc.full = parse(text, display)  # the text in hand: no need to read it again
        part.errors += issues_from(e, doc.full, SpecDocument, _message)
    del text
    if not isinstance(data, dict):
        return part
    unknown = set(data) - set(SpecDocument.model_fields)  # already reported, with a hint
    makes_groups = "groups" in data or "generate" in data
    shared = "member_sets" in data or "notify" in data
    if not makes_groups and not unknown and not (sets_only_ok and shared):
        message = "no 'groups' key (write 'groups: {}' for a file with no groups)"
        part.errors.append(doc.issue((), message))
    part.has_groups_key = makes_groups
    part.folders[display] = path.parent
    part.add_groups(_entries(doc, "groups"))
    part.sets = _entries(doc, "member_sets")
    part.rosters = _entries(doc, "rosters")
    if "notify" in data:
        part.notify = _Entry(doc, ("notify",), data["notify"])
    rules = data.get("generate")
    if isinstance(rules, list):
        part.rules = [_Entry(doc, ("generate", i), raw) for i, raw in enumerate(rules)]
    light.data = None  # what is still needed is in the entries
    return part


def _entries(doc: _Source, section: str) -> dict[str, _Entry]:
    entries = doc.doc.data.get(section)
    if not isinstance(entries, dict):
        return {}
    return {key: _Entry(doc, (section, key), raw) for key, raw in entries.items()}


def _sorted(issues: list[Issue]) -> tuple[Issue, ...]:
    return tuple(sorted(set(issues), key=lambda i: i.sort_key))


SPEC_SUFFIXES = (".yaml", ".yml")
"""What a spec folder reads, in any case (`Rooms.YAML` too): a spec file the loader skipped
would look like groups removed from the spec, and be archived."""


def _cannot_read(path: Path, error: OSError) -> str:
    """Why `path` cannot be opened, in words: broken links and loops are the usual surprises."""
    if error.errno == errno.ELOOP:
        return "is a symbolic link loop"
    if error.errno == errno.ENOENT and path.is_symlink():
        return f"is a broken symbolic link (its target {os.readlink(path)!r} does not exist)"
    if error.errno == errno.ENOENT:
        return "does not exist"
    return f"cannot be read: {error.strerror}"


def _spec_files(path: Path, loader: _Loader) -> list[tuple[Path, str]]:
    """The files of a spec: one file, or the *.yaml and *.yml of a folder in name order.

    Every folder entry with such a name must be a readable file: a broken link, a loop, a
    subfolder or a FIFO named `x.yaml` is an error, never skipped, because a spec read in part
    plans the archiving of every group in the part it missed. Dot-files are not read (editors
    keep locks and swap files there: Emacs' `.#x.yaml` is a broken link by design).
    """
    root = Path(os.path.realpath(path))
    try:
        mode = root.stat().st_mode
    except OSError as e:
        loader.errors.append(Issue(None, "", f"spec path {str(path)!r} {_cannot_read(path, e)}"))
        return []
    if stat.S_ISREG(mode):
        return [(root, root.name)]
    if not stat.S_ISDIR(mode):
        message = f"spec path {str(path)!r} is neither a file nor a folder"
        loader.errors.append(Issue(None, "", message))
        return []
    try:
        names = sorted(entry.name for entry in os.scandir(root))
    except OSError as e:
        loader.errors.append(Issue(None, "", f"spec folder {str(path)!r} {_cannot_read(root, e)}"))
        return []
    files = []
    for name in names:
        if name.startswith(".") or not name.lower().endswith(SPEC_SUFFIXES):
            continue
        child, shown = root / name, f"{root.name}/{name}"
        problem = _not_a_file(child)
        if problem is None:
            files.append((child, shown))
        else:
            loader.errors.append(Issue(None, "", f"{shown} {problem}"))
    if not files and not loader.errors:
        message = f"spec folder {str(path)!r} has no *.yaml files (nor *.yml)"
        loader.errors.append(Issue(None, "", message))
    return files


def _not_a_file(path: Path) -> str | None:
    """Why `path` is not a regular file that can be read, or None."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        return _cannot_read(path, e)
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder: a spec folder's subfolders are not read (rename it)"
    return "is not a regular file"


def load_spec(path: Path, *, now: dt.datetime | None = None, workers: int | None = None) -> Spec:
    """Load, merge and check a spec; raises SpecError listing every problem, sorted by place.

    File names in messages are relative to the spec path's parent (`groups/clubs.yaml`), so
    they read the same on every machine and in CI. Rosters are read too, as of `now` (an
    enrollment past its endDate does not count); by default, the clock's now. `workers`: how
    many processes read the files (by default, decided by the spec's size: see _read_all).
    """
    with paused_gc():
        # The parsed documents are freed as _load returns, before the collector resumes: its
        # first pass then scans only the Spec, not the Spec plus every node of every file.
        recipe, notify = _load(path, workers)
        return replace(_assemble(recipe, now), notify=notify)


def refresh_rosters(spec: Spec, *, now: dt.datetime | None = None) -> Spec:
    """The spec with its rosters read again (the YAML as it was loaded); raises SpecError.

    The daemon calls it before every run: rosters change daily, and nobody sends a SIGHUP
    for a registrar's nightly export.
    """
    if spec.recipe is None:
        return spec
    with paused_gc():
        return replace(_assemble(spec.recipe, now), notify=spec.notify)


def _assemble(recipe: Recipe, now: dt.datetime | None) -> Spec:
    """The recipe and its rosters as read now -> the Spec; raises SpecError."""
    if not recipe.sources:
        groups = recipe.groups
        return Spec(
            groups,
            digest(groups),
            recipe.warnings,
            recipe.files,
            sets=recipe.sets,
            spec_files=recipe.spec_files,
        )
    resolved = resolve(recipe, now if now is not None else dt.datetime.now(dt.UTC))
    warnings = _sorted([*recipe.warnings, *resolved.warnings])
    if resolved.errors:
        raise SpecError(_sorted(resolved.errors), warnings)
    return Spec(
        groups=resolved.groups,
        digest=digest(resolved.groups),
        warnings=warnings,
        files=recipe.files,
        origins=resolved.origins,
        rosters=resolved.rosters,
        recipe=recipe,
        sets=recipe.sets,
        spec_files=recipe.spec_files,
    )


def member_origin(spec: Spec, key: str, user: str) -> tuple[Location | None, str | None]:
    """Where group `key`'s member list brings `user` in, and the @set or @roster:group it came
    through (None: listed by name); for a message.

    Found again when asked, by parsing the group's file once more: a position kept for every
    member would cost more than the rest of a 100,000-group spec. A generated group, or a file
    changed since loading, gives the group's own position."""
    brought = spec.origins.get(key, {}).get(user)
    if brought is not None:
        return brought
    location = spec.groups[key].location
    file = spec.spec_files.get(location.file) if location is not None else None
    doc = _reread(file, location.file) if file is not None and location is not None else None
    members_path = ("groups", key, "members")
    written = _at(doc.data, members_path) if doc is not None else None
    if doc is None or not isinstance(written, list):
        return location, None
    for i, item in enumerate(written):
        via = item[1:] if isinstance(item, str) and item.startswith("@") else None
        if item == user or (via is not None and user in spec.sets.get(via, ())):
            return doc.where((*members_path, i)), via
    return location, None


def _at(data: Any, path: PathT) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _load(path: Path, workers: int | None) -> tuple[Recipe, Notify]:
    loader = _Loader()
    files = _spec_files(path, loader)
    # A directory may keep its member sets in a file of their own; a lone file may not.
    read = functools.partial(read_file, sets_only_ok=len(files) > 1)
    for part in _read_all(files, read, workers):
        loader.merge(part)
    if files and not loader.has_groups_key and not loader.errors:
        message = "no 'groups' key in any file of the spec"
        loader.errors.append(Issue(Location(files[0][1], 1, 1), "", message))
    return loader.finish(tuple(display for _, display in files))


PARALLEL_BYTES = 4 * 1024 * 1024
"""From this size on, a spec folder's files are read by worker processes, one file per task:
parsing YAML is most of loading, and 100,000 groups are seconds of it on one core."""


def _read_all(
    files: list[tuple[Path, str]], read: Callable[[Path, str], _Loader], workers: int | None
) -> Iterator[_Loader]:
    """Each file read, in order; by `workers` forked processes when there are several (None: as
    many as there are CPUs, for a spec of PARALLEL_BYTES or more).

    Never while another thread runs (the daemon's HTTP service, a reload): a forked child gets
    only the forking thread, and a lock another thread held stays locked in it forever."""
    if workers is None:
        workers = _workers(files)
    if workers < 2 or len(files) < 2 or threading.active_count() > 1:
        yield from (read(file, shown) for file, shown in files)
        return
    done = 0
    try:
        fork = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, fork, initializer=_worker_setup) as pool:
            chunk = max(1, min(62, len(files) // (workers * 8)))  # small: a stop waits less
            # The workers are forked as the first file is submitted. A Ctrl-C landing in a
            # child before it ignores them would unwind the parent's stack copied into it.
            held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                parts = pool.map(read, *zip(*files, strict=True), chunksize=chunk)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            try:
                for part in parts:
                    yield part
                    done += 1
            except BaseException:  # Ctrl-C, or the caller stopped: read nothing more
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    except (OSError, BrokenProcessPool) as e:  # no processes here (a sandbox), or one died
        log.warning("reading the spec in this process only: %s", e or type(e).__name__)
        yield from (read(file, shown) for file, shown in files[done:])


def _worker_setup() -> None:
    """In each worker: no collector (see gcpause), and Ctrl-C left to the process that forked
    it, which stops the reading and lets the workers finish the file they are on."""
    gc.disable()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _workers(files: list[tuple[Path, str]]) -> int:
    size = 0
    for file, _ in files:
        with contextlib.suppress(OSError):  # read_file reports it
            size += file.stat().st_size
    return min(len(os.sched_getaffinity(0)), 4) if size >= PARALLEL_BYTES else 1


# --- canonical forms --------------------------------------------------------------------------


def _canonical(group: DesiredGroup) -> dict[str, Any]:
    """The desired state of one group as plain data, its keys in sorted order; UNSET fields
    are simply absent."""
    out: dict[str, Any] = {}
    if group.archived:
        out["archived"] = True
    if group.avatar_url is not UNSET:
        out["avatar_url"] = group.avatar_url
    if group.description is not UNSET:
        out["description"] = group.description
    if group.id is not None:
        out["id"] = group.id
    if group.members is not None:
        out["members"] = list(group.members)  # Members are sorted
    out["name"] = group.name
    return out


def digest(groups: Mapping[str, DesiredGroup]) -> str:
    """SHA-256 of the canonical JSON: the same desired state always gives the same digest."""
    data = {key: _canonical(groups[key]) for key in sorted(groups)}
    return hashlib.sha256(canonical_json(data, in_order=True).encode("utf-8")).hexdigest()


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Double-quotes strings with unusual characters: PyYAML's plain and single-quoted styles
    fold line separators such as U+0085 into spaces, so they would not read back the same.

    libyaml's emitter when PyYAML has it: the same text, about 3x faster for a big export."""

    def represent_str(self, data: str) -> yaml.ScalarNode:
        odd = any(not (ch.isprintable() or ch in " \n") for ch in data)
        return self.represent_scalar("tag:yaml.org,2002:str", data, style='"' if odd else None)


_Dumper.add_representer(str, _Dumper.represent_str)


_READING_ORDER = ("name", "description", "avatar_url", "members", "archived", "id")


def _readable(group: DesiredGroup) -> dict[str, Any]:
    canonical = _canonical(group)
    return {field: canonical[field] for field in _READING_ORDER if field in canonical}


def dump_spec(groups: Mapping[str, DesiredGroup]) -> str:
    """Groups -> spec YAML that `load_spec` reads back to the same values (member sets expanded),
    each group's fields in the order a person writes them."""
    data = {"groups": {key: _readable(groups[key]) for key in sorted(groups)}}
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
