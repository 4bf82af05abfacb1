"""The shutdown sequence: the daemon's five steps, then the shutdown command, once."""

from __future__ import annotations

import asyncio
import logging
import shlex
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.power.status import PowerStatus

log = logging.getLogger(__name__)


async def _nothing(*_: object) -> None:
    return None


@dataclass(frozen=True)
class ShutdownSteps:
    """What the daemon does when the kit must stop; each is awaited in this order.

    - ``stop_taking_orders()``: new orders are refused (``shutting_down``) from now on.
    - ``flush_outbox(timeout_s)``: relay what is queued (the ``shutdown`` event, handed to
      ``on_event`` just before, included) if the uplink is connected; return whether the
      outbox is empty (False at once when not connected).
    - ``publish_final(status)``: publish this last telemetry (state ``FSD ...``) and return
      once it is delivered.
    - ``close_store()``: commit what is queued and close the store.
    - ``mark_power_down(status)``: leave the killpower flag for the shutdown hook when the
      shutdown is for power (the final status is on battery), as NUT's upsmon leaves its
      POWERDOWNFLAG; nothing otherwise.
    """

    stop_taking_orders: Callable[[], Awaitable[object]]
    flush_outbox: Callable[[float], Awaitable[object]]
    publish_final: Callable[[PowerStatus], Awaitable[object]]
    close_store: Callable[[], Awaitable[object]]
    mark_power_down: Callable[[PowerStatus], Awaitable[object]] = _nothing

    @classmethod
    def inert(cls) -> ShutdownSteps:
        """Steps that do nothing: for a kit, bench or test with no orders or uplink."""
        return cls(_nothing, _nothing, _nothing, _nothing, _nothing)


@dataclass(frozen=True)
class StepOutcome:
    """How one step (or the command) went."""

    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class ShutdownReport:
    """What a :class:`ShutdownSequence` did."""

    steps: tuple[StepOutcome, ...]
    """The five steps then the command, in the order they ran."""

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)


class ShutdownSequence:
    """The five :class:`ShutdownSteps`, then the shutdown command: once, never again.

    A step that fails or outlasts ``step_timeout_s`` is logged and the sequence goes on: a
    stuck flush must not keep the kit from stopping before the battery does. The command runs
    as ``shlex.split(command)``, without a shell.
    """

    def __init__(self, steps: ShutdownSteps, command: str, *, step_timeout_s: float) -> None:
        self.steps = steps
        self.argv = shlex.split(command)
        self.step_timeout_s = step_timeout_s
        self.started = False

    async def run(self, final_status: PowerStatus) -> ShutdownReport:
        """Run the steps and the command; RuntimeError if it has run before."""
        if self.started:
            raise RuntimeError("the shutdown sequence runs only once")
        self.started = True
        steps, timeout = self.steps, self.step_timeout_s
        outcomes = [
            await self._step("stop_taking_orders", steps.stop_taking_orders),
            await self._step("flush_outbox", lambda: steps.flush_outbox(timeout)),
            await self._step("publish_final", lambda: steps.publish_final(final_status)),
            await self._step("close_store", steps.close_store),
            await self._step("mark_power_down", lambda: steps.mark_power_down(final_status)),
            await self._step("command", self._run_command),
        ]
        report = ShutdownReport(tuple(outcomes))
        if not outcomes[-1].ok:
            log.critical("shutdown command %s failed (%s): the kit stays up with orders "
                         "stopped", shlex.join(self.argv), outcomes[-1].detail)
        return report

    async def _step(self, name: str, call: Callable[[], Awaitable[object]]) -> StepOutcome:
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(call(), self.step_timeout_s)
            ok, detail = True, "" if result is None else str(result)
        except TimeoutError:
            ok, detail = False, f"timed out after {self.step_timeout_s} s"
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        outcome = StepOutcome(name, ok, detail, round(time.monotonic() - started, 3))
        log.log(logging.INFO if ok else logging.ERROR, "shutdown step %s: %s%s", name,
                "done" if ok else "failed", f" ({detail})" if detail else "")
        return outcome

    async def _run_command(self) -> str:
        process = await asyncio.create_subprocess_exec(*self.argv, stdin=subprocess.DEVNULL)
        code = await process.wait()
        if code != 0:
            raise RuntimeError(f"{shlex.join(self.argv)} exited with status {code}")
        return f"{shlex.join(self.argv)} exited with status 0"
