"""The shipped systemd units: valid for systemd-analyze, hardened, and calling a real command.

Needs `systemd-analyze` (Debian package `systemd`); those tests skip, saying so, without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import run_cli

UNITS = Path(__file__).resolve().parent.parent / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (Debian package: systemd)"
)
MAX_EXPOSURE = 2.0


def directives(unit: Path) -> dict[str, list[str]]:
    """Section.Key -> values; systemd allows a key several times, so configparser won't do."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def exec_start(unit: Path) -> list[str]:
    return directives(unit)["Service.ExecStart"][0].split()


def copy_with_existing_binary(tmp_path: Path, *, extra: str = "") -> list[Path]:
    """verify insists that ExecStart's binary exists: point it at one that does, in a copy."""
    copies = []
    for unit in sorted(UNITS.iterdir()):
        text = unit.read_text()
        if unit.suffix == ".service":
            text = text.replace(exec_start(unit)[0], "/bin/true")
        if extra and unit.name == "groupsync.service":
            text = text.replace("[Service]\n", f"[Service]\n{extra}\n", 1)
        copy = tmp_path / unit.name
        copy.write_text(text)
        copies.append(copy)
    return copies


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


@needs_analyze
def test_units_verify_cleanly(tmp_path: Path) -> None:
    copies = copy_with_existing_binary(tmp_path)
    assert {c.name for c in copies} == {
        "groupsync.service",
        "groupsync-once.service",
        "groupsync.timer",
        "groupsync@.service",
    }
    # The template as an instance too: %i expanded, as `systemctl start groupsync@north` does.
    template = next(c for c in copies if c.name == "groupsync@.service")
    instance = tmp_path / "groupsync@north.service"
    instance.write_text(template.read_text())
    r = analyze("verify", "--recursive-errors=yes", *copies, instance)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Unknown" not in r.stderr, r.stderr


@needs_analyze
def test_verify_would_catch_a_mistyped_key(tmp_path: Path) -> None:
    """Guards the test above: without --recursive-errors=yes, v252 exits 0 on unknown keys."""
    copies = copy_with_existing_binary(tmp_path, extra="ProtectSystm=strict")
    r = analyze("verify", "--recursive-errors=yes", *copies)
    assert "Unknown key" in r.stderr
    assert r.returncode != 0


@needs_analyze
@pytest.mark.parametrize(
    "name", ["groupsync.service", "groupsync-once.service", "groupsync@.service"]
)
def test_exposure_score_is_at_most_two(tmp_path: Path, name: str) -> None:
    unit = next(c for c in copy_with_existing_binary(tmp_path) if c.name == name)
    r = analyze("security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", unit)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, r.stdout
    assert r.returncode == 0, r.stdout + r.stderr


def test_service_directives() -> None:
    d = directives(UNITS / "groupsync.service")
    expected = {
        "Service.Type": "notify",
        "Service.DynamicUser": "yes",
        "Service.StateDirectory": "groupsync",
        "Service.ConfigurationDirectory": "groupsync",
        "Service.LoadCredential": "ecampus-token:/etc/groupsync/ecampus-token",
        "Service.ExecReload": "/bin/kill -HUP $MAINPID",
        "Service.Restart": "on-failure",
        "Service.ProtectSystem": "strict",
        "Service.RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "Service.CapabilityBoundingSet": "",
        "Service.NoNewPrivileges": "yes",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], key
    assert "@system-service" in d["Service.SystemCallFilter"]
    assert d["Service.WatchdogSec"]
    # The daemon cancels a run still going 30 s after SIGTERM: systemd must wait longer.
    assert int(d["Service.TimeoutStopSec"][0].rstrip("s")) > 30


def test_the_template_keeps_each_account_apart() -> None:
    """groupsync@<account>: its own config, state directory (journal, lock) and credentials;
    otherwise the same unit as groupsync.service."""
    template = directives(UNITS / "groupsync@.service")
    assert exec_start(UNITS / "groupsync@.service")[-2:] == ["--config", "/etc/groupsync/%i.yaml"]
    assert template["Service.StateDirectory"] == ["groupsync/%i"]
    assert template["Service.WorkingDirectory"] == ["/var/lib/groupsync/%i"]
    assert template["Service.LoadCredential"] == [
        "ecampus-token:/etc/groupsync/%i.ecampus-token",
        "groupsync-http-token:/etc/groupsync/%i.http-token",
    ]
    single = directives(UNITS / "groupsync.service")
    differ = {k for k in single.keys() | template.keys() if single.get(k) != template.get(k)}
    assert differ == {
        "Unit.Description",
        "Service.ExecStart",
        "Service.StateDirectory",
        "Service.WorkingDirectory",
        "Service.Environment",
        "Service.LoadCredential",
    }


def test_timer_spreads_runs_and_starts_the_oneshot() -> None:
    d = directives(UNITS / "groupsync.timer")
    assert d["Timer.Unit"] == ["groupsync-once.service"]
    assert d["Timer.RandomizedDelaySec"]
    assert d["Timer.AccuracySec"] == ["1us"]
    once = directives(UNITS / "groupsync-once.service")
    assert once["Service.Type"] == ["oneshot"]
    assert "--once" in exec_start(UNITS / "groupsync-once.service")


@pytest.mark.parametrize(
    "name", ["groupsync.service", "groupsync-once.service", "groupsync@.service"]
)
def test_exec_start_arguments_are_accepted_by_the_cli(name: str) -> None:
    argv = exec_start(UNITS / name)
    assert Path(argv[0]).name == "groupsync"
    r = run_cli(*argv[1:], "--help")
    assert r.returncode == 0, r.stderr
