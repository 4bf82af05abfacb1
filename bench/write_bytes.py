"""Bytes the kit writes to its disk per order (an SD card wears by what is written).

Run: ``.venv/bin/python bench/write_bytes.py`` (``--orders N``, ``--state-dir DIR`` on the disk
to measure; the default is a temporary directory, which must not be a tmpfs: a tmpfs writes
nothing to a block device and would read 0).

``dropkit sim`` with the printer off (the simulated printer would write its receipt images to
the same disk) takes ``--orders`` orders one after another over HTTP; the figure is the growth
of ``write_bytes`` in ``/proc/<pid>/io`` (what the process caused to be sent to the block
device) from just before the first order to just after the kit's orderly stop, divided by the
number of orders. The stop is counted because that is when the store's last checkpoint and the
kit's identity mark are written.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from agent.ops.harness import SimKit, write_config, write_manifest


def io_counters(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = int(value)
    return fields


def measure(state_dir: Path, orders: int) -> tuple[float, float]:
    """Bytes written per order to the block device, and per order as write() calls asked."""
    manifest = write_manifest(state_dir / "manifest.toml", [("B-1", "Bench", 100, 10 * orders)])
    config = write_config(state_dir / "agent.toml", {
        "kit": {"id": "kit-bench"}, "printer": {"enabled": False},
        "orders": {"manifest": str(manifest)}})
    kit = SimKit(state_dir / "kit", config).start()
    try:
        assert kit.proc is not None
        pid = kit.proc.pid
        # The kit settles after its start (the first mark, the manifest) before the count.
        time.sleep(1.0)
        before = io_counters(pid)
        for _ in range(orders):
            answer = kit.place([{"sku": "B-1", "qty": 1}])
            if answer.status != 201:
                raise SystemExit(f"order refused: {answer.status} {answer.data}")
        # /proc/<pid>/io stays readable until the parent reaps the child: stop it by hand.
        kit.proc.send_signal(15)
        last = before
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                last = io_counters(pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            if any("stopped; store closed" in line for line in kit.log):
                last = io_counters(pid)
                break
            time.sleep(0.01)
    finally:
        kit.stop()
    return ((last["write_bytes"] - before["write_bytes"]) / orders,
            (last["wchar"] - before["wchar"]) / orders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--state-dir", help="a directory on the disk to measure")
    args = parser.parse_args()
    root = Path(args.state_dir or tempfile.mkdtemp(prefix="dropkit-bytes-"))
    root.mkdir(parents=True, exist_ok=True)
    block, asked = measure(root, args.orders)
    print(f"{args.orders} orders: {block:,.0f} bytes written per order to the block device "
          f"({asked:,.0f} asked by write calls)")


if __name__ == "__main__":
    main()
