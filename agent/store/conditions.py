"""How the store is (``ok``, ``full``, ``damaged``, ``lost``) and what a caller hears when it
is not: a :class:`~agent.core.errors.Refusal` with a code, plain words and when to try again."""

from __future__ import annotations

import sqlite3

from agent.core.errors import Refusal

OK, FULL, DAMAGED, LOST = "ok", "full", "damaged", "lost"
"""The store's conditions: ``full`` ends at the next commit that fits; the others last."""

REFUSALS = {
    FULL: ("storage_full", "the kit's storage is full, so this was not saved and nothing was "
                           "sold; staff: free space on the kit's card (the kit carries on by "
                           "itself once there is room)", 60),
    DAMAGED: ("store_damaged", "the kit's order book is damaged, so it takes no orders; "
                               "staff: restart the kit and follow what its first line says",
              300),
    LOST: ("store_lost", "the kit's order book was removed or replaced while it ran, so it "
                         "takes no orders; staff: restart the kit", 300),
}


def refusal(condition: str) -> Refusal:
    """What a caller hears when the store is ``condition`` (``full``, ``damaged``, ``lost``)."""
    code, detail, retry_after = REFUSALS[condition]
    return Refusal(code, detail, retry_after=retry_after)


def fault_of(exc: BaseException) -> str:
    """``full`` or ``damaged`` when SQLite's error says so, else empty (a plain error).

    >>> fault_of(sqlite3.OperationalError("x")), fault_of(ValueError())
    ('', '')
    """
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return FULL
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return DAMAGED
    return ""


class StoreClosed(Refusal):
    """The store was closed (the kit is stopping: its shutdown closes the store before the
    server stops); a request that comes meanwhile is refused, never a 500."""

    def __init__(self) -> None:
        super().__init__("shutting_down", "the kit is shutting down; try again once it is back",
                         retry_after=60)


class StoreRefused(RuntimeError):
    """The database cannot be the kit's store (damaged, emptied, replaced, rolled back): one
    sentence saying what is wrong. ``fix`` says what to do when it is not starting over (a
    config that names another kit); empty when starting over is the way."""

    def __init__(self, why: str, fix: str = "") -> None:
        super().__init__(why)
        self.fix = fix
