"""The uplink over TLS with a password per kit and an ACL, as a co-op's broker runs it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.conftest import new_order_id, write_manifest
from tests.mqtt_helpers import Hq, kit_config, make_certificates, tls_broker, wait_for


def test_tls_with_passwords_and_an_acl(kit_factory, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certificates(certs)
    passwords = tmp_path / "passwd"
    passwords.touch()
    for user, password in (("kit-test", "kit-secret"), ("hq", "hq-secret")):
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
    acl = tmp_path / "acl"
    # Each kit touches only its own topics; HQ reads every kit's orders and answers acks.
    acl.write_text("user hq\ntopic read dropkit/+/orders\ntopic write dropkit/+/acks\n\n"
                   "pattern readwrite dropkit/%u/#\n")
    broker = tls_broker(tmp_path / "broker", certs, f"password_file {passwords}",
                        f"acl_file {acl}")
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true",
                                                           "allow_anonymous false"))
    broker.start()
    url = f"mqtts://127.0.0.1:{broker.port}"
    (tmp_path / "hq-password").write_text("hq-secret\n")
    hq = Hq(broker, tmp_path / "hq.db")
    hq.extra_args = ["--broker", url, "--ca-file", str(certs / "ca.crt"), "--username", "hq",
                     "--password-file", str(tmp_path / "hq-password")]
    hq.start()
    (tmp_path / "kit-password").write_text("kit-secret\n")
    manifest = write_manifest(tmp_path / "stock.toml", [("A-1", "Item A", 250, 10)])
    config = kit_config(tmp_path / "agent.toml", broker, manifest, url=url,
                        ca_file=str(certs / "ca.crt"), username="kit-test",
                        password_file=str(tmp_path / "kit-password"))
    kit = kit_factory(tmp_path / "state", config)
    with kit.client() as client:
        order_id = new_order_id()
        assert client.post("/api/orders", headers=kit.staff, json={"order_id": order_id, "lines": [
            {"sku": "A-1", "qty": 1}]}).status_code == 201
        wait_for(lambda: client.get(f"/api/orders/{order_id}").json()["status"] ==
                 "reconciled", 15, "reconciled over TLS")
        assert client.get("/api/health").json()["uplink"]["broker"] == \
            f"127.0.0.1:{broker.port}"
    # A wrong password is refused by the broker and nothing is relayed.
    (tmp_path / "kit-password").write_text("wrong\n")
    other = kit_factory(tmp_path / "state2", config)
    with other.client() as client:
        assert client.post("/api/orders", headers=other.staff,
                           json={"order_id": new_order_id(), "lines": [
            {"sku": "A-1", "qty": 1}]}).status_code == 201
        assert client.get("/api/health").json()["uplink"]["state"] != "connected"
    wait_for(lambda: any("refused the connection" in line for line in other.log), 10,
             "the broker refuses a wrong password")
    assert "kit-secret" not in "".join(other.log)
    # A CA that did not sign the broker's certificate: refused, said once in words.
    make_certificates(tmp_path / "other-ca")
    (tmp_path / "kit-password").write_text("kit-secret\n")
    stranger = kit_factory(tmp_path / "state3", kit_config(
        tmp_path / "stranger.toml", broker, manifest, url=url,
        ca_file=str(tmp_path / "other-ca" / "ca.crt"), username="kit-test",
        password_file=str(tmp_path / "kit-password")))
    wait_for(lambda: any("certificate verify failed" in line for line in stranger.log), 10,
             "a wrong CA is refused with a clear line")
    with stranger.client() as client:
        assert client.get("/api/health").json()["uplink"]["state"] != "connected"
    time.sleep(2)  # several retries later, still one line
    assert sum("TLS with broker" in line for line in stranger.log) == 1
    hq.stop()
    broker.stop()


def test_a_certificate_not_valid_yet_names_the_kits_clock(kit_factory, tmp_path: Path) -> None:
    """A Pi that booted with an old saved time sees the broker's certificate as not valid yet:
    one line says the clock is the likely cause, not a silent retry."""
    certs = tmp_path / "certs"
    make_certificates(certs, valid_from="20990101000000Z")
    broker = tls_broker(tmp_path / "broker", certs).start()
    manifest = write_manifest(tmp_path / "stock.toml", [("A-1", "Item A", 250, 10)])
    config = kit_config(tmp_path / "agent.toml", broker, manifest,
                        url=f"mqtts://127.0.0.1:{broker.port}", ca_file=str(certs / "ca.crt"))
    kit = kit_factory(tmp_path / "state", config)
    said = wait_for(lambda: [line for line in kit.log if "not valid yet" in line], 15,
                    "the kit names its clock")
    assert "by this kit's clock" in said[0] and "clock is probably not set" in said[0]
    assert kit.health()["uplink"]["state"] != "connected"
    assert sum("TLS with broker" in line for line in kit.log) == 1
    broker.stop()
