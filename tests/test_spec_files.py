"""Which files a spec is made of: every entry that should be read is read, or is an error.

A spec read in part looks like groups removed from the spec, and removed groups are archived:
so a broken link, a loop, an unreadable file or a folder named *.yaml fails the load, through
the real filesystem, and `validate` and `apply` through the CLI.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from groupsync.emulator import Emulator
from groupsync.spec import SpecError, load_spec
from helpers import emulator_config, run_cli

NOBODY = 65534


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return [str(issue) for issue in caught.value.issues]


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """groups/main.yaml (2 groups) next to whatever a test adds."""
    folder = tmp_path / "groups"
    folder.mkdir()
    write(folder, "main.yaml", "groups:\n  a: {name: A}\n  b: {name: B}\n")
    return folder


def test_a_broken_link_is_an_error_naming_it_and_its_target(spec_dir: Path) -> None:
    (spec_dir / "linked.yaml").symlink_to("../elsewhere/linked.yaml")
    assert errors(spec_dir) == [
        "groups/linked.yaml is a broken symbolic link "
        "(its target '../elsewhere/linked.yaml' does not exist)"
    ]


def test_a_link_to_a_file_elsewhere_is_read(spec_dir: Path, tmp_path: Path) -> None:
    elsewhere = write(tmp_path, "shared.yaml", "groups:\n  c: {name: C}\n")
    (spec_dir / "linked.yaml").symlink_to(elsewhere)
    assert sorted(load_spec(spec_dir).groups) == ["a", "b", "c"]


def test_a_link_loop_inside_the_folder_is_an_error(spec_dir: Path) -> None:
    (spec_dir / "one.yaml").symlink_to("two.yaml")
    (spec_dir / "two.yaml").symlink_to("one.yaml")
    assert errors(spec_dir) == [
        "groups/one.yaml is a symbolic link loop",
        "groups/two.yaml is a symbolic link loop",
    ]


def test_a_spec_path_that_is_a_loop_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    loop = tmp_path / "groups"
    loop.symlink_to("groups")
    assert errors(loop) == [f"spec path {str(loop)!r} is a symbolic link loop"]


def test_a_spec_path_that_is_a_broken_link_says_so(tmp_path: Path) -> None:
    (tmp_path / "groups").symlink_to("gone")
    (message,) = errors(tmp_path / "groups")
    assert message.endswith("is a broken symbolic link (its target 'gone' does not exist)")


def test_a_folder_named_yaml_is_an_error(spec_dir: Path) -> None:
    (spec_dir / "more.yaml").mkdir()
    write(spec_dir / "more.yaml", "c.yaml", "groups:\n  c: {name: C}\n")
    assert errors(spec_dir) == [
        "groups/more.yaml is a folder: a spec folder's subfolders are not read (rename it)"
    ]


def test_a_fifo_named_yaml_is_an_error_and_never_opened(spec_dir: Path) -> None:
    """Opening a FIFO would block the load for ever: it is refused from its type alone."""
    os.mkfifo(spec_dir / "pipe.yaml")
    assert errors(spec_dir) == ["groups/pipe.yaml is not a regular file"]


def as_nobody(function: Callable[[], Any]) -> Any:
    """function() in a child process that has dropped root, so that file modes apply to it.

    The child is forked, not started: it needs no access to the interpreter's files, only to
    the spec. Its result (or exception) comes back pickled through a pipe.
    """
    if os.geteuid() != 0:
        return function()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                outcome: tuple[bool, Any] = (True, function())
            except Exception as e:
                outcome = (False, e)
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(outcome, out)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A spec folder any user may enter (pytest's tmp_path is root's alone)."""
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        base.chmod(0o755)
        groups = base / "groups"
        groups.mkdir(mode=0o755)
        write(groups, "main.yaml", "groups:\n  a: {name: A}\n").chmod(0o644)
        yield groups


def test_an_unreadable_file_is_an_error(open_dir: Path) -> None:
    write(open_dir, "secret.yaml", "groups:\n  s: {name: S}\n").chmod(0o000)
    with pytest.raises(SpecError) as caught:
        as_nobody(lambda: load_spec(open_dir))
    assert [str(i) for i in caught.value.issues] == [
        "groups/secret.yaml cannot be read: Permission denied"
    ]


def test_a_file_in_an_unreadable_subpath_is_an_error(open_dir: Path) -> None:
    hidden = open_dir.parent / "private"
    hidden.mkdir(mode=0o700)
    write(hidden, "x.yaml", "groups:\n  x: {name: X}\n")
    (open_dir / "x.yaml").symlink_to(hidden / "x.yaml")
    with pytest.raises(SpecError) as caught:
        as_nobody(lambda: load_spec(open_dir))
    assert [str(i) for i in caught.value.issues] == [
        "groups/x.yaml cannot be read: Permission denied"
    ]


def test_an_unreadable_folder_is_an_error(open_dir: Path) -> None:
    open_dir.chmod(0o311)  # may be entered, not listed
    with pytest.raises(SpecError) as caught:
        as_nobody(lambda: load_spec(open_dir))
    assert [str(i) for i in caught.value.issues] == [
        f"spec folder {str(open_dir)!r} cannot be read: Permission denied"
    ]


def test_yml_and_upper_case_yaml_are_read(spec_dir: Path) -> None:
    write(spec_dir, "clubs.yml", "groups:\n  c: {name: C}\n")
    write(spec_dir, "ROOMS.YAML", "groups:\n  d: {name: D}\n")
    spec = load_spec(spec_dir)
    assert sorted(spec.groups) == ["a", "b", "c", "d"]
    assert spec.files == ("groups/ROOMS.YAML", "groups/clubs.yml", "groups/main.yaml")
    assert spec.warnings == ()


def test_dot_files_and_other_names_are_not_read(spec_dir: Path) -> None:
    (spec_dir / ".#main.yaml").symlink_to("root@host.1234:1700000000")  # an Emacs lock
    write(spec_dir, ".main.yaml.swp", "\0binary")
    write(spec_dir, "README.md", "# groups\n")
    write(spec_dir, "main.yaml~", "groups: {old: {name: Old}}\n")
    assert sorted(load_spec(spec_dir).groups) == ["a", "b"]


# --- through the CLI --------------------------------------------------------------------------


def test_validate_with_a_broken_link_fails_naming_it(spec_dir: Path) -> None:
    (spec_dir / "linked.yaml").symlink_to("../elsewhere/linked.yaml")
    result = run_cli("validate", "--spec", str(spec_dir))
    assert result.returncode == 1, result.stdout
    assert "groups/linked.yaml is a broken symbolic link" in result.stderr
    assert "spec OK" not in result.stdout
    assert "Traceback" not in result.stderr


def test_validate_with_a_loop_as_spec_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "groups").symlink_to("groups")
    result = run_cli("validate", "--spec", str(tmp_path / "groups"))
    assert result.returncode == 1
    assert "is a symbolic link loop" in result.stderr
    assert "Traceback" not in result.stderr


def test_apply_never_archives_the_groups_of_a_file_it_cannot_read(
    emulator: Emulator, tmp_path: Path, spec_dir: Path
) -> None:
    """The reported attack: a linked file's target moves away; its groups must stay."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(elsewhere, "linked.yaml", "groups:\n  c: {name: C}\n  d: {name: D}\n")
    (spec_dir / "linked.yaml").symlink_to("../elsewhere/linked.yaml")
    config = emulator_config(tmp_path, emulator.base_url, spec_dir)
    first = run_cli("apply", "--yes", "--config", str(config), token="test-token")
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(emulator.state.groups(archived=False)) == 4

    (elsewhere / "linked.yaml").rename(tmp_path / "moved.yaml")
    again = run_cli("apply", "--yes", "--config", str(config), token="test-token")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "groups/linked.yaml is a broken symbolic link" in again.stderr
    assert len(emulator.state.groups(archived=False)) == 4
    assert emulator.state.groups(archived=True) == []
