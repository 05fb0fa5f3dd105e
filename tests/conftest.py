"""Shared fixtures. Everything runs on 127.0.0.1 only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from groupsync import secret
from groupsync.emulator import Emulator, serve_emulator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _secrets_end_with_their_test() -> Iterator[None]:
    """Every Secret not yet collected is masked in journal rows and log lines (redact_secrets).
    In one test process a test's secrets outlive it as garbage in reference cycles, and mask
    what later tests write: an emulator's token "t" masks every "t". As in a process of their
    own, they end with the test that made them."""
    before = set(secret._alive)
    yield
    for key in set(secret._alive) - before:
        secret._alive.pop(key, None)


SEED_FILE = Path(__file__).resolve().parent.parent / "examples" / "seed.yaml"
GRACE_S = 0.1
"""A fixture's emulator stops after its test's assertions, so nothing waits for the requests
still in flight (held by injected latency, say): they are cancelled after 0.1 s, not 2 s."""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """An empty eCampus emulator on 127.0.0.1 accepting the token "test-token".

    Its /_admin endpoint takes "test-admin-token" (emulator.admin_url).
    """
    with serve_emulator(token="test-token", admin_token="test-admin-token", grace_s=GRACE_S) as emu:
        yield emu


@pytest.fixture
def seeded_emulator() -> Iterator[Emulator]:
    """The emulator loaded from examples/seed.yaml (token "test-token")."""
    if not SEED_FILE.exists():
        pytest.skip("examples/seed.yaml does not exist yet")
    with serve_emulator(
        token="test-token", admin_token="test-admin-token", seed=SEED_FILE, grace_s=GRACE_S
    ) as emu:
        yield emu


@pytest.fixture
def emulator_http(emulator: Emulator) -> Iterator[httpx.Client]:
    """A plain httpx client on the `emulator` fixture, authenticated with "test-token"."""
    # verify=False: plain HTTP anyway, and loading the CA bundle costs ~0.1 s per client.
    with httpx.Client(
        base_url=emulator.base_url,
        headers={"Authorization": "Bearer test-token"},
        timeout=10,
        verify=False,
    ) as client:
        yield client
