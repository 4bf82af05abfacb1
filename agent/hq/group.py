"""Several HQ instances sharing the load (``dropkit hq --shared-group``): which instances are
online, and which offline ones' persistent sessions this instance drains (:class:`Group`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("dropkit.hq")


@dataclass
class AdoptedSession:
    """Another instance's session, connected by this one."""

    close: Callable[[], None]  # disconnect it (the broker keeps the session)
    # Set from the session's own network thread when its connection ended by itself.
    ended: threading.Event = field(default_factory=threading.Event)


class Group:
    """One instance's view of its ``--shared-group``: which instances are online, and which
    offline ones' sessions it drains.

    The broker deals a shared subscription's messages round robin to every session in the group,
    connected or not (Mosquitto does), so an instance that is down (killed, stopped, cut off)
    would hold its share of every kit's orders in its persistent session, and the others would
    wait for those receipt links. Each instance announces itself on a retained status topic
    (``online``; its will says ``offline``), and the online instance with the smallest client id
    connects under the client id of every offline one, resuming its session and so taking over
    its share, until that instance comes back (which takes its session back) or stops being
    offline. ``open_session(peer)`` connects such a session and returns its
    :class:`AdoptedSession`.

    An instance is adopted only once it has been offline for ``retry_s``: instances started
    together each see the others' ``offline`` of their last stop before their ``online``, and
    taking a session over from a connected instance makes the broker publish its will
    (``offline``) again.
    """

    def __init__(self, me: str, open_session: Callable[[str], AdoptedSession],
                 retry_s: float = 2.0) -> None:
        self.me = me
        self.open_session = open_session
        self.retry_s = retry_s
        self.status: dict[str, tuple[str, float]] = {}
        self.adopted: dict[str, AdoptedSession] = {}
        self.retry_at: dict[str, float] = {}

    def seen(self, peer: str, status: str, now: float | None = None) -> None:
        """A status message (from the broker's thread); ``now`` on the monotonic clock. The
        same status again (a retained one, sent to each new subscription) changes nothing."""
        if peer != self.me and self.status.get(peer, ("",))[0] != status:
            self.status[peer] = (status, time.monotonic() if now is None else now)

    def wanted(self, now: float) -> set[str]:
        """The sessions this instance should be draining now."""
        status = dict(self.status)
        online = {peer for peer, (s, _) in status.items() if s == "online"}
        if min({self.me} | online) != self.me:
            return set()
        return {peer for peer, (s, since) in status.items()
                if s == "offline" and now - since >= self.retry_s}

    def step(self, now: float) -> None:
        """Adopt and give back sessions as :meth:`wanted` says (from one thread only).

        An adopted session whose connection ended (the instance came back and took it, or the
        broker went away) is adopted again only ``retry_s`` later, so an instance that is
        coming back is not pushed out of its own session before its ``online`` arrives.
        """
        wanted = self.wanted(now)
        for peer in [p for p, adopted in self.adopted.items()
                     if adopted.ended.is_set() or p not in wanted]:
            adopted = self.adopted.pop(peer)
            adopted.close()
            if adopted.ended.is_set():
                log.info("the session of HQ instance %s was taken back (or the broker went "
                         "away)", peer)
                self.retry_at[peer] = now + self.retry_s
            else:
                log.info("gave back the session of HQ instance %s", peer)
        for peer in sorted(wanted - self.adopted.keys()):
            if self.retry_at.get(peer, 0.0) <= now:
                log.info("adopting the session of HQ instance %s, which is offline", peer)
                self.adopted[peer] = self.open_session(peer)

    def close(self) -> None:
        """Disconnect the adopted sessions; the broker keeps them for whoever adopts them next."""
        for adopted in self.adopted.values():
            adopted.close()
        self.adopted.clear()
