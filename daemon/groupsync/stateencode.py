"""A state snapshot's bytes built a batch of groups at a time, for the daemon's GET /state.

`state.dumps(state.snapshot(journal))` holds every managed group as Python objects at once:
hundreds of MiB, and a second of CPU, at the API's 100,000 groups. This writes the same bytes
holding one batch of rows. Canonical JSON is compositional (keys sorted, no whitespace), so the
document is its envelope with the groups list written in place; each group is
`{"applied":…,"group_id":…,"key":…}` with `applied` spliced in as the journal stores it, which is
already its canonical JSON (`journal.managed_rows`). Tests hold the bytes equal to `dumps`.

The collector is held off meanwhile (`paused_gc`): the batches make no reference cycles, and
each allocation burst would otherwise set off collections that scan the daemon's whole heap
with the GIL held, stalling its event loop for tens of milliseconds.
"""

from __future__ import annotations

import io
from json.encoder import encode_basestring  # type: ignore[attr-defined]

from groupsync.canonical import canonical_json
from groupsync.gcpause import paused_gc
from groupsync.journal import Journal
from groupsync.state import State, to_snapshot

_EMPTY_GROUPS = '"groups":[]'
# A str as canonical_json spells it (json.dumps with ensure_ascii=False uses this very function),
# without dumps' per-call set-up: 200,000 calls at 100,000 groups.
_string = encode_basestring
_GROUP = '{}{{"applied":{},"group_id":{},"key":{}}}'  # a separator, then one group


def encode_snapshot(journal: Journal, *, batch: int = 1000) -> bytes:
    """The same bytes as `state.dumps(state.snapshot(journal))`, read in one transaction."""
    out = io.BytesIO()
    count = 0
    with paused_gc(), journal.one_read():
        run_id, rosters = journal.last_run_id(), journal.last_roster_counts()
        head, _ = _envelope(State(run_id, {}, rosters), 0)
        out.write(head.encode())
        for rows in journal.managed_rows(batch):
            text = "".join(
                _GROUP.format(",", applied or "null", _string(gid), _string(key))
                for key, gid, applied in rows
            )
            out.write(
                text[1:].encode() if not count else text.encode()
            )  # no comma before the first
            count += len(rows)
    _, tail = _envelope(State(run_id, {}, rosters), count)
    out.write(tail.encode())
    return out.getvalue()


def _envelope(state: State, count: int) -> tuple[str, str]:
    """The document with no groups, split where they go: its first `"groups":[]` is the field
    itself, as only `format` and `format_version` sort before it."""
    text = canonical_json(to_snapshot(state) | {"managed_count": count}) + "\n"
    head, tail = text.split(_EMPTY_GROUPS, 1)
    return head + '"groups":[', "]" + tail
