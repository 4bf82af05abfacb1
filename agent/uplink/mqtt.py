"""The one way dropkit builds an MQTT client (paho-mqtt 2.x): the kit's uplink, ``dropkit hq``
and ``dropkit watch`` all take theirs from :func:`new_client`.

A broker is named by a URL, ``mqtt://host[:port]`` (plain TCP, port 1883 by default) or
``mqtts://host[:port]`` (TLS, port 8883 by default):

    >>> broker_address("mqtts://broker.example.coop")
    BrokerAddress(host='broker.example.coop', port=8883, tls=True)
    >>> str(broker_address("mqtt://10.0.0.2"))
    '10.0.0.2:1883'
    >>> broker_address("mqtts://10.0.0.2:8884").port
    8884
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
RECONNECT_S = (0.5, 30.0)
"""paho's own reconnect (the network thread of HQ and watch): 0.5 s, doubling up to 30 s. The
kit reconnects by itself instead, with :class:`agent.backoff.Backoff` and jitter."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker URL points, and whether the connection is TLS."""

    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def broker_address(url: str) -> BrokerAddress:
    """Parse an ``mqtt://`` or ``mqtts://`` URL (ValueError for another scheme)."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"{url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    return BrokerAddress(parts.hostname or "localhost", parts.port or DEFAULT_PORTS[parts.scheme],
                         parts.scheme == "mqtts")


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for a client whose connection ends without DISCONNECT
    (or, in MQTT 5, with "disconnect with will message")."""

    topic: str
    payload: str
    qos: int = 1
    retain: bool = True


@dataclass
class Client:
    """A paho client for one broker, not connected yet, and how it connects."""

    paho: mqtt.Client
    address: BrokerAddress
    keepalive_s: int = 30
    connect_options: dict[str, Any] = field(default_factory=dict)

    def connect_async(self) -> None:
        """Connect from paho's network thread, once ``loop_start()`` runs it."""
        self.paho.connect_async(self.address.host, self.address.port, self.keepalive_s,
                                **self.connect_options)


def tls_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """A client context that checks the broker's certificate and name: against ``ca_file``
    (else the system's CAs), with ``cert_file`` and ``key_file`` as the client's own."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def new_client(url: str, *, client_id: str = "", protocol: str = "5",
               session_expiry_s: int | None = None, keepalive_s: int = 30,
               username: str = "", password: str = "", ca_file: str = "", cert_file: str = "",
               key_file: str = "", will: Will | None = None) -> Client:
    """A client for the broker at ``url``; TLS for ``mqtts://``.

    ``protocol`` is ``"5"`` or ``"3.1.1"``. With ``session_expiry_s`` the session is persistent
    (the broker keeps it, and the messages for it, while the client is away): clean session off
    (3.1.1), or clean start off and that session expiry (5). Without it each connection starts
    a new session.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    address = broker_address(url)
    v5 = protocol == "5"
    persistent = session_expiry_s is not None
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                       protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                       **({} if v5 else {"clean_session": not persistent}))
    connect_options: dict[str, Any] = {}
    if v5 and persistent:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry_s
        connect_options = {"clean_start": False, "properties": properties}
    if address.tls:
        paho.tls_set_context(tls_context(ca_file, cert_file, key_file))
    if username:
        paho.username_pw_set(username, password or None)
    if will is not None:
        paho.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    paho.reconnect_delay_set(*RECONNECT_S)
    return Client(paho, address, keepalive_s, connect_options)
