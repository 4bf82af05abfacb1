"""A kit's first boot: pin the kit id, make the Wi-Fi passphrase and the staff token, show them.

Run by dropkit-firstboot.service as root, before the agent and NetworkManager start, until it has
finished once. Each secret is made only when it is missing, so a first boot cut short is finished
by the next one with the same secrets; the stamp written last keeps the unit from running again.

The kit id follows the agent's own rule (the Pi's serial number, else /etc/machine-id) and is
written into agent.toml, so the kit keeps its id when its card moves to a replacement Pi.

The secrets go to standard output, which the unit sends to the console only; the journal gets
the log lines on standard error, which name no secret.
"""

from __future__ import annotations

import configparser
import grp
import os
import re
import secrets
import subprocess
import sys
import threading
import tomllib
import uuid
from pathlib import Path

from agent.config import machine_kit_id
from hw.printer.receipt import QR_MODULE_DOTS

CONFIG = Path("/etc/dropkit/agent.toml")
STAFF_TOKEN = Path("/etc/dropkit/staff-token")
AP_TEMPLATE = Path("/opt/dropkit/share/dropkit-ap.nmconnection.in")
AP_PROFILE = Path("/etc/NetworkManager/system-connections/dropkit-ap.nmconnection")
PRINTER = Path("/dev/dropkit/printer")
USB_DEVICES = Path("/sys/bus/usb/devices")
DONE = Path("/var/lib/dropkit-setup/done")
ORDER_PAGE = "http://10.42.0.1:8080/"
TITLE = "DROP KIT SETUP"
# Lower case and digits without 0/o, 1/l/i: easy to read off a slip and type on a tablet.
ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
EMPTY_KIT_ID = re.compile(r'^id = ""', re.MULTILINE)
PRINT_TIMEOUT_S = 10


def log(message: str) -> None:
    print(f"dropkit-firstboot: {message}", file=sys.stderr, flush=True)


def readable_secret(groups: int) -> str:
    """Groups of four characters from :data:`ALPHABET`, joined by dashes (19.8 bits a group)."""
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(4)) for _ in range(groups))


def write_durably(path: Path, text: str, mode: int, group: str = "root") -> None:
    """Replace ``path`` atomically with ``text``; on disk before this returns."""
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        os.fchown(fd, 0, grp.getgrnam(group).gr_gid)
        os.fchmod(fd, mode)
        f.write(text)
        f.flush()
        os.fsync(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def pin_kit_id() -> str:
    text = CONFIG.read_text()
    configured = tomllib.loads(text).get("kit", {}).get("id", "")
    if configured:
        return configured
    kit_id = machine_kit_id()
    pinned, found = EMPTY_KIT_ID.subn(f'id = "{kit_id}"', text, count=1)
    if not found:
        raise SystemExit(f'{CONFIG}: no [kit] line \'id = ""\' to pin the kit id {kit_id} in')
    write_durably(CONFIG, pinned, 0o640, "dropkit")
    log(f"kit id {kit_id} pinned in {CONFIG}")
    return kit_id


def staff_token() -> str:
    if STAFF_TOKEN.exists():
        return STAFF_TOKEN.read_text().strip()
    token = readable_secret(5)
    write_durably(STAFF_TOKEN, token + "\n", 0o640, "dropkit")
    log(f"staff token made in {STAFF_TOKEN}")
    return token


def access_point(kit_id: str) -> tuple[str, str]:
    """The Wi-Fi name and passphrase, from the installed profile or a new one."""
    if AP_PROFILE.exists():
        profile = configparser.ConfigParser(interpolation=None)
        profile.read_string(AP_PROFILE.read_text())
        return profile["wifi"]["ssid"], profile["wifi-security"]["psk"]
    ssid = ("dropkit-" + kit_id.removeprefix("kit-"))[:32]
    passphrase = readable_secret(4)
    profile = (AP_TEMPLATE.read_text().replace("@UUID@", str(uuid.uuid4()))
               .replace("@SSID@", ssid).replace("@PASSPHRASE@", passphrase))
    write_durably(AP_PROFILE, profile, 0o600)
    log(f"access point {ssid} set up in {AP_PROFILE}")
    return ssid, passphrase


def wifi_join_code(ssid: str, passphrase: str) -> str:
    """The text of a Wi-Fi QR code, which phone cameras offer to join."""
    def escape(value: str) -> str:
        return re.sub(r'([\\;,:"])', r"\\\1", value)
    return f"WIFI:T:WPA;S:{escape(ssid)};P:{escape(passphrase)};;"


def slip_lines(fields: list[tuple[str, str]]) -> list[str]:
    """The slip's text: each value on a line of its own, so that no value is split across lines
    on 58 mm paper, where a line holds only 32 characters."""
    return [TITLE, *(line for label, value in fields for line in (f"{label}:", value)),
            "", "Scan to join the kit's Wi-Fi:"]


def escpos_slip(lines: list[str], qr_text: str) -> bytes:
    """ESC/POS for the setup slip: the lines, a QR code drawn by the printer, feed and cut."""
    qr = qr_text.encode()
    store_length = len(qr) + 3
    return b"".join([
        b"\x1b@",  # initialise
        "\n".join(lines).encode("ascii", "replace") + b"\n\n",
        b"\x1d(k\x04\x00\x31\x41\x32\x00",  # QR model 2
        b"\x1d(k\x03\x00\x31\x43" + bytes([QR_MODULE_DOTS]),  # module size, as receipts
        b"\x1d(k\x03\x00\x31\x45\x31",  # error correction M
        b"\x1d(k" + bytes([store_length % 256, store_length // 256]) + b"\x31\x50\x30" + qr,
        b"\x1d(k\x03\x00\x31\x51\x30",  # print the stored code
        b"\n\x1dV\x42\x03",  # feed three lines, partial cut
    ])


def usb_printer_plugged_in() -> bool:
    """A USB interface of the printer class (07) is on the bus, whether or not udev named it."""
    return any(path.read_text().strip() == "07"
               for path in USB_DEVICES.glob("*/bInterfaceClass"))


def print_slip(slip: bytes) -> str:
    """Send the slip to the kit's USB printer; what happened, for the console."""
    if usb_printer_plugged_in():
        # Its /dev/dropkit/printer link may still be on udev's queue this early in the boot.
        subprocess.run(["udevadm", "settle", "--timeout=10"], check=False)
    if not PRINTER.exists():
        return "no printer found: copy these down"
    outcome: list[str] = []

    def write() -> None:
        try:
            # No O_CREAT: a printer unplugged since the check must not leave a plain file at
            # its name, taken for a printed slip. A raw write may take part: write it all.
            with open(os.open(PRINTER, os.O_WRONLY | os.O_NOCTTY), "wb", buffering=0) as printer:
                view = memoryview(slip)
                while view:
                    view = view[printer.write(view):]
            outcome.append(f"setup slip printed on {PRINTER}")
        except OSError as exc:
            outcome.append(f"the printer refused the setup slip ({exc.strerror}): copy these down")

    # A printer out of paper can block a write for good; the boot must not wait on it.
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(PRINT_TIMEOUT_S)
    return outcome[0] if outcome else "the printer did not take the setup slip: copy these down"


def main() -> None:
    kit_id = pin_kit_id()
    token = staff_token()
    ssid, passphrase = access_point(kit_id)
    fields = [("Kit", kit_id), ("Wi-Fi network", ssid), ("Wi-Fi password", passphrase),
              ("Order page", ORDER_PAGE), ("Staff token", token)]
    lines = [TITLE, *(f"{label:<15}{value}" for label, value in fields)]
    printed = print_slip(escpos_slip(slip_lines(fields), wifi_join_code(ssid, passphrase)))
    log(printed)
    print("\n".join(["", *lines, printed, ""]), flush=True)
    write_durably(DONE, f"{kit_id}\n", 0o644)


if __name__ == "__main__":
    main()
