"""The pulled plug: QEMU killed at random moments while clients in the VM sell, the same disk
booted again, and every sale a client saw confirmed is still in the store.

Each kit's persistent disk (a qcow2 overlay with ``cache=none``: a kill is a power cut, see
``vmboot.DISK_CACHE``) boots once per cut and once more. Each boot runs ``plug_guest.py``:
READY, the store read as the cut left it, the orders that may have been in flight retried, then
four clients ordering without pause, each confirmation on the line channel the moment the kit
answered. The host kills QEMU (SIGKILL) at a seeded random moment: one cut in four during the
boot, the others a few seconds into the selling. The boots that are cut go straight to the kit
(``KIT_ONLY``: the agent and what it is ordered after, on one emulated core). The last boot, the
kit's whole boot to multi-user.target, is not cut: it retries what the last cut left in flight
and reads the store once more, which must then hold exactly the orders confirmed.

``DROPKIT_PLUG_CUTS`` sets the number of cuts (fewer than 10 fails the run), shared out between
``DROPKIT_PLUG_KITS`` kits (2) cut side by side, each on a disk of its own.
``DROPKIT_PLUG_SEED`` replays a run (the seed is printed; kit k draws from seed + k). Run apart
with ``pytest -m vm -s``: it prints a line per boot.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.vm.images import VmImage, VmSetupError, build_or_reuse_image, persistent_disk
from tests.vm.lines import Line
from tests.vm.vmboot import BootResult, launch

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

HERE = Path(__file__).resolve().parent
GUEST_FILES = [HERE / "plug_guest.py", HERE / "guest.py"]
SCRIPT = "exec /opt/dropkit/venv/bin/python plug_guest.py\n"
CUTS = int(os.environ.get("DROPKIT_PLUG_CUTS", "10"))
# Kits cut side by side, each on a disk of its own with CUTS shared out: a one-core guest is one
# host CPU, and a CI machine's two would otherwise take turns idling.
KITS = int(os.environ.get("DROPKIT_PLUG_KITS", "2"))
SEED = int(os.environ.get("DROPKIT_PLUG_SEED") or secrets.randbelow(2**32))
BOOT_CUTS = 0.25  # the share of cuts that come during the boot
SELLING_S = (0.5, 3.0)  # a cut while selling: this long after the boot's first sale
READY_TIMEOUT_S = 300
FINAL_STEPS_S = 180  # the last boot: the store read twice, the retries, the power-off
CLIENTS = 4
# Each cut costs a boot, so the boots that are cut go straight to the kit: basic.target (the
# mounts and the root's ext4 journal, journald, udev, the kernel modules, the kit's system
# users, tmpfiles, the sockets: all that the agent's unit is ordered after) with the agent and
# the test runner, without multi-user.target's other services (NetworkManager and the Wi-Fi,
# logind, the getty), which keep nothing of the kit's. The last boot is the kit's whole boot.
KIT_ONLY = ("systemd.unit=basic.target", "systemd.wants=dropkit-agent.service",
            "systemd.wants=vmtest-runner.service")
# A Pi Zero 2 W's memory, one emulated core (a sixth less CPU time a cut than two under software
# emulation, and no cross-CPU code patching for TCG to race on), no VGA or other default devices
# (python -m tests.vm.cut_cost measures these choices).
GUEST = {"cpus": 1, "memory_mb": 512, "bare": True}
ORDER_ID = re.compile(r"plug-(\d\d)-(\d)-(\d{6})")


def client_of(order_id: str) -> tuple[str, int]:
    client, _, sequence = order_id.rpartition("-")
    return client, int(sequence)


@dataclass
class Boot:
    """One boot of the disk, and how it ended."""

    number: int
    cut: str  # "boot", "selling", or "" (the last boot, powered off by the runner)
    planned_cut_s: float | None
    groups: dict[str, int]  # the plan: clients to retry, last order seen confirmed
    result: BootResult | None = None
    cut_s: float | None = None  # host seconds from launch to the kill
    ready: dict[str, Any] | None = None
    ready_s: float | None = None  # host seconds from launch to the READY line
    store_s: float | None = None  # host seconds from launch to the store read (STORE line)
    cpu_s: float | None = None  # QEMU's CPU time up to the cut (user and system)
    store: dict[str, Any] | None = None  # as the cut before left it
    final_store: dict[str, Any] | None = None
    retried: dict[str, int] = field(default_factory=dict)  # order id: HTTP status
    retries_done: bool = False
    sold: list[str] = field(default_factory=list)  # new orders confirmed in this boot
    refused: list[str] = field(default_factory=list)
    confirmed_before: frozenset[str] = frozenset()  # every order seen confirmed before it

    @property
    def stage_at_cut(self) -> str:
        if not self.cut:
            return "-"
        if self.ready is None:
            return "booting"
        if self.store is None:
            return "reading the store"
        return "selling" if self.retries_done else "retrying"


@dataclass
class Campaign:
    kit: int
    seed: int
    boots: list[Boot]
    confirmed: set[str]
    seconds: float
    aborted: str = ""

    @property
    def cuts(self) -> list[Boot]:
        return [boot for boot in self.boots if boot.cut]

    def after_cuts(self) -> list[tuple[Boot, Boot]]:
        """Each cut with the boot that followed it."""
        return list(zip(self.boots, self.boots[1:], strict=False))


def read_lines(boot: Boot, lines: tuple[Line, ...]) -> None:
    prefix = f"plug-{boot.number:02d}-"
    for line in lines:
        word, _, rest = line.text.partition(" ")
        if word == "READY":
            boot.ready, boot.ready_s = json.loads(rest), line.at
        elif word == "STORE":
            boot.store_s = line.at
        elif word == "RETRIED":
            boot.retries_done = True
        elif word == "RETRY":
            order_id, status = rest.split()
            boot.retried[order_id] = int(status)
        elif word == "OK" and rest.startswith(prefix):
            boot.sold.append(rest.split()[0])
        elif word == "REFUSED":
            boot.refused.append(rest)


def first_sale(boot: Boot) -> Any:
    prefix = f"OK plug-{boot.number:02d}-"
    return lambda lines: next((line for line in lines if line.text.startswith(prefix)), None)


def ended(lines: list[Line]) -> bool:
    """The guest stopped on its own: the kit refused a sale, or the last boot is done."""
    return any(line.text.startswith(("REFUSED", "FINAL")) for line in lines)


def run_boot(image: VmImage, disk: Path, workdir: Path, boot: Boot, final: bool) -> None:
    share = workdir / "share"
    share.mkdir(parents=True)
    (share / "plan.json").write_text(json.dumps(
        {"boot": boot.number, "groups": boot.groups, "clients": CLIENTS, "final": final}))
    vm = launch(image, SCRIPT, files=GUEST_FILES, disk=disk, workdir=workdir, line_channel=True,
                kernel_options=() if final else KIT_ONLY, **GUEST)
    assert vm.lines is not None
    if boot.cut == "boot":
        vm.lines.wait_for(ended, boot.planned_cut_s or 0)
        boot.cut_s = vm.pull_plug()
    elif boot.cut == "selling":
        started = first_sale(boot)
        vm.lines.wait_for(lambda lines: started(lines) is not None or ended(lines),
                          READY_TIMEOUT_S)
        sale = started(vm.lines.lines)
        if sale is not None:
            vm.lines.wait_for(ended, sale.at + (boot.planned_cut_s or 0)
                              - (time.monotonic() - vm.started))
        boot.cut_s = vm.pull_plug()
    boot.result = vm.wait(READY_TIMEOUT_S + FINAL_STEPS_S)
    boot.cpu_s = vm.cpu_s
    read_lines(boot, boot.result.lines)
    for name, attribute in ((f"store-{boot.number:02d}.json", "store"),
                            (f"store-{boot.number:02d}-final.json", "final_store")):
        if (share / name).exists():
            setattr(boot, attribute, json.loads((share / name).read_text()))


def run_campaign(image: VmImage, workdir: Path, kit: int, cuts: int) -> Campaign:
    seed = SEED + kit
    rng = random.Random(seed)
    workdir.mkdir()
    disk = persistent_disk(image, workdir / "kit.qcow2")
    confirmed: set[str] = set()
    last_confirmed: dict[str, int] = {}  # client: its last order seen confirmed (-1: none)
    in_flight: set[str] = set()  # clients whose last orders may have been in flight at a cut
    boots: list[Boot] = []
    typical_ready_s = 40.0
    started = time.monotonic()
    for number in range(cuts + 1):
        final = number == cuts
        cut = "" if final else ("boot" if rng.random() < BOOT_CUTS else "selling")
        planned = (rng.uniform(0.3, 1.0) * typical_ready_s if cut == "boot"
                   else rng.uniform(*SELLING_S) if cut else None)
        boot = Boot(number, cut, planned,
                    {client: last_confirmed[client] for client in sorted(in_flight)},
                    confirmed_before=frozenset(confirmed))
        boots.append(boot)
        run_boot(image, disk, workdir / f"boot-{number:02d}", boot, final)
        if boot.retries_done:  # the clients of this boot started after the retries
            in_flight -= set(boot.groups)
            for client in range(CLIENTS):
                in_flight.add(f"plug-{number:02d}-{client}")
                last_confirmed.setdefault(f"plug-{number:02d}-{client}", -1)
        for order_id in [*boot.retried, *boot.sold]:
            client, sequence = client_of(order_id)
            last_confirmed[client] = max(last_confirmed[client], sequence)
            confirmed.add(order_id)
        if boot.ready_s is not None:
            typical_ready_s = boot.ready_s
        print(f"kit {kit} {describe(boot)}")
        if boot.ready is None and boot.cut != "boot":
            return Campaign(kit, seed, boots, confirmed, time.monotonic() - started,
                            f"boot {number} never reached READY")
    return Campaign(kit, seed, boots, confirmed, time.monotonic() - started)


def describe(boot: Boot) -> str:
    ready = (f"READY {boot.ready['kernel_to_ready_s']:5.1f} s after kernel start "
             f"({boot.ready_s:5.1f} s after launch)" if boot.ready and boot.ready_s
             else "no READY")
    if boot.store:
        found = set(boot.store["orders"])
        chain = boot.store["chain"]
        store = (f"store {len(found)} orders = {len(boot.confirmed_before)} seen confirmed + "
                 f"{len(found - boot.confirmed_before)} kept unseen, chain {chain['links']} "
                 f"links {'ok' if chain['ok'] else 'BROKEN'}")
    else:
        store = "store not read"
    retried = list(boot.retried.values())
    ended = (f"cut at {boot.cut_s:5.1f} s ({boot.cut}, {boot.stage_at_cut})" if boot.cut
             else "powered off")
    stored = f", store read at {boot.store_s:.1f} s" if boot.store_s else ""
    return (f"boot {boot.number:2d}: {ready}{stored}; {store}; retried {retried.count(200)}x200 "
            f"{retried.count(201)}x201; sold {len(boot.sold)}; {ended}; "
            f"{boot.result.seconds if boot.result else float('nan'):.1f} s, "
            f"QEMU CPU {boot.cpu_s or float('nan'):.1f} s")


def summary(campaign: Campaign) -> dict[str, Any]:
    """The run's figures, boot by boot (``campaign.json`` beside the boots' logs)."""
    return {"kit": campaign.kit, "seed": campaign.seed, "seconds": campaign.seconds,
            "aborted": campaign.aborted, "confirmed": len(campaign.confirmed), "boots": [{
                "boot": boot.number, "cut": boot.cut, "planned_cut_s": boot.planned_cut_s,
                "cut_s": boot.cut_s, "stage_at_cut": boot.stage_at_cut, "ready": boot.ready,
                "ready_s": boot.ready_s, "store_s": boot.store_s, "cpu_s": boot.cpu_s,
                "confirmed_before": len(boot.confirmed_before),
                "found": len(boot.store["orders"]) if boot.store else None,
                "chain": boot.store["chain"] if boot.store else None,
                "retried": boot.retried, "sold": len(boot.sold), "refused": boot.refused,
                "final_found": len(boot.final_store["orders"]) if boot.final_store else None,
                "seconds": boot.result.seconds if boot.result else None}
                for boot in campaign.boots]}


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory: pytest.TempPathFactory) -> list[Campaign]:
    """Every kit's campaign, run side by side (``KITS`` threads, a QEMU each)."""
    try:
        image = build_or_reuse_image()
    except VmSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    workdir = tmp_path_factory.mktemp("plug")
    shares = [CUTS // KITS + (kit < CUTS % KITS) for kit in range(KITS)]
    print(f"\npulled plug: seed {SEED} (DROPKIT_PLUG_SEED={SEED} replays it), {CUTS} cuts "
          f"on {KITS} kits side by side ({', '.join(map(str, shares))})")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(KITS) as pool:
        done = list(pool.map(lambda kit: run_campaign(
            image, workdir / f"kit-{kit}", kit, shares[kit]), range(KITS)))
    seconds = time.monotonic() - started
    (workdir / "campaign.json").write_text(json.dumps([summary(kit) for kit in done], indent=2))
    boots = [boot for kit in done for boot in kit.boots]
    print(f"pulled plug: {sum(len(kit.cuts) for kit in done)} cuts in {seconds:.0f} s on "
          f"{KITS} kits ({sum(kit.seconds for kit in done) / len(boots):.0f} s a boot), "
          f"{sum(len(boot.sold) for boot in boots)} sales confirmed while selling, "
          f"{sum(len(kit.confirmed) for kit in done)} orders confirmed in all; seed {SEED}")
    return done


@pytest.fixture(params=range(KITS), ids=lambda kit: f"kit{kit}")
def campaign(campaigns: list[Campaign], request: pytest.FixtureRequest) -> Campaign:
    return campaigns[request.param]


def stores(campaign: Campaign) -> list[tuple[Boot, dict[str, Any]]]:
    """Every read of the store after a cut, with the boot that made it."""
    return [(boot, boot.store) for boot in campaign.boots[1:] if boot.store is not None]


def failure_context(campaign: Campaign, boot: Boot) -> str:
    console = boot.result.console[-3000:] if boot.result else ""
    return (f"kit {campaign.kit} (seed {campaign.seed}), boot {boot.number}; refused "
            f"{boot.refused}; console:\n{console}")


def test_ten_cuts_or_more_in_all(campaigns: list[Campaign]) -> None:
    assert sum(len(campaign.cuts) for campaign in campaigns) >= 10


def test_sales_before_each_cut_while_selling(campaign: Campaign) -> None:
    assert not campaign.aborted, campaign.aborted
    selling = [boot for boot in campaign.cuts if boot.cut == "selling"]
    assert all(boot.sold for boot in selling), [boot.number for boot in selling if not boot.sold]
    assert all(not boot.refused for boot in campaign.boots), [
        failure_context(campaign, boot) for boot in campaign.boots if boot.refused]


def test_every_order_seen_confirmed_is_in_the_store_after_each_cut(campaign: Campaign) -> None:
    assert stores(campaign), "no boot after a cut read the store"
    for boot, store in stores(campaign):
        missing = boot.confirmed_before - set(store["orders"])
        assert not missing, f"{sorted(missing)} lost; {failure_context(campaign, boot)}"


def test_each_client_has_an_unbroken_run_of_orders(campaign: Campaign) -> None:
    """A client sends its next order only after the last one's 201, so no order may be gone
    while a later one of the same client is there, seen confirmed or not."""
    for boot, store in stores(campaign):
        by_client: dict[str, list[int]] = {}
        for order_id in store["orders"]:
            match = ORDER_ID.fullmatch(order_id)
            assert match and int(match[1]) < boot.number, order_id
            client, sequence = client_of(order_id)
            by_client.setdefault(client, []).append(sequence)
        gaps = {client: sorted(numbers) for client, numbers in by_client.items()
                if sorted(numbers) != list(range(len(numbers)))}
        assert not gaps, f"boot {boot.number}: orders missing between kept ones: {gaps}"


def test_no_order_twice_and_retries_answer_what_the_store_kept(campaign: Campaign) -> None:
    retried = 0
    for boot, store in stores(campaign):
        assert store["sale_links_not_one"] == {}, store["sale_links_not_one"]
        assert len(set(store["orders"])) == len(store["orders"])
        found = set(store["orders"])
        for order_id, status in boot.retried.items():
            assert status == (200 if order_id in found else 201), (boot.number, order_id, status)
        retried += len(boot.retried)
    assert retried, "no order was ever in flight at a cut"


def test_receipt_chain_and_stock_verify_after_each_cut(campaign: Campaign) -> None:
    for boot, store in stores(campaign):
        orders = len(store["orders"])
        assert store["chain"] == {"ok": True, "links": orders, "broken_seq": None,
                                  "reason": ""}, f"boot {boot.number}: {store['chain']}"
        assert store["stock"] == {"items_sold": orders, "order_lines": orders,
                                  "ledger_sold": orders}
        assert store["quick_check"] == ["ok"]


def test_kit_reaches_ready_unattended_after_each_cut(campaign: Campaign) -> None:
    """Every boot reaches READY on its own, unless its own plug was pulled while it was still
    booting; an agent that started again on the way did so only because its start outran
    ``TimeoutStartSec`` (software emulation on a busy host), never because it failed."""
    for cut, after in campaign.after_cuts():
        if after.cut == "boot" and after.ready is None:
            continue
        assert after.ready is not None, f"no READY after cut {cut.number}"
        failed = after.ready["failed_starts"]
        assert len(failed) == after.ready["restarts_before_ready"], after.ready
        assert set(failed) <= {"timeout"}, failure_context(campaign, after)
        if after.cut == "boot" and after.store is None:
            continue
        assert after.store is not None, failure_context(campaign, after)
        health = after.store["health"]
        assert (health["http_status"], health["storage"]) == (200, "ok"), health


def test_the_guest_flushes_through_a_volatile_write_cache(campaign: Campaign) -> None:
    """cache=none shows the guest a write-back cache: ext4 and SQLite had to flush."""
    assert {boot.ready["write_cache"] for boot in campaign.boots if boot.ready} == {"write back"}


def test_after_the_last_cut_the_store_holds_exactly_the_orders_confirmed(
        campaign: Campaign) -> None:
    last = campaign.boots[-1]
    assert last.final_store is not None, failure_context(campaign, last)
    found = last.final_store["orders"]
    assert len(found) == len(set(found)) == len(campaign.confirmed)
    assert set(found) == campaign.confirmed
    assert last.final_store["chain"]["ok"] and last.final_store["chain"]["links"] == len(found)
