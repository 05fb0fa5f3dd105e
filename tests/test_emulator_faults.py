"""Fault injection (latency, 429, 5xx, ambiguous writes), counters and the admin endpoint."""

from __future__ import annotations

import threading
import time

import anyio
import httpx
import pytest

from groupsync.asgiserve import GRACE_S
from groupsync.emulator import DROPPED, Emulator, Faults, serve_emulator

ADMIN = {"Authorization": "Bearer test-admin-token"}


def admin(emulator: Emulator) -> httpx.Client:
    return httpx.Client(base_url=emulator.admin_url, headers=ADMIN, verify=False, timeout=10)


# --- latency and concurrency -------------------------------------------------------------


@pytest.mark.anyio
async def test_latency_delays_each_request_and_requests_overlap(emulator: Emulator) -> None:
    emulator.faults.latency_s = 0.3
    elapsed: list[float] = []

    async with httpx.AsyncClient(
        base_url=emulator.base_url, headers={"Authorization": "Bearer test-token"}, verify=False
    ) as client:

        async def one() -> None:
            start = time.monotonic()
            r = await client.get("/groups")
            elapsed.append(time.monotonic() - start)
            assert r.status_code == 200

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
    assert len(elapsed) == 5 and min(elapsed) >= 0.3
    assert emulator.max_in_flight == 5  # asyncio.sleep: the five waited at the same time
    assert len(emulator.request_times) == 5


# --- rate limit --------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    emulator.faults.rate_limit_per_s = 2  # burst of 2, then one token per 0.5 s
    answers = [emulator_http.post("/groups", json={"name": f"g{i}"}) for i in range(6)]
    statuses = [r.status_code for r in answers]
    assert statuses[:2] == [201, 201] and statuses.count(429) >= 3
    for r in answers:
        if r.status_code == 429:
            assert r.headers["Retry-After"] == "1"
            assert r.json()["type"] == "invalid_request"
    assert len(emulator.state.groups()) == statuses.count(201)  # a 429 commits nothing
    assert emulator.count(status=429) == statuses.count(429)


def test_429_without_retry_after(emulator: Emulator, emulator_http: httpx.Client) -> None:
    emulator.faults.update(rate_limit_per_s=1, retry_after_missing_fraction=1.0)
    answers = [emulator_http.get("/groups") for _ in range(4)]
    limited = [r for r in answers if r.status_code == 429]
    assert len(limited) >= 2
    assert all("Retry-After" not in r.headers for r in limited)


def test_retry_after_missing_only_on_a_fraction(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    emulator.faults.update(rate_limit_per_s=0.01, retry_after_missing_fraction=0.5, seed=3)
    limited = [emulator_http.get("/groups") for _ in range(30)][1:]
    assert all(r.status_code == 429 for r in limited)
    with_header = sum("Retry-After" in r.headers for r in limited)
    assert 0 < with_header < len(limited)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in limited if "Retry-After" in r.headers)


# --- 5xx -----------------------------------------------------------------------------------


def test_error_fraction_is_random_5xx_and_reproducible(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    def run() -> list[int]:
        emulator.faults.update(error_fraction=0.5, seed=7)
        return [emulator_http.get("/groups").status_code for _ in range(40)]

    statuses = run()
    assert set(statuses) <= {200, 500, 502, 503}
    assert 200 in statuses and len(set(statuses) - {200}) >= 2
    assert run() == statuses
    r = next(r for r in (emulator_http.get("/groups") for _ in range(40)) if r.status_code >= 500)
    assert r.json()["type"] == "api_error"


def test_injected_5xx_commits_nothing(emulator: Emulator, emulator_http: httpx.Client) -> None:
    emulator.faults.error_fraction = 1.0
    g = emulator.state.add_group("keep")
    assert emulator_http.post("/groups", json={"name": "x"}).status_code >= 500
    assert emulator_http.delete(f"/groups/{g['id']}").status_code >= 500
    assert [x["name"] for x in emulator.state.groups()] == ["keep"]


# --- ambiguous writes ------------------------------------------------------------------------


def test_ambiguous_503_after_commit(emulator: Emulator, emulator_http: httpx.Client) -> None:
    g = emulator.state.add_group("G")
    emulator.faults.update(ambiguous_fraction=1.0, ambiguous_mode="503")
    r = emulator_http.post("/groups", json={"name": "made"})
    assert r.status_code == 503 and r.json()["type"] == "api_error"
    assert {x["name"] for x in emulator.state.groups()} == {"G", "made"}
    assert emulator_http.put(f"/groups/{g['id']}", json={"name": "G2"}).status_code == 503
    assert emulator.state.get(g["id"])["name"] == "G2"
    assert emulator_http.delete(f"/groups/{g['id']}").status_code == 503
    assert emulator.state.get(g["id"]) is None
    assert emulator_http.get("/groups").status_code == 200  # reads are never ambiguous
    assert emulator.count(method="POST", path="/v1/groups", status=503) == 1


def test_ambiguous_drop_after_commit(emulator: Emulator, emulator_http: httpx.Client) -> None:
    emulator.faults.update(ambiguous_fraction=1.0, ambiguous_mode="drop")
    with pytest.raises(httpx.RemoteProtocolError):
        emulator_http.post("/groups", json={"name": "made"})
    assert [x["name"] for x in emulator.state.groups()] == ["made"]
    assert emulator.count(method="POST", path="/v1/groups", status=DROPPED) == 1
    emulator.faults.ambiguous_fraction = 0
    assert emulator_http.post("/groups", json={"name": "next"}).status_code == 201


@pytest.mark.anyio
async def test_ambiguous_drop_seen_by_an_async_client(emulator: Emulator) -> None:
    emulator.faults.update(ambiguous_fraction=1.0, ambiguous_mode="drop")
    async with httpx.AsyncClient(
        base_url=emulator.base_url, headers={"Authorization": "Bearer test-token"}, verify=False
    ) as client:
        await client.get("/groups")  # a pooled keep-alive connection, then dropped
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/groups", json={"name": "made"})
    assert len(emulator.state.groups()) == 1


def test_refused_write_is_answered_honestly(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    emulator.faults.update(ambiguous_fraction=1.0, ambiguous_mode="drop")
    assert emulator_http.post("/groups", json={"name": ""}).status_code == 400
    assert emulator_http.put("/groups/nope", json={"name": "x"}).status_code == 404


def test_ambiguous_mode_random_mixes_both(emulator: Emulator, emulator_http: httpx.Client) -> None:
    emulator.faults.update(ambiguous_fraction=1.0, seed=5)
    outcomes = set()
    for i in range(12):
        try:
            outcomes.add(emulator_http.post("/groups", json={"name": f"g{i}"}).status_code)
        except httpx.RemoteProtocolError:
            outcomes.add("drop")
    assert outcomes == {503, "drop"}
    assert len(emulator.state.groups()) == 12


# --- faults object -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"error_fraction": 1.5},
        {"ambiguous_fraction": -0.1},
        {"latency_s": -1},
        {"rate_limit_per_s": 0},
        {"ambiguous_mode": "sometimes"},
        {"post_status": 202},
        {"delete_status": 404},
        {"echo_auth": "cookie"},
        {"override_fields": ["name"]},
        {"override_ids": "g1"},
    ],
)
def test_faults_validate(bad: dict) -> None:
    with pytest.raises(ValueError):
        Faults(**bad)
    faults = Faults()
    with pytest.raises(ValueError):
        faults.update(seed=9, **bad)
    assert faults == Faults()  # all or nothing


def test_echo_auth_on_writes_only_leaves_reads_alone(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    with admin(emulator) as a:
        r = a.put("/faults", json={"echo_auth": "type", "echo_auth_writes_only": True})
        assert r.status_code == 200
    assert emulator_http.get("/groups").status_code == 200
    refused = emulator_http.post("/groups", json={"name": "Chess"})
    assert refused.status_code == 400
    assert refused.json() == {"type": "Bearer test-token", "message": "bad"}
    assert emulator.state.groups() == []


def test_override_fields_garble_the_targeted_objects_in_every_answer(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    target = emulator.state.add_group("Target")["id"]
    other = emulator.state.add_group("Other")["id"]
    emulator.faults.update(override_fields={"archived_at": "yesterday"}, override_ids=[target])
    listed = {g["id"]: g for g in emulator_http.get("/groups").json()["data"]}
    assert listed[target]["archived_at"] == "yesterday"
    assert listed[other]["archived_at"] is None
    assert emulator_http.get(f"/groups/{target}").json()["archived_at"] == "yesterday"
    assert emulator.state.retrieve_group(target)["archived_at"] is None  # the answer only

    emulator.faults.update(override_fields={"name": 42}, override_ids=None)
    created = emulator_http.post("/groups", json={"name": "New"})
    assert created.status_code == 201 and created.json()["name"] == 42
    assert {g["name"] for g in emulator.state.groups()} == {"Target", "Other", "New"}


@pytest.mark.parametrize("path", ["/groups", "/contacts"])
def test_duplicate_ids_repeat_the_cursor_item_on_the_next_page(
    emulator: Emulator, emulator_http: httpx.Client, path: str
) -> None:
    for i in range(5):
        emulator.state.add_group(f"G{i}", members=[f"user{i}"])
    emulator.faults.duplicate_ids = True
    first = emulator_http.get(path, params={"limit": 3}).json()
    cursor = first["data"][-1]["id"]
    second = emulator_http.get(path, params={"limit": 3, "starting_after": cursor}).json()
    ids = [item["id"] for item in second["data"]]
    assert ids[0] == cursor and len(ids) == 3 and len(set(ids)) == 3
    assert second["data"][0] == first["data"][-1]


def test_faults_never_apply_to_admin(emulator: Emulator) -> None:
    emulator.faults.update(error_fraction=1.0, rate_limit_per_s=0.01, latency_s=5)
    with admin(emulator) as a:
        for _ in range(3):
            assert a.get("/counters").status_code == 200


# --- counters ----------------------------------------------------------------------------------


def test_counters_by_method_template_and_status(
    emulator: Emulator, emulator_http: httpx.Client
) -> None:
    g = emulator.state.add_group("G")
    emulator_http.get(f"/groups/{g['id']}")
    emulator_http.get("/groups/nope")
    emulator_http.put(f"/groups/{g['id']}", json={"name": "H"})
    emulator_http.get("/groups", headers={"Authorization": "Bearer wrong"})
    emulator_http.get("/nowhere")
    assert emulator.counters == {
        ("GET", "/v1/groups/{id}", 200): 1,
        ("GET", "/v1/groups/{id}", 404): 1,
        ("PUT", "/v1/groups/{id}", 200): 1,
        ("GET", "/v1/groups", 401): 1,
        ("GET", "/v1/nowhere", 404): 1,
    }
    assert emulator.count(method="GET", path="/v1/groups/{id}") == 2
    assert emulator.count(path="/v1/groups/{id}", status=404) == 1
    assert emulator.count() == 5
    assert len(emulator.request_times) == 5
    assert emulator.max_per_second() >= 1
    emulator.reset_counters()
    assert emulator.count() == 0 and emulator.request_times == []


# --- admin endpoint ----------------------------------------------------------------------------


def test_admin_requires_its_own_token(emulator: Emulator) -> None:
    for headers in ({}, {"Authorization": "Bearer test-token"}):
        with httpx.Client(base_url=emulator.admin_url, headers=headers, verify=False) as c:
            assert c.get("/faults").status_code == 401
            assert c.put("/faults", json={"error_fraction": 1}).status_code == 401
    assert emulator.faults.error_fraction == 0


def test_admin_sets_faults_at_run_time(emulator: Emulator, emulator_http: httpx.Client) -> None:
    with admin(emulator) as a:
        assert a.get("/faults").json() == Faults().as_dict()
        r = a.put("/faults", json={"error_fraction": 1.0, "seed": 1})
        assert r.status_code == 200 and r.json()["error_fraction"] == 1.0
        assert emulator_http.get("/groups").status_code >= 500
        assert a.put("/faults", json={"error_fraction": 3}).status_code == 400
        assert a.put("/faults", json={"nonsense": 1}).status_code == 400
        assert a.put("/faults", json={"latency_s": "slow"}).status_code == 400
        assert a.post("/faults", json={"error_fraction": 0}).json()["error_fraction"] == 0
    assert emulator_http.get("/groups").status_code == 200


def test_admin_counters_and_reset(emulator: Emulator, emulator_http: httpx.Client) -> None:
    emulator.state.add_group("G")
    emulator_http.get("/groups")
    emulator_http.get("/groups")
    with admin(emulator) as a:
        snap = a.get("/counters").json()
        assert snap["counts"] == [
            {"method": "GET", "path": "/v1/groups", "status": 200, "count": 2}
        ]
        assert snap["total"] == 2 and snap["max_in_flight"] == 1 and snap["max_per_second"] >= 1
        assert a.post("/reset").json() == {"reset": True, "state": False}
        assert a.get("/counters").json()["total"] == 0
        assert len(emulator.state.groups()) == 1
        a.post("/reset", json={"state": True})
    assert emulator.state.groups() == [] and emulator_http.get("/groups").json()["data"] == []


def test_admin_is_off_without_an_admin_token() -> None:
    with serve_emulator(token="t") as emu, httpx.Client(verify=False) as c:
        r = c.get(emu.admin_url + "/counters", headers={"Authorization": "Bearer t"})
        assert r.status_code == 404


def test_shutdown_is_bounded_with_a_request_in_flight() -> None:
    outcome: list[object] = []

    def slow_call(url: str) -> None:
        try:
            headers = {"Authorization": "Bearer t"}
            outcome.append(httpx.get(url, headers=headers, timeout=30, verify=False))
        except httpx.TransportError as e:
            outcome.append(e)

    with serve_emulator(token="t", faults=Faults(latency_s=60), grace_s=0.3) as emu:
        caller = threading.Thread(target=slow_call, args=(emu.base_url + "/groups",))
        caller.start()
        for _ in range(200):  # bounded: wait until the request is being served
            if emu.app.counters.in_flight:
                break
            time.sleep(0.01)
        assert emu.app.counters.in_flight == 1
        stopping = time.monotonic()
    caller.join(10)
    assert not caller.is_alive()
    assert 0.3 <= time.monotonic() - stopping < GRACE_S  # the grace it was given, not 2 s
    # uvicorn cancels it after the grace period: a 500 or a closed connection, never a hang.
    answer = outcome[0]
    assert isinstance(answer, httpx.TransportError) or answer.status_code == 500
