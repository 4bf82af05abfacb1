"""The first boot's setup slip, on the host: what it says, and how it reaches the printer.

``image/files/firstboot.py`` ships in the Pi image, not in a package, so it is loaded from its
path. Its ESC/POS goes through the printer simulator's own parser (over TCP, as the receipts do);
its device paths (the printer's udev link and the USB devices in sysfs) point into a temporary
directory. The VM boot test covers only the kit without a printer.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import time
from pathlib import Path
from types import ModuleType

import pytest
import qrcode

from simulators.printer import DOTS_BY_WIDTH_MM, PrintedReceipt, PrinterSimulator

FIRSTBOOT = Path(__file__).resolve().parents[1] / "image" / "files" / "firstboot.py"
# Every character the Wi-Fi QR code format escapes, in the name and in the passphrase.
SSID, PASSPHRASE = 'dropkit;a,b:c\\d"e', 'pass;word,with:every\\"'
FIELDS = [("Kit", "kit-3f9a0c12"), ("Wi-Fi network", SSID), ("Wi-Fi password", PASSPHRASE),
          ("Order page", "http://10.42.0.1:8080/"),
          ("Staff token", "3tgr-nyuq-urbh-rz3e-8eh3")]
BLOCKED_WRITE_BOUND_S = 1.0


def load_firstboot() -> ModuleType:
    spec = importlib.util.spec_from_file_location("firstboot", FIRSTBOOT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


firstboot = load_firstboot()


def printed_on(slip: bytes, width_mm: int) -> PrintedReceipt:
    """What a printer with ``width_mm`` paper makes of ``slip``; it must end with a cut."""
    with PrinterSimulator(port=0, paper_width_mm=width_mm) as sim:
        with socket.create_connection(("127.0.0.1", sim.port)) as connection:
            connection.sendall(slip)
        [receipt] = sim.wait_for_receipts(1)
    return receipt


def read_wifi_code(code: str) -> dict[str, str]:
    """The fields of a ``WIFI:`` code as a phone reads them, backslash escapes undone."""
    assert code.startswith("WIFI:") and code.endswith(";;")
    fields = re.findall(r"([A-Z]+):((?:\\.|[^\\;])*);", code.removeprefix("WIFI:"))
    return {name: re.sub(r"\\(.)", r"\1", value) for name, value in fields}


def assert_is_the_slip(receipt: PrintedReceipt, lines: list[str]) -> None:
    assert receipt.text.splitlines() == lines
    assert receipt.qr_payloads == [firstboot.wifi_join_code(SSID, PASSPHRASE)]


def test_wifi_join_code_escapes_what_the_format_reserves() -> None:
    code = firstboot.wifi_join_code(SSID, PASSPHRASE)

    assert code == ('WIFI:T:WPA;S:dropkit\\;a\\,b\\:c\\\\d\\"e;'
                    'P:pass\\;word\\,with\\:every\\\\\\";;')
    assert read_wifi_code(code) == {"T": "WPA", "S": SSID, "P": PASSPHRASE}


@pytest.mark.parametrize("width_mm", sorted(DOTS_BY_WIDTH_MM))
def test_slip_prints_its_lines_a_wifi_qr_code_and_a_cut(width_mm: int) -> None:
    lines = firstboot.slip_lines(FIELDS)
    slip = firstboot.escpos_slip(lines, firstboot.wifi_join_code(SSID, PASSPHRASE))
    print(f"setup slip: {len(slip)} bytes")

    receipt = printed_on(slip, width_mm)

    # The same lines on either paper: no value is broken across two lines on 58 mm.
    assert_is_the_slip(receipt, lines)
    assert {value for _, value in FIELDS} <= set(receipt.text.splitlines())
    assert receipt.raw == slip and slip.endswith(b"\x1dV\x42\x03")  # the cut comes last
    assert len(slip) < 512


def test_longest_wifi_qr_code_fits_on_58_mm_paper() -> None:
    """A 32-character network name of escaped characters: the printer must still draw it."""
    code = firstboot.wifi_join_code(";" * 32, PASSPHRASE)
    symbol = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)  # as on the slip
    symbol.add_data(code)
    symbol.make(fit=True)
    module_dots = firstboot.escpos_slip([], code).split(b"\x1d(k\x03\x00\x31\x43", 1)[1][0]

    assert symbol.modules_count * module_dots <= DOTS_BY_WIDTH_MM[58]


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kit's /dev and /sys under ``tmp_path``: a USB hub on the bus, no printer yet."""
    hub = tmp_path / "sys/devices/platform/usb1/1-0:1.0"
    hub.mkdir(parents=True)
    (hub / "bInterfaceClass").write_text("09\n")
    usb_devices = tmp_path / "sys/bus/usb/devices"
    usb_devices.mkdir(parents=True)
    (usb_devices / hub.name).symlink_to(hub)
    (tmp_path / "dev/dropkit").mkdir(parents=True)
    monkeypatch.setattr(firstboot, "USB_DEVICES", usb_devices)
    monkeypatch.setattr(firstboot, "PRINTER", tmp_path / "dev/dropkit/printer")
    monkeypatch.setattr(firstboot, "PRINT_TIMEOUT_S", BLOCKED_WRITE_BOUND_S)
    return tmp_path


def plug_in_printer(kit: Path, monkeypatch: pytest.MonkeyPatch, device: Path) -> list[list[str]]:
    """A USB printer interface on the bus; udev links ``device`` as the printer once settled.

    Returns the commands the first boot ran, which must be udev's settle.
    """
    interface = kit / "sys/devices/platform/usb1/1-1/1-1:1.0"
    interface.mkdir(parents=True)
    (interface / "bInterfaceClass").write_text("07\n")
    (kit / "sys/bus/usb/devices" / interface.name).symlink_to(interface)
    ran: list[list[str]] = []

    def settle(command: list[str], check: bool) -> None:
        ran.append(command)
        firstboot.PRINTER.symlink_to(device)

    monkeypatch.setattr(firstboot.subprocess, "run", settle)
    return ran


def test_no_printer_on_the_bus_or_in_dev(kit: Path) -> None:
    assert firstboot.print_slip(b"slip") == "no printer found: copy these down"


def test_slip_is_written_to_the_printer_udev_links_late(
        kit: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lp0 = kit / "dev/usb/lp0"
    lp0.parent.mkdir()
    lp0.touch()
    ran = plug_in_printer(kit, monkeypatch, lp0)
    lines = firstboot.slip_lines(FIELDS)

    outcome = firstboot.print_slip(
        firstboot.escpos_slip(lines, firstboot.wifi_join_code(SSID, PASSPHRASE)))

    assert outcome == f"setup slip printed on {firstboot.PRINTER}"
    assert ran == [["udevadm", "settle", "--timeout=10"]]
    assert_is_the_slip(printed_on(lp0.read_bytes(), 58), lines)


def test_printer_that_refuses_the_slip(kit: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plug_in_printer(kit, monkeypatch, Path("/dev/full"))  # every write fails with ENOSPC

    assert firstboot.print_slip(b"slip") == ("the printer refused the setup slip "
                                             "(No space left on device): copy these down")


def test_printer_that_never_takes_the_slip_does_not_hold_up_the_boot(
        kit: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stuck = kit / "dev/usb/lp0"  # a FIFO nobody reads: opening it to write blocks
    stuck.parent.mkdir()
    os.mkfifo(stuck)
    plug_in_printer(kit, monkeypatch, stuck)
    lines = firstboot.slip_lines(FIELDS)
    slip = firstboot.escpos_slip(lines, firstboot.wifi_join_code(SSID, PASSPHRASE))

    started = time.monotonic()
    outcome = firstboot.print_slip(slip)
    waited = time.monotonic() - started

    assert outcome == "the printer did not take the setup slip: copy these down"
    assert BLOCKED_WRITE_BOUND_S <= waited < BLOCKED_WRITE_BOUND_S + 1.0
    # The writer was left waiting, not lost: a printer that wakes up later still gets the slip
    # (and reading it lets the writer finish).
    with stuck.open("rb") as printer:
        assert_is_the_slip(printed_on(printer.read(), 58), lines)
