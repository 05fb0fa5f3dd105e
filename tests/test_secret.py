"""Secret.redact: no 8-character piece of a secret survives, however the text carries it."""

from __future__ import annotations

import pytest

from groupsync.secret import MASK, Secret, redact_secrets
from helpers import token_pieces

TOKEN = "sk-live-9f8e7d6c5b4a3210"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"HTTP 400 Bearer {TOKEN}: bad", f"HTTP 400 Bearer {MASK}: bad"),
        (f"cut: '{TOKEN[:15]}…", f"cut: '{MASK}…"),  # a page cut inside the token
        (f"<td>{TOKEN[4:12]}</td>", f"<td>{MASK}</td>"),  # a middle piece alone
        (f"x{TOKEN}{TOKEN}y", MASK),  # the whole run of token characters goes
        (f"{TOKEN[:12]}\n{TOKEN[12:]}", f"{MASK}\n{MASK}"),  # split by a line break
        (f"a={TOKEN}&b=1", f"a={MASK}&b=1"),
        (f"short {TOKEN[:7]} piece", f"short {TOKEN[:7]} piece"),  # 7 characters: no leak
        ("nothing here", "nothing here"),
    ],
)
def test_redact_masks_every_run_holding_a_piece(text: str, expected: str) -> None:
    redacted = Secret(TOKEN).redact(text)
    assert redacted == expected
    assert token_pieces(redacted, TOKEN) == []


def test_a_secret_shorter_than_a_piece_is_masked_whole() -> None:
    assert Secret("hunter2").redact("pw=hunter2; hunter") == f"pw={MASK}; hunter"


def test_an_empty_secret_changes_nothing() -> None:
    assert Secret("").redact("text") == "text"


def test_redact_secrets_masks_the_secrets_still_alive() -> None:
    held = Secret(TOKEN)
    dropped = Secret("another-token-0123456789")
    dropped_value = dropped.reveal()
    del dropped
    text = redact_secrets(f"{TOKEN} {dropped_value}")
    assert text == f"{MASK} {dropped_value}"
    assert held  # alive until here
