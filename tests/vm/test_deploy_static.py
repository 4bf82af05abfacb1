"""The deploy scripts pass shellcheck (the units pass systemd-analyze verify in the VM)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.vm.images import CHECKOUT, VmSetupError, ensure_host_tools


def shell_scripts() -> list[Path]:
    return sorted([*(CHECKOUT / "image").rglob("*.sh"), *(CHECKOUT / "tests" / "vm").glob("*.sh")])


def test_shell_scripts_pass_shellcheck() -> None:
    try:
        ensure_host_tools({"shellcheck": "shellcheck"})
    except VmSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    scripts = shell_scripts()
    assert CHECKOUT / "image" / "provision.sh" in scripts
    done = subprocess.run(["shellcheck", "--external-sources", *map(str, scripts)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shell_scripts_are_executable() -> None:
    """pi-gen runs a stage's scripts only when they are executable; the VM build runs them too."""
    assert [path for path in shell_scripts() if not path.stat().st_mode & 0o100] == []
