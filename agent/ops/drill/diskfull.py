"""The ``disk-full`` drill: the kit's state directory on a small disk of its own (a 3 MB tmpfs,
mounted by the drill, which needs root), sold until it is full, killed, started again, and
given room again. docs/drills.md describes it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from agent.ops.drill.runner import Session, Skipped
from agent.ops.harness import Answer, SimKit, write_manifest

SIZE_MB, GROWN_MB = 3, 64
WARN_MB = 1
REFUSED_IN_A_ROW = 20
MAX_ORDERS = 5000
"""The 3 MB disk is full long before this many orders; a bound all the same."""


def _mount(where: Path, options: list[str]) -> None:
    subprocess.run(["mount", *options, str(where)], check=True, capture_output=True)


def _unmount_keeping(disk: Path, kept: Path) -> None:
    """Copy what the kit left on the small disk next to it (for a failed drill), unmount it."""
    with contextlib.suppress(OSError):
        shutil.copytree(disk, kept, symlinks=True)
    subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def _free_mb(path: Path) -> float:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize / 1024 / 1024


def disk_full(s: Session) -> None:
    if os.geteuid() != 0:
        raise Skipped("needs root, to mount a small disk (tmpfs) for the kit's state")
    disk = s.workdir / "kit"
    disk.mkdir()
    _mount(disk, ["-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs"])
    s.stack.callback(_unmount_keeping, disk, s.workdir / "kit-on-the-small-disk")
    # The simulated printer's paper (receipt images) is not on the kit's disk, as in the field.
    (s.workdir / "paper").mkdir()
    (disk / "printer").symlink_to(s.workdir / "paper")
    # Stock for more sales than the disk holds, whatever a sale writes (about 20 KB now).
    manifest = write_manifest(s.workdir / "disk-full-manifest.toml",
                              [("DRILL-TEE", "Drill tee", 2500, MAX_ORDERS)], version="drill-1")
    kit = s.start_kit(kit={"storage_warn_mb": WARN_MB}, orders={"manifest": str(manifest)})
    s.note(f"the kit's state is on a {SIZE_MB} MB disk", f"{_free_mb(disk):.1f} MB free, warning "
           f"below {WARN_MB} MB")

    def sell() -> tuple[str, Answer]:
        answer = kit.place([{"sku": "DRILL-TEE", "qty": 1}])
        return answer.data.get("order_id", "") if answer.status == 201 else "", answer

    confirmed: dict[str, dict] = {}
    statuses: Counter[str] = Counter()
    in_a_row, warned = 0, None
    for _ in range(MAX_ORDERS):
        order_id, answer = sell()
        data = answer.data if isinstance(answer.data, dict) else {}
        statuses[f"{answer.status} {data.get('error', '')}".strip()] += 1
        if order_id:
            confirmed[order_id] = data["receipt"]
            in_a_row = 0
        else:
            in_a_row += 1
            if in_a_row >= REFUSED_IN_A_ROW or answer.status not in (503, 507):
                break
        if warned is None and _free_mb(disk) < WARN_MB:
            warned, _ = s.within(lambda: kit.health()["storage"]["state"] in ("low", "full")
                                 and kit.health()["storage"], 15, 0.1)
            s.expect(warned, "staff are warned before the disk is full",
                     f"storage {warned['state']}, {warned['free_mb']} MB free" if warned
                     else f"storage {kit.health()['storage']['state']} after 15 s")
    seen = ", ".join(f"{count} x {status}" for status, count in statuses.items())
    s.expect(set(statuses) <= {"201", "507 storage_full"},
             "every order is sold (201) or refused 507 storage_full, never a 500", seen)
    s.require(in_a_row >= REFUSED_IN_A_ROW, "the disk fills: orders are refused",
              f"{in_a_row} refused in a row, {len(confirmed)} sold")
    health = kit.health()
    s.expect(health["storage"]["state"] == "full" and "storage_full" in health["alerts"],
             "health shows the full disk, with an alert",
             f"storage {health['storage']['state']}, alerts {', '.join(health['alerts'])}")
    some = next(iter(confirmed))
    reads = (kit.request("GET", "/api/manifest").status,
             kit.request("GET", f"/api/orders/{some}").status)
    s.expect(reads == (200, 200), "the kit keeps answering reads", f"manifest, order: {reads}")

    kit.kill()
    s.note("kill -9 the kit on its full disk and start it again")
    kit.start()
    kept = sum(kit.request("GET", f"/api/orders/{order_id}").data.get("receipt") == receipt
               for order_id, receipt in confirmed.items())
    s.expect(kept == len(confirmed), "every confirmed sale is there after the restart",
             f"{kept} of {len(confirmed)}")

    _mount(disk, ["-o", f"remount,size={GROWN_MB}m"])
    s.note(f"give the disk room ({GROWN_MB} MB)")
    back, took = s.within(lambda: kit.health()["storage"]["state"] == "ok", 20, 0.1)
    s.expect(back, "the kit takes writes again by itself, without a restart",
             f"storage ok after {took:.1f} s" if back else
             f"storage {kit.health()['storage']['state']} after 20 s")
    after = [sell() for _ in range(5)]
    confirmed.update((order_id, answer.data["receipt"]) for order_id, answer in after
                     if order_id)
    s.expect(all(order_id for order_id, _ in after), "sales go on",
             f"{', '.join(str(answer.status) for _, answer in after)}")
    printed, took = s.within(lambda: _printed(kit, confirmed) == len(confirmed), 60, 0.2)
    s.expect(printed, "every sale's receipt is printed (or, cut by the kill, waits for "
             "staff's check)", f"after {took:.1f} s" if printed else
             f"{_printed(kit, confirmed)} of {len(confirmed)} after 60 s")
    links = s.check_chain(s.stop_kit())
    s.expect(len(links) == len(confirmed) and {link["order_id"] for link in links} ==
             set(confirmed), "the receipt chain is the confirmed sales, each once",
             f"{len(links)} links for {len(confirmed)} confirmed sales")


def _printed(kit: SimKit, confirmed: dict[str, dict]) -> int:
    """How many of the ``confirmed`` sales' receipts are printed (or ``unsure``)."""
    with contextlib.closing(kit.open_store()) as db:
        states = dict(db.execute("SELECT order_id, state FROM print_jobs "
                                 "WHERE kind = 'receipt'"))
    return sum(states.get(order_id) in ("printed", "unsure") for order_id in confirmed)
