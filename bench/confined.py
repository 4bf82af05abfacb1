"""The kit confined as on a Raspberry Pi Zero 2 W: orders per second, p99, resident memory and
the time to its first answer, beside a raw SQLite baseline confined the same way.

Run (as root): ``.venv/bin/python bench/confined.py`` (``--cpu-quota 25,100`` percent of one
core, ``--memory-mb 512``, ``--cpu N`` the core, ``--orders N`` per level, ``--clients 1,8``).

A Zero 2 W has 512 MB for everything and four Cortex-A53 cores at 1 GHz; the kit is one
process whose Python runs on one core at a time. So the kit's process (and nothing else: the
load generator stands for the customers' phones) is held to one core (CPU affinity, as
``taskset`` sets it) and to a share of it (a CFS quota over a 10 ms period, so the share is
spread evenly rather than given in 100 ms bursts), with a memory limit. How it is held, by what
this machine allows:

- under systemd (``/run/systemd/system``): ``systemd-run --scope -p MemoryMax= -p CPUQuota=
  -p AllowedCPUs=``;
- else cgroup v1 (``/sys/fs/cgroup/memory``, ``/sys/fs/cgroup/cpu``): a child of this
  process's own groups, ``memory.limit_in_bytes``, ``cpu.cfs_period_us``, ``cpu.cfs_quota_us``;
- else cgroup v2 at ``/sys/fs/cgroup``: ``memory.max``, ``cpu.max``.

The child joins its groups before it starts, so the start-up is confined too. A share of a core
here is not a Zero's core: the figures at several quotas show where the goals (resident memory
under 60 MB, the first answer within 3 s, p99 under 100 ms at 8 clients) stop holding.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.orders import bench_manifest, load, percentile, start_kit  # noqa: E402

PERIOD_US = 10_000


class Confinement:
    """Where the confined process goes: a command prefix, or cgroup directories to join."""

    def __init__(self, memory_mb: int, quota_percent: float, cpu: int) -> None:
        self.memory_mb, self.quota_percent, self.cpu = memory_mb, quota_percent, cpu
        self.prefix: list[str] = []
        self.groups: list[Path] = []
        self.how = ""

    @contextmanager
    def made(self) -> Iterator[Confinement]:
        name = f"dropkit-confined-{os.getpid()}"
        limit, quota = self.memory_mb * 2**20, int(PERIOD_US * self.quota_percent / 100)
        try:
            if Path("/run/systemd/system").exists() and shutil.which("systemd-run"):
                self.prefix = ["systemd-run", "--quiet", "--scope", "-p",
                               f"MemoryMax={self.memory_mb}M", "-p",
                               f"CPUQuota={self.quota_percent:g}%", "-p",
                               f"AllowedCPUs={self.cpu}", "--"]
                self.how = "systemd-run --scope"
            elif Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists():
                memory = own_group("memory") / name
                cpu = own_group("cpu") / name
                self._make(memory, {"memory.limit_in_bytes": limit})
                self._make(cpu, {"cpu.cfs_period_us": PERIOD_US, "cpu.cfs_quota_us": quota})
                self.how = f"cgroup v1 {memory} and {cpu}"
            elif Path("/sys/fs/cgroup/cgroup.controllers").exists():
                root = Path("/sys/fs/cgroup")
                (root / "cgroup.subtree_control").write_text("+memory +cpu")
                self._make(root / name, {"memory.max": limit, "cpu.max": f"{quota} {PERIOD_US}"})
                self.how = f"cgroup v2 {root / name}"
            else:
                raise SystemExit("no systemd and no cgroup file system to confine the kit with")
            yield self
        finally:
            for group in reversed(self.groups):
                group.rmdir()

    def _make(self, group: Path, settings: dict[str, object]) -> None:
        group.mkdir()
        self.groups.append(group)
        for key, value in settings.items():
            (group / key).write_text(str(value))

    def join(self) -> Callable[[], None]:
        """What the child runs before it starts: into the groups, onto the one core."""
        def enter() -> None:
            for group in self.groups:
                (group / "cgroup.procs").write_text(str(os.getpid()))
            os.sched_setaffinity(0, {self.cpu})
        return enter

    def peak_mb(self) -> float | None:
        """The group's peak memory (the kit's and the page cache charged to it), in MB."""
        for group in self.groups:
            for name in ("memory.max_usage_in_bytes", "memory.peak"):
                if (group / name).exists():
                    return int((group / name).read_text()) / 2**20
        return None


def own_group(controller: str) -> Path:
    """This process's own cgroup v1 directory of ``controller``."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path(f"/sys/fs/cgroup/{controller}") / path.lstrip("/")
    raise SystemExit(f"this process is in no {controller} cgroup")


def memory_mb(pid: int) -> tuple[float, float]:
    """The process's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def confined_baseline(confinement: Confinement, path: Path, orders: int) -> float:
    """:func:`bench.orders.raw_baseline` in a process confined the same way."""
    answer = subprocess.run(
        [*confinement.prefix, sys.executable, "-c",
         "import sys; from bench.orders import raw_baseline; "
         "print(raw_baseline(__import__('pathlib').Path(sys.argv[1]), int(sys.argv[2])))",
         str(path), str(orders)], check=True, capture_output=True, text=True, cwd=ROOT,
        preexec_fn=confinement.join(), env={**os.environ, "PYTHONPATH": str(ROOT)})
    return float(answer.stdout)


def run(quota: float, args: argparse.Namespace, tmp: Path) -> None:
    confinement = Confinement(args.memory_mb, quota, args.cpu)
    with confinement.made():
        state = tmp / f"quota-{quota:g}" / "state"
        state.parent.mkdir()
        manifest = bench_manifest(state.parent / "manifest.toml")
        proc, address, token, first_answer = start_kit(state, manifest, confinement.prefix,
                                                       confinement.join())
        try:
            idle, _ = memory_mb(proc.pid)
            print(f"\n{quota:g}% of core {args.cpu}, {args.memory_mb} MB ({confinement.how}): "
                  f"first answer {first_answer:.2f} s after the start, {idle:.1f} MB resident "
                  f"idle")
            print(f"{'clients':>7} {'agent/s':>9} {'raw/s':>9} {'ratio':>6} {'p50 ms':>7} "
                  f"{'p99 ms':>7}")
            for clients in (int(c) for c in args.clients.split(",")):
                raw = confined_baseline(confinement, state.parent / f"raw-{clients}.db",
                                        args.orders)
                rate, latencies = asyncio.run(load(address, token, clients, args.orders))
                print(f"{clients:>7} {rate:>9.0f} {raw:>9.0f} {rate / raw:>6.2f} "
                      f"{percentile(latencies, 50) * 1000:>7.2f} "
                      f"{percentile(latencies, 99) * 1000:>7.2f}")
            resident, peak = memory_mb(proc.pid)
            group = confinement.peak_mb()
            print(f"resident memory after the orders {resident:.1f} MB (peak {peak:.1f} MB)"
                  + (f"; the group's peak with its page cache {group:.1f} MB"
                     if group is not None else ""))
        finally:
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-quota", default="25,50,100",
                        help="percent of one core, one run each (default 25,50,100)")
    parser.add_argument("--memory-mb", type=int, default=512)
    parser.add_argument("--cpu", type=int, default=os.cpu_count() - 1 if os.cpu_count() else 0,
                        help="the core the kit runs on (default the last)")
    parser.add_argument("--orders", type=int, default=1000, help="orders per level")
    parser.add_argument("--clients", default="1,8")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("confining a process takes root (cgroups)")
    with tempfile.TemporaryDirectory(prefix="dropkit-confined-",
                                     dir=os.environ.get("BENCH_DIR")) as tmp:
        for quota in (float(q) for q in args.cpu_quota.split(",")):
            run(quota, args, Path(tmp))


if __name__ == "__main__":
    main()
