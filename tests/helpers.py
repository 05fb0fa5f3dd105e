"""Small helpers shared by several test modules."""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import logging
import os
import pty
import random
import re
import select
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from click.testing import CliRunner

from groupsync.api import Client, Limits, Retries
from groupsync.asgiserve import BackgroundServer, Server, bind
from groupsync.cli import main
from groupsync.secret import Secret


def git(cwd: Path, *args: str) -> str:
    """Run git with a throwaway identity; its stdout, stripped. Fails the test on error."""
    r = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return r.stdout.strip()


def api_client(base_url: str, token: str | Secret, **knobs: Any) -> Client:
    """A Client with each of its limits and retry settings given by name (`max_attempts=2`);
    other keywords (`transport`, `sleep`, ...) go to Client as they are."""
    secret = token if isinstance(token, Secret) else Secret(token)
    limits = {f.name: knobs.pop(f.name) for f in fields(Limits) if f.name in knobs}
    retries = {f.name: knobs.pop(f.name) for f in fields(Retries) if f.name in knobs}
    return Client(base_url, secret, limits=Limits(**limits), retries=Retries(**retries), **knobs)


def groupsync(
    *args: str,
    token: str | None = None,
    cwd: Path | None = None,
    env_extra: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: `python -m groupsync ARGS`, with `token` as the API token and
    `env_extra` added to the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("ECAMPUS_TOKEN", "GROUPSYNC_CONFIG")}
    if token is not None:
        env["ECAMPUS_TOKEN"] = token
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "groupsync", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "NO_COLOR": "1"},
        cwd=cwd,
    )


def run_cli(
    *args: str, token: str | None = None, cwd: Path | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The CLI in this process through `groupsync.cli.main`, the function `python -m groupsync`
    calls: the same parsing, messages and exit codes, without a new interpreter's ~0.3 s.

    Its environment is `groupsync`'s; stdin holds `stdin`, so it is no terminal; its log lines
    go to its stderr, and its logging setup ends with the call, as with a process. A traceback
    a subprocess would print raises here instead, and fails the test. Commands that outlive the
    call or change the process (`run`, `demo`, signals, umask) belong in a subprocess.
    """
    env = {"ECAMPUS_TOKEN": token, "GROUPSYNC_CONFIG": None, "NO_COLOR": "1"}
    with (
        _logging_restored(),
        _runner().isolation(input=stdin, env=env) as streams,
        contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext(),
    ):
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        # Read inside the isolation: click before 8.2 closes these streams as it ends.
        stdout, stderr = (s.getvalue().decode("utf-8", "replace") for s in streams[:2])
    code = exited.value.code
    returncode = int(code) if isinstance(code, int) else 0 if code is None else 1
    return subprocess.CompletedProcess(["groupsync", *args], returncode, stdout, stderr)


@contextmanager
def _logging_restored() -> Iterator[None]:
    """The root logger's handlers and groupsync's level as they were: a command sets up logging
    on the stderr it was given, which is gone once the call returns."""
    root, ours = logging.getLogger(), logging.getLogger("groupsync")
    handlers, level = root.handlers[:], ours.level
    try:
        yield
    finally:
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        ours.setLevel(level)


def _runner() -> CliRunner:
    # click before 8.2 mixes stderr into stdout unless told not to; from 8.2 on they stay apart.
    if "mix_stderr" in inspect.signature(CliRunner).parameters:
        return CliRunner(mix_stderr=False)
    return CliRunner()


def emulator_config(folder: Path, base_url: str, spec: Path) -> Path:
    """folder/groupsync.yaml: the API at base_url, the spec at `spec`, the journal in folder.

    The client's pace is 200 requests a second: an emulator on 127.0.0.1 needs none, and the
    default 10 would make every test wait for it."""
    config = folder / "groupsync.yaml"
    settings = {
        "api": {"base_url": base_url, "max_requests_per_s": 200},
        "spec": {"path": str(spec)},
        "journal": {"path": str(folder / "journal.db")},
    }
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return config


def token_pieces(data: str | bytes, token: str, size: int = 8) -> list[str]:
    """Every `size`-character piece of `token` found in `data`: any one is a leak."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return sorted({token[i : i + size] for i in range(len(token) - size + 1)} & _grams(text, size))


def _grams(text: str, size: int) -> set[str]:
    return {text[i : i + size] for i in range(len(text) - size + 1)}


@contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve a small ASGI app (a misbehaving server of a test) on 127.0.0.1; yield its base URL.

    On the emulator's server: it says at once when it serves and stops at once when asked."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    background = BackgroundServer(Server(config), bind("127.0.0.1", 0), name="test server")
    try:
        yield f"http://127.0.0.1:{background.port}"
    finally:
        background.close()


def free_port() -> int:
    """A port nobody listens on, for a child process to listen on (or a client to be refused
    by), picked below the kernel's ephemeral range.

    A port from bind(0) is an ephemeral one: released, any outgoing connection (the suite
    makes thousands) may take it as its local port before the child binds it, and the child
    then fails with "address in use". Below the range only another explicit bind competes."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    for _ in range(200):
        port = random.randrange(max(1024, low - 10_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port below {low} after 200 tries")


def _take_terminal() -> None:
    """In the child, after setsid(): make the pty (its stdin) the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """`python -m groupsync ARGS` with a pseudo-terminal for stdin, stdout and stderr (or for
    stderr only, stdout then a pipe), read without ever blocking the test.

    `controlling`: the pty is the child's controlling terminal, so a typed Ctrl-C (\\x03) is a
    real SIGINT sent by the line discipline, as in a shell."""

    def __init__(
        self,
        args: list[str],
        env: Mapping[str, str],
        *,
        controlling: bool = False,
        only_stderr: bool = False,
    ) -> None:
        self.primary, secondary = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "groupsync", *args],
            stdin=subprocess.DEVNULL if only_stderr else secondary,
            stdout=subprocess.PIPE if only_stderr else secondary,
            stderr=secondary,
            env=dict(env),
            start_new_session=controlling,
            # only an ioctl before exec: safe next to threads
            preexec_fn=_take_terminal if controlling else None,
        )
        os.close(secondary)
        self.output = b""

    def _read(self, timeout: float) -> int:
        """Bytes read within `timeout` (0: none came); -1 once the child closed the terminal."""
        ready, _, _ = select.select([self.primary], [], [], timeout)
        if not ready:
            return 0
        try:
            chunk = os.read(self.primary, 4096)
        except OSError:  # EIO: the child is gone
            return -1
        self.output += chunk
        return len(chunk) or -1

    def wait_for(self, pattern: bytes | re.Pattern[bytes], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not (
            pattern.search(self.output)
            if isinstance(pattern, re.Pattern)
            else pattern in self.output
        ):
            if time.monotonic() > deadline or self._read(0.2) < 0:
                raise AssertionError(f"no {pattern!r} in:\n{self.text}")

    def type(self, data: bytes) -> None:
        os.write(self.primary, data)

    def exit_code(self, timeout: float = 30) -> int | None:
        """The exit code once all output is read, or None if it still runs after `timeout`."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if self._read(0.2) < 0:
                break
        while self._read(0.1) > 0:
            continue
        try:
            return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        os.close(self.primary)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")
