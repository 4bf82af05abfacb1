"""Staff-only endpoints: a bearer token compared in constant time, and a brake on guessing.

After ``failures_per_minute`` wrong or missing tokens from one address, that address gets 429
for the rest of the minute, right token or not, so a token cannot be guessed from the kit's
Wi-Fi.

    >>> auth = StaffAuth("s3cret-token-0123456789", failures_per_minute=2)
    >>> auth.check("Bearer s3cret-token-0123456789", "10.0.0.7", now=0.0)
    >>> auth.check("Bearer nope", "10.0.0.7", now=1.0)
    Traceback (most recent call last):
    ...
    agent.core.errors.Refusal: the staff token is wrong
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections import deque
from pathlib import Path

from agent.config import Config
from agent.core.errors import Refusal

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0


class StaffAuth:
    def __init__(self, token: str, failures_per_minute: int = 10) -> None:
        if len(token) < 16:
            raise ValueError("a staff token has at least 16 characters")
        self._token = token.encode()
        self._limit = failures_per_minute
        self._failures: dict[str, deque[float]] = {}

    def check(self, authorization: str | None, client: str, now: float) -> None:
        """Return if ``authorization`` carries the staff token; raise a :class:`Refusal`."""
        failures = self._failures.get(client)
        if failures:
            while failures and now - failures[0] > WINDOW_SECONDS:
                failures.popleft()
            if len(failures) >= self._limit:
                retry = max(1, int(WINDOW_SECONDS - (now - failures[0])) + 1)
                raise Refusal("too_many_attempts",
                              f"too many wrong staff tokens; try again in {retry} s",
                              retry_after=retry)
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              self._token):
            return
        self._failures.setdefault(client, deque()).append(now)
        if len(self._failures) > 10_000:  # a flood of addresses must not grow memory forever
            self._failures.pop(next(iter(self._failures)))
        if not authorization:
            raise Refusal("unauthorized", "this is a staff endpoint: send "
                          "'Authorization: Bearer <staff token>'")
        raise Refusal("forbidden", "the staff token is wrong")


def staff_token(config: Config, state_dir: Path) -> str:
    """The configured token, else one kept in the state directory (made on first start)."""
    token = config.staff_token()
    if token:
        return token
    path = state_dir / "staff-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    log.info("made a staff token in %s", path)
    return token
