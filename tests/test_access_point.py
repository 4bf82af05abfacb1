"""The kit's access point profile (image/files/dropkit-ap.nmconnection.in), read as text and by
NetworkManager's own parser (libnm's keyfile reader, through PyGObject): the security settings
docs/security.md chooses for the Pi's Wi-Fi chips are the ones NetworkManager loads.

libnm ignores a key it does not know without a word, so a misspelt setting shows up only as the
value NetworkManager reads, which is what is checked.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path

from tests import needs

PROFILE = Path(__file__).resolve().parents[1] / "image" / "files" / "dropkit-ap.nmconnection.in"
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin") or "/usr/bin/python3"
# What the first boot puts in (image/files/firstboot.py, access_point).
FILLED = {"@UUID@": "3c1f0e8a-8d0b-4c1e-9a55-2b0f6f0f6e11", "@SSID@": "dropkit-3f9a0c12",
          "@PASSPHRASE@": "3tgr-nyuq-urbh-rz3e"}
READ_WITH_LIBNM = """
import json, sys
import gi
gi.require_version("NM", "1.0")
from gi.repository import GLib, NM
keyfile = GLib.KeyFile()
keyfile.load_from_file(sys.argv[1], GLib.KeyFileFlags.NONE)
connection = NM.keyfile_read(keyfile, "/", NM.KeyfileHandlerFlags.NONE, None, None)
wifi, security = connection.get_setting_wireless(), connection.get_setting_wireless_security()
print(json.dumps({
    "valid": connection.verify(),
    "mode": wifi.get_mode(),
    "ap_isolation": wifi.get_ap_isolation().value_nick,
    "key_mgmt": security.get_key_mgmt(),
    "pmf": security.get_pmf().value_nick,
    "proto": [security.get_proto(i) for i in range(security.get_num_protos())],
    "pairwise": [security.get_pairwise(i) for i in range(security.get_num_pairwise())],
    "group": [security.get_group(i) for i in range(security.get_num_groups())],
    "psk": security.get_psk(),
}))
"""


def template() -> configparser.ConfigParser:
    profile = configparser.ConfigParser(interpolation=None)
    profile.read_string(PROFILE.read_text())
    return profile


def test_the_profile_is_wpa2_ccmp_with_isolation_and_pmf_off() -> None:
    profile = template()
    security, wifi = profile["wifi-security"], profile["wifi"]
    assert (security["key-mgmt"], security["proto"]) == ("wpa-psk", "rsn")
    assert (security["pairwise"], security["group"]) == ("ccmp", "ccmp")  # no TKIP
    # NetworkManager's pmf: 0 default, 1 disable, 2 optional, 3 required.
    assert security["pmf"] == "1"
    assert wifi["mode"] == "ap" and wifi["ap-isolation"] == "1"
    text = PROFILE.read_text().lower()
    assert "sae" not in "".join(line for line in text.splitlines()
                                if not line.lstrip().startswith("#"))


def test_networkmanager_reads_the_filled_profile_as_chosen(tmp_path: Path) -> None:
    found = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('NM', '1.0')"],
                           capture_output=True)
    if found.returncode != 0:
        needs.missing("libnm's GObject bindings", "gir1.2-nm-1.0 python3-gi")
    text = PROFILE.read_text()
    for field, value in FILLED.items():
        text = text.replace(field, value)
    assert re.search("@[A-Z]+@", text) is None
    filled = tmp_path / "dropkit-ap.nmconnection"
    filled.write_text(text)

    done = subprocess.run([SYSTEM_PYTHON, "-c", READ_WITH_LIBNM, str(filled)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "valid": True, "mode": "ap", "ap_isolation": "true", "key_mgmt": "wpa-psk",
        "pmf": "disable", "proto": ["rsn"], "pairwise": ["ccmp"], "group": ["ccmp"],
        "psk": FILLED["@PASSPHRASE@"]}
