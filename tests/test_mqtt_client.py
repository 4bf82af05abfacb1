"""The one MQTT client factory (agent/uplink/mqtt.py): default ports and TLS by URL scheme,
persistent sessions, and ``dropkit watch`` and ``dropkit hq`` over TLS to a real Mosquitto."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.uplink.mqtt import BrokerAddress, broker_address, new_client, tls_context
from tests.mqtt_helpers import Hq, make_certificates, tls_broker, wait_for


def test_default_ports_and_tls_follow_the_scheme() -> None:
    assert broker_address("mqtt://broker.example.coop") == \
        BrokerAddress("broker.example.coop", 1883, tls=False)
    assert broker_address("mqtts://broker.example.coop") == \
        BrokerAddress("broker.example.coop", 8883, tls=True)
    assert broker_address("mqtts://127.0.0.1:9883") == BrokerAddress("127.0.0.1", 9883, True)
    # What HQ and watch connect to when given a URL without a port.
    assert new_client("mqtts://127.0.0.1").address.port == 8883
    assert new_client("mqtt://127.0.0.1").address.port == 1883
    with pytest.raises(ValueError, match="mqtts://host"):
        broker_address("http://broker.example.coop")


def test_tls_only_for_mqtts(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-ca.crt")
    new_client("mqtt://127.0.0.1", ca_file=missing)  # plain TCP: no CA is read
    with pytest.raises(FileNotFoundError):
        new_client("mqtts://127.0.0.1", ca_file=missing)
    make_certificates(tmp_path)
    context = tls_context(str(tmp_path / "ca.crt"), str(tmp_path / "server.crt"),
                          str(tmp_path / "server.key"))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_persistent_session_keeps_clean_start_off() -> None:
    options = new_client("mqtt://127.0.0.1", client_id="hq-1",
                         session_expiry_s=3600).connect_options
    assert options["clean_start"] is False
    assert options["properties"].SessionExpiryInterval == 3600
    assert new_client("mqtt://127.0.0.1").connect_options == {}
    # MQTT 3.1.1 has no session expiry: the session is kept by turning clean session off.
    assert new_client("mqtt://127.0.0.1", client_id="kit-1", protocol="3.1.1",
                      session_expiry_s=3600).connect_options == {}


def test_watch_and_hq_over_tls(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_certificates(certs)
    broker = tls_broker(tmp_path / "broker", certs).start()
    url, ca = f"mqtts://127.0.0.1:{broker.port}", str(certs / "ca.crt")
    hq = Hq(broker, tmp_path / "hq.db")
    hq.extra_args = ["--broker", url, "--ca-file", ca]
    hq.start()  # returns once HQ says it is connected

    kit = new_client(url, client_id="kit-tls", ca_file=ca)
    acks: list[dict[str, object]] = []
    subscribed = threading.Event()
    kit.paho.on_connect = lambda c, u, f, rc, p: c.subscribe("dropkit/kit-tls/acks", qos=1)
    kit.paho.on_subscribe = lambda *_: subscribed.set()
    kit.paho.on_message = lambda c, u, m: acks.append(json.loads(m.payload))
    kit.connect_async()
    kit.paho.loop_start()
    try:
        assert subscribed.wait(10), "the kit's client connected over TLS"
        kit.paho.publish("dropkit/kit-tls/status", "online", qos=1, retain=True)
        sale = {"type": "sale", "order_id": "tls-1", "receipt": {"seq": 1, "hash": "h1"},
                "lines": [], "total_cents": 0, "trace_id": "t-1"}
        kit.paho.publish("dropkit/kit-tls/orders", json.dumps(sale), qos=1)
        wait_for(lambda: acks, 15, "HQ's ack over TLS")
        assert acks[0]["order_id"] == "tls-1" and acks[0]["result"] == "accepted"
        shown = subprocess.run([sys.executable, "-m", "agent", "watch", "--broker", url,
                                "--ca-file", ca, "--once", "2"],
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "kit-tls" in shown.stdout and "online" in shown.stdout, shown.stdout
    finally:
        kit.paho.loop_stop()
        kit.paho.disconnect()
    assert hq.stop() == 0
    broker.stop()
