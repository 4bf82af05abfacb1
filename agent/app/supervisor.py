"""Every long-running task of the kit runs under one supervisor: none dies silently.

A part is a coroutine function that runs until cancelled (the power monitor, the print queue,
the scanner watch, the uplink's loops). When one raises, the supervisor logs it with its
traceback (once per distinct failure; a repeat is a short line now and then), marks the part
``degraded`` with the reason, waits (:class:`agent.backoff.Backoff`) and starts it again. It
is ``running`` again once the new run has lasted ``settle_s``. A part whose coroutine returns
has ``ended`` (the print queue returns at once when the printer is disabled).

Short jobs (an action of a panel button, the settling of one ack) go through :meth:`spawn`:
they are tracked, their failure is logged once and shown against their part, and :meth:`stop`
waits for them.

    >>> import asyncio
    >>> async def demo():
    ...     seen = []
    ...     supervisor = Supervisor(lambda name, h: seen.append((h.state, h.restarts)),
    ...                             first_retry_s=0.01, settle_s=0.01)
    ...     runs = 0
    ...     async def flaky():
    ...         nonlocal runs
    ...         runs += 1
    ...         if runs == 1:
    ...             raise OSError("bus gone")
    ...         await asyncio.Event().wait()
    ...     supervisor.start("power", flaky)
    ...     await asyncio.sleep(0.1)
    ...     await supervisor.stop()
    ...     return seen
    >>> asyncio.run(demo())
    [('running', 0), ('degraded', 0), ('degraded', 1), ('running', 1), ('stopped', 1)]
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Literal

from agent.backoff import Backoff

log = logging.getLogger(__name__)

PartState = Literal["running", "degraded", "ended", "stopped"]


@dataclass(frozen=True)
class PartHealth:
    """How one supervised part is: ``reason`` says why it is degraded (empty otherwise)."""

    state: PartState
    reason: str = ""
    restarts: int = 0
    failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "restarts": self.restarts,
                "failures": self.failures}


Listener = Callable[[str, PartHealth], None]


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    """Runs the parts, restarts the ones that fail, and reports each part's health.

    ``on_change(name, health)`` is called on the loop whenever a part's health changes.
    """

    def __init__(self, on_change: Listener, *, first_retry_s: float = 0.5,
                 most_retry_s: float = 30.0, settle_s: float = 2.0) -> None:
        self.on_change = on_change
        self.first_retry_s, self.most_retry_s, self.settle_s = first_retry_s, most_retry_s, \
            settle_s
        self.parts: dict[str, PartHealth] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._jobs: set[asyncio.Task[Any]] = set()
        self._logged: dict[str, str] = {}  # part -> the failure whose traceback was logged
        self._degraded_by_job: set[str] = set()  # parts degraded by a failed job, not a run
        self._stopping = False

    # -- parts ----------------------------------------------------------------------------

    def start(self, name: str, run: Callable[[], Awaitable[object]]) -> None:
        """Run ``run()`` as the part ``name`` until :meth:`stop`, restarting it when it fails."""
        if name in self._tasks:
            raise ValueError(f"part {name} is already supervised")
        self._set(name, PartHealth("running"))
        self._tasks[name] = asyncio.get_running_loop().create_task(
            self._keep(name, run), name=f"part:{name}")

    def fail(self, name: str, reason: str) -> None:
        """A part that could not start at all (a missing device, a bad pin): degraded, with
        the reason, until something starts it."""
        log.error("%s cannot start: %s", name, reason)
        before = self.parts.get(name)
        self._set(name, PartHealth("degraded", reason, failures=(before.failures + 1
                                                                  if before else 1)))

    @property
    def degraded(self) -> dict[str, str]:
        """The degraded parts and why."""
        return {name: health.reason for name, health in self.parts.items()
                if health.state == "degraded"}

    async def _keep(self, name: str, run: Callable[[], Awaitable[object]]) -> None:
        backoff = Backoff(self.first_retry_s, self.most_retry_s)
        while True:
            started = time.monotonic()
            settle = asyncio.get_running_loop().call_later(
                self.settle_s, self._settled, name) if self.parts[name].state == "degraded" \
                else None
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure: Exception | None = exc
            else:
                failure = None
            finally:
                if settle is not None:
                    settle.cancel()
            if failure is None:
                self._set(name, replace(self.parts[name], state="ended", reason=""))
                return
            reason = _reason(failure)
            self._degraded_by_job.discard(name)
            failures = self.parts[name].failures + 1
            self._log_failure(name, reason, failure, failures)
            if time.monotonic() - started > self.most_retry_s:
                backoff.reset()  # it ran well for a while: this is a new fault
            self._set(name, replace(self.parts[name], state="degraded", reason=reason,
                                    failures=failures))
            await asyncio.sleep(backoff.next())
            self._set(name, replace(self.parts[name], restarts=self.parts[name].restarts + 1))
            log.debug("%s restarted (%d)", name, self.parts[name].restarts)

    def _settled(self, name: str) -> None:
        health = self.parts.get(name)
        if health is not None and health.state == "degraded" and not self._stopping:
            self._set(name, replace(health, state="running", reason=""))
            self._logged.pop(name, None)
            log.info("%s is running again", name)

    def _log_failure(self, name: str, reason: str, exc: BaseException, failures: int) -> None:
        """The traceback once per distinct failure; the same failure again is a line at the
        10th, 100th, ... time (health shows every one), so a lasting fault cannot fill the log."""
        if self._logged.get(name) != reason:
            self._logged[name] = reason
            log.error("%s failed: %s (restarting it)", name, reason, exc_info=exc)
        elif math.log10(failures).is_integer():
            log.warning("%s has failed %d times: %s (still restarting it)", name, failures,
                        reason)

    def _set(self, name: str, health: PartHealth) -> None:
        if self.parts.get(name) != health:
            self.parts[name] = health
            try:
                self.on_change(name, health)
            except Exception:
                log.exception("part health listener failed")

    # -- short jobs -------------------------------------------------------------------------

    def spawn(self, name: str, job: Coroutine[Any, Any, object]) -> asyncio.Task[Any]:
        """Run a short job of the part ``name``; a failure is logged and shows as degraded
        until a later job of that part succeeds."""
        task = asyncio.get_running_loop().create_task(job)
        self._jobs.add(task)
        task.add_done_callback(lambda done: self._job_done(name, done))
        return task

    def _job_done(self, name: str, task: asyncio.Task[Any]) -> None:
        self._jobs.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        health = self.parts.get(name)
        if exc is not None:
            reason = _reason(exc)
            failures = (health.failures if health else 0) + 1
            self._log_failure(name, reason, exc, failures)
            self._set(name, PartHealth("degraded", reason, health.restarts if health else 0,
                                       failures))
            self._degraded_by_job.add(name)
        elif name in self._degraded_by_job:
            # A job of this part works again; a degradation the part itself has (its run
            # failed) is its own to clear, when a new run settles.
            self._degraded_by_job.discard(name)
            if health is not None and health.state == "degraded":
                self._set(name, replace(health, state="running", reason=""))

    async def settle_jobs(self, timeout: float | None = None) -> None:
        """Wait for the short jobs started so far (not the ones they start)."""
        if self._jobs:
            await asyncio.wait(set(self._jobs), timeout=timeout)

    # -- stop ---------------------------------------------------------------------------------

    async def stop(self, timeout: float = 5.0, names: list[str] | None = None) -> list[str]:
        """Cancel the parts (``names``, or all, in reverse start order) and wait for them up
        to ``timeout`` seconds; returns the parts that did not stop in time."""
        chosen = list(reversed(self._tasks)) if names is None else names
        self._stopping = names is None
        tasks = {name: self._tasks.pop(name) for name in chosen if name in self._tasks}
        for task in tasks.values():
            task.cancel()
        hung: list[str] = []
        if tasks:
            _, pending = await asyncio.wait(tasks.values(), timeout=timeout)
            hung = [name for name, task in tasks.items() if task in pending]
        for name in tasks:
            if name not in hung:
                self._set(name, replace(self.parts[name], state="stopped", reason=""))
        if names is None and self._jobs:
            _, pending_jobs = await asyncio.wait(set(self._jobs), timeout=timeout)
            for job in pending_jobs:
                job.cancel()
        for name in hung:
            log.error("%s did not stop within %g s; left behind", name, timeout)
        return hung
