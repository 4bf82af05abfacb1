"""What a Pi installs: the kit's wheel without extras. In an environment without the ``ops``
extra's packages (rich), the kit's daemon still starts and imports nothing of them, and the
commands that need the extra say so in one line (exit 2), never with a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
KIT_PACKAGES = ("agent.core", "agent.store", "agent.power", "agent.fieldio", "agent.uplink",
                "agent.web", "agent.app")


OPS = [re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0]
       for requirement in metadata.requires("dropkit") or [] if 'extra == "ops"' in requirement]
"""The distributions of the ops extra, as the installed dropkit lists them."""


@pytest.fixture(scope="module")
def without_ops(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of ``python -S``: this virtualenv's packages, but for the ops extra's
    (``rich`` and ``rich-13.9.4.dist-info`` are left out)."""
    assert OPS, "the ops extra lists something"
    site = tmp_path_factory.mktemp("site-without-ops")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if re.split(r"[-.]", entry.name, maxsplit=1)[0].lower() not in OPS:
            (site / entry.name).symlink_to(entry)
    return {**os.environ, "PYTHONPATH": f"{CHECKOUT}{os.pathsep}{site}"}


def python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", *args], env=env, cwd=CHECKOUT,
                          capture_output=True, text=True, timeout=60)


def test_the_environment_lacks_the_ops_extra(without_ops: dict[str, str]) -> None:
    done = python(without_ops, "-c", f"import {OPS[0]}")
    assert done.returncode == 1 and f"No module named '{OPS[0]}'" in done.stderr
    # The hq extra lists nothing yet: its commands run.
    done = python(without_ops, "-m", "agent", "hq", "report", "--db", "no-such.db")
    assert (done.returncode, done.stderr) == (2, "dropkit: no-such.db: no HQ ledger here\n")


@pytest.mark.parametrize(("command", "extra"), [(["watch", "--once", "0.1"], "ops"),
                                                (["drill", "--list"], "ops")])
def test_a_command_without_its_extra_says_what_to_install(
        without_ops: dict[str, str], command: list[str], extra: str) -> None:
    done = python(without_ops, "-m", "agent", *command)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr == (f"dropkit: dropkit {command[0]} needs the {extra} extra (missing "
                           f"{', '.join(OPS)}): pip install 'dropkit[{extra}]'\n")


def test_the_kit_needs_no_extra(without_ops: dict[str, str], tmp_path: Path) -> None:
    imports = python(without_ops, "-c", f"""
import importlib, pkgutil, sys
for name in {KIT_PACKAGES!r}:
    package = importlib.import_module(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        importlib.import_module(module.name)
leaked = [m for m in sys.modules if m.split(".")[0] in {OPS!r}
          or m.startswith(("agent.hq", "agent.ops"))]
assert not leaked, leaked
""")
    assert imports.returncode == 0, imports.stderr
    kit = subprocess.Popen([sys.executable, "-S", "-m", "agent", "sim", "--http-port", "0",
                            "--state-dir", str(tmp_path / "state")], env=without_ops,
                           cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        assert kit.stdout is not None
        lines = []
        for line in kit.stdout:
            lines.append(line)
            if "is open at" in line:
                break
        assert any("is open at" in line for line in lines), "".join(lines)
    finally:
        kit.send_signal(signal.SIGTERM)
        kit.communicate(timeout=20)
