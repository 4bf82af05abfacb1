"""Signed staff requests: nothing a listener on the kit's Wi-Fi can read and reuse, or replay.

Every customer has the Wi-Fi passphrase, so anyone in range can read what a staff device sends
(docs/security.md). The staff token therefore never travels: a staff device derives a key from it
once (:func:`device_key`, the same sum in ``static/staffsign.js``) and signs each staff request
with that key. The signature covers the method, the path with its query, a timestamp, a nonce
and the SHA-256 of the body, and the kit takes each signature once:

- ``t`` (milliseconds of the Unix epoch) within :data:`WINDOW_MS` of the kit's clock; a device
  whose clock is off hears the kit's time (``stale_signature`` carries ``kit_time_ms``) and
  signs again;
- ``n`` not seen before: the nonces of the window are remembered, at most :data:`MAX_NONCES`.
  When that memory is full the oldest is forgotten and the floor rises to its time: a signature
  as old as a forgotten one is refused as stale, so forgetting never lets a replay through
  (nor does the kit's clock stepping back: expired nonces raise the floor too).

    >>> key = device_key("s3cret-token-0123456789")
    >>> signatures = Signatures(key)
    >>> header = sign(key, "POST", "/api/staff/mode", b'{"offline":true}', 5_000, "n" * 22)
    >>> signatures.check("POST", "/api/staff/mode", b'{"offline":true}', header, now_ms=5_100)
    >>> signatures.check("POST", "/api/staff/mode", b'{"offline":true}', header, now_ms=5_200)
    Traceback (most recent call last):
    ...
    agent.core.errors.Refusal: this signed request was already taken once: a replay
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re

from agent.core.errors import Refusal

KEY_LABEL = b"dropkit staff key 1"
"""What the staff token signs to make the device key."""
SCHEME = "dropkit-staff-1"
"""The first line of every signed message (a later scheme gets another)."""
WINDOW_MS = 60_000
"""How far a signature's time may be from the kit's clock, either way."""
MAX_NONCES = 1024
"""Nonces remembered at most (about 200 bytes each); 8 staff calls a second over the window."""
HEADER = re.compile(r"t=(\d{1,15}),n=([A-Za-z0-9_-]{16,64}),s=([0-9a-f]{64})")
FORM = "t=<ms since 1970>,n=<16 to 64 of A-Z a-z 0-9 _ ->,s=<64 hex>"


def device_key(token: str) -> bytes:
    """The key a staff device signs with: HMAC-SHA256(token, :data:`KEY_LABEL`)."""
    return hmac.new(token.encode(), KEY_LABEL, hashlib.sha256).digest()


def message(method: str, target: str, body: bytes, time_ms: int, nonce: str) -> bytes:
    """What is signed: one line each for the scheme, method, path?query, time, nonce and the
    body's SHA-256 (hex)."""
    return "\n".join([SCHEME, method.upper(), target, str(time_ms), nonce,
                      hashlib.sha256(body).hexdigest()]).encode()


def sign(key: bytes, method: str, target: str, body: bytes, time_ms: int, nonce: str) -> str:
    """The ``X-Staff-Signature`` header for a request (what the staff page computes)."""
    mac = hmac.new(key, message(method, target, body, time_ms, nonce), hashlib.sha256)
    return f"t={time_ms},n={nonce},s={mac.hexdigest()}"


def bad_signature(detail: str) -> Refusal:
    return Refusal("bad_signature", f"{detail}; a staff request is signed with the key made "
                   "from the staff token (docs/security.md)")


class Nonces:
    """The nonces taken within the window, each with its time; bounded, with a rising floor."""

    def __init__(self, window_ms: int = WINDOW_MS, size: int = MAX_NONCES) -> None:
        self.window_ms, self.size = window_ms, size
        self._times: dict[str, int] = {}
        self._oldest: list[tuple[int, str]] = []  # a heap by time
        self.floor_ms = -1
        """A signature at or before this time is refused: its nonce may have been forgotten."""

    def __len__(self) -> int:
        return len(self._times)

    def take(self, nonce: str, time_ms: int, now_ms: int) -> None:
        """Remember ``nonce``; refuse it when it was taken before or its time is out of reach."""
        while self._oldest and self._oldest[0][0] < now_ms - self.window_ms:
            self._forget()
        if time_ms <= self.floor_ms or abs(now_ms - time_ms) > self.window_ms:
            raise Refusal("stale_signature", "the signature's time is too far from the kit's "
                          "clock: sign again with kit_time_ms", kit_time_ms=now_ms)
        if nonce in self._times:
            raise Refusal("replayed", "this signed request was already taken once: a replay")
        while len(self._times) >= self.size:
            self._forget()
            if time_ms <= self.floor_ms:
                raise Refusal("stale_signature", "the kit took many signed requests since "
                              "this one was signed: sign again with kit_time_ms",
                              kit_time_ms=now_ms)
        self._times[nonce] = time_ms
        heapq.heappush(self._oldest, (time_ms, nonce))

    def _forget(self) -> None:
        time_ms, nonce = heapq.heappop(self._oldest)
        del self._times[nonce]
        self.floor_ms = max(self.floor_ms, time_ms)


class Signatures:
    """Checks ``X-Staff-Signature`` headers made with one device key."""

    def __init__(self, key: bytes, nonces: Nonces | None = None) -> None:
        self._key = key
        self.nonces = Nonces() if nonces is None else nonces

    def check(self, method: str, target: str, body: bytes, header: str, now_ms: int) -> None:
        """Return for a good signature seen for the first time; raise the :class:`Refusal`
        that says why not (``bad_signature``, ``stale_signature``, ``replayed``)."""
        form = HEADER.fullmatch(header.strip())
        if form is None:
            raise bad_signature(f"X-Staff-Signature must be {FORM}")
        time_text, nonce, given = form.groups()
        expected = hmac.new(self._key, message(method, target, body, int(time_text), nonce),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given, expected):
            raise bad_signature("the signature does not match: the staff token is wrong, or the "
                                "request was changed on its way")
        self.nonces.take(nonce, int(time_text), now_ms)
