"""A faithful eCampus API emulator (Starlette + uvicorn) with fault injection and counters.

Users run it to try specs without an account (`groupsync emulator`); tests and benchmarks run
the client against it over real HTTP on 127.0.0.1 (`serve_emulator`).
"""

from groupsync.emulator.counters import DROPPED, RequestCounters
from groupsync.emulator.faults import Faults
from groupsync.emulator.server import DEMO_TOKEN, Emulator, build_app, serve_emulator
from groupsync.emulator.state import ApiFailure, EmulatorState
from groupsync.emulator.webhooks import WebhookTarget

__all__ = [
    "DEMO_TOKEN",
    "DROPPED",
    "ApiFailure",
    "Emulator",
    "EmulatorState",
    "Faults",
    "RequestCounters",
    "WebhookTarget",
    "build_app",
    "serve_emulator",
]
