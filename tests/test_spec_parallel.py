"""A spec folder read by worker processes loads exactly as one read file by file in-process:
the same groups, the same digest, the same errors and warnings at the same places.

Real processes, forked, and a worker that dies half-way; with another thread running (as the
daemon's HTTP service does) nothing is forked, and the spec is the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from groupsync import spec as spec_module
from groupsync.spec import SpecError, load_spec
from test_spec_memory import write_spec

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "spec_corpus"


def outcome(path: Path, workers: int) -> tuple[Any, ...]:
    """All a load tells: the groups with where each was written, or the errors; the warnings."""
    try:
        spec = load_spec(path, workers=workers)
    except SpecError as e:
        return ("errors", [str(i) for i in e.issues], [str(w) for w in e.warnings])
    places = {key: str(g.location) for key, g in spec.groups.items()}
    warnings = [str(w) for w in spec.warnings]
    return ("spec", spec.groups, places, spec.digest, spec.files, warnings, spec.notify)


def whole_corpus(into: Path) -> Path:
    """Every malformed case of the corpus as one folder: errors in many files, and the same
    keys defined in several of them (each a 'defined twice' whose order must not change)."""
    into.mkdir()
    for case in sorted(CORPUS.iterdir()):
        if case.name == "cases.yaml":
            continue
        files = sorted(case.glob("*.yaml")) if case.is_dir() else [case]
        for file in files:
            shutil.copyfile(file, into / f"{case.stem}--{file.name}")
    return into


@contextmanager
def another_thread() -> Iterator[None]:
    """A second thread alive while the spec loads, as the daemon's HTTP service is."""
    done = threading.Event()
    thread = threading.Thread(target=done.wait, args=(30,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["examples/groups", "the whole corpus", "cross-file-sets"])
def test_a_folder_read_side_by_side_loads_as_one_read_file_by_file(
    tmp_path: Path, folder: str
) -> None:
    if folder == "the whole corpus":
        path = whole_corpus(tmp_path / "corpus")
    else:
        path = ROOT / folder if "/" in folder else CORPUS / folder
    expected = outcome(path, workers=1)
    assert outcome(path, workers=2) == expected
    if folder == "the whole corpus":
        assert expected[0] == "errors" and len(expected[1]) >= 40
        assert any("is defined twice: also at corpus/" in issue for issue in expected[1])


PARENT = os.getpid()  # the test's process: where the pool is made


def dies_in_a_worker(path: Path, display: str, *, sets_only_ok: bool) -> Any:
    """read_file, but a worker reading part-3.yaml dies at once, as the kernel's OOM killer
    would end it: no exception, no cleanup."""
    if os.getpid() != PARENT and path.name == "part-3.yaml":
        os._exit(9)
    return READ_FILE(path, display, sets_only_ok=sets_only_ok)


READ_FILE = spec_module.read_file


def folder_of_six(tmp_path: Path) -> Path:
    folder = tmp_path / "spec"
    folder.mkdir()
    for i in range(6):
        (folder / f"part-{i}.yaml").write_text(
            f"groups:\n  g{i}:\n    name: Group {i}\n    members: [ada, 'u{i}']\n"
        )
    return folder


def test_a_worker_that_dies_leaves_the_rest_to_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = folder_of_six(tmp_path)
    expected = outcome(folder, workers=1)
    monkeypatch.setattr(spec_module, "read_file", dies_in_a_worker)  # forked workers see it too
    with caplog.at_level(logging.WARNING, logger="groupsync.spec"):
        assert outcome(folder, workers=2) == expected
    assert "reading the spec in this process only" in caplog.text


def test_nothing_is_forked_while_another_thread_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = folder_of_six(tmp_path)
    expected = outcome(folder, workers=1)
    monkeypatch.setattr(spec_module, "read_file", dies_in_a_worker)  # a worker would die
    with caplog.at_level(logging.WARNING, logger="groupsync.spec"), another_thread():
        assert outcome(folder, workers=2) == expected
    assert "reading the spec in this process only" not in caplog.text


def children_of(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            if f"\nPPid:\t{pid}\n" in status.read_text():
                found.append(int(status.parent.name))
    return found


@pytest.mark.slow
def test_ctrl_c_while_workers_read_stops_them_and_exits_130(tmp_path: Path) -> None:
    write_spec(tmp_path / "spec")  # 20,000 groups, 5.5 MiB: read by workers
    env = {k: v for k, v in os.environ.items() if k != "GROUPSYNC_CONFIG"}
    cli = subprocess.Popen(
        [sys.executable, "-m", "groupsync", "validate", "--spec", str(tmp_path / "spec")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: Ctrl-C reaches it and its workers
    )
    deadline = time.monotonic() + 30
    while not children_of(cli.pid) and cli.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cli.poll() is None, "loaded before a worker was seen"
    os.killpg(cli.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    stopped = time.monotonic()
    out, err = cli.communicate(timeout=30)
    assert cli.returncode == 130, err
    assert time.monotonic() - stopped < 5  # queued files are not read first
    assert "Traceback" not in err and "spec OK" not in out
