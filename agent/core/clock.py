"""The kit's clocks: the wall clock every stored and published timestamp writes, and the kit's
own monotonic timeline that every timer that matters measures with.

A Pi has no real-time clock: it boots with the time it last saved, and the wall clock jumps
when NTP or HQ first sets it, maybe hours later. So the wall clock only labels; ages are
measured in *kit seconds* (``ks``): the boot's monotonic clock (``CLOCK_BOOTTIME``) plus a
``base`` kept in ``meta`` (:data:`TIMELINE_KEY`). Within one boot a restart of the daemon keeps
the base, so ages are exact; after a reboot the base continues from the last kit second the
store saw, plus the time the kit was off when the wall clock was synced on both sides (else
nothing: an age is then a lower bound, so a timer fires late, never early, and never is lost).

    >>> clock = Clock(wall=lambda: 1_750_000_000.0, mono=lambda: 5.0, boot_id="b1",
    ...               synced=lambda: False)
    >>> clock.iso()
    '2025-06-15T15:06:40.000+00:00'
    >>> Timeline(clock, base=100.0).now()
    Moment(iso='2025-06-15T15:06:40.000+00:00', ks=105.0, synced=False)
    >>> now_iso().endswith("+00:00")
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

TIMELINE_KEY = "timeline"
"""``meta`` key: JSON ``{"boot_id", "base", "seen_ks", "seen_wall", "seen_synced"}``."""
SEEN_EVERY_KS = 300.0
"""How often (kit seconds) the sweep notes the last kit second seen, for after a hard reboot."""
_TIME_ERROR = 5  # adjtimex's answer while the kernel's clock is not synchronised
_SYNCED_FLAG = Path("/run/systemd/timesync/synchronized")


def now_iso() -> str:
    """Now by the system's wall clock, ISO 8601 UTC to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def iso_of(seconds: float) -> str:
    """The label of ``seconds`` since the epoch, as every stamp of the kit writes it."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _boottime() -> float:
    """Seconds since boot, counting suspend; ``time.monotonic`` where there is no BOOTTIME."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") \
        else time.monotonic()


def _boot_id() -> str:
    """The kernel's id of this boot; elsewhere one per process (every start is a new boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"process-{uuid.uuid4()}"


def _adjtimex() -> Callable[[], bool] | None:
    """The kernel's word on the wall clock (STA_UNSYNC gives TIME_ERROR), read-only."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        call = ctypes.CDLL(name, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    buffer = ctypes.create_string_buffer(512)  # struct timex, modes = 0: change nothing

    def synced() -> bool:
        ctypes.memset(buffer, 0, len(buffer))
        state = call(buffer)
        return _SYNCED_FLAG.exists() if state < 0 else state != _TIME_ERROR
    return synced


def wall_synced() -> Callable[[], bool]:
    """How to ask whether the wall clock is synchronised: ``adjtimex`` on Linux, else
    systemd-timesyncd's flag file, else assume it is (a laptop running ``dropkit sim``)."""
    return _adjtimex() or (lambda: _SYNCED_FLAG.exists() or not Path("/run/systemd").exists())


@dataclass(frozen=True)
class Moment:
    """One instant as the kit stamps it: the wall clock's label, the kit second, and whether
    the wall clock was synchronised."""

    iso: str
    ks: float
    synced: bool = True


class Clock:
    """The wall clock (seconds since the epoch), the boot's monotonic clock, the boot's id and
    whether the wall clock is synced; each injectable (the tests drive jumps through here)."""

    def __init__(self, *, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = _boottime, boot_id: str | None = None,
                 synced: Callable[[], bool] | None = None) -> None:
        self.wall, self.mono = wall, mono
        self.boot_id = boot_id or _boot_id()
        self.synced = synced or wall_synced()

    def iso(self) -> str:
        return iso_of(self.wall())


class Timeline:
    """Kit seconds: :attr:`base` plus the boot's monotonic clock (see the module)."""

    def __init__(self, clock: Clock, base: float) -> None:
        self.clock, self.base = clock, base

    def ks(self) -> float:
        return self.base + self.clock.mono()

    def now(self) -> Moment:
        return Moment(self.clock.iso(), self.ks(), self.clock.synced())


def _record(db: sqlite3.Connection) -> dict | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (TIMELINE_KEY,)).fetchone()
    return None if row is None else json.loads(row[0])


def _write(db: sqlite3.Connection, record: dict) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
               "DO UPDATE SET value = excluded.value", (TIMELINE_KEY, json.dumps(record)))


def note_seen(db: sqlite3.Connection, at: Moment, *, every_ks: float = 0.0) -> None:
    """Keep the last kit second seen, for the start after a reboot (at a stop, and from the
    sweep every ``every_ks``); nothing before :func:`resume` made the record."""
    record = _record(db)
    if record is None or at.ks - record.get("seen_ks", float("-inf")) < every_ks:
        return
    _write(db, {**record, "seen_ks": at.ks, "seen_synced": at.synced,
                "seen_wall": datetime.fromisoformat(at.iso).timestamp()})


def resume(db: sqlite3.Connection, clock: Clock, *, keep: bool = True) -> Timeline:
    """The kit's timeline at a start, inside the caller's transaction (see the module).

    ``keep`` False (a store that takes no writes: a full disk) works it out without writing
    it; the next start works it out again from the orders' own stamps."""
    record = _record(db)
    if record is not None and record["boot_id"] == clock.boot_id:
        timeline = Timeline(clock, record["base"])
    else:
        stamps = db.execute("SELECT max(created_ks), max(relayed_ks), max(reconciled_ks) "
                            "FROM orders").fetchone()
        last = max([s for s in (*stamps, (record or {}).get("seen_ks")) if s is not None],
                   default=0.0)
        off = 0.0
        if record is not None and record.get("seen_synced") and clock.synced():
            off = max(0.0, clock.wall() - record["seen_wall"] - clock.mono())
        timeline = Timeline(clock, last + off)
    if not keep:
        return timeline
    # Sales from before kit seconds were kept: their ages count from now.
    ks = timeline.ks()
    db.execute("UPDATE orders SET created_ks = ? WHERE created_ks IS NULL", (ks,))
    db.execute("UPDATE orders SET relayed_ks = ? WHERE relayed_ks IS NULL AND "
               "relayed_at IS NOT NULL", (ks,))
    _write(db, {"boot_id": clock.boot_id, "base": timeline.base})
    note_seen(db, timeline.now())
    return timeline
