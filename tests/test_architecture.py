"""ARCHITECTURE.md is the map of the package: every module is on it, and the imports keep to it.

The layers are read from ARCHITECTURE.md ("Modules and what each may import"), so the document
and this test cannot drift apart: a new module fails here until it is placed in a layer, and an
import against the layering fails here with the rule it breaks. Imports are read with `ast`
(at the top of a file, inside functions and under TYPE_CHECKING alike); nothing is imported.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "daemon" / "groupsync"
DOC = ROOT / "ARCHITECTURE.md"
BESIDE = 0  # the emulator's "layer": beside the others
FRONT = 7

# What reaches the network, SQLite, another process, threads, signals, the clock or chance.
WORLD = frozenset(
    {
        "apscheduler",
        "asyncio",
        "fcntl",
        "httpx",
        "prometheus_client",
        "random",
        "select",
        "signal",
        "socket",
        "sqlite3",
        "sqlite_utils",
        "ssl",
        "starlette",
        "subprocess",
        "threading",
        "time",
        "uvicorn",
    }
)


def module_name(path: Path) -> str:
    """daemon/groupsync/plan/model.py -> groupsync.plan.model; an __init__.py is its package."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _doc_name(entry: str) -> str:
    """`plan/model.py` as ARCHITECTURE.md writes it -> groupsync.plan.model."""
    return module_name(PACKAGE / entry)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def doc_layers() -> dict[str, tuple[int, int]]:
    """Module -> (layer, position in its layer), from the module section of ARCHITECTURE.md."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Modules and what each may import\n", 1)[1].split("\n## ", 1)[0]
    placed: dict[str, tuple[int, int]] = {}
    layer: int | None = None
    for line in section.splitlines():
        if heading := re.match(r"### (?:Layer (\d+)|Beside the layers)", line):
            layer = int(heading[1]) if heading[1] else BESIDE
        elif (entry := re.match(r"- `([\w/]+\.py)`", line)) and layer is not None:
            name = _doc_name(entry[1])
            assert name not in placed, f"ARCHITECTURE.md places {entry[1]} twice"
            placed[name] = (layer, len(placed))
    return placed


@cache
def imports(name: str) -> tuple[frozenset[str], frozenset[str]]:
    """(groupsync modules, other top-level modules) that module `name` imports anywhere."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            # `from groupsync.plan import diff` imports the module groupsync.plan.diff.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules() else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target.partition(".")[0] == "groupsync":
                ours.add(target)
            else:
                others.add(target.partition(".")[0])
    ours.discard(name)
    return frozenset(ours), frozenset(others)


def loads(name: str) -> tuple[set[str], set[str]]:
    """Every groupsync module `name` brings in (itself included), and what those import."""
    seen: set[str] = set()
    others: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            ours, theirs = imports(current)
            todo.extend(ours)
            others |= theirs
    return seen, others


def test_every_module_is_on_the_map() -> None:
    on_disk, on_map = set(modules()), set(doc_layers())
    assert not on_disk - on_map, (
        f"not in ARCHITECTURE.md: {sorted(on_disk - on_map)}; add each to its layer under"
        " 'Modules and what each may import', with a line on what it holds"
    )
    assert not on_map - on_disk, f"ARCHITECTURE.md names missing modules: {on_map - on_disk}"


def test_imports_keep_to_the_layers() -> None:
    layers = doc_layers()
    wrong = []
    for name in modules():
        if name not in layers:
            continue  # test_every_module_is_on_the_map says so
        layer, position = layers[name]
        for target in imports(name)[0] & layers.keys():
            their_layer, their_position = layers[target]
            if layer == BESIDE:
                ok = their_layer == 1 or (their_layer == BESIDE and their_position < position)
            elif their_layer == BESIDE:
                ok = layer == FRONT
            else:
                ok = their_layer < layer or (their_layer == layer and their_position < position)
            if not ok:
                later = ", listed after it" if their_layer == layer else ""
                wrong.append(
                    f"{name} (layer {layer}) imports {target} (layer {their_layer}{later})"
                )
    assert not wrong, "against the layering in ARCHITECTURE.md:\n" + "\n".join(sorted(wrong))


# The plan's own imports (ARCHITECTURE.md, layer 3): values, and the spec's value types.
PLAN_MAY_USE = frozenset(
    {
        "groupsync.canonical",
        "groupsync.gcpause",
        "groupsync.models",
        "groupsync.desired",
        "groupsync.notify",
        "groupsync.strictmodel",
    }
)
PURE_STDLIB = frozenset({"__future__", "collections", "dataclasses", "enum", "hashlib", "typing"})


def in_plan(name: str) -> bool:
    return name == "groupsync.plan" or name.startswith("groupsync.plan.")


@pytest.mark.parametrize("name", [m for m in modules() if in_plan(m)])
def test_the_plan_does_no_io_and_reads_no_clock(name: str) -> None:
    ours, others = imports(name)
    assert {m for m in ours if not in_plan(m)} <= PLAN_MAY_USE, sorted(ours)
    assert others <= PURE_STDLIB, f"{name} imports {sorted(others - PURE_STDLIB)}"
    brought_in, their_imports = loads(name)
    assert not their_imports & WORLD, f"{name} brings in {sorted(their_imports & WORLD)}"
    edges = {m for m in brought_in if doc_layers()[m][0] >= 4}
    assert not edges, f"{name} brings in {sorted(edges)}"


@pytest.mark.parametrize("name", ["groupsync.outcomes", "groupsync.models", "groupsync.canonical"])
def test_values_import_no_groupsync_module_and_no_io(name: str) -> None:
    ours, others = imports(name)
    assert not ours
    # sys for sys.intern: one string for a username however many groups hold it.
    assert others <= PURE_STDLIB | {"json", "sys"}, f"{name} imports {sorted(others)}"


def test_the_api_client_knows_nothing_of_the_journal_plans_specs_or_config() -> None:
    ours, _ = imports("groupsync.api")
    allowed = {"groupsync", "groupsync.contract", "groupsync.models", "groupsync.errors"}
    assert ours <= allowed | {"groupsync.secret"}, sorted(ours)
    brought_in, their_imports = loads("groupsync.api")
    assert not {m for m in brought_in if m.startswith("groupsync.journal")}
    assert not their_imports & {"sqlite3", "sqlite_utils"}


def test_the_journal_knows_nothing_of_the_api() -> None:
    brought_in, their_imports = loads("groupsync.journal")
    assert not brought_in & {"groupsync.api", "groupsync.contract"}, sorted(brought_in)
    assert "httpx" not in their_imports


def test_only_the_entry_point_imports_the_cli() -> None:
    importers = {name for name in modules() if "groupsync.cli" in imports(name)[0]}
    assert importers == {"groupsync.__main__"}


def test_the_map_reads_what_the_package_holds() -> None:
    """The parser above really sees the layers: a guard against a reformatted document."""
    layers = doc_layers()
    assert layers["groupsync.outcomes"][0] == 1
    assert layers["groupsync.plan.model"][0] == 3
    assert layers["groupsync.api"][0] == 4
    assert layers["groupsync.cli"][0] == FRONT
    assert layers["groupsync.emulator.state"][0] == BESIDE
    assert "groupsync.plan.diff" in imports("groupsync.plan.compute")[0]  # `from ... import diff`
