"""Config, spec and token, read the one way every command and the daemon read them.

A command reads only what it needs: `history` the config, `export` the config and the token,
`plan`, `apply` and `run` all of it (`Loaded`). The spec is read before the token, so a broken
spec is reported even where no token is set; the daemon reloads through `load` too, so what a
reload accepts is what a restart would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from groupsync.config import Settings, find_config, load_settings, resolve_token
from groupsync.gitspec import Source, git_info
from groupsync.secret import Secret
from groupsync.spec import Spec, load_spec


@dataclass(frozen=True, slots=True)
class Loaded:
    """Config, spec and token that loaded together; replaced as a whole, by a good reload (the
    daemon also swaps in the spec with its rosters read again: the same YAML)."""

    settings: Settings
    spec: Spec
    token: Secret
    source: Source = (None, None)
    """(git commit, dirty) of the spec as loaded: what each run journals, even after a newer
    commit on disk failed to load."""


def read_config(config_path: Path | None) -> Settings:
    """The config at `config_path`, else $GROUPSYNC_CONFIG, else ./groupsync.yaml."""
    return load_settings(find_config(config_path))


def load(config_path: Path | None) -> Loaded:
    """Everything a run needs, from the config found as `read_config` finds it."""
    return load_with(read_config(config_path))


def load_with(settings: Settings) -> Loaded:
    """The spec and token that `settings` point at. The daemon reads its config on its own
    first: it sets up logging and takes the journal's lock before a big spec is read."""
    source = git_info(settings.spec.path)
    return Loaded(settings, load_spec(settings.spec.path), resolve_token(settings), source)
