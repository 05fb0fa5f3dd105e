"""One parser per format: each table drives the config check and the run-time code alike.

Whatever `validate` accepts the daemon runs, and whatever the daemon runs `validate` accepts:
so every case goes through `load_settings` (what `validate` and the daemon's start-up read)
and through what the daemon calls at run time (`make_trigger`, `HttpService.start`).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from daemon_support import open_service
from groupsync.canonical import canonical_json
from groupsync.config import (
    ConfigError,
    load_settings,
    parse_listen,  # the HTTP service's own parser
)
from groupsync.errors import GroupsyncError
from groupsync.metrics import Metrics
from groupsync.plan import Action, Cause, Change, GroupError, plan_checksum
from groupsync.schedule import make_trigger
from groupsync.spec import DesiredGroup, digest
from groupsync.yamlstrict import Location

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "groupsync"
SAT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday
WEEK = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

# --- cron ------------------------------------------------------------------------------------

# (schedule.cron, the weekdays it fires on, or a fragment of the error)
CRON = [
    ("0 3 * * 7", {"Sun"}),  # crontab: 0 and 7 are Sunday
    ("0 3 * * 0", {"Sun"}),
    ("0 3 * * sun", {"Sun"}),
    ("0 3 * * SUN", {"Sun"}),
    ("0 3 * * 1", {"Mon"}),
    ("0 3 * * 5-7", {"Fri", "Sat", "Sun"}),
    ("0 3 * * mon-fri", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
    ("0 */6 * * *", WEEK),
    ("0 3 * * 8", "bad day of week '8'"),
    ("61 * * * *", "higher than the maximum value (59)"),
    ("*/0 * * * *", "higher than 0"),
    ("every day", "expected 5 fields"),
    ("@daily", "expected 5 fields"),
    ("0 0 30 2 *", "never fires"),
]


def fire_days(trigger: object) -> set[str]:
    """The weekdays of every fire time in the week after SAT."""
    days, prev, now = set(), None, SAT
    for _ in range(100):
        nxt = trigger.get_next_fire_time(prev, now)  # type: ignore[attr-defined]
        if nxt is None or nxt >= SAT + timedelta(days=7):
            return days
        days.add(nxt.strftime("%a"))
        prev, now = nxt, nxt + timedelta(seconds=1)
    raise AssertionError("more than 100 fire times in a week")


@pytest.mark.parametrize(("cron", "expected"), CRON)
def test_cron_at_run_time(cron: str, expected: set[str] | str) -> None:
    if isinstance(expected, set):
        assert fire_days(make_trigger(None, cron)) == expected
        return
    with pytest.raises(GroupsyncError, match=rf"^schedule\.cron '{re.escape(cron)}': .*"):
        make_trigger(None, cron)
    with pytest.raises(GroupsyncError, match=re.escape(expected)):
        make_trigger(None, cron)


# --- host:port -------------------------------------------------------------------------------

# (metrics.listen, (host, port) it binds, or a fragment of the error)
LISTEN = [
    ("127.0.0.1:0", ("127.0.0.1", 0)),  # port 0: the system picks a free port
    ("localhost:0", ("localhost", 0)),
    ("[::1]:0", ("::1", 0)),
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("[::1]:9100", ("::1", 9100)),
    ("metrics-1.campus.example:9100", ("metrics-1.campus.example", 9100)),
    (":9100", "no host: write 127.0.0.1:9100 (this machine only) or 0.0.0.0:9100"),
    ("127.0.0.1", "no port"),
    ("127.0.0.1:", "no port"),
    ("127.0.0.1:70000", "port 70000 is out of range (0..65535)"),
    ("127.0.0.1:http", "port 'http' is not a number"),
    ("127.0.0.1:-1", "port '-1' is not a number"),
    ("::1:9100", "write an IPv6 address in brackets"),
    ("[nope]:9100", "'nope' in brackets is not an IPv6 address"),
    ("my_host:9100", "'my_host' is not a host name or an IP address"),
    ("-x.org:9100", "'-x.org' is not a host name or an IP address"),
    (f"{'a' * 64}.org:9100", "is not a host name or an IP address"),
]


@pytest.mark.parametrize(("listen", "expected"), LISTEN)
def test_listen_at_run_time(listen: str, expected: tuple[str, int] | str) -> None:
    """What the daemon does with the value: a server on port 0 answers; a fixed port would
    clash with whatever else runs here, so those stop at the parse the server starts with."""
    if isinstance(expected, str):
        with pytest.raises(GroupsyncError, match=re.escape(expected)):
            open_service(Metrics(max_age_s=60)).start(listen)
        return
    host, port = expected
    if port != 0:
        assert parse_listen(listen) == expected
        return
    service = open_service(Metrics(max_age_s=60))
    try:
        port = service.start(listen)
        assert port > 0
        url_host = f"[{host}]" if ":" in host else host
        r = httpx.get(f"http://{url_host}:{port}/healthz", timeout=5, verify=False)
        assert r.status_code == 503 and "no run finished yet" in r.text
    finally:
        service.close()


# --- validation, for both tables ---------------------------------------------------------------

VALIDATION = [("schedule", "cron", *case) for case in CRON] + [
    ("metrics", "listen", *case) for case in LISTEN
]
NOT_A = {"cron": "is not a cron expression", "listen": "is not host:port"}


@pytest.mark.parametrize(("section", "option", "value", "expected"), VALIDATION)
def test_validation(
    tmp_path: Path, section: str, option: str, value: str, expected: object
) -> None:
    """What `validate` (and the daemon's start-up) says of each case: loaded, or one issue
    placed at the value."""
    config = tmp_path / "groupsync.yaml"
    config.write_text(f"spec: {{path: g}}\n{section}:\n  {option}: '{value}'\n", "utf-8")
    if not isinstance(expected, str):
        assert getattr(getattr(load_settings(config), section), option) == value
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    (issue,) = caught.value.issues
    assert issue.location == Location(str(config), 3, len(option) + 5)
    assert issue.path == f"{section}.{option}"
    assert issue.message.startswith(f"'{value}' {NOT_A[option]}: ")
    assert expected in issue.message


# --- canonical JSON --------------------------------------------------------------------------

CANONICAL = [
    ({"b": 1, "a": [2, 1]}, '{"a":[2,1],"b":1}'),
    ({"name": "Café ☕"}, '{"name":"Café ☕"}'),
    ({"x": None, "y": True}, '{"x":null,"y":true}'),
    ([], "[]"),
]


@pytest.mark.parametrize(("value", "text"), CANONICAL)
def test_canonical_json(value: object, text: str) -> None:
    assert canonical_json(value) == text


def test_checksum_and_digest_hash_the_canonical_json() -> None:
    changes = (Change("café", Action.CREATE, Cause.SPEC, "Café ☕"),)
    errors = (GroupError("b", "x"),)
    body = {"changes": [c.to_dict() for c in changes], "errors": [e.to_dict() for e in errors]}
    expected = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    assert plan_checksum(changes, errors) == expected
    groups = {"café": DesiredGroup("café", "Café ☕", members=frozenset({"b", "a"}))}
    text = canonical_json({"café": {"name": "Café ☕", "members": ["a", "b"]}})
    assert digest(groups) == hashlib.sha256(text.encode()).hexdigest()


def test_no_other_module_spells_canonical_json_itself() -> None:
    """Compact JSON (what gets hashed or stored) is spelled in canonical.py only: two spellings
    would drift, and equal data would stop hashing equal. Indented output for people is not
    canonical and may sort keys as it likes."""
    compact = re.compile(r"separators=\(\s*['\"],['\"]\s*,\s*['\"]:['\"]\s*\)")
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "canonical.py" and compact.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
