"""Rosters read at the edge: OneRoster exports and CSV lists -> the spec's groups, every
problem at file:row. Real files on disk, read by load_spec as a command reads them."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from pathlib import Path

import pytest

from groupsync.roster import snapshot
from groupsync.spec import SpecError, load_spec, refresh_rosters
from helpers import run_cli
from roster_export import add_row, copy_example, drop, edit, read_rows, write_rows

NOW = dt.datetime(2026, 10, 1, 12, tzinfo=dt.UTC)


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    return copy_example(tmp_path)


def export(spec_path: Path, name: str) -> Path:
    return spec_path.parent / "export" / f"{name}.csv"


def problems(spec_path: Path) -> tuple[list[str], list[str]]:
    with pytest.raises(SpecError) as caught:
        load_spec(spec_path, now=NOW)
    return [str(i) for i in caught.value.issues], [str(w) for w in caught.value.warnings]


def test_the_example_generates_one_group_per_class_and_mixes_the_club_list(
    spec_path: Path,
) -> None:
    spec = load_spec(spec_path, now=NOW)
    assert sorted(spec.groups) == ["class-bio110", "class-cs150", "class-hist210", "debate"]
    bio = spec.groups["class-bio110"]
    assert bio.name == "Introduction to Biology (BIO110)"
    assert bio.description == "Term t-fall26"
    assert spec.groups["class-cs150"].description == "Term t-fall26,t-spring27"  # multi-value
    assert bio.members is not None and len(bio.members) == 11 and "prof.ada" in bio.members
    assert spec.groups["debate"].members == {"amara", "bilal", "kwame", "rosa", "yuki", "ta.grace"}
    sis, clubs = spec.rosters
    assert (sis.files, sis.classes, sis.users, sis.enrollments) == (4, 3, 25, 35)
    assert (sis.groups, sis.members) == (3, 35)
    assert (clubs.rows, clubs.groups, clubs.members) == (5, 1, 5)
    assert spec.warnings == ()


def test_columns_in_any_order_bom_crlf_unknown_columns_and_the_username_column(
    spec_path: Path,
) -> None:
    users = export(spec_path, "users")
    header, rows = read_rows(users)
    order = list(reversed(range(len(header))))
    write_rows(
        users,
        [header[i] for i in order] + ["x-extra"],
        [[r[i] for i in order] + ["?"] for r in rows],
    )
    users.write_bytes(b"\xef\xbb\xbf" + users.read_bytes())
    spec_path.write_text(
        spec_path.read_text().replace(
            "username: username ", "username: {column: email, strip_domain: true} "
        )
    )
    spec = load_spec(spec_path, now=NOW)
    assert "prof.ada" in (spec.groups["class-bio110"].members or ())


def test_disabled_and_deleted_users_ended_enrollments_and_deleted_classes(
    spec_path: Path,
) -> None:
    assert edit(export(spec_path, "users"), {"username": "amara"}, enabledUser="false") == 1
    assert edit(export(spec_path, "users"), {"username": "bilal"}, status="tobedeleted") == 1
    # cedric's BIO110 enrollment ended yesterday; chen.wei's ends today, so it still counts.
    edit(export(spec_path, "enrollments"), {"userSourcedId": "u006"}, endDate="2026-09-30")
    edit(export(spec_path, "enrollments"), {"userSourcedId": "u007"}, endDate="2026-10-01")
    edit(export(spec_path, "classes"), {"classCode": "HIST210"}, status="tobedeleted")
    spec = load_spec(spec_path, now=NOW)
    bio = spec.groups["class-bio110"].members or frozenset()
    assert {"amara", "bilal", "cedric"}.isdisjoint(bio) and "chen.wei" in bio
    hist = spec.groups["class-hist210"]
    assert hist.archived and hist.members is None  # archived as it is, not emptied first
    # The same files a day earlier: cedric's enrollment still counts (the clock is an input).
    earlier = load_spec(spec_path, now=NOW - dt.timedelta(days=1))
    assert "cedric" in (earlier.groups["class-bio110"].members or ())


def test_a_retitled_class_keeps_its_key(spec_path: Path) -> None:
    edit(export(spec_path, "classes"), {"classCode": "BIO110"}, title="Biology I")
    spec = load_spec(spec_path, now=NOW)
    assert spec.groups["class-bio110"].name == "Biology I (BIO110)"


def test_errors_at_file_row(spec_path: Path) -> None:
    manifest = export(spec_path, "manifest")
    edit(manifest, {"propertyName": "file.enrollments"}, value="delta")
    users = export(spec_path, "users")
    text = users.read_text().splitlines(keepends=True)
    text[4] = text[4].replace(",amara,", ',"amara,', 1)  # row 5: a quote never closed
    users.write_text("".join(text))
    classes = export(spec_path, "classes")
    text = classes.read_text().splitlines(keepends=True)
    text[2] = text[2].replace(",Lab 2", "", 1)  # row 3: one field short
    classes.write_text("".join(text))
    errors, _ = problems(spec_path)
    assert errors == [
        "export/classes.csv:3: has 13 fields, the header has 14",
        "export/manifest.csv:11: file.enrollments is delta: only a bulk export is read (a delta"
        " lists only what changed, and read as the whole roster it would remove everyone it"
        " does not mention)",
        "export/users.csv:5: cannot be parsed: a quote opened in this row is never closed (the"
        " file may be cut short)",
    ]


def test_missing_file_missing_column_and_duplicate_ids(spec_path: Path) -> None:
    export(spec_path, "users").unlink()
    enrollments = export(spec_path, "enrollments")
    header, rows = read_rows(enrollments)
    write_rows(enrollments, [h for h in header if h != "role"], [r[:6] + r[7:] for r in rows])
    errors, _ = problems(spec_path)
    assert errors == [
        "export/enrollments.csv:1: has no 'role' column (the header is sourcedId,status,"
        "dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,primary,beginDate,endDate)",
        "export/users.csv: does not exist",
    ]


def test_duplicate_sourced_ids(spec_path: Path) -> None:
    add_row(export(spec_path, "users"), sourcedId="u002", enabledUser="true", username="x")
    add_row(export(spec_path, "classes"), sourcedId="c-bio110", status="active", title="Again")
    errors, _ = problems(spec_path)
    assert errors == [
        "export/classes.csv:5: duplicate sourcedId 'c-bio110': also at row 2",
        "export/users.csv:27: duplicate sourcedId 'u002': also at row 3",
    ]


def test_warnings_are_counted_with_their_first_rows(spec_path: Path) -> None:
    enrollments = export(spec_path, "enrollments")
    for i in range(7):
        add_row(
            enrollments,
            sourcedId=f"x{i}",
            classSourcedId="c-gone",
            userSourcedId="u004",
            role="student",
        )
    add_row(
        enrollments, sourcedId="y", classSourcedId="c-bio110", userSourcedId="u999", role="student"
    )
    edit(export(spec_path, "users"), {"username": "yuki"}, username="")
    edit(export(spec_path, "users"), {"username": "rosa"}, username="has space")
    spec = load_spec(spec_path, now=NOW)
    assert [str(w) for w in spec.warnings] == [
        "export/enrollments.csv:37: 7 enrollments for an unknown class (rows 37, 38, 39, 40,"
        " 41, ...)",
        "export/enrollments.csv:44: 1 enrollments for an unknown user (rows 44)",
        "export/users.csv:25: 2 users with no usable username (rows 25, 26)",
    ]


def test_a_class_over_the_member_limit_is_a_warning_here_and_an_error_in_the_plan(
    spec_path: Path,
) -> None:
    users, enrollments = export(spec_path, "users"), export(spec_path, "enrollments")
    header_u, rows_u = read_rows(users)
    header_e, rows_e = read_rows(enrollments)
    for i in range(1001):
        rows_u.append(
            [
                f"big{i}"
                if h == "sourcedId"
                else f"s{i}"
                if h == "username"
                else "true"
                if h == "enabledUser"
                else ""
                for h in header_u
            ]
        )
        rows_e.append(
            [
                f"eb{i}"
                if h == "sourcedId"
                else "c-cs150"
                if h == "classSourcedId"
                else f"big{i}"
                if h == "userSourcedId"
                else "student"
                if h == "role"
                else ""
                for h in header_e
            ]
        )
    write_rows(users, header_u, rows_u)
    write_rows(enrollments, header_e, rows_e)
    spec = load_spec(spec_path, now=NOW)
    assert [str(w) for w in spec.warnings] == [
        "export/classes.csv:3: 1 classes over 1000 members (each an error in the plan; the rest"
        " apply) (rows 3)"
    ]
    assert len(spec.groups["class-cs150"].members or ()) == 1014


def test_a_key_owned_twice_names_both_places(spec_path: Path) -> None:
    spec_path.write_text(
        "rosters:\n  sis: {oneroster: export}\n"
        "generate:\n"
        "  - {from: sis.classes, key: 'class-{classCode}', name: '{title}'}\n"
        "  - {from: sis.classes, where: {classCode: BIO110}, key: 'class-{classCode}',"
        " name: '{title}'}\n"
        "groups:\n  class-cs150: {name: By hand}\n"
    )
    errors, _ = problems(spec_path)
    assert errors == [
        "spec.yaml:4:5: generate[0]: generate[0] generates key 'class-cs150' from"
        " export/classes.csv:3, which is also the group at spec.yaml:7:3",
        "spec.yaml:5:5: generate[1]: generate[1] generates key 'class-bio110' from"
        " export/classes.csv:2, and so does generate[0] (spec.yaml:4:5) from"
        " export/classes.csv:2",
    ]


def test_spec_mistakes_about_rosters_at_file_line_column(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    (tmp_path / "clubs.csv").write_text("group,username\nchess,ada\n")
    spec.write_text(
        "rosters:\n"
        "  clubs: {csv: clubs.csv}\n"
        "  both: {csv: a.csv, oneroster: b}\n"
        "generate:\n"
        "  - {from: clubs.classes, key: 'k-{id!r}', name: '{title}'}\n"
        "  - {from: sis, key: k, name: n}\n"
        "groups:\n"
        "  chess: {name: Chess, members: ['@clubs:chess', '@clubz:chess', '@clubs:']}\n"
        "  go: {name: Go, members: ['@clubs:go']}\n"
    )
    errors, _ = problems(spec)
    assert errors == [
        "spec.yaml:3:9: rosters.both: set either 'oneroster' or 'csv'",
        "spec.yaml:5:32: generate[0].key: {id!r} is not a field: write {column} with a"
        " classes.csv column name",
        "spec.yaml:6:12: generate[1].from: 'sis' is not '<roster>.classes' (e.g. 'sis.classes')",
        "spec.yaml:8:50: groups.chess.members[1]: '@clubz:chess': no roster is named 'clubz'"
        " (did you mean 'clubs'?)",
        "spec.yaml:8:66: groups.chess.members[2]: '@clubs:': name the roster's group after ':'",
    ]


def test_a_csv_roster_group_that_is_not_there(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    (tmp_path / "clubs.csv").write_text("username,group,email\nada,chess,a@x\n,chess,\n")
    spec.write_text(
        "rosters:\n  clubs: {csv: clubs.csv}\n"
        "groups:\n  chess: {name: Chess, members: ['@clubs:chess', '@clubs:chez']}\n"
    )
    errors, warnings = problems(spec)
    assert errors == [
        "spec.yaml:4:50: groups.chess.members: '@clubs:chez': roster 'clubs' has no group"
        " 'chez' (did you mean '@clubs:chess'?)"
    ]
    assert warnings == ["clubs.csv:3: 1 rows with no usable username (rows 3)"]


def test_a_zip_export_reads_like_a_folder(spec_path: Path) -> None:
    folder = spec_path.parent / "export"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for file in folder.iterdir():
            z.write(file, file.name)
    (spec_path.parent / "export.zip").write_bytes(buffer.getvalue())
    spec_path.write_text(
        spec_path.read_text().replace("oneroster: export ", "oneroster: export.zip ")
    )
    assert (
        load_spec(spec_path, now=NOW).groups
        == load_spec(spec_path.parent.parent / "roster" / "spec.yaml", now=NOW).groups
    )


def test_a_file_that_changes_during_the_read_is_read_again(
    spec_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export job rewrites enrollments.csv while it is read: the first read is discarded."""
    enrollments = export(spec_path, "enrollments")
    real = snapshot._read_bytes
    writes = {"left": 1}

    def read_while_written(path: Path) -> bytes:
        data = real(path)
        if path == enrollments and writes["left"]:
            writes["left"] -= 1
            drop(enrollments, {"userSourcedId": "u004"})  # amara's enrollment goes
        return data

    monkeypatch.setattr(snapshot, "_read_bytes", read_while_written)
    spec = load_spec(spec_path, now=NOW)
    assert "amara" not in (spec.groups["class-bio110"].members or ())  # the second read's

    writes["left"] = 2  # changed during both reads: no roster this run
    add_row(
        enrollments, sourcedId="z", classSourcedId="c-bio110", userSourcedId="u004", role="student"
    )
    errors, _ = problems(spec_path)
    assert errors == [
        "export/enrollments.csv: changed while it was read, twice: an export still being"
        " written is not read"
    ]


def test_refresh_reads_the_rosters_again_but_not_the_yaml(spec_path: Path) -> None:
    spec = load_spec(spec_path, now=NOW)
    drop(export(spec_path, "enrollments"), {"userSourcedId": "u004"})
    spec_path.write_text("groups: {}\n")  # a YAML edit waits for a reload
    fresh = refresh_rosters(spec, now=NOW)
    assert "amara" not in (fresh.groups["class-bio110"].members or ())
    assert "debate" in fresh.groups and fresh.digest != spec.digest
    assert fresh.rosters[0].digest != spec.rosters[0].digest


def test_validate_prints_each_roster(spec_path: Path) -> None:
    result = run_cli("validate", "--spec", str(spec_path), "--strict")
    assert result.returncode == 0, result.stderr
    assert "roster sis (oneroster, digest " in result.stderr
    assert (
        "4 files, 63 rows, 3 classes, 25 users, 35 enrollments -> 3 groups, 35 members"
        " (generated: class-bio110, class-cs150, class-hist210)" in result.stderr
    )
    assert "roster clubs (csv, digest " in result.stderr
    assert "1 file, 5 rows -> 1 group, 5 members" in result.stderr
