"""The power monitor's CPU cost and its mains-lost latency, beside raw baselines.

Run: ``.venv/bin/python bench/power.py`` (``--seconds N`` of polling, ``--trials N``).

CPU: the monitor with the default ``[power]`` config (mains INA219 every 0.1 s; battery
INA226 and MAX17048 gauge every second) polls the simulated bus for ``--seconds`` of wall time.
Its figure is the process's CPU time (``time.process_time``, every thread, and
``resource.getrusage``) scaled to CPU seconds per minute. The baseline, in the same run on the
same bus: the very SMBus calls the monitor made, replayed bare in a loop, with no driver
decoding, thread hand-off, policy or event loop. The ratio is what to watch. For scale it also
prints what an event loop costs that does nothing but wake at the poll rate.

Latency: ``--trials`` times, mains is pulled at a random moment between polls, and the time
to the monitor's ``OL -> OB`` event is taken. Beside it: a raw poller at the same rate that
reads the INA219's bus-voltage register and reports at the first low value (no debounce, no
thread hand-off): the floor that polling at this rate allows. And the same trials with the
power-fail line (``fail_gpio``, on gpiozero's MockFactory) signalling at the same moment. The
rig's clock follows the loop's (:func:`rig_clock`), so the chip models convert in real time
and a pulled mains shows in the registers at the next conversion, as on a kit.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

from gpiozero.pins.mock import MockFactory

from agent.config import PowerConfig
from agent.power.monitor import PowerMonitor
from agent.power.sensors import build_sensors
from agent.power.shutdown import ShutdownSteps
from simulators.power_rig import MAINS_MONITOR_ADDRESS, PowerRig, build_sim_bus
from simulators.smbus import FakeSMBus

LATENCY_TARGET_S = 0.25
INA219_BUS_VOLTAGE = 0x02


class RecordingBus:
    """The simulated bus, noting every call so the baseline can replay exactly those."""

    def __init__(self, bus: FakeSMBus) -> None:
        self.bus = bus
        self.calls: list[tuple[int, int, int | None]] = []

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self.calls.append((i2c_addr, register, None))
        return self.bus.read_word_data(i2c_addr, register)

    def write_word_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        self.calls.append((i2c_addr, register, value))
        self.bus.write_word_data(i2c_addr, register, value)


def cpu_seconds() -> tuple[float, float]:
    """CPU time of the whole process: process_time and getrusage's user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), usage.ru_utime + usage.ru_stime


async def monitor_cpu(seconds: float) -> tuple[float, float, int, RecordingBus]:
    """CPU seconds (two ways) the monitor spends polling for ``seconds``, its polls, its bus."""
    rig = PowerRig()
    bus = RecordingBus(build_sim_bus(rig))
    config = PowerConfig()
    monitor = PowerMonitor(build_sensors(config, bus), config, ShutdownSteps.inert())
    before = cpu_seconds()
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    monitor.close()
    after = cpu_seconds()
    return after[0] - before[0], after[1] - before[1], monitor.polls, bus


async def idle_loop_cpu(seconds: float, interval: float) -> float:
    """CPU seconds of an event loop that only wakes every ``interval`` for ``seconds``."""

    async def wake() -> None:
        while True:
            await asyncio.sleep(interval)

    before = time.process_time()
    task = asyncio.create_task(wake())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return time.process_time() - before


def replay_cpu(recording: RecordingBus) -> float:
    """CPU seconds to make the same SMBus calls bare, one after another."""
    bus = recording.bus
    started = time.process_time()
    for address, register, value in recording.calls:
        if value is None:
            bus.read_word_data(address, register)
        else:
            bus.write_word_data(address, register, value)
    return time.process_time() - started


RIG_TICK_S = 0.005


async def rig_clock(rig: PowerRig) -> None:
    """Move the rig's clock with the loop's, so the chips' conversions land in real time
    (an INA219 cycle is 17 ms at the driver's config), as on a kit."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        await asyncio.sleep(RIG_TICK_S)
        now = loop.time()
        rig.advance(now - last)
        last = now


async def agent_latencies(trials: int, with_fail_line: bool) -> list[float]:
    """Seconds from pulling mains to the monitor's OB event, per trial."""
    rig = PowerRig()
    factory = MockFactory()
    config = PowerConfig(fail_gpio=6 if with_fail_line else -1)
    changes: asyncio.Queue[tuple[float, str]] = asyncio.Queue()

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "power":
            changes.put_nowait((time.perf_counter(), event["to"]))

    monitor = PowerMonitor(build_sensors(config, build_sim_bus(rig)), config,
                           ShutdownSteps.inert(), on_event=on_event, pin_factory=factory)
    tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(rig_clock(rig))]
    if with_fail_line:
        tasks.append(asyncio.create_task(monitor.watch_fail_line()))
    assert (await changes.get())[1] == "OL"
    latencies = []
    for _ in range(trials):
        await asyncio.sleep(random.uniform(0, config.poll_interval_s))
        pulled = time.perf_counter()
        rig.mains_present = False
        if with_fail_line:
            factory.pin(6).drive_high()
        seen, state = await changes.get()
        assert state == "OB", state
        latencies.append(seen - pulled)
        rig.mains_present = True
        if with_fail_line:
            factory.pin(6).drive_low()
        assert (await changes.get())[1] == "OL"
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    monitor.close()
    return latencies


async def raw_latencies(trials: int, interval: float, present_volts: float) -> list[float]:
    """Seconds from pulling mains to a bare poller's first low bus-voltage reading."""
    rig = PowerRig()
    bus = build_sim_bus(rig)
    lost: asyncio.Queue[float] = asyncio.Queue()

    def mains_volts() -> float:
        word = bus.read_word_data(MAINS_MONITOR_ADDRESS, INA219_BUS_VOLTAGE)
        return (((word & 0xFF) << 8 | word >> 8) >> 3) * 0.004  # MSB first, 4 mV from bit 3

    async def poller() -> None:
        loop = asyncio.get_running_loop()
        beat, was_present = loop.time(), True
        while True:
            present = mains_volts() >= present_volts
            if was_present and not present:
                lost.put_nowait(time.perf_counter())
            was_present = present
            beat = max(beat + interval, loop.time())
            await asyncio.sleep(beat - loop.time())

    task = asyncio.create_task(poller())
    clock = asyncio.create_task(rig_clock(rig))
    latencies = []
    for _ in range(trials):
        await asyncio.sleep(random.uniform(0, interval) + interval)
        pulled = time.perf_counter()
        rig.mains_present = False
        latencies.append(await lost.get() - pulled)
        rig.mains_present = True
    task.cancel()
    clock.cancel()
    await asyncio.gather(task, clock, return_exceptions=True)
    return latencies


def distribution(latencies: list[float]) -> str:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return (f"p50 {cuts[49] * 1000:6.1f} ms  p95 {cuts[94] * 1000:6.1f} ms  "
            f"max {max(latencies) * 1000:6.1f} ms")


def timed(label: str, run: Callable[[], list[float]]) -> list[float]:
    latencies = run()
    print(f"  {label:<34} {distribution(latencies)}")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of polling for CPU")
    parser.add_argument("--trials", type=int, default=50, help="mains-lost trials")
    args = parser.parse_args()
    config = PowerConfig()

    cpu, rusage_cpu, polls, recording = asyncio.run(monitor_cpu(args.seconds))
    raw = replay_cpu(recording)
    idle = asyncio.run(idle_loop_cpu(args.seconds, config.poll_interval_s))
    per_minute = 60 / args.seconds
    reads = sum(value is None for _, _, value in recording.calls)
    print(f"CPU, default [power] config: poll {config.poll_interval_s} s, sample "
          f"{config.sample_interval_s} s, INA219 + INA226 + MAX17048 on the simulated bus")
    print(f"  {polls} polls and {reads} word reads in {args.seconds:.0f} s")
    print(f"  agent poll loop       {cpu * per_minute:7.3f} CPU s/min "
          f"({cpu / args.seconds * 100:.2f} % of a core; getrusage "
          f"{rusage_cpu * per_minute:.3f} s/min)")
    print(f"  bare FakeSMBus calls  {raw * per_minute:7.3f} CPU s/min (the same "
          f"{len(recording.calls)} calls, replayed)")
    print(f"  ratio                 {cpu / raw:7.2f}")
    print(f"  for scale: an asyncio loop that only wakes every {config.poll_interval_s} s "
          f"costs {idle * per_minute:.3f} CPU s/min here")

    print(f"mains lost to OL -> OB event, {args.trials} trials at a random phase:")
    agent = timed("agent (debounce_polls "
                  f"{config.debounce_polls})", lambda: asyncio.run(
                      agent_latencies(args.trials, with_fail_line=False)))
    raw_poll = timed("raw poller, no debounce", lambda: asyncio.run(
        raw_latencies(args.trials, config.poll_interval_s, config.mains_present_volts)))
    timed("agent with fail_gpio (MockFactory)", lambda: asyncio.run(
        agent_latencies(args.trials, with_fail_line=True)))
    print(f"  ratio of p50s (agent / raw)        "
          f"{statistics.median(agent) / statistics.median(raw_poll):.2f}")
    late = sum(latency >= LATENCY_TARGET_S for latency in agent)
    verdict = "met" if not late else f"MISSED by {late} of {len(agent)} (a busy machine?)"
    print(f"  target: every OB event within {LATENCY_TARGET_S * 1000:.0f} ms: {verdict}")


if __name__ == "__main__":
    main()
