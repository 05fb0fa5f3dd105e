"""Log lines: text or JSON, timestamps off and syslog priorities on only under journald."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TextIO

import pytest

from groupsync.logs import log_change, setup_logging, under_journald
from groupsync.plan import Action, Cause, Change, FieldChange
from groupsync.secret import Secret
from helpers import token_pieces


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[TextIO]:
    with (tmp_path / "stderr").open("w+") as f:
        yield f
    # Leave the root logger as pytest had it.
    for h in logging.getLogger().handlers[:]:
        if getattr(h, "_groupsync", False):
            logging.getLogger().removeHandler(h)


def journal_stream_of(f: TextIO) -> str:
    st = os.fstat(f.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def lines(f: TextIO) -> list[str]:
    f.flush()
    f.seek(0)
    return f.read().splitlines()


def test_text_lines_carry_a_utc_timestamp_and_extras(log_file: TextIO) -> None:
    setup_logging("text", stream=log_file, environ={})
    logging.getLogger("groupsync.test").info("run %d done", 7, extra={"outcome": "noop"})
    (line,) = lines(log_file)
    stamp, rest = line.split(" ", 1)
    assert stamp.endswith("Z") and "T" in stamp
    assert rest == "INFO groupsync.test: run 7 done outcome=noop"


def test_under_journald_no_timestamp_and_a_priority_prefix(log_file: TextIO) -> None:
    env = {"JOURNAL_STREAM": journal_stream_of(log_file)}
    assert under_journald(log_file, env)
    setup_logging("text", stream=log_file, environ=env)
    logging.getLogger("groupsync.test").error("token refused")
    logging.getLogger("groupsync.test").info("fine")
    assert lines(log_file) == [
        "<3>ERROR groupsync.test: token refused",
        "<6>INFO groupsync.test: fine",
    ]


def test_an_inherited_journal_stream_for_another_file_is_ignored(
    log_file: TextIO, tmp_path: Path
) -> None:
    with (tmp_path / "other").open("w") as other:
        env = {"JOURNAL_STREAM": journal_stream_of(other)}
    assert not under_journald(log_file, env)
    assert not under_journald(log_file, {"JOURNAL_STREAM": "garbage"})


def test_json_lines_parse_and_hold_the_extras(log_file: TextIO) -> None:
    setup_logging("json", stream=log_file, environ={})
    log = logging.getLogger("groupsync.test")
    log.warning("change applied", extra={"key": "chess", "action": "update"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("run crashed")
    first, second = (json.loads(x) for x in lines(log_file))
    assert first["msg"] == "change applied"
    assert first["level"] == "warning"
    assert first["key"] == "chess" and first["action"] == "update"
    assert first["ts"].endswith("Z")
    assert "ValueError: boom" in second["exc"]


def test_json_under_journald_has_no_timestamp(log_file: TextIO) -> None:
    setup_logging("json", stream=log_file, environ={"JOURNAL_STREAM": journal_stream_of(log_file)})
    logging.getLogger("groupsync.test").info("hello")
    (line,) = lines(log_file)
    assert line.startswith("<6>{")
    assert "ts" not in json.loads(line[3:])


def test_setup_again_replaces_only_its_own_handler(log_file: TextIO) -> None:
    root = logging.getLogger()
    before = [h for h in root.handlers if not getattr(h, "_groupsync", False)]
    setup_logging("text", stream=log_file, environ={})
    setup_logging("json", stream=log_file, environ={})
    ours = [h for h in root.handlers if getattr(h, "_groupsync", False)]
    assert len(ours) == 1
    assert [h for h in root.handlers if h not in ours] == before
    logging.getLogger("groupsync.test").info("once")
    assert len(lines(log_file)) == 1


def test_chatty_libraries_and_debug_stay_quiet(log_file: TextIO) -> None:
    setup_logging("text", stream=log_file, environ={})
    logging.getLogger("httpx").info("HTTP Request: GET /v1/groups")
    logging.getLogger("apscheduler.scheduler").info("Running job")
    logging.getLogger("groupsync.api").debug("GET /v1/groups -> 200")
    assert lines(log_file) == []


def test_a_secret_logged_by_mistake_stays_hidden(log_file: TextIO) -> None:
    setup_logging("json", stream=log_file, environ={})
    logging.getLogger("groupsync.test").info(
        "token %s", Secret("hunter2"), extra={"t": Secret("x1")}
    )
    text = "\n".join(lines(log_file))
    assert "hunter2" not in text and "x1" not in text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_echoed_into_a_message_or_traceback_is_masked(
    log_file: TextIO, fmt: Literal["text", "json"]
) -> None:
    secret = Secret("sk-live-9f8e7d6c5b4a3210")
    echoed = secret.reveal()
    setup_logging(fmt, stream=log_file, environ={})
    try:
        raise ValueError(f"Illegal header value b'Bearer {echoed[:12]}'")
    except ValueError:
        logging.getLogger("groupsync.test").exception("server said %s", echoed[3:])
    text = "\n".join(lines(log_file))
    assert "server said" in text and "Illegal header value" in text
    assert token_pieces(text, echoed) == []


def test_one_line_per_change_with_what_changed(log_file: TextIO) -> None:
    setup_logging("json", stream=log_file, environ={})
    change = Change(
        key="chess",
        action=Action.UPDATE,
        cause=Cause.DRIFT,
        name="Chess Club",
        group_id="g1",
        fields=(FieldChange("name", "Chess Klub", "Chess Club", Cause.DRIFT),),
        members_add=("ada", "bob"),
        members_remove=("eve",),
    )
    log_change(change, "applied")
    log_change(Change(key="go", action=Action.CREATE, cause=Cause.SPEC, name="Go"), "failed")
    first, second = (json.loads(x) for x in lines(log_file))
    assert first["msg"] == "applied update chess"
    assert first["logger"] == "groupsync.change"
    assert (first["group_id"], first["cause"], first["fields"]) == ("g1", "drift", "name")
    assert first["members"] == "+2/-1"
    assert second["msg"] == "failed create go"
    assert second["level"] == "warning"
