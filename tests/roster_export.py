"""A OneRoster 1.1 CSV bulk export for tests: the repository's example, copied and edited."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "roster"


def copy_example(folder: Path) -> Path:
    """folder/roster: examples/roster (spec.yaml, clubs.csv, export/); returns the spec."""
    target = folder / "roster"
    shutil.copytree(EXAMPLE, target)
    return target / "spec.yaml"


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\r\n").writerows([header, *rows])


def edit(path: Path, match: dict[str, str], **changes: str) -> int:
    """Set `changes` on every row whose columns equal `match`; how many rows changed."""
    header, rows = read_rows(path)
    hit = 0
    for row in rows:
        if all(row[header.index(k)] == v for k, v in match.items()):
            for k, v in changes.items():
                row[header.index(k)] = v
            hit += 1
    write_rows(path, header, rows)
    return hit


def drop(path: Path, match: dict[str, str]) -> int:
    header, rows = read_rows(path)
    kept = [r for r in rows if not all(r[header.index(k)] == v for k, v in match.items())]
    write_rows(path, header, kept)
    return len(rows) - len(kept)


def add_row(path: Path, **values: str) -> None:
    header, rows = read_rows(path)
    rows.append([values.get(name, "") for name in header])
    write_rows(path, header, rows)
