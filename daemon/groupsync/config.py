"""Daemon config -> Settings: strict like the spec, with defaults for everything but the spec path.

The config is read by a daemon that runs unattended, so a typo must stop it at startup with
file:line, not be ignored. The token is looked up only when a command needs the API (so
`validate` and `schema` work without one) and is kept in a Secret from the first moment.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from groupsync import plan
from groupsync.errors import GroupsyncError
from groupsync.schedule import cron_trigger
from groupsync.secret import Secret
from groupsync.spec import KEY_PATTERN
from groupsync.strictmodel import StrictModel, issues_from
from groupsync.yamlstrict import Issue, YamlError, load_file

log = logging.getLogger(__name__)

ENV_CONFIG = "GROUPSYNC_CONFIG"
DEFAULT_CONFIG = Path("groupsync.yaml")
CREDENTIAL_NAME = "ecampus-token"  # systemd LoadCredential= name, read from $CREDENTIALS_DIRECTORY
HTTP_CREDENTIAL_NAME = "groupsync-http-token"  # the HTTP service's bearer token, the same way
WEBHOOK_CREDENTIAL_NAME = "ecampus-webhook-secret"  # the webhook secret(s), the same way

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(value: Any) -> Any:
    """'90s', '5m', '1h30m', '1d' -> timedelta; a bare number is refused (seconds or minutes?)."""
    if not isinstance(value, str):
        return value
    match = _DURATION.fullmatch(value.strip())
    if not value.strip() or match is None:
        raise PydanticCustomError(
            "duration", f"{value!r} is not a duration (write e.g. 30s, 5m, 1h)"
        )
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    """Relative paths mean "next to the config file", not "wherever the daemon was started"."""
    value = value.expanduser()
    base = (info.context or {}).get("base")
    return value if base is None or value.is_absolute() else base / value


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]
ConfigPath = Annotated[Path, Field(strict=False), AfterValidator(_relative_to_config)]


class ApiSettings(StrictModel):
    base_url: str = "https://api.ecampus.chat/v1"
    token_env: str | None = "ECAMPUS_TOKEN"
    token_file: ConfigPath | None = None
    timeout_s: float = Field(10.0, gt=0)
    max_concurrency: int = Field(8, ge=1, le=64)
    max_requests_per_s: float = Field(10.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise PydanticCustomError("url", f"{value!r} is not an http(s) URL")
        try:  # what the client will do with it: a bad port or host fails here, not mid-run
            url = httpx.URL(value)
        except httpx.InvalidURL as e:
            raise PydanticCustomError("url", f"{value!r} is not a valid URL: {e}") from None
        if url.port is not None and not 0 < url.port < 65536:
            raise PydanticCustomError("url", f"{value!r}: port {url.port} is out of range")
        return value.rstrip("/")


class SpecSettings(StrictModel):
    path: ConfigPath
    git_pull: bool = False


class ScheduleSettings(StrictModel):
    every: Duration | None = dt.timedelta(minutes=5)
    cron: str | None = None
    jitter: Duration = dt.timedelta(seconds=30)

    @model_validator(mode="before")
    @classmethod
    def _one_trigger(cls, data: Any) -> Any:
        """`cron` alone replaces the default `every`; both, or neither, is a mistake."""
        if not isinstance(data, dict):
            return data
        if data.get("cron") is not None:
            if data.get("every") is not None:
                raise PydanticCustomError("schedule", "set either 'every' or 'cron', not both")
            return {**data, "every": None}
        if "every" in data and data["every"] is None:
            raise PydanticCustomError("schedule", "set 'every' or 'cron'")
        return data

    @field_validator("every")
    @classmethod
    def _positive(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value < dt.timedelta(seconds=1):
            raise PydanticCustomError("duration", "must be at least 1s")
        return value

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                cron_trigger(value)  # the daemon's own parser: what passes here, runs there
            except ValueError as e:
                message = f"{value!r} is not a cron expression: {e}"
                raise PydanticCustomError("cron", message) from None
        return value


class JournalSettings(StrictModel):
    path: ConfigPath = Field(Path("groupsync.db"), validate_default=True)


class PolicySettings(StrictModel):
    on_removed: Literal["archive", "ignore", "delete"] = "archive"


class SafetySettings(StrictModel):
    max_archive_fraction: float = Field(0.25, ge=0, le=1)
    max_member_removal_fraction: float = Field(0.25, ge=0, le=1)
    min_member_removals: int = Field(10, ge=0)
    min_roster_fraction: float = Field(0.5, ge=0, le=1)
    protected: list[Annotated[str, Field(pattern=KEY_PATTERN)]] = Field(default_factory=list)


class LogSettings(StrictModel):
    format: Literal["text", "json"] = "text"


# A DNS name (RFC 1123: letters, digits and hyphens, labels of 1..63) or a dotted IPv4 address.
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*"
)


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` or `[ipv6]:port` -> (host, port); raises ValueError saying what is wrong.

    The one parser of `http.listen` (and of `metrics.listen`, its old name): the config check
    and the HTTP service both call it, so what `validate` accepts is what the daemon binds.
    Port 0 binds a free port the system picks (the daemon logs it; tests use it). No host is
    refused rather than guessed: `:9464` means every interface to some tools and this machine
    only to others.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not port:
        raise ValueError("no port (e.g. 127.0.0.1:9464)")
    if not host:
        raise ValueError(
            f"no host: write 127.0.0.1:{port} (this machine only) or 0.0.0.0:{port} (every"
            " interface)"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:9464")
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or an IP address")
    if not (port.isascii() and port.isdigit()):
        raise ValueError(f"port {port!r} is not a number")
    if int(port) > 65535:
        raise ValueError(f"port {port} is out of range (0..65535)")
    return host, int(port)


def _listen(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_listen(value)
        except ValueError as e:
            message = f"{value!r} is not host:port: {e}"
            raise PydanticCustomError("listen", message) from None
    return value


Listen = Annotated[str | None, AfterValidator(_listen)]


class MetricsSettings(StrictModel):
    listen: Listen = None  # deprecated: the same as http.listen


class HttpSettings(StrictModel):
    listen: Listen = None  # "127.0.0.1:9464"; None: no HTTP service
    token_env: str | None = "GROUPSYNC_HTTP_TOKEN"
    token_file: ConfigPath | None = None


class WebhookSettings(StrictModel):
    enabled: bool = False  # POST /webhooks/ecampus on http.listen
    secret_env: str | None = "ECAMPUS_WEBHOOK_SECRET"
    secret_file: ConfigPath | None = None
    debounce: Duration = dt.timedelta(seconds=1)  # one repair per key per this window
    queue: int = Field(10_000, ge=1)  # keys waiting for repair at most; more are refused (503)


class Settings(StrictModel):
    api: ApiSettings = Field(default_factory=ApiSettings)
    spec: SpecSettings
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @model_validator(mode="after")
    def _webhooks_need_http(self) -> Settings:
        if self.webhooks.enabled and self.http.listen is None and self.metrics.listen is None:
            raise PydanticCustomError(
                "webhooks", "webhooks.enabled needs http.listen: the receiver is served there"
            )
        return self

    @model_validator(mode="after")
    def _one_listen(self) -> Settings:
        if self.metrics.listen is not None and self.http.listen is not None:
            raise PydanticCustomError(
                "listen",
                "set http.listen only: metrics.listen is its old name, and the daemon has one"
                " HTTP service",
            )
        return self


_SECTIONS = [name for name, f in Settings.model_fields.items() if f.default_factory is not None]


def _message(kind: str, path: tuple[str | int, ...], value: Any) -> str | None:
    if kind == "string_pattern_mismatch" and path[:2] == ("safety", "protected"):
        return f"{value!r} is not a valid group key"
    return None


class ConfigError(GroupsyncError):
    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def find_config(explicit: Path | None) -> Path:
    """--config, then $GROUPSYNC_CONFIG, then ./groupsync.yaml; a named file must exist."""
    if explicit is not None:
        source, path = "--config", explicit
    elif os.environ.get(ENV_CONFIG):
        source, path = f"${ENV_CONFIG}", Path(os.environ[ENV_CONFIG])
    elif DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    else:
        raise GroupsyncError(
            f"no config file: pass --config FILE, set ${ENV_CONFIG}, or create ./{DEFAULT_CONFIG}"
            " (see config.example.yaml)"
        )
    if not path.is_file():
        raise GroupsyncError(f"config file {str(path)!r} (from {source}) does not exist")
    return path


def load_settings(path: Path) -> Settings:
    """Read and check a config file; raises ConfigError with every problem at file:line:column."""
    display = str(path)
    try:
        doc = load_file(path, display)
    except YamlError as e:
        raise ConfigError(e.issues) from None
    data = {} if doc.data is None else doc.data
    if isinstance(data, dict):
        # Omitted sections are validated too, so their default paths resolve next to the file.
        data = {name: {} for name in _SECTIONS} | data
    try:
        return Settings.model_validate(data, context={"base": path.resolve().parent})
    except ValidationError as e:
        issues = issues_from(e, doc, Settings, _message)
        raise ConfigError(sorted(issues, key=lambda i: i.sort_key)) from None


def resolve_token(settings: Settings) -> Secret:
    """The API token, from the first source that has one, in this order:

    1. the environment variable named by `api.token_env` (default ECAMPUS_TOKEN), if set and
       not empty;
    2. `api.token_file`, if configured (an unreadable or empty file is an error, not a skip);
    3. `$CREDENTIALS_DIRECTORY/ecampus-token` (systemd `LoadCredential=ecampus-token:...`).
    """
    api = settings.api
    token = _find_token(api.token_env, api.token_file, "api", CREDENTIAL_NAME)
    if token is not None:
        return token
    sources = [f"${api.token_env}"] if api.token_env else []
    sources += ["api.token_file", f"a systemd credential named {CREDENTIAL_NAME}"]
    raise GroupsyncError(f"no API token: set {', or '.join(sources)}")


def http_listen(settings: Settings) -> str | None:
    """Where the daemon's HTTP service listens: `http.listen`, or `metrics.listen` (its old name,
    said once as deprecated); None for no service."""
    if settings.metrics.listen is not None:
        log.warning("metrics.listen is deprecated: write http.listen (the same setting)")
        return settings.metrics.listen
    return settings.http.listen


def resolve_http_token(settings: Settings) -> Secret | None:
    """The bearer token of the HTTP service's private pages (/state, the status page), looked
    up as the API token is: `http.token_env` (default GROUPSYNC_HTTP_TOKEN), `http.token_file`,
    then the systemd credential `groupsync-http-token`. None: those pages answer 404.

    `http.listen` on an address other machines can reach needs one: the private pages must not
    be one forgotten variable away from the network. `metrics.listen` keeps its old meaning
    (open /metrics and /healthz anywhere), so an existing config keeps starting.
    """
    http = settings.http
    token = _find_token(http.token_env, http.token_file, "http", HTTP_CREDENTIAL_NAME)
    if token is None and http.listen is not None and not is_loopback(http.listen):
        sources = [f"${http.token_env}"] if http.token_env else []
        sources += ["http.token_file", f"a systemd credential named {HTTP_CREDENTIAL_NAME}"]
        raise GroupsyncError(
            f"http.listen {http.listen} is reachable from other machines, so it needs a token:"
            f" set {', or '.join(sources)}, or listen on 127.0.0.1"
        )
    return token


def resolve_webhook_secrets(settings: Settings) -> tuple[Secret, ...]:
    """The webhook secrets when `webhooks.enabled`, looked up as the API token is:
    `webhooks.secret_env` (default ECAMPUS_WEBHOOK_SECRET), `webhooks.secret_file`, then the
    systemd credential `ecampus-webhook-secret`. Several, comma-separated, are all accepted
    (one being rotated in). Enabled with none is an error: an open receiver would take
    anybody's events.
    """
    hooks = settings.webhooks
    if not hooks.enabled:
        return ()
    found = _find_token(hooks.secret_env, hooks.secret_file, "webhooks", WEBHOOK_CREDENTIAL_NAME)
    if found is None:
        sources = [f"${hooks.secret_env}"] if hooks.secret_env else []
        sources += ["webhooks.secret_file", f"a systemd credential named {WEBHOOK_CREDENTIAL_NAME}"]
        raise GroupsyncError(f"webhooks.enabled but no webhook secret: set {', or '.join(sources)}")
    pieces = [p.strip() for p in found.reveal().split(",")]
    return tuple(Secret(p, source=found.source) for p in pieces if p)


def is_loopback(listen: str) -> bool:
    """Whether only this machine can reach `listen` (a loopback address, or localhost)."""
    host, _ = parse_listen(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


_WHAT = {"api": "API token", "http": "HTTP token", "webhooks": "webhook secret"}


def _find_token(env: str | None, file: Path | None, section: str, credential: str) -> Secret | None:
    """The first of: $env (set and not empty), `<section>.token_file` (`secret_file` for
    webhooks; must be readable and not empty), `$CREDENTIALS_DIRECTORY/<credential>`; None when
    none is configured."""
    if env and os.environ.get(env, "").strip():
        return Secret(os.environ[env].strip(), source=f"${env}")
    if file is not None:
        setting = "secret_file" if section == "webhooks" else "token_file"
        return _read_token(file, f"{section}.{setting}", _WHAT[section])
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / credential).is_file():
        return _read_token(Path(credentials) / credential, "systemd credential", _WHAT[section])
    return None


def _read_token(path: Path, source: str, what: str) -> Secret:
    try:
        text = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise GroupsyncError(f"cannot read the {what} from {source} {str(path)!r}: {why}") from None
    if not text:
        raise GroupsyncError(f"the {what} file {str(path)!r} ({source}) is empty")
    if mode & 0o077 and source.endswith(("token_file", "secret_file")):
        log.warning("%s file %s is readable by other users: chmod 600 it", what, path)
    return Secret(text, source=f"{source} {str(path)!r}")


def policy_from(
    settings: Settings, *, force: bool = False, allow_delete: bool = False
) -> plan.Policy:
    return plan.Policy(
        on_removed=settings.policy.on_removed,
        allow_delete=allow_delete,
        force=force,
        protected=frozenset(settings.safety.protected),
        max_archive_fraction=settings.safety.max_archive_fraction,
        max_member_removal_fraction=settings.safety.max_member_removal_fraction,
        min_member_removals=settings.safety.min_member_removals,
        min_roster_fraction=settings.safety.min_roster_fraction,
    )
