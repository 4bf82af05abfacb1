"""A part that cannot run is a degraded part with its reason, logged once, never silence.

The daemon as it runs in the field (a ``dropkit sim`` subprocess): the power-fail line of
``[power] fail_gpio`` cannot be opened on a machine without GPIO, so that part fails at every
try; the sensors are still polled, sales go on, and health says what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from agent.ops.harness import wait_for, write_config
from tests.conftest import Kit


def health(kit: Kit) -> dict:
    return httpx.get(kit.url + "/api/health", timeout=10).json()


def test_a_fail_line_that_cannot_open_is_a_degraded_part_and_sales_go_on(
        kit_factory, tmp_path: Path) -> None:
    kit = kit_factory(config=write_config(tmp_path / "agent.toml", {
        "kit": {"id": "kit-test"}, "power": {"fail_gpio": 6}}))
    state = wait_for(lambda: (h := health(kit))["parts"]["power_fail_line"]["failures"] >= 3
                     and h, 15, "the fail line tried three times")
    assert state["status"] == "degraded"
    assert "pin factory" in state["degraded"]["power_fail_line"]
    assert state["parts"]["power_fail_line"]["state"] == "degraded"
    assert "degraded_power_fail_line" in state["alerts"]
    # The monitor itself runs on: the sensors are read and the kit is on line.
    assert state["parts"]["power"]["state"] == "running"
    assert state["power"]["state"].startswith("OL")
    with kit.client() as client:
        answer = kit.order(client, [{"sku": "TEE-BLK-M", "qty": 1}])
        assert answer.status_code == 201, answer.text
    log = "".join(kit.log)
    assert log.count("power_fail_line failed") == 1, log  # one traceback, not one per try
    assert log.count("Traceback") == 1, log
    assert "PinFactoryFallback" not in log
