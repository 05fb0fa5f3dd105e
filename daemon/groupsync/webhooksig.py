"""The signature of an eCampus webhook: the hex HMAC-SHA256 of the raw body under a shared secret.

One module for both ends (the daemon's receiver checks, the emulator signs), so they cannot drift
apart. Checked over the exact bytes received, before anything parses them, in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from groupsync.secret import Secret

HEADER = "x-ecampus-signature"


def sign(secret: Secret, body: bytes) -> str:
    return hmac.new(secret.reveal().encode(), body, hashlib.sha256).hexdigest()


def verify(secrets: Iterable[Secret], body: bytes, signature: str | None) -> bool:
    """Whether `signature` is the body's under any of `secrets` (several while one rotates).

    Every secret is tried, whatever matched first: the time taken says nothing about which.
    """
    if not signature:
        return False
    given = signature.strip().lower().encode()
    ok = False
    for secret in secrets:
        ok |= hmac.compare_digest(sign(secret, body).encode(), given)
    return ok
