"""A new user's wrong address or token, through the CLI's entry point: fast, one clear line, no
traceback. In this process; the daemon and the terminal as a real `python -m groupsync`.

Each case is timed: a user who typed a wrong address hears so within 10 s, not after the
whole retry budget.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from groupsync.emulator import Emulator
from helpers import Terminal, free_port, run_cli
from helpers import groupsync as groupsync_process

TOKEN = "test-token"
# Longer than a DNS label may be: the lookup fails before any query leaves the machine.
NO_SUCH_HOST = "a" * 64 + ".invalid"


def write_config(tmp_path: Path, api: dict[str, object]) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"groups": {"cs-101": {"name": "CS 101", "members": ["ada"]}}}))
    config = tmp_path / "groupsync.yaml"
    settings = {
        "api": {"token_env": "ECAMPUS_TOKEN", **api},
        "spec": {"path": str(spec)},
        "journal": {"path": str(tmp_path / "journal.db")},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return config


def groupsync(*args: str, config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """The CLI through its entry point, in this process; its result and how long it took."""
    started = time.monotonic()
    result = run_cli(*args, "--config", str(config), token=TOKEN)
    return result, time.monotonic() - started


COMMANDS = [("plan",), ("apply", "--yes"), ("validate", "--online")]


@pytest.mark.parametrize("command", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_closed_port_fails_within_10_s_naming_the_url_and_the_cause(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    result, elapsed = groupsync(*command, config=write_config(tmp_path, {"base_url": base_url}))

    print(f"{command[0]} against a closed port: exit {result.returncode} in {elapsed:.2f}s")
    assert result.returncode == 1
    assert f"cannot connect to {base_url}: connection refused" in result.stderr
    assert "no answer" not in result.stderr and "Traceback" not in result.stderr
    assert elapsed < 10


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("https://127.0.0.1:{port}/v1", "the server does not speak TLS here"),
        (f"http://{NO_SUCH_HOST}/v1", "name not found"),
    ],
    ids=["https-to-plain-http", "dns"],
)
def test_tls_and_name_failures_are_said_in_words(
    emulator: Emulator, tmp_path: Path, where: str, said: str
) -> None:
    base_url = where.format(port=emulator.port)
    result, elapsed = groupsync("plan", config=write_config(tmp_path, {"base_url": base_url}))

    assert result.returncode == 1
    assert f"cannot connect to {base_url}: {said}" in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 10


def test_a_base_url_without_v1_is_said_to_look_wrong(emulator: Emulator, tmp_path: Path) -> None:
    root = emulator.base_url.removesuffix("/v1")
    result, _ = groupsync("plan", config=write_config(tmp_path, {"base_url": root}))

    assert result.returncode == 1
    assert f"api.base_url {root} looks wrong" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_token_with_a_newline_is_refused_at_once_and_never_sent(
    emulator: Emulator, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cretA1\ns3cretB2\n")
    token_file.chmod(0o600)
    config = write_config(
        tmp_path, {"base_url": emulator.base_url, "token_env": None, "token_file": str(token_file)}
    )
    result, elapsed = groupsync("plan", config=config)

    print(f"plan with a newline in the token: exit {result.returncode} in {elapsed:.2f}s")
    assert result.returncode == 1
    assert "the API token contains a newline" in result.stderr
    assert f"check api.token_file '{token_file}'" in result.stderr
    output = result.stdout + result.stderr
    assert "s3cretA1" not in output and "s3cretB2" not in output
    assert emulator.count() == 0  # nothing was sent, so nothing was retried
    assert elapsed < 5


@pytest.mark.slow  # a process of its own, and its retries' real waits
def test_the_daemon_logs_the_same_clear_message(tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    config = write_config(tmp_path, {"base_url": base_url})
    started = time.monotonic()
    result = groupsync_process("run", "--once", "--config", str(config), token=TOKEN)

    assert result.returncode == 1
    assert f"cannot connect to {base_url}: connection refused" in result.stderr
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_a_long_retry_wait_shows_a_status_line_on_a_terminal(
    emulator: Emulator, tmp_path: Path
) -> None:
    # One request per 2.5 s: of the two list calls plan makes at once, one is answered 429 with
    # Retry-After: 3, past the 2 s after which the wait is shown.
    emulator.faults.rate_limit_per_s = 0.4
    config = write_config(tmp_path, {"base_url": emulator.base_url})
    # No members to check: plan makes only the two list calls.
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"groups": {"cs-101": {"name": "CS 101"}}}))
    env = {**os.environ, "ECAMPUS_TOKEN": TOKEN, "NO_COLOR": "1"}
    term = Terminal(["plan", "--config", str(config)], env, only_stderr=True)
    try:
        code = term.exit_code(30)
        assert term.proc.stdout is not None
        out = term.proc.stdout.read()
    finally:
        term.close()
    drawn = term.output

    assert code == 0, (drawn, out)
    line = "waiting for the eCampus API: HTTP 429, retry 2 in 3.0 s…"
    assert drawn.decode() == f"\r\x1b[K{line}\r\x1b[K"  # drawn once, then erased
    assert b"CS 101" in out and emulator.count(status=429) == 1
