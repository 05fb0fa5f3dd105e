"""The daemon config: defaults, durations, schedule, paths, config discovery and token sources."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from groupsync.config import (
    ConfigError,
    Settings,
    find_config,
    load_settings,
    policy_from,
    resolve_token,
)
from groupsync.errors import GroupsyncError
from groupsync.plan import Policy
from helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "tok-7f3a9c-SUPER-SECRET-e1d2"


def write_config(folder: Path, text: str, name: str = "groupsync.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def settings_with(folder: Path, extra: str = "") -> Settings:
    return load_settings(write_config(folder, "spec:\n  path: groups\n" + extra))


def config_error(folder: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(folder, text))
    return str(caught.value)


@pytest.fixture
def no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ECAMPUS_TOKEN", "CREDENTIALS_DIRECTORY", "GROUPSYNC_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_example_config_shows_every_default(tmp_path: Path) -> None:
    """config.example.yaml documents the defaults: loading it equals loading only spec.path."""
    example = load_settings(ROOT / "config.example.yaml")
    assert example.spec.path == ROOT / "examples" / "groups"
    assert example.journal.path == ROOT / "groupsync.db"
    assert example.api.base_url == "https://api.ecampus.chat/v1"
    minimal = load_settings(
        write_config(
            tmp_path,
            f"spec: {{path: {ROOT}/examples/groups}}\njournal: {{path: {ROOT}/groupsync.db}}\n",
        )
    )
    assert example == minimal
    documented = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    for section, model in Settings.model_fields.items():
        assert f"\n{section}:\n" in documented
        for option in model.annotation.model_fields:  # type: ignore[union-attr]
            assert f"  {option}:" in documented, f"{section}.{option} is not in the example"


def test_defaults(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    assert settings.schedule.every == dt.timedelta(minutes=5)
    assert settings.schedule.cron is None
    assert settings.schedule.jitter == dt.timedelta(seconds=30)
    assert settings.api.token_env == "ECAMPUS_TOKEN" and settings.api.token_file is None
    assert (settings.api.timeout_s, settings.api.max_concurrency) == (10, 8)
    assert settings.policy.on_removed == "archive"
    assert settings.log.format == "text" and settings.metrics.listen is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("1d", 86400)],
)
def test_durations(tmp_path: Path, text: str, seconds: int) -> None:
    every = settings_with(tmp_path, f"schedule:\n  every: {text}\n").schedule.every
    assert every == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["5 minutes", "5", "m", "''", "-5m", "1.5h"])
def test_bad_durations_name_the_line(tmp_path: Path, text: str) -> None:
    message = config_error(tmp_path, f"spec:\n  path: g\nschedule:\n  jitter: {text}\n")
    assert message.startswith(f"{tmp_path / 'groupsync.yaml'}:4:11: schedule.jitter: ")


def test_cron_replaces_the_default_every(tmp_path: Path) -> None:
    schedule = settings_with(tmp_path, "schedule:\n  cron: '*/5 * * * *'\n").schedule
    assert schedule.every is None and schedule.cron == "*/5 * * * *"


@pytest.mark.parametrize(
    ("schedule", "line", "fragment"),
    [
        ("  every: 5m\n  cron: '0 * * * *'", 4, "set either 'every' or 'cron', not both"),
        ("  every: null", 4, "set 'every' or 'cron'"),
        ("  cron: '61 * * * *'", 4, "'61 * * * *' is not a cron expression"),
        ("  cron: 'every day'", 4, "is not a cron expression: expected 5 fields"),
        ("  every: 0s", 4, "must be at least 1s"),
    ],
)
def test_schedule_errors(tmp_path: Path, schedule: str, line: int, fragment: str) -> None:
    message = config_error(tmp_path, f"spec:\n  path: g\nschedule:\n{schedule}\n")
    assert f"groupsync.yaml:{line}:" in message and fragment in message


def test_relative_paths_are_next_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load_settings(
        write_config(
            tmp_path,
            "spec: {path: groups}\njournal: {path: /var/lib/groupsync/j.db}\n"
            "api: {token_file: ~/token}\n",
        )
    )
    assert settings.spec.path == tmp_path / "groups"
    assert settings.journal.path == Path("/var/lib/groupsync/j.db")
    assert settings.api.token_file == tmp_path / "home" / "token"
    assert settings_with(tmp_path).journal.path == tmp_path / "groupsync.db"  # the default too


def test_every_error_with_its_line(tmp_path: Path) -> None:
    message = config_error(
        tmp_path,
        "api:\n"
        "  base_url: ftp://example.org\n"
        "  timeout: 10\n"
        "spec: {path: g}\n"
        "policy:\n"
        "  on_removed: nuke\n"
        "safety:\n"
        "  protected: [Bad Key]\n"
        "  max_archive_fraction: 2\n"
        "metrics: {listen: localhost}\n",
    )
    lines = [line.removeprefix(f"{tmp_path}/") for line in message.splitlines()]
    assert lines == [
        "groupsync.yaml:2:13: api.base_url: 'ftp://example.org' is not an http(s) URL",
        "groupsync.yaml:3:3: api.timeout: unknown field 'timeout' (did you mean 'timeout_s'?)",
        "groupsync.yaml:6:15: policy.on_removed: input should be 'archive', 'ignore' or 'delete'",
        "groupsync.yaml:8:15: safety.protected[0]: 'Bad Key' is not a valid group key",
        "groupsync.yaml:9:25: safety.max_archive_fraction: input should be less than or equal to 1",
        "groupsync.yaml:10:19: metrics.listen: 'localhost' is not host:port: no port"
        " (e.g. 127.0.0.1:9464)",
    ]


def test_missing_spec_and_yaml_problems(tmp_path: Path) -> None:
    assert "missing 'spec'" in config_error(tmp_path, "log: {format: json}\n")
    assert "groupsync.yaml:2:1: duplicate key 'log'" in config_error(
        tmp_path, "log: {format: json}\nlog: {format: text}\nspec: {path: g}\n"
    )
    assert "YAML tags are not allowed" in config_error(tmp_path, "spec: !!python/name:os.system\n")


def test_config_errors_through_the_cli(tmp_path: Path) -> None:
    config = write_config(tmp_path, "spec:\n  path: groups\nschedule:\n  every: soon\n")
    result = run_cli("validate", "--config", str(config))
    assert result.returncode == 1
    assert f"{config}:4:10: schedule.every: 'soon' is not a duration" in result.stderr
    assert "Traceback" not in result.stderr


# --- finding the config ----------------------------------------------------------------------


def test_find_config_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_token_env: None
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GroupsyncError, match="no config file: pass --config FILE"):
        find_config(None)
    local = write_config(tmp_path, "spec: {path: g}\n")
    assert find_config(None) == Path("groupsync.yaml")
    from_env = write_config(tmp_path, "spec: {path: g}\n", name="env.yaml")
    monkeypatch.setenv("GROUPSYNC_CONFIG", str(from_env))
    assert find_config(None) == from_env
    assert find_config(local) == local
    with pytest.raises(GroupsyncError, match=r"'nope.yaml' \(from --config\) does not exist"):
        find_config(Path("nope.yaml"))
    monkeypatch.setenv("GROUPSYNC_CONFIG", "gone.yaml")
    with pytest.raises(GroupsyncError, match=r"from \$GROUPSYNC_CONFIG"):
        find_config(None)


# --- the token -------------------------------------------------------------------------------


def test_token_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_token_env: None
) -> None:
    monkeypatch.setenv("ECAMPUS_TOKEN", f"  {TOKEN}\n")
    assert resolve_token(settings_with(tmp_path)).reveal() == TOKEN
    monkeypatch.setenv("CAMPUS_KEY", "other")
    custom = settings_with(tmp_path, "api: {token_env: CAMPUS_KEY}\n")
    assert resolve_token(custom).reveal() == "other"


def test_token_from_file(
    tmp_path: Path, no_token_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o644)
    with caplog.at_level(logging.DEBUG):
        token = resolve_token(settings_with(tmp_path, "api: {token_file: token}\n"))
    assert token.reveal() == TOKEN
    assert "readable by other users" in caplog.text  # a hint, with the path only
    assert TOKEN not in caplog.text


def test_token_from_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_token_env: None
) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "ecampus-token").write_text(TOKEN, encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert resolve_token(settings_with(tmp_path)).reveal() == TOKEN


def test_token_source_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_token_env: None
) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "ecampus-token").write_text("from-credentials", encoding="utf-8")
    (tmp_path / "token").write_text("from-file", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("ECAMPUS_TOKEN", "from-env")
    with_file = settings_with(tmp_path, "api: {token_file: token}\n")
    assert resolve_token(with_file).reveal() == "from-env"
    monkeypatch.setenv("ECAMPUS_TOKEN", "")  # empty counts as unset
    assert resolve_token(with_file).reveal() == "from-file"
    assert resolve_token(settings_with(tmp_path)).reveal() == "from-credentials"
    monkeypatch.setenv("ECAMPUS_TOKEN", "from-env")
    no_env = settings_with(tmp_path, "api: {token_env: null, token_file: token}\n")
    assert resolve_token(no_env).reveal() == "from-file"


def test_token_missing_is_an_error_only_when_asked(tmp_path: Path, no_token_env: None) -> None:
    settings = settings_with(tmp_path)  # loading never needs the token
    with pytest.raises(GroupsyncError) as caught:
        resolve_token(settings)
    assert str(caught.value) == (
        "no API token: set $ECAMPUS_TOKEN, or api.token_file, or a systemd credential named"
        " ecampus-token"
    )


def test_token_file_problems_never_show_the_token(tmp_path: Path, no_token_env: None) -> None:
    with pytest.raises(GroupsyncError, match=r"cannot read the API token from api\.token_file"):
        resolve_token(settings_with(tmp_path, "api: {token_file: missing}\n"))
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(GroupsyncError, match="is empty"):
        resolve_token(settings_with(tmp_path, "api: {token_file: empty}\n"))
    (tmp_path / "latin1").write_bytes(TOKEN.encode() + b"\xe9")
    with pytest.raises(GroupsyncError) as caught:
        resolve_token(settings_with(tmp_path, "api: {token_file: latin1}\n"))
    assert "not UTF-8" in str(caught.value) and TOKEN not in str(caught.value)


def test_token_hidden_in_repr_and_str(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECAMPUS_TOKEN", TOKEN)
    settings = settings_with(tmp_path)
    token = resolve_token(settings)
    for text in (repr(token), str(token), f"{token}", repr(settings), repr([token])):
        assert TOKEN not in text


def test_token_never_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ECAMPUS_TOKEN", TOKEN)
    with caplog.at_level(logging.DEBUG):
        token = resolve_token(settings_with(tmp_path))
        logging.getLogger("groupsync.test").warning("using token %s (%r)", token, token)
    assert "using token Secret('**********')" in caplog.text
    assert TOKEN not in caplog.text


def test_policy_from(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path,
        "policy: {on_removed: delete}\n"
        "safety: {protected: [staff-room], max_archive_fraction: 0.5}\n",
    )
    assert policy_from(settings, force=True, allow_delete=True) == Policy(
        on_removed="delete",
        allow_delete=True,
        force=True,
        protected=frozenset({"staff-room"}),
        max_archive_fraction=0.5,
        max_member_removal_fraction=0.25,
        min_member_removals=10,
    )
    floor = settings_with(tmp_path, "safety: {min_member_removals: 0}\n")
    assert policy_from(floor).min_member_removals == 0
    assert "safety.min_member_removals" in config_error(
        tmp_path, "spec: {path: g}\nsafety: {min_member_removals: -1}\n"
    )
    assert policy_from(settings_with(tmp_path)) == Policy()
