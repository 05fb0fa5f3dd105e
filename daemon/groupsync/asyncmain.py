"""`anyio.run` for a command's one coroutine, its result kept out of asyncio's sight.

At exit, Python 3.11's asyncio.Runner formats the repr of its finished main task, result
included: restoring the SIGINT handler, `signal.getsignal` fails an enum lookup on the handler
(which holds the task) and builds the error message anyway. For the plan of a 100,000-group
account that repr is a second of CPU and 170 MiB of text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """`anyio.run(fn)`, the result handed back outside the main task."""
    result: list[T] = []

    async def main() -> None:
        result.append(await fn())

    anyio.run(main)
    return result[0]
