"""`groupsync validate`: check config and spec before anything touches the API.

Warnings (a username listed twice, an unused member set) are printed but do not fail plain
`validate`: they never change what groupsync would do. `--strict` makes them fail too, for CI
that wants a clean spec. `--online` also asks the API (one paginated contact list, read-only)
whether every username exists, which offline checks cannot know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from groupsync import asyncmain
from groupsync.config import ConfigError, Settings, resolve_token
from groupsync.loader import read_config
from groupsync.outcomes import ExitCode
from groupsync.spec import Spec, SpecError, load_spec, member_origin
from groupsync.strictmodel import did_you_mean
from groupsync.yamlstrict import Issue


@dataclass
class Validation:
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    spec: Spec | None = None

    def exit_code(self, *, strict: bool) -> int:
        return ExitCode.ERROR if self.errors or (strict and self.warnings) else ExitCode.OK

    def lines(self) -> list[str]:
        rosters = [r.line() for r in self.spec.rosters] if self.spec is not None else []
        return [str(i) for i in self.errors] + [f"warning: {i}" for i in self.warnings] + rosters

    def summary(self, *, strict: bool) -> str:
        """The last line: "spec OK" only when the exit code says so too."""
        counts = f"{_plural(len(self.errors), 'error')}, {_plural(len(self.warnings), 'warning')}"
        if self.spec is None or self.errors:
            return counts
        if strict and self.warnings:
            return f"failed: {_plural(len(self.warnings), 'warning')} with --strict"
        spec = self.spec
        groups, files = _plural(len(spec.groups), "group"), _plural(len(spec.files), "file")
        return f"spec OK: {groups} in {files}, {counts} (digest {spec.digest[:12]})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def validate(config_path: Path | None, *, spec_path: Path | None, online: bool) -> Validation:
    """Config (when there is one or it is needed) and spec, every problem collected.

    `spec_path` overrides the config's `spec.path` and makes a config optional, so a spec
    repository (pre-commit, CI) can be checked without the daemon's config file.
    """
    result = Validation()
    settings: Settings | None = None
    need_config = spec_path is None or online or config_path is not None
    try:
        if need_config:
            settings = read_config(config_path)
    except ConfigError as e:
        result.errors.extend(e.issues)
        return result
    path = spec_path if spec_path is not None else settings.spec.path  # type: ignore[union-attr]
    try:
        result.spec = load_spec(path)
    except SpecError as e:
        result.errors.extend(e.issues)
        result.warnings.extend(e.warnings)
        return result
    result.warnings.extend(result.spec.warnings)
    if online:
        assert settings is not None  # need_config
        result.errors.extend(asyncmain.run(partial(check_usernames, settings, result.spec)))
    return result


async def check_usernames(settings: Settings, spec: Spec) -> list[Issue]:
    """One issue per group and unknown username, placed where the group's list brings it in."""
    from groupsync.reconcile import Session  # the API stack is only needed online

    async with Session(settings, resolve_token(settings)).reader() as client:
        known = {contact.username for contact in await client.list_contacts()}
    issues = []
    for key, group in spec.groups.items():
        for user in sorted((group.members or frozenset()) - known):
            where, via = member_origin(spec, key, user)  # generated groups: their class's row
            through = f" (from @{via})" if via else ""
            message = f"{user!r}{through} is not an eCampus contact{did_you_mean(user, known)}"
            issues.append(Issue(where, f"groups.{key}.members", message))
    return sorted(issues, key=lambda i: i.sort_key)
