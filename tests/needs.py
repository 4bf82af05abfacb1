"""What a test needs of the machine beside Python: the Debian packages ``./run-tests``
installs when run as root (Mosquitto, Chromium, zbar-tools, nut-client, libnm's bindings).

The one place that decides what a missing one means: on a laptop the test is skipped, saying
what to install; in CI (the environment variable ``CI`` set, to anything but ``0``, ``false``
or ``no``) it fails, since there the package must be there and a skip would pass a run that
tested nothing of it.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from agent.ops.harness import mosquitto_binary


def in_ci() -> bool:
    """True when the tests run in CI (``CI`` set, and not to 0, false or no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def fail_in_ci(what: str, package: str) -> None:
    """``what`` is missing: in CI that fails the test; elsewhere the caller goes on."""
    if in_ci():
        pytest.fail(f"{what} is missing, and CI is set: ./run-tests installs the Debian "
                    f"package {package} when run as root", pytrace=False)


def missing(what: str, package: str) -> NoReturn:
    """``what`` is missing: fail in CI, skip elsewhere (saying what to install)."""
    fail_in_ci(what, package)
    pytest.skip(f"needs {what} (apt-get install {package})")


def mosquitto() -> str:
    """The Mosquitto broker to start, or the missing package's skip (a failure in CI)."""
    found = mosquitto_binary()
    if found is None:
        missing("mosquitto", "mosquitto")
    return found
