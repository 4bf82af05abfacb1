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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
RECONNECT_S = (0.5, 2.0)
"""paho's own reconnect (the network thread of HQ and watch): 0.5 s, doubling up to 2 s, so HQ
is back within 2 s of its broker (they are a few clients, not a fleet). The kit reconnects by
itself instead, with :class:`agent.backoff.Backoff` and jitter."""


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


def tls_failure(exc: ssl.SSLError, broker: str, now: str) -> str:
    """What a failed TLS handshake means, in one line; a certificate that is not valid yet
    names the kit's clock (a Pi boots with the time it last saved)."""
    if "not yet valid" in str(getattr(exc, "verify_message", "")):
        return (f"TLS with broker {broker}: its certificate is not valid yet by this kit's "
                f"clock ({now}); the kit's clock is probably not set yet, and the kit connects "
                f"once NTP or HQ sets it")
    return f"TLS with broker {broker} failed: {exc}"


def _bound_reads(paho: mqtt.Client, max_bytes: int, too_big: Callable[[int], object]) -> None:
    """Refuse a packet whose announced length is over ``max_bytes`` before reading its body.

    paho reads the fixed header, then the body with ``_sock_recv`` (the one seam it has); an
    OSError there is a lost connection to paho, which closes the socket.
    """
    recv = paho._sock_recv

    def bounded_recv(size: int) -> bytes:
        packet = paho._in_packet  # paho replaces it after each packet
        if packet["have_remaining"] and packet["remaining_length"] > max_bytes:
            too_big(packet["remaining_length"])
            raise ConnectionAbortedError(f"packet of {packet['remaining_length']} bytes")
        return recv(size)

    paho._sock_recv = bounded_recv  # type: ignore[method-assign]


def new_client(url: str, *, client_id: str = "", protocol: str = "5",
               session_expiry_s: int | None = None, keepalive_s: int = 30,
               username: str = "", password: str = "", ca_file: str = "", cert_file: str = "",
               key_file: str = "", will: Will | None = None,
               max_packet_bytes: int | None = None,
               packet_too_big: Callable[[int], object] | None = None,
               manual_ack: bool = False, receive_maximum: int | None = None) -> Client:
    """A client for the broker at ``url``; TLS for ``mqtts://``.

    ``protocol`` is ``"5"`` or ``"3.1.1"``. With ``session_expiry_s`` the session is persistent
    (the broker keeps it, and the messages for it, while the client is away): clean session off
    (3.1.1), or clean start off and that session expiry (5). Without it each connection starts
    a new session. ``max_packet_bytes`` is MQTT 5's Maximum Packet Size in the CONNECT: the
    broker drops a bigger message for this client rather than send it. And the client checks
    it itself (3.1.1 has no such property, and paho 2.x reads a packet of any announced length,
    up to 256 MB, into memory): a packet announced bigger ends the connection before its body
    is read, and ``packet_too_big(length)`` is told. With ``manual_ack`` a QoS 1 message is
    acknowledged to the broker only by ``paho.ack(mid, qos)``; ``receive_maximum`` (MQTT 5) is
    how many such messages the broker may send before the first is acknowledged.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    address = broker_address(url)
    v5 = protocol == "5"
    persistent = session_expiry_s is not None
    paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                       protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=manual_ack,
                       **({} if v5 else {"clean_session": not persistent}))
    connect_options: dict[str, Any] = {}
    if v5 and (persistent or max_packet_bytes or receive_maximum):
        properties = Properties(PacketTypes.CONNECT)
        if persistent:
            properties.SessionExpiryInterval = session_expiry_s
            connect_options["clean_start"] = False
        if max_packet_bytes:
            properties.MaximumPacketSize = max_packet_bytes
        if receive_maximum:
            properties.ReceiveMaximum = receive_maximum
        connect_options["properties"] = properties
    if address.tls:
        paho.tls_set_context(tls_context(ca_file, cert_file, key_file))
    if username:
        paho.username_pw_set(username, password or None)
    if will is not None:
        paho.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    paho.reconnect_delay_set(*RECONNECT_S)
    if max_packet_bytes:
        _bound_reads(paho, max_packet_bytes, packet_too_big or (lambda length: None))
    return Client(paho, address, keepalive_s, connect_options)
