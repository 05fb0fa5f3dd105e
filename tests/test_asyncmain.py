"""A command's coroutine result comes back without asyncio formatting its repr."""

from __future__ import annotations

import anyio.lowlevel
import pytest

from groupsync import asyncmain


class Planned:
    """Stands for a 100,000-group plan, whose repr costs a second and 170 MiB. asyncio would
    swallow an error raised here (reprlib), so the calls are counted."""

    reprs = 0

    def __repr__(self) -> str:
        Planned.reprs += 1
        return "Planned()"


async def plan() -> Planned:
    await anyio.lowlevel.checkpoint()
    return Planned()


def test_the_result_is_handed_back_and_never_repred() -> None:
    assert isinstance(asyncmain.run(plan), Planned)
    assert Planned.reprs == 0


def test_an_error_in_the_coroutine_propagates() -> None:
    async def fails() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        asyncmain.run(fails)
