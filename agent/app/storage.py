"""The storage watch: free space on the state directory's disk, a full disk, and a store that
was damaged or removed under the running kit, as one ``storage`` view for health and the staff
page.

Its part (``storage``, supervised) looks every :data:`CHECK_S` seconds: the free space (below
``[kit] storage_warn_mb`` it is ``low``, a warning before the disk is full), the store's files
(:meth:`agent.store.Store.check_files`), and while the store is ``full`` it writes a small probe
so that the first write that fits again ends the alert without waiting for a customer. The
store's own condition comes from its listener (:meth:`StorageWatch.store_changed`).

    >>> watch = StorageWatch(None, Path("."), 64, show=print, recovered=lambda: None)
    >>> watch.view(free_bytes=10 * MB)["state"], watch.view(free_bytes=100 * MB)["state"]
    ('low', 'ok')
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core import kitmeta
from agent.core.clock import now_iso
from agent.core.errors import Refusal

if TYPE_CHECKING:
    from agent.store import Store

log = logging.getLogger(__name__)

CHECK_S = 5.0
MB = 1024 * 1024


class StorageWatch:
    """Shows the storage as ``show(view)`` at every change; calls ``recovered()`` when a full
    store takes writes again."""

    def __init__(self, store: Store | None, directory: Path, warn_mb: float, *,
                 show: Callable[[dict[str, Any]], object],
                 recovered: Callable[[], object]) -> None:
        self.store, self.directory = store, directory
        self.warn_bytes = int(warn_mb * MB)
        self.show, self.recovered = show, recovered
        self.condition, self.why = "ok", ""
        self.free_bytes: int | None = None
        self._shown: dict[str, Any] = {}

    def view(self, free_bytes: int | None = None) -> dict[str, Any]:
        """``state``: ``ok``, ``low`` (free space below the warning), ``full`` (writes do not
        fit), ``damaged`` or ``lost`` (the store takes no orders until a restart)."""
        free = self.free_bytes if free_bytes is None else free_bytes
        state = self.condition
        if state == "ok" and free is not None and free < self.warn_bytes:
            state = "low"
        return {"state": state, "detail": self.why,
                "free_mb": None if free is None else round(free / MB, 1),
                "warn_mb": round(self.warn_bytes / MB, 1)}

    def store_changed(self, condition: str, why: str) -> None:
        """The store's listener: its new condition."""
        was, self.condition, self.why = self.condition, condition, why
        if was == "full" and condition == "ok":
            self.recovered()  # what waited goes first, then the news that the store is back
        self._measure()
        self._publish()

    async def run(self) -> None:
        """The ``storage`` part: look every :data:`CHECK_S` s until cancelled."""
        assert self.store is not None
        while True:
            self.store.check_files()
            if self.store.condition == "full":
                with contextlib.suppress(Refusal):
                    await self.store.write(lambda db: kitmeta.write_probe(db, now_iso()))
                    await self.store.write(lambda db: kitmeta.clear_probe(db, now_iso()))
            self._measure()
            self._publish()
            await asyncio.sleep(CHECK_S)

    def _measure(self) -> None:
        try:
            stats = os.statvfs(self.directory)
        except OSError:
            self.free_bytes = None
            return
        self.free_bytes = stats.f_bavail * stats.f_frsize

    def _publish(self) -> None:
        view = self.view()
        if view["state"] != self._shown.get("state"):
            if view["state"] == "low":
                log.warning("storage low: %s MB free in %s (warning below %s MB)",
                            view["free_mb"], self.directory, view["warn_mb"])
            self._shown = view
            self.show(view)
        elif view["free_mb"] != self._shown.get("free_mb"):
            self._shown = view
            self.show(view)


class WriteMeter:
    """What the kit's process has written to its disk since its start, and per sale since then
    (the SD card's wear): ``write_bytes`` of ``/proc/self/io``, what the process caused to be
    sent to the block device; None where there is no such file."""

    def __init__(self) -> None:
        self.sales = 0
        self._since: int | None = None

    def start(self) -> None:
        """Count from now (the kit is started: what its start wrote is not a sale's)."""
        self._since, self.sales = _written(), 0

    def sale(self) -> None:
        self.sales += 1

    def view(self) -> dict[str, Any]:
        """``bytes`` written since the start, ``sales`` since then and ``bytes_per_sale``."""
        now = _written()
        if now is None or self._since is None:
            return {"bytes": None, "sales": self.sales, "bytes_per_sale": None}
        written = now - self._since
        return {"bytes": written, "sales": self.sales,
                "bytes_per_sale": round(written / self.sales) if self.sales else None}


def _written() -> int | None:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split(":")[1])
    except OSError:
        return None
    return None
