"""A loaded spec stays small: an account may hold 100,000 groups, and the daemon keeps its spec.

Measured with tracemalloc on 20,000 groups x 10 members (20 files of 1,000, as `export` writes
them, every group pinned by id): 758 bytes retained per group and a peak of 1,530 bytes per group
while loading (benchmarks/RESULTS.md). Before the compact forms it was 3,359 and 7,900. The
budgets leave room for Python versions, not for a per-member object.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from groupsync.spec import load_spec

GROUPS = 20_000
MEMBERS = 10
FILES = 20
RETAINED_BUDGET = 1_000  # bytes per group, after loading
PEAK_BUDGET = 2_500  # bytes per group, while loading


def write_spec(folder: Path) -> None:
    folder.mkdir()
    per_file = GROUPS // FILES
    for f in range(FILES):
        lines = ["groups:"]
        for i in range(f * per_file, (f + 1) * per_file):
            lines += [f"  course-{i:06d}:", f"    name: Course {i:06d}"]
            lines += ["    description: null", "    avatar_url: null", "    members:"]
            lines += [f"    - u{(i * 7919 + j * 104_729) % 50_000:06d}" for j in range(MEMBERS)]
            lines.append(f"    id: grp_{i:012x}")
        (folder / f"groups-{f:02d}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_a_20000_group_spec_retains_under_its_budget_per_group(tmp_path: Path) -> None:
    write_spec(tmp_path / "spec")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        spec = load_spec(tmp_path / "spec")
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(spec.groups) == GROUPS
    assert spec.groups["course-000007"].members is not None
    assert len(spec.groups["course-000007"].members) == MEMBERS
    per_group = (retained - before) / GROUPS
    peak_per_group = (peak - before) / GROUPS
    assert per_group < RETAINED_BUDGET, f"{per_group:.0f} bytes retained per group"
    assert peak_per_group < PEAK_BUDGET, f"{peak_per_group:.0f} bytes per group at the peak"


def test_an_error_deep_in_a_file_is_still_at_its_line_and_column(tmp_path: Path) -> None:
    """Positions below a group's key are not kept; an error there is found by parsing again."""
    spec = tmp_path / "spec.yaml"
    lines = ["groups:"]
    for i in range(50):
        lines += [f"  g{i}:", f"    name: Group {i}", "    members:", "    - ada", "    - grace"]
    lines[-1] = "    - '@nobody'"
    spec.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(Exception) as raised:
        load_spec(spec)
    assert "spec.yaml:251:7: groups.g49.members[1]: '@nobody' is not a defined member set" in str(
        raised.value
    )
