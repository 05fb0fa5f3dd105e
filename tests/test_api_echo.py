"""A server that echoes the Authorization header in its errors: no piece of the token survives.

The emulator's `echo_auth` fault puts the header in the error's `type`, in its `message`, or
deep in a long HTML page, so that a cut before redaction would keep the token's first characters.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from groupsync.api import ApiError, Client, InvalidRequest
from groupsync.emulator import Faults, serve_emulator
from groupsync.secret import MASK
from helpers import api_client, token_pieces

TOKEN = "sk-live-9f8e7d6c5b4a3210-AbCdEfGhIjKl"
MODES = ("type", "message", "html")


def every_text(error: ApiError) -> str:
    """Everything an error can show: its text, its repr, each of its fields."""
    return "\n".join(map(str, [error, repr(error), error.args, *vars(error).values()]))


def connect(emulator: Any) -> Client:
    return api_client(emulator.base_url, TOKEN, max_requests_per_s=1000, timeout_s=5)


@pytest.mark.parametrize("mode", MODES)
def test_the_emulator_echoes_the_header(mode: str) -> None:
    with serve_emulator(token=TOKEN, faults=Faults(echo_auth=mode)) as emulator:
        answer = httpx.get(
            emulator.base_url + "/groups",
            headers={"Authorization": f"Bearer {TOKEN}"},
            verify=False,
        )
    assert answer.status_code == 400
    if mode == "html":
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.text.index(TOKEN) == 185 and len(answer.text) > 1000
    else:
        assert f"Bearer {TOKEN}" in answer.json()[mode]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_an_echoed_token_is_in_no_field_of_the_error(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="groupsync")
    with serve_emulator(token=TOKEN, faults=Faults(echo_auth=mode)) as emulator:
        async with connect(emulator) as client:
            with pytest.raises(InvalidRequest) as caught:
                await client.list_groups(archived=False)
    error = caught.value
    assert error.status == 400
    assert token_pieces(every_text(error), TOKEN) == []
    assert token_pieces(caplog.text, TOKEN) == []
    assert MASK in (error.type if mode == "type" else error.message)
    if mode == "html":  # the page is still shown, cut after it was redacted
        assert "400 Bad Request" in error.message and len(error.message) < 300


@pytest.mark.anyio
async def test_an_echo_on_writes_only_fails_the_write_cleanly() -> None:
    faults = Faults(echo_auth="message", echo_auth_writes_only=True)
    with serve_emulator(token=TOKEN, faults=faults) as emulator:
        async with connect(emulator) as client:
            assert await client.list_groups(archived=False) == []
            with pytest.raises(InvalidRequest) as caught:
                await client.create_group(name="Chess")
        assert emulator.state.groups() == []
    assert token_pieces(every_text(caught.value), TOKEN) == []
    assert "Authorization: Bearer " + MASK in caught.value.message
