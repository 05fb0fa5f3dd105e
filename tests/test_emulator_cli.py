"""`groupsync emulator` as a real process: serves, obeys its flags, stops on SIGTERM."""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from groupsync.cli import main


@contextlib.contextmanager
def emulator_process(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start it on a free port (--port 0), read the base URL it prints, wait until it answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "groupsync", "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the emulator printed nothing within 30 s"
        line = proc.stdout.readline()
        base_url = next(w for w in line.split() if w.startswith("http://127.0.0.1:"))
        for _ in range(200):  # bounded: at most ~10 s
            try:
                httpx.get(base_url + "/groups", verify=False)
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        yield line, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_serves_the_seed_with_the_given_token(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("groups:\n  - {name: CS 101, members: [prof.ada]}\n")
    with emulator_process("--token", "s3cret-tok", "--seed", str(seed)) as (line, proc):
        url = line.split()[3]
        assert url.endswith("/v1")
        r = httpx.get(url + "/groups", headers={"Authorization": "Bearer s3cret-tok"}, verify=False)
        assert r.status_code == 200
        assert [g["name"] for g in r.json()["data"]] == ["CS 101"]
        r = httpx.get(url + "/groups", headers={"Authorization": "Bearer demo-token"}, verify=False)
        assert r.status_code == 401
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0  # SIGTERM is a normal stop
    assert "s3cret-tok" not in line + out + err  # a user's token is a secret


@pytest.mark.slow  # two emulator processes, one after the other
def test_cli_demo_token_faults_admin_and_state(tmp_path: Path) -> None:
    state = tmp_path / "emu.db"
    args = ("--state", str(state), "--error-rate", "1", "--admin-token", "adm-s3cret")
    demo = {"Authorization": "Bearer demo-token"}
    admin = {"Authorization": "Bearer adm-s3cret"}
    with emulator_process(*args) as (line, _), httpx.Client(verify=False) as web:
        assert "demo-token" in line and "adm-s3cret" not in line
        url = line.split()[3]
        assert web.post(url + "/groups", headers=demo, json={"name": "x"}).status_code >= 500
        admin_url = url.removesuffix("/v1") + "/_admin/faults"
        assert web.get(admin_url, headers=admin).json()["error_fraction"] == 1.0
        web.put(admin_url, headers=admin, json={"error_fraction": 0})
        assert web.post(url + "/groups", headers=demo, json={"name": "kept"}).status_code == 201
    with emulator_process("--state", str(state)) as (line, _), httpx.Client(verify=False) as web:
        r = web.get(line.split()[3] + "/groups", headers=demo)
        assert [g["name"] for g in r.json()["data"]] == ["kept"]


@pytest.mark.parametrize("flag", ["--error-rate", "--ambiguous-rate", "--no-retry-after-rate"])
def test_cli_rejects_bad_fractions(flag: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(["emulator", flag, "1.5"])
    assert e.value.code == 64


def test_cli_bad_seed_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    seed = tmp_path / "bad.yaml"
    seed.write_text("groups:\n  - {description: nameless}\n")
    with pytest.raises(SystemExit) as e:
        main(["emulator", "--port", "0", "--seed", str(seed)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "group #1" in err and "Traceback" not in err


def test_cli_port_in_use_is_a_clean_error(capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(SystemExit) as e:
            main(["emulator", "--port", str(busy.getsockname()[1])])
    assert e.value.code == 1
    assert "cannot listen" in capsys.readouterr().err


def test_cli_drip_flag_sets_the_fault() -> None:
    # 2 ms: the answer below drips too, a byte at a time.
    with emulator_process("--drip-ms", "2", "--admin-token", "adm") as (line, _):
        admin_url = line.split()[3].removesuffix("/v1") + "/_admin/faults"
        faults = httpx.get(admin_url, headers={"Authorization": "Bearer adm"}, verify=False)
        assert faults.json()["drip_s"] == 0.002
    with pytest.raises(SystemExit) as e:
        main(["emulator", "--drip-ms", "-1"])
    assert e.value.code == 64
