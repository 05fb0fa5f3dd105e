"""apply end to end: the real client against the emulator over HTTP, a real SQLite journal."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from groupsync.api import Client
from groupsync.apply import ApplyControl, ApplyResult, UnsafePlan, apply_plan, recover_pending
from groupsync.emulator import Emulator
from groupsync.journal import ChangeRecord, Journal
from groupsync.outcomes import RunOutcome
from groupsync.plan import (
    Action,
    AppliedState,
    Cause,
    Change,
    GroupError,
    Plan,
    Policy,
    compute_plan,
)
from groupsync.spec import DesiredGroup
from helpers import api_client

pytestmark = pytest.mark.anyio

TOKEN = "test-token"
DEFAULT_POLICY = Policy()
CONTACTS = ("ada", "grace", "hector", "cedric", "linus")


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(tmp_path / "groupsync.db") as j:
        yield j


@pytest.fixture
def emu(emulator: Emulator) -> Emulator:
    for username in CONTACTS:
        emulator.state.add_contact(username)
    return emulator


def client_for(emu: Emulator, **options: object) -> Client:
    # Test-fast backoff, with attempts enough that the waits outlast the emulator's one-second
    # rate-limit window however the jitter falls (8 could add up to less on a slow machine).
    options = {
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.5,
        "max_attempts": 12,
        "max_requests_per_s": 1000,
    } | options
    return api_client(emu.base_url, TOKEN, **options)


def spec(*groups: DesiredGroup) -> dict[str, DesiredGroup]:
    return {g.key: g for g in groups}


async def make_plan(
    emu: Emulator,
    journal: Journal,
    desired: Mapping[str, DesiredGroup],
    *,
    policy: Policy = DEFAULT_POLICY,
    read_contacts: bool = True,
) -> Plan:
    async with client_for(emu, read_only=True) as client:
        groups = await client.list_all_groups()
        known = None
        if read_contacts:
            known = frozenset(c.username for c in await client.list_contacts())
    return compute_plan(desired, groups, journal.managed(), policy, known)


async def no_wait(delay: float) -> None:
    """The client's retry waits, skipped: for tests about what retries do, not their pace."""


async def apply(
    emu: Emulator,
    journal: Journal,
    desired: Mapping[str, DesiredGroup],
    plan: Plan | None = None,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    **options: object,
) -> tuple[Plan, ApplyResult]:
    plan = plan or await make_plan(emu, journal, desired, **options)  # type: ignore[arg-type]
    run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
    async with client_for(emu, sleep=sleep) as client:
        result = await apply_plan(plan, desired, client, journal, run, seen_ids=ids(emu))
    journal.finish_run(run, outcome=RunOutcome.APPLIED, counts={})
    return plan, result


def rows(journal: Journal) -> list[ChangeRecord]:
    return [c for run in reversed(journal.history(limit=1000)) for c in run.changes]


def ids(emu: Emulator) -> set[str]:
    """Every group id the account holds: what a plan read just now would have seen."""
    return {g["id"] for g in emu.state.groups()}


def names(emu: Emulator) -> Counter[str]:
    return Counter(g["name"] for g in emu.state.groups())


def members(group: dict) -> set[str]:
    return {c["username"] for c in group["contacts"]}


async def test_apply_converges_phase_by_phase_and_the_next_plan_is_empty(
    emu: Emulator, journal: Journal, tmp_path: Path
) -> None:
    desired = spec(
        DesiredGroup("cs101", "CS 101", description="Fall", members=frozenset({"ada", "grace"})),
        DesiredGroup("chess", "Chess", members=frozenset({"hector"}), archived=True),
        DesiredGroup("staff", "Staff room", avatar_url="https://x/staff.png"),
        DesiredGroup("math", "Math", members=frozenset()),
    )
    plan, result = await apply(emu, journal, desired)
    assert [c.action for c in plan.changes] == [Action.CREATE] * 4
    assert (result.applied, result.failed, result.failures) == (4, 0, [])
    assert emu.count("POST", "/v1/groups") == 4 and emu.count("PUT") == 1  # chess: then archived
    by_name = {g["name"]: g for g in emu.state.groups()}
    assert by_name["Chess"]["archived_at"] is not None and members(by_name["Chess"]) == {"hector"}
    assert by_name["CS 101"]["description"] == "Fall"
    assert (await make_plan(emu, journal, desired)).empty
    managed = journal.managed()
    assert {k: mg.group_id for k, mg in managed.items()} == {
        k: by_name[d.name]["id"] for k, d in desired.items()
    }
    assert all(r.status == "applied" and r.attempts >= 1 for r in rows(journal))

    desired = spec(
        DesiredGroup("cs101", "CS 101", description="Fall", members=frozenset({"ada", "cedric"})),
        DesiredGroup("chess", "Chess", members=frozenset({"hector"}), archived=True),
        DesiredGroup("staff", "Staff lounge", avatar_url="https://x/staff.png"),
        DesiredGroup("bio", "Biology"),
    )
    emu.reset_counters()
    plan, result = await apply(emu, journal, desired)
    assert {c.key: (c.action, c.phase) for c in plan.changes} == {
        "bio": (Action.CREATE, 0),
        "staff": (Action.UPDATE, 1),
        "cs101": (Action.UPDATE, 2),
        "math": (Action.ARCHIVE, 3),
    }
    assert (result.applied, result.failed) == (4, 0)
    assert emu.count("POST") == 1 and emu.count("PUT") == 3 and emu.count("DELETE") == 0
    latest = journal.history(limit=1)[0].changes
    assert [c.key for c in latest] == ["bio", "staff", "cs101", "math"]  # one phase at a time
    cs101 = emu.state.get(managed["cs101"].group_id)
    assert members(cs101) == {"ada", "cedric"}
    assert journal.managed()["math"].applied.archived is True  # still managed: restorable
    assert (await make_plan(emu, journal, desired)).empty
    files = list(tmp_path.iterdir())  # noqa: ASYNC240 - a test's own tmp files
    assert all(TOKEN.encode() not in p.read_bytes() for p in files)


async def test_updates_send_only_what_changes_as_one_put(emu: Emulator, journal: Journal) -> None:
    desired = spec(DesiredGroup("cs101", "CS 101", description="d", members=frozenset({"ada"})))
    await apply(emu, journal, desired)
    gid = journal.managed()["cs101"].group_id
    seen: list[dict] = []

    async def record(request: httpx.Request) -> None:
        if request.method == "PUT":
            seen.append(json.loads(request.content))

    desired = spec(DesiredGroup("cs101", "CS 101", description="e", members=frozenset({"ada"})))
    plan = await make_plan(emu, journal, desired)
    run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
    async with client_for(emu) as client:
        client._http.event_hooks["request"].append(record)
        await apply_plan(plan, desired, client, journal, run, seen_ids=ids(emu))
    assert seen == [{"description": "e"}]
    assert emu.state.get(gid)["description"] == "e"


async def test_adopting_by_name_creates_no_duplicate(emu: Emulator, journal: Journal) -> None:
    chess = emu.state.add_group("Chess Club", members=["hector"], description="old")
    same = emu.state.add_group("Staff", members=["ada"], description="as wanted")
    emu.state.add_group("Lost & Found")  # not in the spec: never touched
    emu.reset_counters()
    desired = spec(
        DesiredGroup(
            "chess", "Chess Club", description="new", members=frozenset({"hector", "ada"})
        ),
        DesiredGroup("staff", "Staff", members=frozenset({"ada"})),
    )
    plan, result = await apply(emu, journal, desired)
    assert [(c.key, c.action) for c in plan.changes] == [
        ("chess", Action.ADOPT),
        ("staff", Action.ADOPT),
    ]
    assert (result.applied, result.failed) == (2, 0)
    assert emu.count("POST") == 0 and emu.count("PUT") == 1  # the exact match needs no write
    assert {k: mg.group_id for k, mg in journal.managed().items()} == {
        "chess": chess["id"],
        "staff": same["id"],
    }
    assert emu.state.get(chess["id"])["description"] == "new"
    assert names(emu) == Counter({"Chess Club": 1, "Staff": 1, "Lost & Found": 1})
    assert (await make_plan(emu, journal, desired)).empty


async def test_a_rename_under_the_same_key_updates_the_same_group(
    emu: Emulator, journal: Journal
) -> None:
    await apply(emu, journal, spec(DesiredGroup("film", "Film Society")))
    gid = journal.managed()["film"].group_id
    emu.reset_counters()
    plan, result = await apply(emu, journal, spec(DesiredGroup("film", "Cinema Club")))
    assert [(c.action, c.group_id) for c in plan.changes] == [(Action.UPDATE, gid)]
    assert result.applied == 1
    assert emu.count("POST") == 0 and emu.count("DELETE") == 0 and emu.count("PUT") == 1
    assert [g["name"] for g in emu.state.groups()] == ["Cinema Club"]
    assert journal.managed()["film"].applied.name == "Cinema Club"


async def test_one_unknown_member_fails_only_that_key(emu: Emulator, journal: Journal) -> None:
    desired = spec(
        DesiredGroup("a", "A", members=frozenset({"ada"})),
        DesiredGroup("b", "B", members=frozenset({"ada", "nobody"})),
        DesiredGroup("c", "C", members=frozenset({"grace"})),
    )
    # Contacts not read (as when the plan could not check them): the API is what says no.
    _, result = await apply(emu, journal, desired, read_contacts=False)
    assert (result.applied, result.failed) == (2, 1)
    [(key, message)] = result.failures
    assert key == "b" and "400" in message
    assert names(emu) == Counter({"A": 1, "C": 1})
    failed = [r for r in rows(journal) if r.status == "failed"]
    assert [(r.key, r.http_status, r.attempts) for r in failed] == [("b", 400, 1)]
    assert set(journal.managed()) == {"a", "c"}


async def test_changes_for_keys_with_plan_errors_are_skipped(
    emu: Emulator, journal: Journal
) -> None:
    desired = spec(DesiredGroup("a", "A"), DesiredGroup("b", "B"))
    changes = tuple(Change(k, Action.CREATE, Cause.SPEC, k.upper()) for k in ("a", "b"))
    plan = Plan(changes, errors=(GroupError("b", "unknown member 'x'"),))
    seen: list[tuple[str, str]] = []
    run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
    async with client_for(emu) as client:
        result = await apply_plan(
            plan,
            desired,
            client,
            journal,
            run,
            seen_ids=(),
            control=ApplyControl(on_progress=lambda c, s: seen.append((c.key, s))),
        )
    assert (result.applied, result.failed, result.skipped) == (1, 0, 1)
    assert sorted(seen) == [("a", "applied"), ("b", "skipped")]
    assert names(emu) == Counter({"A": 1})


async def test_progress_names_the_group_a_create_made(emu: Emulator, journal: Journal) -> None:
    desired = spec(DesiredGroup("a", "A"))
    plan = Plan((Change("a", Action.CREATE, Cause.SPEC, "A"),))
    seen: list[tuple[str | None, str]] = []
    run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
    async with client_for(emu) as client:
        await apply_plan(
            plan,
            desired,
            client,
            journal,
            run,
            seen_ids=(),
            control=ApplyControl(on_progress=lambda c, s: seen.append((c.group_id, s))),
        )
    assert seen == [(journal.managed()["a"].group_id, "applied")]


async def test_a_group_deleted_out_of_band_fails_with_404_then_is_recreated(
    emu: Emulator, journal: Journal
) -> None:
    await apply(emu, journal, spec(DesiredGroup("cs101", "CS 101", description="a")))
    gid = journal.managed()["cs101"].group_id
    desired = spec(DesiredGroup("cs101", "CS 101", description="b"))
    plan = await make_plan(emu, journal, desired)
    emu.state.delete_group(gid)  # between plan and apply
    _, result = await apply(emu, journal, desired, plan=plan)
    assert result.failed == 1 and result.failures[0][0] == "cs101"
    [row] = journal.history(limit=1)[0].changes
    assert row.http_status == 404 and "the next plan recreates it" in row.note
    plan, result = await apply(emu, journal, desired)
    assert [(c.action, c.note) for c in plan.changes] == [(Action.CREATE, "deleted out of band")]
    assert result.applied == 1
    [group] = emu.state.groups()
    assert group["description"] == "b" and journal.managed()["cs101"].group_id == group["id"]


async def test_delete_and_forget_drop_the_key(emu: Emulator, journal: Journal) -> None:
    desired = spec(DesiredGroup("a", "A"), DesiredGroup("b", "B"), DesiredGroup("c", "C"))
    await apply(emu, journal, desired)
    ids = {k: mg.group_id for k, mg in journal.managed().items()}
    delete = Policy(on_removed="delete", allow_delete=True, force=True)
    plan, result = await apply(emu, journal, spec(desired["b"], desired["c"]), policy=delete)
    assert [c.action for c in plan.changes] == [Action.DELETE] and result.applied == 1
    assert emu.state.get(ids["a"]) is None and "a" not in journal.managed()
    ignore = Policy(on_removed="ignore", force=True)
    plan, result = await apply(emu, journal, spec(desired["c"]), policy=ignore)
    assert [c.action for c in plan.changes] == [Action.FORGET] and result.applied == 1
    assert emu.state.get(ids["b"]) is not None and set(journal.managed()) == {"c"}


async def test_a_refused_plan_writes_nothing(emu: Emulator, journal: Journal) -> None:
    plan = Plan((Change("a", Action.CREATE, Cause.SPEC, "A"),), refusals=("would archive 9",))
    async with client_for(emu) as client:
        with pytest.raises(UnsafePlan) as info:
            await apply_plan(plan, spec(DesiredGroup("a", "A")), client, journal, 1, seen_ids=())
    assert info.value.exit_code == 3
    assert emu.count() == 0 and journal.history() == []


async def test_workers_bound_what_is_in_flight(emu: Emulator, journal: Journal) -> None:
    desired = spec(*(DesiredGroup(f"g{n:02}", f"Group {n}") for n in range(12)))
    plan = await make_plan(emu, journal, desired)
    emu.faults.latency_s = 0.05
    emu.reset_counters()
    run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
    async with client_for(emu, max_concurrency=8) as client:
        result = await apply_plan(plan, desired, client, journal, run, seen_ids=ids(emu), workers=3)
    assert result.applied == 12
    assert 1 < emu.max_in_flight <= 3


class ScriptedPosts(httpx.AsyncBaseTransport):
    """Real HTTP to the emulator, except that POSTs follow a script of failures:

    "lost": answer 500 without forwarding (nothing created); "committed": forward, then answer
    500 (created, but the client cannot know); "late": time out at once, and forward only after
    the client's next list call (the POST was still running when the client re-listed).
    """

    def __init__(self, script: list[str], *, fail_puts: bool = False) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.script = script
        self.fail_puts = fail_puts
        self.listed = asyncio.Event()
        self.late: list[asyncio.Task[None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        step = self.script.pop(0) if request.method == "POST" and self.script else "pass"
        if request.method == "PUT" and self.fail_puts:
            return httpx.Response(503, json={"type": "api_error", "message": "down"})
        if step == "lost":
            return httpx.Response(500, json={"type": "api_error", "message": "lost"})
        if step == "late":
            self.listed.clear()
            self.late.append(asyncio.create_task(self.send_after_listing(request)))
            raise httpx.ReadTimeout("scripted timeout", request=request)
        response = await self.inner.handle_async_request(request)
        if request.method == "GET":
            self.listed.set()
        if step == "committed":
            await response.aread()
            await response.aclose()
            return httpx.Response(500, json={"type": "api_error", "message": "committed"})
        return response

    async def send_after_listing(self, request: httpx.Request) -> None:
        await asyncio.wait_for(self.listed.wait(), timeout=30)
        response = await self.inner.handle_async_request(request)
        await response.aread()
        await response.aclose()

    async def aclose(self) -> None:
        await asyncio.gather(*self.late)
        await self.inner.aclose()


async def apply_scripted(
    emu: Emulator,
    journal: Journal,
    desired: Mapping[str, DesiredGroup],
    script: list[str],
    *,
    fail_puts: bool = False,
) -> tuple[ApplyResult, ChangeRecord]:
    plan = await make_plan(emu, journal, desired)
    run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
    transport = ScriptedPosts(script, fail_puts=fail_puts)
    async with client_for(emu, transport=transport, max_attempts=2) as client:
        result = await apply_plan(plan, desired, client, journal, run, seen_ids=ids(emu))
    [row] = journal.history(limit=1)[0].changes
    return result, row


async def test_a_create_whose_archive_step_fails_is_kept_and_archived_next_time(
    emu: Emulator, journal: Journal
) -> None:
    desired = spec(DesiredGroup("old", "Old Course", archived=True))
    result, row = await apply_scripted(emu, journal, desired, [], fail_puts=True)
    [group] = emu.state.groups()
    assert result.failed == 1 and row.http_status == 503 and row.group_id == group["id"]
    assert f"created group {group['id']} but could not archive it" in row.error
    assert journal.managed()["old"].group_id == group["id"]
    # force: archiving 1 of 1 managed groups is over the small-account safety limit
    plan, result = await apply(emu, journal, desired, policy=Policy(force=True))
    assert [(c.action, c.group_id) for c in plan.changes] == [(Action.ARCHIVE, group["id"])]
    assert result.applied == 1 and emu.state.get(group["id"])["archived_at"] is not None
    assert len(emu.state.groups()) == 1


async def test_an_ambiguous_create_that_committed_is_adopted(
    emu: Emulator, journal: Journal
) -> None:
    desired = spec(DesiredGroup("cs101", "CS 101"))
    result, row = await apply_scripted(emu, journal, desired, ["committed"])
    assert result.applied == 1 and row.note == "adopted after ambiguous create"
    [group] = emu.state.groups()
    assert journal.managed()["cs101"].group_id == group["id"] == row.group_id
    assert emu.count("POST") == 1


async def test_an_ambiguous_create_that_did_nothing_is_sent_once_more(
    emu: Emulator, journal: Journal
) -> None:
    desired = spec(DesiredGroup("cs101", "CS 101"))
    result, row = await apply_scripted(emu, journal, desired, ["lost"])
    assert result.applied == 1 and "sent again" in row.note and row.attempts == 2
    assert names(emu) == Counter({"CS 101": 1})


@pytest.mark.parametrize(
    ("script", "status", "groups"),
    [(["lost", "lost"], "failed", 0), (["lost", "committed"], "applied", 1)],
)
async def test_a_second_ambiguous_create_never_makes_a_third_attempt_or_a_duplicate(
    emu: Emulator, journal: Journal, script: list[str], status: str, groups: int
) -> None:
    _, row = await apply_scripted(emu, journal, spec(DesiredGroup("k", "K")), script)
    assert row.status == status and row.attempts == 2
    assert len(emu.state.groups()) == groups
    assert journal.pending_changes() == []


async def test_a_timed_out_create_is_left_to_the_next_plan_not_sent_again(
    emu: Emulator, journal: Journal
) -> None:
    desired = spec(DesiredGroup("cs101", "CS 101", members=frozenset({"ada"})))
    result, row = await apply_scripted(emu, journal, desired, ["late"])
    assert result.failed == 1 and "not sent again" in row.error
    assert row.status == "failed" and journal.pending_changes() == []
    [late] = emu.state.groups()  # the POST that was still running committed after all
    plan, result = await apply(emu, journal, desired)
    assert [(c.action, c.group_id) for c in plan.changes] == [(Action.ADOPT, late["id"])]
    assert names(emu) == Counter({"CS 101": 1})


@pytest.mark.parametrize("offset_s", [-3600, 3600], ids=["server-1h-behind", "server-1h-ahead"])
async def test_every_create_ambiguous_under_a_skewed_server_clock_makes_one_group_per_key(
    emu: Emulator, journal: Journal, offset_s: int
) -> None:
    now = int(time.time())
    # Made half an hour ago by the server's clock, pinned by a key: not any create's group.
    pinned = emu.state.add_group("Seminar", created_at=now + offset_s - 1800)
    desired = spec(
        DesiredGroup("pinned", "Seminar", id=pinned["id"]),
        DesiredGroup("sem-a", "Seminar", members=frozenset({"ada"})),  # names are not unique
        DesiredGroup("sem-b", "Seminar", members=frozenset({"grace"})),
        DesiredGroup("solo", "Solo"),
        DesiredGroup("old", "Old", archived=True),  # its archive PUT is ambiguous too
    )
    plan = await make_plan(emu, journal, desired)
    # Every write commits, then its answer is lost (503 or a dropped connection): the archive
    # PUT is retried to its last attempt.
    emu.faults.update(clock_offset_s=offset_s, ambiguous_fraction=1.0, seed=11)
    _, result = await apply(emu, journal, desired, plan=plan, sleep=no_wait)
    emu.faults.update(ambiguous_fraction=0.0)

    assert (result.applied, result.failed) == (5, 0), result.failures
    assert emu.count("POST") == 4  # one per create: none was sent twice
    assert names(emu) == Counter({"Seminar": 3, "Solo": 1, "Old": 1})
    managed = journal.managed()
    assert len({mg.group_id for mg in managed.values()}) == 5  # one group per key
    assert managed["pinned"].group_id == pinned["id"]
    for key in ("sem-a", "sem-b", "solo", "old"):
        group = emu.state.get(managed[key].group_id)
        assert group["name"] == desired[key].name
        assert group["created_at"] == pytest.approx(now + offset_s, abs=60)
        assert members(group) == (desired[key].members or set())
    assert emu.state.get(managed["old"].group_id)["archived_at"] is not None
    creates = [r for r in rows(journal) if r.action == "create"]
    assert {r.key: r.group_id for r in creates} == {
        k: managed[k].group_id for k in ("sem-a", "sem-b", "solo", "old")
    }
    assert all(r.status == "applied" for r in creates)
    assert all(r.note.startswith("adopted after ambiguous create") for r in creates)
    assert journal.pending_changes() == []
    assert (await make_plan(emu, journal, desired)).empty


async def test_a_crashed_create_is_recovered_whatever_the_server_clock(
    emu: Emulator, journal: Journal
) -> None:
    run = journal.start_run(trigger="schedule", mode="apply", spec_digest="d")
    journal.begin_change(run, Change("club", Action.CREATE, Cause.SPEC, "Club"))
    made = emu.state.add_group("Club", created_at=int(time.time()) - 3600)  # server 1 h behind
    async with client_for(emu) as client:
        await recover_pending(client, journal)
    assert journal.managed()["club"].group_id == made["id"]


@pytest.mark.parametrize(
    "faults",
    [
        # a flaky vendor: 20% 5xx, 429s from a rate limit, 5% ambiguous writes; about 270
        # requests through a limit of 15 a second take 4 s
        pytest.param(
            {"error_fraction": 0.2, "ambiguous_fraction": 0.05, "rate_limit_per_s": 15},
            marks=pytest.mark.slow,
        ),
        # ambiguity-heavy, so the re-list/adopt path runs many times
        {"error_fraction": 0.2, "ambiguous_fraction": 0.4},
    ],
)
async def test_injected_faults_never_duplicate_or_lose_a_change(
    emu: Emulator, journal: Journal, faults: dict
) -> None:
    def want(n: int) -> DesiredGroup:
        return DesiredGroup(
            f"g{n:02}", f"Group {n}", members=frozenset({CONTACTS[n % 5]}), archived=n % 4 == 0
        )

    desired = spec(*(want(n) for n in range(24)))
    # Retry-After omitted: the client's own (test-fast) backoff paces the 429 retries.
    emu.faults.update(seed=7, retry_after_missing_fraction=1.0, **faults)
    for _ in range(6):  # repeated apply, as the daemon would
        plan = await make_plan(emu, journal, desired)
        if plan.empty:
            break
        await apply(emu, journal, desired, plan=plan)
    assert emu.count(status=503) + emu.count(status=500) > 0
    assert faults.get("rate_limit_per_s") is None or emu.count(status=429) > 0
    emu.faults.update(ambiguous_fraction=0.0, error_fraction=0.0, rate_limit_per_s=None)
    assert (await make_plan(emu, journal, desired)).empty
    assert names(emu) == Counter(d.name for d in desired.values())
    managed = journal.managed()
    for key, d in desired.items():
        group = emu.state.get(managed[key].group_id)
        assert members(group) == d.members and (group["archived_at"] is not None) == d.archived
    history = rows(journal)
    assert journal.pending_changes() == []

    # An adoption that edits nothing (a group an earlier round's timed-out create made, found
    # again by name) is journal-only: it settles with no request. Every other change was sent.
    def sent(r: ChangeRecord) -> bool:
        edits = r.diff or r.members_added or r.members_removed or r.set_archived is not None
        return r.action is not Action.ADOPT or bool(edits)

    odd = [
        r for r in history if r.status not in ("applied", "failed") or (sent(r) and r.attempts < 1)
    ]
    assert odd == [], [r.summary for r in odd]
    assert any(r.note and "ambiguous" in r.note for r in history)


async def test_recover_pending_settles_what_a_crash_left(emu: Emulator, journal: Journal) -> None:
    run = journal.start_run(trigger="schedule", mode="apply", spec_digest="d")
    gone = emu.state.add_group("Gone")
    journal.set_managed("gone", gone["id"], AppliedState("Gone", None, None, frozenset(), False))
    sibling = emu.state.add_group("Same Name")  # another key's group, with the same name
    journal.set_managed(
        "sibling", sibling["id"], AppliedState("Same Name", None, None, frozenset(), False)
    )

    def pending(key: str, action: Action, name: str, group_id: str | None = None) -> int:
        return journal.begin_change(run, Change(key, action, Cause.SPEC, name, group_id))

    pending("made", Action.CREATE, "Made")
    made = emu.state.add_group("Made")  # the POST went through, then the process died
    pending("lost", Action.CREATE, "Never Made")
    pending("same", Action.CREATE, "Same Name")
    pending("upd", Action.UPDATE, "Upd", "someid")
    pending("gone", Action.DELETE, "Gone", gone["id"])
    emu.state.delete_group(gone["id"])

    async with client_for(emu) as client:
        notes = await recover_pending(client, journal)
    assert notes == [
        f"made: crashed mid-create; adopted group {made['id']}, the one unmanaged group with its"
        " name",
        "lost: crashed mid-create; no group found, will be created by the next plan",
        "same: crashed mid-create; no group found, will be created by the next plan",
        "upd: crashed; outcome unknown, the next plan re-checks",
        "gone: crashed mid-delete; the group is gone, key forgotten",
    ]
    assert journal.pending_changes() == []
    assert {r.status for r in rows(journal)} == {"interrupted"}
    assert {k: mg.group_id for k, mg in journal.managed().items()} == {
        "made": made["id"],
        "sibling": sibling["id"],
    }

    desired = spec(
        DesiredGroup("made", "Made"),
        DesiredGroup("lost", "Never Made"),
        DesiredGroup("sibling", "Same Name"),
    )
    plan, result = await apply(emu, journal, desired)
    assert [(c.key, c.action) for c in plan.changes] == [("lost", Action.CREATE)]
    assert result.applied == 1
    assert names(emu) == Counter({"Made": 1, "Never Made": 1, "Same Name": 1})


async def test_a_crashed_recreate_of_a_vanished_group_is_adopted_not_sent_twice(
    emu: Emulator, journal: Journal
) -> None:
    old = emu.state.add_group("Club")
    journal.set_managed("club", old["id"], AppliedState("Club", None, None, frozenset(), False))
    emu.state.delete_group(old["id"])  # deleted by hand; the next apply recreates it...
    run = journal.start_run(trigger="schedule", mode="apply", spec_digest="d")
    journal.begin_change(run, Change("club", Action.CREATE, Cause.DRIFT, "Club"))
    made = emu.state.add_group("Club")  # ...its POST lands, then the process dies

    async with client_for(emu) as client:
        notes = await recover_pending(client, journal)
    assert notes == [
        f"club: crashed mid-create; adopted group {made['id']}, the one unmanaged group with its"
        " name"
    ]
    assert journal.managed()["club"].group_id == made["id"]

    plan, _ = await apply(emu, journal, spec(DesiredGroup("club", "Club")))
    assert plan.changes == ()
    assert names(emu) == Counter({"Club": 1})


async def test_a_put_that_committed_without_a_clear_answer_is_confirmed_by_reading(
    emu: Emulator, journal: Journal
) -> None:
    desired = spec(DesiredGroup("a", "A"))
    await apply(emu, journal, desired)
    renamed = spec(DesiredGroup("a", "A, renamed"))
    plan = await make_plan(emu, journal, renamed)
    # Every PUT commits, then its answer is lost (503); the read that follows is clean.
    emu.faults.update(ambiguous_fraction=1.0, ambiguous_mode="503")
    run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
    async with client_for(emu, max_attempts=2) as client:
        result = await apply_plan(plan, renamed, client, journal, run, seen_ids=ids(emu))
    emu.faults.update(ambiguous_fraction=0.0)
    assert (result.applied, result.failed) == (1, 0)
    [row] = [r for r in rows(journal) if r.run_id == run]
    assert row.status == "applied" and "re-reading the group" in row.note
    assert journal.managed()["a"].applied.name == "A, renamed"  # type: ignore[union-attr]


async def test_a_put_that_did_not_commit_still_fails(emu: Emulator, journal: Journal) -> None:
    desired = spec(DesiredGroup("a", "A"))
    await apply(emu, journal, desired)
    plan = await make_plan(emu, journal, spec(DesiredGroup("a", "B")))
    emu.faults.update(error_fraction=1.0)  # 5xx before anything is written
    run = journal.start_run(trigger="test", mode="apply", spec_digest="d")
    async with client_for(emu, max_attempts=2) as client:
        result = await apply_plan(
            plan, spec(DesiredGroup("a", "B")), client, journal, run, seen_ids=ids(emu)
        )
    emu.faults.update(error_fraction=0.0)
    assert (result.applied, result.failed) == (0, 1)
    assert names(emu) == Counter({"A": 1})
