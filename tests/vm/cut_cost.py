"""What one pulled-plug cut costs, per way of booting: QEMU's CPU time and the wall time of a
boot cut a fixed time into the selling, the ways interleaved on one disk (as root)::

    .venv/bin/python -m tests.vm.cut_cost [--rounds 2] [--cut-after 2] [--ways kit-1,whole-2] OUT

Each row (printed, and ``OUT/results.json``) has the boot's wall time and QEMU's CPU time to the
cut, and the guest's figures: kernel start to userspace, to the agent's READY, the agent's own
start to READY. Ways: ``whole`` (multi-user.target, 1 GiB, QEMU's default devices) or ``kit``
(``test_pulled_plug.KIT_ONLY``, 512 MB, none), then the number of cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from tests.vm.images import VmImage, build_or_reuse_image, persistent_disk
from tests.vm.lines import Line
from tests.vm.test_pulled_plug import GUEST_FILES, KIT_ONLY, SCRIPT, ended
from tests.vm.vmboot import launch


def cut_once(image: VmImage, disk: Path, workdir: Path, number: int, way: str,
             cut_after: float) -> dict[str, Any]:
    boot, _, cores = way.partition("-")
    (workdir / "share").mkdir(parents=True)
    (workdir / "share" / "plan.json").write_text(json.dumps(
        {"boot": number, "groups": {}, "clients": 4, "final": False}))
    kit = boot == "kit"
    vm = launch(image, SCRIPT, files=GUEST_FILES, disk=disk, workdir=workdir, line_channel=True,
                kernel_options=KIT_ONLY if kit else (), cpus=int(cores),
                memory_mb=512 if kit else 1024, bare=kit)
    assert vm.lines is not None
    prefix = f"OK plug-{number:02d}-"

    def first_sale(lines: list[Line]) -> Line | None:
        return next((line for line in lines if line.text.startswith(prefix)), None)

    vm.lines.wait_for(lambda lines: first_sale(lines) is not None or ended(lines), 300)
    sale = first_sale(vm.lines.lines)
    if sale is not None:
        vm.lines.wait_for(ended, sale.at + cut_after - (time.monotonic() - vm.started))
    vm.pull_plug()
    result = vm.wait(60)
    ready = next((json.loads(line.text.split(" ", 1)[1]) for line in result.lines
                  if line.text.startswith("READY ")), {})
    return {"boot": number, "way": way, "wall_s": round(result.seconds, 1),
            "qemu_cpu_s": round(vm.cpu_s or 0, 1),
            "kernel_to_userspace_s": round(ready.get("kernel_to_userspace_s", -1), 1),
            "kernel_to_ready_s": round(ready.get("kernel_to_ready_s", -1), 1),
            "agent_start_to_ready_s": round(ready.get("agent_start_to_ready_s", -1), 1),
            "load": Path("/proc/loadavg").read_text().split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.vm.cut_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cut-after", type=float, default=2.0, help="s after the first sale")
    parser.add_argument("--ways", default="whole-2,kit-2,whole-1,kit-1")
    args = parser.parse_args()
    image = build_or_reuse_image()
    args.out.mkdir(parents=True)
    disk = persistent_disk(image, args.out / "kit.qcow2")
    rows = []
    ways = args.ways.split(",")
    for number in range(args.rounds * len(ways)):
        way = ways[number % len(ways)]
        rows.append(cut_once(image, disk, args.out / f"boot-{number:02d}-{way}", number, way,
                             args.cut_after))
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
