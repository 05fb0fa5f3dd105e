"""The emulator's data: contacts, groups and messages, in memory or persisted in SQLite.

Lists must stay fast at 100,000 groups, so each listing (contacts, active groups, archived
groups) keeps its ids sorted newest first and pages by bisecting on a cursor's sort key instead
of scanning. SQLite is write-through (one JSON blob per object): memory stays the source for
reads, the file only makes the state survive a restart.
"""

from __future__ import annotations

import bisect
import json
import random
import sqlite3
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

MAX_CONTACTS_PER_GROUP = 1000
_ALPHABET = string.ascii_letters + string.digits
_TABLES = ("contacts", "groups", "messages")
_GROUP_FIELDS = ("id", "name", "description", "avatar_url", "conversation_id")


class ApiFailure(Exception):
    """A request the vendor would refuse: becomes the JSON error answer {type, message}."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message


class SortedIndex:
    """Ids ordered newest first (created_at desc, then insertion order desc), paged by bisection.

    Appends are lazy (sorted on the next read) so seeding 100,000 objects costs one sort.
    """

    def __init__(self) -> None:
        self._keys: list[tuple[int, int, str]] = []
        self._dirty = False

    def add(self, key: tuple[int, int, str]) -> None:
        self._keys.append(key)
        self._dirty = True

    def remove(self, key: tuple[int, int, str]) -> None:
        keys = self._sorted()
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            del keys[i]

    def ids(self) -> list[str]:
        return [k[2] for k in self._sorted()]

    def __len__(self) -> int:
        return len(self._keys)

    def page(
        self,
        limit: int,
        after: tuple[int, int, str] | None = None,
        before: tuple[int, int, str] | None = None,
    ) -> tuple[list[str], bool]:
        """One page after (or before) a cursor key; has_more looks in the direction of travel."""
        keys = self._sorted()
        if before is not None:
            end = bisect.bisect_left(keys, before)
            start = max(0, end - limit)
            return [k[2] for k in keys[start:end]], start > 0
        start = bisect.bisect_right(keys, after) if after is not None else 0
        end = start + limit
        return [k[2] for k in keys[start:end]], end < len(keys)

    def _sorted(self) -> list[tuple[int, int, str]]:
        if self._dirty:
            self._keys.sort()
            self._dirty = False
        return self._keys


class EmulatorState:
    """Thread-safe: the server thread and the test thread both read and write it."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        clock: Callable[[], int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock or (lambda: int(time.time()))
        self._rng = rng or random.Random()
        self._lock = threading.RLock()
        self._seq = 0
        self._contacts: dict[str, dict[str, Any]] = {}
        self._by_username: dict[str, str] = {}
        self._groups: dict[str, dict[str, Any]] = {}
        self._messages: dict[str, dict[str, Any]] = {}
        self._conversations: dict[str, str] = {}  # conversation_id -> group or contact id
        self._contact_index = SortedIndex()
        self._active = SortedIndex()
        self._archived = SortedIndex()
        self._db = _open_db(path) if path is not None else None
        if self._db is not None:
            self._load()

    # --- Python API (tests, seeding) ------------------------------------------------------

    def add_contact(
        self,
        username: str,
        *,
        display_name: str | None = None,
        phone_number: str | None = None,
        avatar_url: str | None = None,
        id: str | None = None,
        created_at: int | None = None,
    ) -> dict[str, Any]:
        with self._lock, self._transaction():
            if username in self._by_username:
                raise ValueError(f"contact {username!r} already exists")
            seq = self._next_seq()
            contact = {
                "id": id or self._new_id(),
                "username": username,
                "phone_number": phone_number,
                "avatar_url": avatar_url,
                "display_name": display_name,
                "conversation_id": self._new_id(),
                "last_active_at": None,
                "created_at": self._clock() if created_at is None else created_at,
                "_seq": seq,
            }
            self._index_contact(contact)
            self._persist("contacts", contact)
            return _public(contact)

    def add_group(
        self,
        name: str,
        *,
        members: Iterable[str] = (),
        description: str | None = None,
        avatar_url: str | None = None,
        archived: bool = False,
        id: str | None = None,
        created_at: int | None = None,
    ) -> dict[str, Any]:
        """Add a group directly (no API validation); members are usernames, created if unknown."""
        with self._lock, self._transaction():
            ids = []
            for username in dict.fromkeys(members):
                cid = self._by_username.get(username)
                ids.append(cid if cid is not None else self.add_contact(username)["id"])
            now = self._clock()
            group = self._insert_group(
                {
                    "id": id or self._new_id(),
                    "name": name,
                    "description": description,
                    "avatar_url": avatar_url,
                    "contact_ids": ids,
                    "created_at": now if created_at is None else created_at,
                    "archived_at": now if archived else None,
                }
            )
            return self._render(group)

    def load_seed(self, seed: Path | str | Mapping[str, Any]) -> None:
        """Load {contacts: [...], groups: [...]} from a dict or a YAML/JSON file, in one commit."""
        data = seed if isinstance(seed, Mapping) else yaml.safe_load(Path(seed).read_text()) or {}
        with self._lock, self._transaction():
            for c in data.get("contacts") or ():
                self.add_contact(
                    c["username"],
                    **{
                        k: c[k]
                        for k in ("display_name", "phone_number", "avatar_url", "id")
                        if k in c
                    },
                )
            # Seed files list groups oldest first; add in order so the newest is listed first.
            for g in data.get("groups") or ():
                self.add_group(
                    g["name"],
                    members=g.get("members") or (),
                    description=g.get("description"),
                    avatar_url=g.get("avatar_url"),
                    archived=bool(g.get("archived", False)),
                    id=g.get("id"),
                    created_at=g.get("created_at"),
                )

    def groups(self, archived: bool | None = None) -> list[dict[str, Any]]:
        """Groups newest first; archived=None means both lists (active first)."""
        with self._lock:
            indexes = {None: (self._active, self._archived), False: (self._active,)}
            chosen = indexes.get(archived, (self._archived,))
            return [self._render(self._groups[i]) for index in chosen for i in index.ids()]

    def get(self, group_id: str) -> dict[str, Any] | None:
        with self._lock:
            group = self._groups.get(group_id)
            return self._render(group) if group is not None else None

    def contacts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [_public(self._contacts[i]) for i in self._contact_index.ids()]

    def get_contact(self, contact_id: str) -> dict[str, Any] | None:
        with self._lock:
            contact = self._contacts.get(contact_id)
            return _public(contact) if contact is not None else None

    def messages(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                _public(m)
                for m in self._messages.values()
                if conversation_id is None or m["conversation_id"] == conversation_id
            ]

    def clear(self) -> None:
        with self._lock, self._transaction():
            for attr in ("_contacts", "_by_username", "_groups", "_messages", "_conversations"):
                getattr(self, attr).clear()
            self._contact_index, self._active, self._archived = (
                SortedIndex(),
                SortedIndex(),
                SortedIndex(),
            )
            if self._db is not None:
                for table in _TABLES:
                    self._db.execute(f"DELETE FROM {table}")

    # --- API operations (the HTTP layer has validated types already) ----------------------

    def list_groups(
        self, *, archived: bool, limit: int, after: str | None, before: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        with self._lock:
            index = self._archived if archived else self._active
            ids, more = index.page(
                limit, self._cursor(self._groups, after), self._cursor(self._groups, before)
            )
            return [self._render(self._groups[i]) for i in ids], more

    def list_contacts(
        self, *, limit: int, after: str | None, before: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        with self._lock:
            ids, more = self._contact_index.page(
                limit, self._cursor(self._contacts, after), self._cursor(self._contacts, before)
            )
            return [_public(self._contacts[i]) for i in ids], more

    def create_group(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock, self._transaction():
            ids = self._resolve(fields.get("contacts", []))
            group = self._insert_group(
                {
                    "id": self._new_id(),
                    "name": fields["name"],
                    "description": fields.get("description"),
                    "avatar_url": fields.get("avatar_url"),
                    "contact_ids": ids,
                    "created_at": self._clock(),
                    "archived_at": None,
                }
            )
            return self._render(group)

    def update_group(self, group_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        with self._lock, self._transaction():
            group = self._group(group_id)
            ids = self._resolve(fields["contacts"]) if "contacts" in fields else None
            if "archived_at" in fields and fields["archived_at"] != group["archived_at"]:
                self._listing(group).remove(_key(group))
                group["archived_at"] = fields["archived_at"]
                self._listing(group).add(_key(group))
            for name in ("name", "description", "avatar_url"):
                if name in fields:
                    group[name] = fields[name]
            if ids is not None:
                group["contact_ids"] = ids
            self._persist("groups", group)
            return self._render(group)

    def delete_group(self, group_id: str) -> dict[str, Any]:
        """Deletes the group and its messages, as the vendor does."""
        with self._lock, self._transaction():
            group = self._group(group_id)
            rendered = self._render(group)
            self._listing(group).remove(_key(group))
            del self._groups[group_id]
            del self._conversations[group["conversation_id"]]
            self._unpersist("groups", group_id)
            gone = [
                m
                for m in self._messages.values()
                if m["conversation_id"] == rendered["conversation_id"]
            ]
            for message in gone:
                del self._messages[message["id"]]
                self._unpersist("messages", message["id"])
            return rendered

    def retrieve_group(self, group_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render(self._group(group_id))

    def retrieve_contact(self, contact_id: str) -> dict[str, Any]:
        with self._lock:
            contact = self._contacts.get(contact_id)
            if contact is None:
                raise ApiFailure(404, f"no such contact: {contact_id}")
            return _public(contact)

    def post_message(self, conversation_id: str, text: str) -> dict[str, Any]:
        with self._lock, self._transaction():
            if conversation_id not in self._conversations:
                raise ApiFailure(404, f"no such conversation: {conversation_id}")
            message = {
                "id": self._new_id(),
                "conversation_id": conversation_id,
                "message": text,
                "created_at": self._clock(),
                "_seq": self._next_seq(),
            }
            self._messages[message["id"]] = message
            self._persist("messages", message)
            return _public(message)

    # --- internals ------------------------------------------------------------------------

    def _insert_group(self, group: dict[str, Any]) -> dict[str, Any]:
        if group["id"] in self._groups:
            raise ValueError(f"group id {group['id']!r} already exists")
        group["conversation_id"] = self._new_id()
        group["_seq"] = self._next_seq()
        self._index_group(group)
        self._persist("groups", group)
        return group

    def _index_group(self, group: dict[str, Any]) -> None:
        self._groups[group["id"]] = group
        self._conversations[group["conversation_id"]] = group["id"]
        self._listing(group).add(_key(group))

    def _index_contact(self, contact: dict[str, Any]) -> None:
        self._contacts[contact["id"]] = contact
        self._by_username[contact["username"]] = contact["id"]
        self._conversations[contact["conversation_id"]] = contact["id"]
        self._contact_index.add(_key(contact))

    def _listing(self, group: Mapping[str, Any]) -> SortedIndex:
        return self._archived if group["archived_at"] is not None else self._active

    def _group(self, group_id: str) -> dict[str, Any]:
        group = self._groups.get(group_id)
        if group is None:
            raise ApiFailure(404, f"no such group: {group_id}")
        return group

    @staticmethod
    def _cursor(objects: Mapping[str, Mapping[str, Any]], cursor: str | None) -> Any:
        if cursor is None:
            return None
        obj = objects.get(cursor)
        if obj is None:
            raise ApiFailure(400, f"unknown cursor id: {cursor}")
        return _key(obj)

    def _resolve(self, refs: Iterable[Mapping[str, str]]) -> list[str]:
        """Contact references ({"id"} or {"username"}) to ids; any unknown one refuses it all."""
        ids: list[str] = []
        unknown: list[str] = []
        for ref in refs:
            if "id" in ref:
                cid = ref["id"] if ref["id"] in self._contacts else None
                label = f"id {ref['id']!r}"
            else:
                cid = self._by_username.get(ref["username"])
                label = f"username {ref['username']!r}"
            if cid is None:
                unknown.append(label)
            else:
                ids.append(cid)
        if unknown:
            raise ApiFailure(400, f"unknown contact(s): {', '.join(unknown)}")
        ids = list(dict.fromkeys(ids))
        if len(ids) > MAX_CONTACTS_PER_GROUP:
            raise ApiFailure(400, f"a group has at most {MAX_CONTACTS_PER_GROUP} contacts")
        return ids

    def _render(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """The API's group object: members as full contact objects, fields in the vendor's order."""
        out = {k: group[k] for k in _GROUP_FIELDS}
        out["contacts"] = [_public(self._contacts[i]) for i in group["contact_ids"]]
        out["created_at"] = group["created_at"]
        out["archived_at"] = group["archived_at"]
        return out

    def _new_id(self) -> str:
        return "".join(self._rng.choices(_ALPHABET, k=16))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One SQLite commit per outermost operation (so a 10,000-group seed is one commit)."""
        if self._db is None or self._db.in_transaction:
            yield
            return
        with self._db:
            self._db.execute("BEGIN")
            yield

    def _persist(self, table: str, obj: Mapping[str, Any]) -> None:
        if self._db is not None:
            self._db.execute(
                f"INSERT OR REPLACE INTO {table} (id, seq, body) VALUES (?, ?, ?)",
                (obj["id"], obj["_seq"], json.dumps(obj)),
            )

    def _unpersist(self, table: str, obj_id: str) -> None:
        if self._db is not None:
            self._db.execute(f"DELETE FROM {table} WHERE id = ?", (obj_id,))

    def _load(self) -> None:
        assert self._db is not None
        for table, add in (
            ("contacts", self._index_contact),
            ("groups", self._index_group),
            ("messages", lambda m: self._messages.__setitem__(m["id"], m)),
        ):
            for (body,) in self._db.execute(f"SELECT body FROM {table} ORDER BY seq"):
                obj = json.loads(body)
                add(obj)
                self._seq = max(self._seq, obj["_seq"])


def _key(obj: Mapping[str, Any]) -> tuple[int, int, str]:
    return (-obj["created_at"], -obj["_seq"], obj["id"])


def _public(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "_seq"}


def _open_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for table in _TABLES:
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, seq INTEGER, body TEXT)"
        )
    return db
