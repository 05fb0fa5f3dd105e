"""The emulator's data: contacts, groups and messages, in memory or persisted in SQLite.

Lists must stay fast at 100,000 groups, so each listing (contacts, active groups, archived
groups) keeps its ids sorted newest first and pages by bisecting on a cursor's sort key instead
of scanning. SQLite is write-through (one JSON blob per object): memory stays the source for
reads, the file only makes the state survive a restart.
"""

from __future__ import annotations

import base64
import bisect
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from groupsync import private
from groupsync.errors import GroupsyncError

MAX_CONTACTS_PER_GROUP = 1000
_TABLES = ("contacts", "groups", "messages")
_GROUP_FIELDS = ("id", "name", "description", "avatar_url", "conversation_id")

Key = tuple[int, int, str]
"""Sort key: (created_at, insertion sequence, id). Listings show the largest (newest) first."""


class ApiFailure(Exception):
    """A request the vendor would refuse: becomes the JSON error answer {type, message}."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message


class SeedError(GroupsyncError):
    """A seed file that cannot be loaded; the message says which entry and why."""


class SortedIndex:
    """Ids kept in ascending Key order (oldest first) and paged from the end, by bisection.

    New objects are the newest, so adding is almost always an append: seeding 100,000 groups
    costs no sorting, and a page never scans.
    """

    def __init__(self) -> None:
        self._keys: list[Key] = []

    def add(self, key: Key) -> None:
        if not self._keys or key > self._keys[-1]:
            self._keys.append(key)
        else:
            bisect.insort(self._keys, key)

    def remove(self, key: Key) -> None:
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]

    def ids(self) -> list[str]:
        """Newest first."""
        return [k[2] for k in reversed(self._keys)]

    def __len__(self) -> int:
        return len(self._keys)

    def page(
        self, limit: int, after: Key | None = None, before: Key | None = None
    ) -> tuple[list[str], bool]:
        """One page, newest first, after (older than) or before (newer than) a cursor key;
        has_more looks in the direction of travel.

        The cursor need not be in this index (a group archived while a client pages through
        the active list still marks a position), it only has to exist.
        """
        keys = self._keys
        if before is not None:
            start = bisect.bisect_right(keys, before)
            end = min(len(keys), start + limit)
            more = end < len(keys)
        else:
            end = bisect.bisect_left(keys, after) if after is not None else len(keys)
            start = max(0, end - limit)
            more = start > 0
        return [k[2] for k in reversed(keys[start:end])], more


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
        # Told of every change to a group, with its type and the group as the API shows it
        # (the webhook sender); called under the lock, so they only queue.
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._db = _open_db(path) if path is not None else None
        self._reset_memory()
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
            return dict(
                self._add_contact(
                    username,
                    display_name=display_name,
                    phone_number=phone_number,
                    avatar_url=avatar_url,
                    id=id,
                    created_at=created_at,
                )
            )

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
            group = self._add_group(
                name,
                members=members,
                description=description,
                avatar_url=avatar_url,
                archived=archived,
                id=id,
                created_at=created_at,
            )
            return self._changed("group.created", self._render(group))

    def load_seed(self, seed: Path | str | Mapping[str, Any]) -> None:
        """Load {contacts: [...], groups: [...]} from a dict or a YAML/JSON file, in one commit.

        Groups are added in file order, so the last one is the newest (listed first).
        """
        data = _read_seed(seed)
        with self._lock, self._transaction():
            for n, c in enumerate(data.get("contacts") or (), 1):
                try:
                    self._add_contact(
                        c["username"],
                        display_name=c.get("display_name"),
                        phone_number=c.get("phone_number"),
                        avatar_url=c.get("avatar_url"),
                        id=c.get("id"),
                        created_at=c.get("created_at"),
                    )
                except (KeyError, TypeError, AttributeError, ValueError) as e:
                    raise SeedError(f"seed contact #{n}: {_why(e)}") from e
            for n, g in enumerate(data.get("groups") or (), 1):
                try:
                    self._add_group(
                        g["name"],
                        members=g.get("members") or (),
                        description=g.get("description"),
                        avatar_url=g.get("avatar_url"),
                        archived=bool(g.get("archived", False)),
                        id=g.get("id"),
                        created_at=g.get("created_at"),
                    )
                except (KeyError, TypeError, AttributeError, ValueError) as e:
                    raise SeedError(f"seed group #{n}: {_why(e)}") from e

    def groups(self, archived: bool | None = None) -> list[dict[str, Any]]:
        """Groups newest first; archived=None means both lists (active ones first)."""
        with self._lock:
            chosen = {
                None: (self._active, self._archived),
                False: (self._active,),
                True: (self._archived,),
            }[archived]
            return [self._render(self._groups[i]) for index in chosen for i in index.ids()]

    def get(self, group_id: str) -> dict[str, Any] | None:
        with self._lock:
            group = self._groups.get(group_id)
            return self._render(group) if group is not None else None

    def contacts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(self._contacts[i]) for i in self._contact_index.ids()]

    def get_contact(self, contact_id: str) -> dict[str, Any] | None:
        with self._lock:
            contact = self._contacts.get(contact_id)
            return dict(contact) if contact is not None else None

    def messages(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """Messages oldest first, optionally of one conversation."""
        with self._lock:
            return [
                dict(m)
                for m in self._messages.values()
                if conversation_id is None or m["conversation_id"] == conversation_id
            ]

    def clear(self) -> None:
        """Back to empty (and the SQLite file too)."""
        with self._lock, self._transaction():
            for group_id in list(self._groups):
                self._changed("group.deleted", self._render(self._groups[group_id]))
            self._reset_memory()
            if self._db is not None:
                for table in _TABLES:
                    self._db.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- API operations (the HTTP layer has type-checked the fields) ----------------------

    def list_groups_json(
        self, *, archived: bool, limit: int, after: str | None, before: str | None
    ) -> str:
        """One page as the API's JSON body, built from cached per-object JSON: a page of 100
        groups x 20 members is 2,000 contact objects, too many to re-encode on every call."""
        with self._lock:
            index = self._archived if archived else self._active
            keys = self._group_keys
            ids, more = index.page(limit, _cursor(keys, after), _cursor(keys, before))
            return _page_json([self._group_json(self._groups[i]) for i in ids], more)

    def list_contacts_json(self, *, limit: int, after: str | None, before: str | None) -> str:
        with self._lock:
            keys = self._contact_keys
            ids, more = self._contact_index.page(limit, _cursor(keys, after), _cursor(keys, before))
            return _page_json([self._contact_json[i] for i in ids], more)

    def create_group(self, fields: Mapping[str, Any], *, clock_offset_s: int = 0) -> dict[str, Any]:
        """`clock_offset_s` skews the `created_at` stamp, as a server with a wrong clock would."""
        with self._lock, self._transaction():
            group = {
                "id": self._new_id(),
                "name": fields["name"],
                "description": fields.get("description"),
                "avatar_url": fields.get("avatar_url"),
                "conversation_id": self._new_id(),
                "contact_ids": self._resolve(fields.get("contacts", ())),
                "created_at": self._clock() + clock_offset_s,
                "archived_at": None,
            }
            self._insert_group(group)
            return self._changed("group.created", self._render(group))

    def update_group(self, group_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Partial: only the fields given change; `contacts` replaces the member list."""
        with self._lock, self._transaction():
            group = self._group(group_id)
            ids = self._resolve(fields["contacts"]) if "contacts" in fields else None
            if "archived_at" in fields and (fields["archived_at"] is None) != (
                group["archived_at"] is None
            ):
                key = self._group_keys[group_id]
                self._listing(group).remove(key)
                group["archived_at"] = fields["archived_at"]
                self._listing(group).add(key)
            for name in ("name", "description", "avatar_url", "archived_at"):
                if name in fields:
                    group[name] = fields[name]
            if ids is not None:
                group["contact_ids"] = ids
            self._json_cache.pop(group_id, None)
            self._persist("groups", group, self._group_keys[group_id])
            return self._changed("group.updated", self._render(group))

    def delete_group(self, group_id: str) -> dict[str, Any]:
        """Deletes the group and its messages, as the vendor does."""
        with self._lock, self._transaction():
            group = self._group(group_id)
            rendered = self._render(group)
            self._listing(group).remove(self._group_keys.pop(group_id))
            del self._groups[group_id]
            self._json_cache.pop(group_id, None)
            self._conversations.pop(group["conversation_id"], None)
            self._unpersist("groups", group_id)
            doomed = [
                m["id"]
                for m in self._messages.values()
                if m["conversation_id"] == group["conversation_id"]
            ]
            for message_id in doomed:
                del self._messages[message_id]
                self._unpersist("messages", message_id)
            return self._changed("group.deleted", rendered)

    def retrieve_group(self, group_id: str) -> dict[str, Any]:
        with self._lock:
            return self._render(self._group(group_id))

    def retrieve_contact(self, contact_id: str) -> dict[str, Any]:
        with self._lock:
            contact = self._contacts.get(contact_id)
            if contact is None:
                raise ApiFailure(404, f"no such contact: {contact_id}")
            return dict(contact)

    def post_message(self, conversation_id: str, text: str) -> dict[str, Any]:
        with self._lock, self._transaction():
            if conversation_id not in self._conversations:
                raise ApiFailure(404, f"no such conversation: {conversation_id}")
            group_id = self._conversations[conversation_id]
            if group_id is not None and self._groups[group_id]["archived_at"] is not None:
                message = f"group {group_id} is archived: its chat is read-only"
                raise ApiFailure(409, message, "conflict")
            message = {
                "id": self._new_id(),
                "conversation_id": conversation_id,
                "message": text,
                "created_at": self._clock(),
            }
            self._messages[message["id"]] = message
            self._persist(
                "messages", message, (message["created_at"], self._next_seq(), message["id"])
            )
            return dict(message)

    # --- internals ------------------------------------------------------------------------

    def _changed(self, event_type: str, group: dict[str, Any]) -> dict[str, Any]:
        for listener in self.listeners:
            listener(event_type, dict(group))
        return group

    def _reset_memory(self) -> None:
        self._seq = 0
        self._contacts: dict[str, dict[str, Any]] = {}
        self._contact_keys: dict[str, Key] = {}
        self._by_username: dict[str, str] = {}
        self._groups: dict[str, dict[str, Any]] = {}
        self._group_keys: dict[str, Key] = {}
        self._json_cache: dict[str, str] = {}  # group id -> its API JSON, until it changes
        self._contact_json: dict[str, str] = {}  # contacts never change once created
        self._messages: dict[str, dict[str, Any]] = {}
        self._conversations: dict[str, str | None] = {}  # -> its group's id (None: a contact's)
        self._contact_index = SortedIndex()
        self._active = SortedIndex()
        self._archived = SortedIndex()

    def _add_contact(
        self,
        username: str,
        *,
        display_name: str | None = None,
        phone_number: str | None = None,
        avatar_url: str | None = None,
        id: str | None = None,
        created_at: int | None = None,
    ) -> dict[str, Any]:
        if not isinstance(username, str) or not username:
            raise ValueError("username must be a non-empty string")
        if username in self._by_username:
            raise ValueError(f"contact {username!r} already exists")
        contact = {
            "id": id or self._new_id(),
            "username": username,
            "phone_number": phone_number,
            "avatar_url": avatar_url,
            "display_name": display_name,
            "conversation_id": self._new_id(),
            "last_active_at": None,
            "created_at": self._clock() if created_at is None else int(created_at),
        }
        if contact["id"] in self._contacts:
            raise ValueError(f"contact id {contact['id']!r} already exists")
        key = (contact["created_at"], self._next_seq(), contact["id"])
        self._index_contact(contact, key)
        self._persist("contacts", contact, key)
        return contact

    def _add_group(
        self,
        name: str,
        *,
        members: Iterable[str],
        description: str | None,
        avatar_url: str | None,
        archived: bool,
        id: str | None,
        created_at: int | None,
    ) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        if isinstance(members, str):
            raise ValueError("members must be a list of usernames")
        contact_ids = []
        for username in dict.fromkeys(members):
            cid = self._by_username.get(username)
            if cid is None:
                cid = self._add_contact(username)["id"]
            contact_ids.append(cid)
        now = self._clock()
        group = {
            "id": id or self._new_id(),
            "name": name,
            "description": description,
            "avatar_url": avatar_url,
            "conversation_id": self._new_id(),
            "contact_ids": contact_ids,
            "created_at": now if created_at is None else int(created_at),
            "archived_at": now if archived else None,
        }
        self._insert_group(group)
        return group

    def _insert_group(self, group: dict[str, Any]) -> None:
        if group["id"] in self._groups:
            raise ValueError(f"group id {group['id']!r} already exists")
        key = (group["created_at"], self._next_seq(), group["id"])
        self._index_group(group, key)
        self._persist("groups", group, key)

    def _index_group(self, group: dict[str, Any], key: Key) -> None:
        self._groups[group["id"]] = group
        self._group_keys[group["id"]] = key
        self._conversations[group["conversation_id"]] = group["id"]
        self._listing(group).add(key)

    def _index_contact(self, contact: dict[str, Any], key: Key) -> None:
        self._contacts[contact["id"]] = contact
        self._contact_json[contact["id"]] = json.dumps(contact, ensure_ascii=False)
        self._contact_keys[contact["id"]] = key
        self._by_username[contact["username"]] = contact["id"]
        self._conversations[contact["conversation_id"]] = None
        self._contact_index.add(key)

    def _listing(self, group: Mapping[str, Any]) -> SortedIndex:
        return self._archived if group["archived_at"] is not None else self._active

    def _group(self, group_id: str) -> dict[str, Any]:
        group = self._groups.get(group_id)
        if group is None:
            raise ApiFailure(404, f"no such group: {group_id}")
        return group

    def _resolve(self, refs: Iterable[Mapping[str, str]]) -> list[str]:
        """Contact references ({"id"} or {"username"}) to ids; any unknown one refuses it all."""
        ids: list[str] = []
        unknown: list[str] = []
        for ref in refs:
            if "id" in ref:
                cid: str | None = ref["id"] if ref["id"] in self._contacts else None
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
        out["contacts"] = [dict(self._contacts[i]) for i in group["contact_ids"]]
        out["created_at"] = group["created_at"]
        out["archived_at"] = group["archived_at"]
        return out

    def _group_json(self, group: Mapping[str, Any]) -> str:
        cached = self._json_cache.get(group["id"])
        if cached is None:
            head = json.dumps({k: group[k] for k in _GROUP_FIELDS}, ensure_ascii=False)[:-1]
            members = ",".join(self._contact_json[i] for i in group["contact_ids"])
            tail = json.dumps({k: group[k] for k in ("created_at", "archived_at")})[1:]
            cached = self._json_cache[group["id"]] = f'{head},"contacts":[{members}],{tail}'
        return cached

    def _new_id(self) -> str:
        """16 alphanumerics, like the vendor's (base64 of 12 random bytes, +/ swapped out)."""
        return base64.b64encode(self._rng.randbytes(12), altchars=b"Zz").decode()

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

    def _persist(self, table: str, obj: Mapping[str, Any], key: Key) -> None:
        if self._db is not None:
            self._db.execute(
                f"INSERT OR REPLACE INTO {table} (id, seq, body) VALUES (?, ?, ?)",
                (obj["id"], key[1], json.dumps(obj)),
            )

    def _unpersist(self, table: str, obj_id: str) -> None:
        if self._db is not None:
            self._db.execute(f"DELETE FROM {table} WHERE id = ?", (obj_id,))

    def _load(self) -> None:
        assert self._db is not None
        for table, index in (
            ("contacts", self._index_contact),
            ("groups", self._index_group),
            ("messages", lambda m, _k: self._messages.__setitem__(m["id"], m)),
        ):
            for seq, body in self._db.execute(f"SELECT seq, body FROM {table} ORDER BY seq"):
                obj = json.loads(body)
                index(obj, (obj["created_at"], seq, obj["id"]))
                self._seq = max(self._seq, seq)


def _cursor(keys: Mapping[str, Key], cursor: str | None) -> Key | None:
    if cursor is None:
        return None
    key = keys.get(cursor)
    if key is None:
        raise ApiFailure(400, f"unknown cursor id: {cursor}")
    return key


def _page_json(items: list[str], has_more: bool) -> str:
    return f'{{"has_more":{"true" if has_more else "false"},"data":[{",".join(items)}]}}'


def _read_seed(seed: Path | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(seed, Mapping):
        return seed
    try:
        data = yaml.safe_load(Path(seed).read_text(encoding="utf-8"))  # JSON is YAML too
    except (OSError, yaml.YAMLError) as e:
        raise SeedError(f"cannot read seed {seed}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise SeedError(f"seed {seed}: expected a mapping with contacts and groups")
    return data


def _why(e: Exception) -> str:
    return f"missing {e}" if isinstance(e, KeyError) else str(e)


def _open_db(path: Path) -> sqlite3.Connection:
    private.prepare_sqlite(path)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for table in _TABLES:
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, seq INTEGER, body TEXT)"
        )
    return db
