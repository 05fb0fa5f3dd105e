"""The status page in a real headless Chromium, served by a real `groupsync run` subprocess.

The daemon applies a spec to the emulator; the page then shows that run and its numbers. Someone
renames a group by hand; after the next run the page lists it as drifted. Without the token the
browser gets 401 and no data. With GROUPSYNC_SCREENSHOT=<file> the test also saves the page as
a PNG (docs/status-page.png in the README is made this way).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser import CHROMIUM, Browser
from helpers import free_port
from test_daemon_e2e import Setup, setup  # noqa: F401 (the fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]
HTTP_TOKEN = "page-token-5f1c9a"


@pytest.fixture
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


def test_the_page_shows_runs_drift_and_refuses_strangers(setup: Setup, browser: Browser) -> None:  # noqa: F811
    port = free_port()
    config = setup.write_config(schedule="every: 1h")  # runs come from start and SIGHUP only
    text = config.read_text().replace("metrics:\n  listen: ", "http:\n  listen: ")
    config.write_text(text.replace(f":{setup.metrics_port}", f":{port}"))
    daemon = setup.start(env={"GROUPSYNC_HTTP_TOKEN": HTTP_TOKEN})
    first = daemon.wait_run("applied")
    base = f"http://127.0.0.1:{port}"

    # No token: 401, and nothing of the account on the page.
    assert browser.open(f"{base}/") == 401
    assert "Chess" not in browser.text() and "chess" not in browser.text()
    browser.headers({"Authorization": "Bearer not-the-token"})
    assert browser.open(f"{base}/groups/chess") == 401

    # With it: the run that created both groups, and the state it left.
    browser.headers({"Authorization": f"Bearer {HTTP_TOKEN}"})
    assert browser.open(f"{base}/") == 200
    assert browser.text("#state").startswith("ok:")
    assert browser.text("#managed") == "2"
    assert "(2 groups)" in browser.text("#spec")
    [run] = browser.rows("runs")
    assert run[:5] == [str(first), run[1], "startup", "applied", "applied=2 create=2"]
    assert browser.rows("drifted") == [] and browser.rows("errors") == []
    changes = browser.rows("changes")
    assert sorted((c[2], c[3], c[5]) for c in changes) == [
        ("chess", "create", "applied"),
        ("go", "create", "applied"),
    ]

    # Someone renames Chess Club by hand; the next run (a reload) puts it back, and says so.
    assert setup.emulator.emu is not None
    chess = setup.emulator.by_name()["Chess Club"]
    setup.emulator.emu.state.update_group(chess["id"], {"name": "Chess Klub"})
    daemon.signal(signal.SIGHUP)
    second = daemon.wait_run("applied", after=first)
    assert browser.open(f"{base}/") == 200
    assert [row[0] for row in browser.rows("drifted")] == ["chess"]
    newest = browser.rows("runs")[0]
    assert newest[:5] == [str(second), newest[1], "reload", "applied", "applied=1 update=1"]
    assert 'name: "Chess Klub" -> "Chess Club"' in browser.rows("changes")[0][6]
    if os.environ.get("GROUPSYNC_SCREENSHOT"):
        browser.screenshot(Path(os.environ["GROUPSYNC_SCREENSHOT"]))

    # The group's own page: its id, name, members and history from the journal.
    assert browser.open(f"{base}/groups/chess") == 200
    assert browser.text("#group-id") == chess["id"]
    assert browser.text("#name") == "Chess Club"
    assert browser.text("#members") == "2"
    assert [row[0] for row in browser.rows("history")] == [str(second), str(first)]
