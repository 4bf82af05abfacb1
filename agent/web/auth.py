"""Staff-only endpoints: signed requests from staff devices, the bearer token from the kit
itself, and a brake on guessing.

A staff device on the kit's Wi-Fi signs each request with a key made from the staff token
(:mod:`agent.web.signing`): what it sends cannot be reused or replayed, and the token never
crosses the air. ``Authorization: Bearer <token>`` is taken from the kit's own loopback only
(the command line, the drills, a screen on the kit); from any other address it is refused as
a guess is, right token or not, so the answer tells a listener nothing (docs/security.md).

After ``failures_per_minute`` failures from one address (a wrong or missing credential, a bad
signature), that address gets 429 for the rest of the minute, right credential or not, so
neither the token nor a key can be guessed from the kit's Wi-Fi.

    >>> auth = StaffAuth("s3cret-token-0123456789", failures_per_minute=2)
    >>> auth.check(StaffRequest("GET", "/api/staff/check", b"",
    ...                         authorization="Bearer s3cret-token-0123456789"),
    ...            "127.0.0.1", now=0.0, wall_ms=0)
    >>> auth.check(StaffRequest("GET", "/api/staff/check", b"",
    ...                         authorization="Bearer s3cret-token-0123456789"),
    ...            "10.42.0.7", now=1.0, wall_ms=1000)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    agent.core.errors.Refusal: the staff token is taken from the kit itself only: ...
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from agent.config import Config
from agent.core.errors import Refusal
from agent.web.signing import Signatures, device_key

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0
GUESSES = frozenset({"unauthorized", "forbidden", "bad_signature"})
"""The refusals the brake counts; a stale or replayed signature was made with the key."""


@dataclass(frozen=True)
class StaffRequest:
    """What the staff check reads of a request."""

    method: str
    target: str
    """The path and query as sent (what a signature covers)."""
    body: bytes
    authorization: str | None = None
    signature: str | None = None


def staff_request(request: Request, body: bytes) -> StaffRequest:
    """The parts of ``request`` (whose body, already read, is ``body``) the check needs."""
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
    target = raw_path.split(b"?", 1)[0].decode("latin-1")
    if query := request.scope.get("query_string", b""):
        target += "?" + query.decode("latin-1")
    return StaffRequest(request.method, target, body, request.headers.get("authorization"),
                        request.headers.get("x-staff-signature"))


def is_loopback(client: str) -> bool:
    """``client`` is an address of the kit itself (an IPv4 one mapped into IPv6 too)."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class StaffAuth:
    def __init__(self, token: str, failures_per_minute: int = 10) -> None:
        if len(token) < 16:
            raise ValueError("a staff token has at least 16 characters")
        self._token = token.encode()
        self._limit = failures_per_minute
        self._failures: dict[str, deque[float]] = {}
        self.signatures = Signatures(device_key(token))

    def check(self, request: StaffRequest, client: str, now: float, wall_ms: int) -> None:
        """Return if ``request`` carries a staff credential ``client`` may use; raise a
        :class:`Refusal` that says what is wrong. ``now`` is monotonic seconds (the brake),
        ``wall_ms`` the kit's clock (signatures)."""
        self._brake(client, now)
        try:
            self._credential(request, client, wall_ms)
        except Refusal as refusal:
            if refusal.code in GUESSES:
                self._failed(client, now)
            raise

    def _credential(self, request: StaffRequest, client: str, wall_ms: int) -> None:
        if request.signature is not None:
            self.signatures.check(request.method, request.target, request.body,
                                  request.signature, wall_ms)
            return
        if not request.authorization:
            raise Refusal("unauthorized", "this is a staff endpoint: sign the request with "
                          "X-Staff-Signature (docs/security.md), or on the kit itself send "
                          "'Authorization: Bearer <staff token>'")
        if not is_loopback(client):
            raise Refusal("forbidden", "the staff token is taken from the kit itself only: "
                          "on the Wi-Fi anyone could read it; sign the request instead "
                          "(docs/security.md)")
        scheme, _, given = request.authorization.partition(" ")
        if not (scheme.lower() == "bearer"
                and hmac.compare_digest(given.strip().encode(), self._token)):
            raise Refusal("forbidden", "the staff token is wrong")

    def _brake(self, client: str, now: float) -> None:
        failures = self._failures.get(client)
        if failures:
            while failures and now - failures[0] > WINDOW_SECONDS:
                failures.popleft()
            if len(failures) >= self._limit:
                retry = max(1, int(WINDOW_SECONDS - (now - failures[0])) + 1)
                raise Refusal("too_many_attempts",
                              f"too many failed staff requests; try again in {retry} s",
                              retry_after=retry)

    def _failed(self, client: str, now: float) -> None:
        self._failures.setdefault(client, deque()).append(now)
        if len(self._failures) > 10_000:  # a flood of addresses must not grow memory forever
            self._failures.pop(next(iter(self._failures)))


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
