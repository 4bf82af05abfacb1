"""The kit's SQLite store: one writer thread with group commit, one reader thread.

Every change is a function of a :class:`sqlite3.Connection` handed to :meth:`Store.write`. The
writer thread runs the functions that are waiting in one transaction, each inside its own
savepoint (a function that raises rolls back only its own changes), commits once with
``synchronous=FULL`` and only then answers each caller. So an answer always means durable, and
under load many orders share one fsync (group commit).

What the disk does is a refusal, never a crash: a full disk fails the batch's callers with
``storage_full``, a damaged database with ``store_damaged``, and a database file removed or
replaced under the running kit with ``store_lost`` (the writer checks the files before every
commit). The writer goes on; :attr:`Store.condition` says how the store is, and
``on_condition`` hears each change. With a ``kit_id`` the store checks at :meth:`Store.open`
that the database is whole (``PRAGMA quick_check``) and is this kit's
(:mod:`agent.store.identity`), and refuses with :class:`StoreRefused` otherwise.

    >>> import asyncio, tempfile, os
    >>> store = Store(os.path.join(tempfile.mkdtemp(), "kit.db")); store.open()
    >>> asyncio.run(store.write(lambda db: db.execute("SELECT 1").fetchone()[0]))
    1
    >>> store.condition
    'ok'
    >>> store.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agent.store.conditions import (
    DAMAGED,
    LOST,
    OK,
    REFUSALS,
    StoreClosed,
    StoreRefused,
    fault_of,
    refusal,
)
from agent.store.identity import (
    IDENTITY_NAME,
    MARK_EVERY_S,
    Identity,
    IdentityError,
    load,
    mismatch,
    new_store_id,
    read_facts,
    save,
)
from agent.store.schema import MIGRATIONS, migrate
from agent.store.sqlite import (
    CHECKPOINT_PAGES,
    PAGE_SIZE,
    WAL_LIMIT_BYTES,
    connect,
    quick_check,
    use_page_size,
)

__all__ = ["MIGRATIONS", "PAGE_SIZE", "Store", "StoreClosed", "StoreRefused", "connect", "migrate"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = tuple[Callable[[sqlite3.Connection], object], concurrent.futures.Future]

# At most this many callers share one transaction; enough to amortise an fsync, small enough
# that one bad batch never delays many answers.
MAX_BATCH = 128

ConditionListener = Callable[[str, str], object]
"""Called on the loop with the store's new condition and why (empty for ``ok``)."""


class Store:
    """SQLite in WAL mode with one writer thread (group commit) and one reader thread.

    With ``kit_id``, the store is that kit's: checked at :meth:`open` against the identity
    file beside it, whose high-water mark it keeps.
    """

    def __init__(self, path: str | Path, kit_id: str | None = None,
                 on_condition: ConditionListener | None = None) -> None:
        self.path = Path(path)
        self.kit_id = kit_id
        self.identity_path = self.path.with_name(IDENTITY_NAME)
        self.on_condition = on_condition
        self.condition, self.why = OK, ""
        self._reported = OK
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-read")
        self._read_db: sqlite3.Connection | None = None
        self._closed = False
        self._files: dict[Path, tuple[int, int]] = {}
        self._identity: Identity | None = None
        self._next_mark = 0.0
        self.commits = 0

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._closed

    def open(self) -> None:
        """Open (or create) the database; :class:`StoreRefused` when it cannot be the kit's."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        identity = self._known_identity()
        if identity is not None and not self.path.exists():
            raise StoreRefused(f"the database is missing, but {identity.history}")
        if identity is not None and self.path.stat().st_size == 0:
            # Checked before SQLite opens it: opening would make it a new, empty database.
            raise StoreRefused(f"the database is empty, but {identity.history}")
        write_db: sqlite3.Connection | None = None
        try:
            write_db = connect(self.path, page_size=PAGE_SIZE)
            if problem := quick_check(write_db):
                raise StoreRefused(f"the database is damaged (SQLite's check: {problem})")
            if identity is not None and (why := mismatch(
                    identity, read_facts(write_db, identity.seq), self.kit_id or "")):
                raise StoreRefused(why, fix=f'set [kit] id = "{identity.kit_id}" in the config'
                                   if identity.kit_id != self.kit_id else "")
            use_page_size(write_db, self.path)
            write_db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            write_db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            migrate(write_db)
            if self.kit_id is not None:
                self._identity = identity or self._new_identity(write_db)
            self._read_db = connect(self.path)
        except sqlite3.DatabaseError as exc:
            if write_db is not None:
                write_db.close()
            raise StoreRefused(f"the database is damaged (SQLite: {exc})") from None
        except BaseException:
            if write_db is not None:
                write_db.close()
            raise
        self._files = {path: (st.st_dev, st.st_ino) for path in
                       (self.path, self.path.with_name(self.path.name + "-wal"))
                       if (st := _stat(path)) is not None}
        self._next_mark = time.monotonic() + MARK_EVERY_S
        self._writer = threading.Thread(target=self._write_loop, args=(write_db,),
                                        name="store-write", daemon=True)
        self._writer.start()

    def _known_identity(self) -> Identity | None:
        if self.kit_id is None:
            return None
        try:
            return load(self.identity_path)
        except IdentityError as exc:
            raise StoreRefused(str(exc)) from None

    def _new_identity(self, db: sqlite3.Connection) -> Identity:
        """A store without an identity file: a new kit, or one from before the file existed."""
        facts = read_facts(db, 0)
        store_id = facts.store_id
        if not store_id:
            db.execute("BEGIN IMMEDIATE")
            store_id = new_store_id(db)
            db.execute("COMMIT")
        identity = Identity(self.kit_id or "", store_id).marked(facts)
        try:
            save(self.identity_path, identity)
        except OSError as exc:
            raise StoreRefused(f"cannot write {self.identity_path.name}: "
                               f"{exc.strerror}") from None
        log.info("store %s is kit %s's (identity in %s)", self.path, self.kit_id,
                 self.identity_path.name)
        return identity

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the writer's transaction; returns once its change is durable.

        Raises the store's refusal (:func:`refusal`) when the disk is full or the database is
        damaged or gone."""
        return await self.submit(fn)

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` for the writer now, behind every job submitted before it (the writer
        runs them in that order); the future answers as :meth:`write` does. Call it on the
        loop."""
        if self._closed:
            raise StoreClosed()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, future))
        answer = asyncio.wrap_future(future)
        answer.add_done_callback(lambda _: self._report())
        return answer

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the reader's connection (it sees every committed change)."""
        if self._closed:
            raise StoreClosed()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, fn, self._read_db)
        except sqlite3.DatabaseError as exc:
            if fault_of(exc) != DAMAGED:
                raise
            self._set_condition(DAMAGED, str(exc))
            raise refusal(DAMAGED) from None
        finally:
            self._report()

    def check_files(self) -> str:
        """Look whether the database's files are still the ones opened (the writer does before
        every commit); the store's condition."""
        if self.condition != LOST and (why := self._files_changed()):
            self._set_condition(LOST, why)
        self._report()
        return self.condition

    def close(self) -> None:
        """Finish the queued writes, write the identity's mark, then close both connections."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join()
        self._reader.shutdown(wait=True)
        if self._read_db is not None:
            self._read_db.close()

    # -- the condition ----------------------------------------------------------------------

    def _files_changed(self) -> str:
        """Why the files at the store's paths are not the ones opened (removed, replaced);
        OSError when a path cannot be looked at (:meth:`check_files` raises it)."""
        for path, opened in self._files.items():
            st = _stat(path)
            if st is None:
                return f"{path.name} was removed while the kit ran"
            if (st.st_dev, st.st_ino) != opened:
                return f"{path.name} was replaced while the kit ran"
        return ""

    def _files_changed_if_seen(self) -> str:
        """:meth:`_files_changed` for the writer. A path it cannot look at (a directory it may
        not read, a file where the directory was, I/O) is no proof the files changed: the
        commit goes to the open files, as a restart could open no other store there; the
        storage watch shows why it cannot look."""
        try:
            return self._files_changed()
        except OSError:
            return ""

    def _set_condition(self, condition: str, why: str = "") -> None:
        if condition == self.condition:
            return
        if self.condition in (LOST, DAMAGED):
            return  # lasting: only a restart (and its checks) ends it
        self.condition, self.why = condition, why
        if condition == OK:
            log.warning("store: writes fit again; taking orders")
        else:
            log.error("store %s: %s (%s)", condition, REFUSALS[condition][1], why)

    def _report(self) -> None:
        """On the loop: tell the listener of a change of condition."""
        if self.condition != self._reported:
            self._reported = self.condition
            if self.on_condition is not None:
                self.on_condition(self.condition, self.why)

    # -- the writer thread ---------------------------------------------------------------------

    def _write_loop(self, db: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._jobs.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    batch.append(job)
                # A caller that gave up before its turn (a dropped request) was never answered:
                # its change is not made.
                batch = [job for job in batch if job[1].set_running_or_notify_cancel()]
                if batch:
                    self._run_batch(db, batch)
                if stop:
                    return
        finally:
            self._mark(db, force=True)
            db.close()

    def _run_batch(self, db: sqlite3.Connection, batch: list[Job]) -> None:
        if self.condition != LOST and (why := self._files_changed_if_seen()):
            self._set_condition(LOST, why)
        if self.condition in (LOST, DAMAGED):
            for _, future in batch:
                future.set_exception(refusal(self.condition))
            return
        outcomes: list[tuple[bool, object]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for fn, _ in batch:
                db.execute("SAVEPOINT job")
                try:
                    outcomes.append((True, fn(db)))
                except Exception as exc:
                    if fault_of(exc):
                        raise  # the disk, not the job: SQLite may have ended the transaction
                    db.execute("ROLLBACK TO job")
                    outcomes.append((False, exc))
                db.execute("RELEASE job")
            db.execute("COMMIT")
            self.commits += 1
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            fault = fault_of(exc)
            if fault:
                self._set_condition(fault, str(exc))
            else:
                log.error("store commit failed, %d changes not made: %s", len(batch), exc)
            for _, future in batch:
                future.set_exception(refusal(fault) if fault else exc)
            return
        self._set_condition(OK)
        for (ok, value), (_, future) in zip(outcomes, batch, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)  # type: ignore[arg-type]
        self._mark(db)

    def _mark(self, db: sqlite3.Connection, force: bool = False) -> None:
        """Write the identity's high-water mark when it is due and the last receipt moved: at
        receipt #1, then at most every :data:`MARK_EVERY_S` s, and at the stop (``force``)."""
        identity, now = self._identity, time.monotonic()
        if identity is None or not (force or identity.seq == 0 or now >= self._next_mark):
            return
        self._next_mark = now + MARK_EVERY_S
        try:
            facts = read_facts(db, 0)
            if facts.last_seq == identity.seq:
                return
            marked = identity.marked(facts)
            save(self.identity_path, marked)
        except (OSError, sqlite3.Error) as exc:
            log.warning("could not write %s (tried again later): %s", self.identity_path.name,
                        exc)
            return
        self._identity = marked


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
