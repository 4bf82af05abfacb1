"""Real Mosquitto brokers and HQ processes for the uplink tests (:mod:`agent.ops.harness`), and a
listener that collects what the broker carries."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.ops.harness import Broker, write_config
from agent.ops.harness import Hq as Hq
from agent.ops.harness import wait_for as wait_for


class Listener:
    """A paho subscriber that collects (topic, payload, retained) for the test to inspect."""

    def __init__(self, broker: Broker, *topics: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: queue.Queue[tuple[str, bytes, bool, float]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, m.payload, bool(m.retain), time.monotonic()))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe([(topic, 1) for topic in topics])
        self.client.loop_start()
        assert subscribed.wait(10)

    def next(self, topic_suffix: str, timeout: float = 10) -> tuple[str, bytes, bool, float]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no message on *{topic_suffix} within {timeout} s")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if message[0].endswith(topic_suffix):
                return message

    def json(self, topic_suffix: str, timeout: float = 10) -> dict[str, Any]:
        return json.loads(self.next(topic_suffix, timeout)[1])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def kit_config(path: Path, broker: Broker, manifest: Path,
               sections: Mapping[str, Mapping[str, Any]] | None = None, **mqtt: Any) -> Path:
    """A kit on ``broker`` selling ``manifest``; ``mqtt`` overrides keys of ``[mqtt]``,
    ``sections`` adds others."""
    return write_config(path, {
        "kit": {"id": "kit-test"}, "orders": {"manifest": str(manifest)},
        "mqtt": broker.kit_mqtt(**mqtt), **(sections or {})})


def make_certificates(directory: Path, valid_from: str = "") -> None:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl; the server's
    valid from ``valid_from`` (``YYYYMMDDHHMMSSZ``) if given, else from now."""
    directory.mkdir(exist_ok=True)
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=test co-op CA", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    if not valid_from:
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
        return
    # openssl 3.0's x509 cannot set the start; its ca can, with a config of its own.
    (directory / "index.txt").touch()
    (directory / "serial").write_text("01\n")
    (directory / "ca.cnf").write_text(
        "[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
        "default_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n"
        "[ext]\nsubjectAltName = IP:127.0.0.1\n")
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
            "-in", "server.csr", "-out", "server.crt", "-extensions", "ext",
            "-startdate", valid_from, "-enddate", "20991231000000Z")


def tls_broker(workdir: Path, certs: Path, *settings: str) -> Broker:
    """A broker (not started yet) whose listener speaks only TLS, with the server certificate
    of :func:`make_certificates` in ``certs``, and any other ``settings`` lines."""
    broker = Broker(workdir, persistence=True)
    broker.conf.write_text(broker.conf.read_text() + "\n".join([
        f"cafile {certs}/ca.crt", f"certfile {certs}/server.crt", f"keyfile {certs}/server.key",
        *settings]) + "\n")
    return broker


class SlowReturnProxy:
    """A TCP proxy on a free loopback port to ``broker`` that passes what the client sends at
    once and what the broker sends back ``delay_s`` late: so the broker's PUBACKs reach the
    client late, and a client that waits for them (or paho's in-flight window does) waits.

    With ``pubacks_only`` the broker's side is split into MQTT packets and only its PUBACKs are
    late (a broker slow to take a client's messages, quick to send it others). :meth:`cut`
    drops the connections it carries, as a lost link does; the client connects again."""

    def __init__(self, broker: Broker, delay_s: float, pubacks_only: bool = False) -> None:
        import socket

        self.broker, self.delay_s, self.pubacks_only = broker, delay_s, pubacks_only
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._carried: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Close every connection carried now (both ends)."""
        import socket

        for sock in self._carried:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._carried.clear()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.broker.port))
            self._carried += [client, upstream]
            late: queue.Queue[tuple[float, bytes]] = queue.Queue()
            sending = threading.Lock()  # the late packets and the others, never interleaved
            threading.Thread(target=self._pipe, args=(client, upstream, None, sending),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, late, sending),
                             daemon=True).start()
            threading.Thread(target=self._send_late, args=(late, client, sending),
                             daemon=True).start()

    def _pipe(self, source: Any, sink: Any, late: queue.Queue | None,
              sending: threading.Lock) -> None:
        pending = b""
        try:
            while data := source.recv(65536):
                if late is None:
                    sink.sendall(data)
                elif not self.pubacks_only:
                    late.put((time.monotonic() + self.delay_s, data))
                else:
                    packets, pending = mqtt_packets(pending + data)
                    for packet in packets:
                        if packet[0] >> 4 == PUBACK:
                            late.put((time.monotonic() + self.delay_s, packet))
                        else:
                            with sending:
                                sink.sendall(packet)
        except OSError:
            pass
        finally:
            if late is not None:
                late.put((0.0, b""))
            for sock in (source, sink):
                sock.close()

    @staticmethod
    def _send_late(late: queue.Queue, sink: Any, sending: threading.Lock) -> None:
        while True:
            due, data = late.get()
            if not data:
                return
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the delay this proxy is for
            try:
                with sending:
                    sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()


PUBACK = 4  # the MQTT packet type in the first byte's high nibble


def mqtt_packets(data: bytes) -> tuple[list[bytes], bytes]:
    """The whole MQTT packets at the start of ``data``, and what is left of the next one.

        >>> mqtt_packets(bytes([0x40, 2, 0, 1, 0x30, 5, 0]))
        ([b'@\\x02\\x00\\x01'], b'0\\x05\\x00')
    """
    packets = []
    while len(data) >= 2:
        length, shift, at = 0, 0, 1
        while at < len(data) and at <= 4:
            byte = data[at]
            length |= (byte & 0x7F) << shift
            shift += 7
            at += 1
            if not byte & 0x80:
                break
        else:
            break  # the length is not all here yet
        if len(data) < at + length:
            break
        packets.append(data[:at + length])
        data = data[at + length:]
    return packets, data
