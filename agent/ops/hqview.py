"""HQ as ``dropkit watch --hq-url URL`` shows it: each instance's ``/metrics`` (the Prometheus
text format, :mod:`agent.hq.metrics`) read every few seconds (:class:`HqPoller`), in a line per
instance and per kit (what HQ holds of it, its lag, its refused links).

    >>> samples = parse_metrics('dropkit_hq_held{kit="kit-a"} 2\\ndropkit_hq_acks_total 7\\n')
    >>> samples["dropkit_hq_held"], samples["dropkit_hq_acks_total"]
    ([({'kit': 'kit-a'}, 2.0)], [({}, 7.0)])
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

POLL_S = 2.0
MAX_BYTES = 1 << 20  # a /metrics page of a fleet of thousands of kits is a few hundred KB
PREFIX = "dropkit_hq_"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_metrics(text: str) -> Samples:
    """The samples of a page in the Prometheus text format, by metric name; comments, blank
    and malformed lines are skipped (a timestamp after a value is ignored)."""
    samples: Samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if line.startswith("#") or match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        found = {key: re.sub(r"\\[\\\"n]", lambda m: ESCAPES[m.group(0)], raw)
                 for key, raw in LABEL.findall(labels or "")}
        samples.setdefault(name, []).append((found, number))
    return samples


@dataclass
class HqSample:
    """What one instance's ``/metrics`` said last, or why it did not answer."""

    url: str
    samples: Samples = field(default_factory=dict)
    error: str = ""
    at: float = 0.0  # when it last answered (wall clock), 0 before it did
    _per_kit: dict[str, tuple[Samples, dict[str, float]]] = field(
        default_factory=dict, repr=False, compare=False)

    def total(self, name: str) -> float:
        return sum(value for _, value in self.samples.get(PREFIX + name, []))

    def per_kit(self, name: str) -> dict[str, float]:
        """A per-kit metric by kit id, indexed once per page: ``watch`` asks it of every kit of
        a fleet of thousands at each redraw."""
        indexed = self._per_kit.get(name)
        if indexed is None or indexed[0] is not self.samples:
            indexed = self._per_kit[name] = (self.samples, {
                labels.get("kit", ""): value for labels, value in
                self.samples.get(PREFIX + name, [])})
        return indexed[1]

    def line(self, now: float) -> str:
        """The instance in one line."""
        if self.error:
            since = f", last answered {now - self.at:.0f} s ago" if self.at else ""
            return f"HQ {self.url}: NOT ANSWERING ({self.error}){since}"
        if not self.at:
            return f"HQ {self.url}: asking ..."
        ledger = "up" if self.total("ledger_up") else "DOWN"
        counts = ", ".join(f"{self.total(name + '_total'):.0f} {name}" for name in (
            "messages", "acks", "rejections", "duplicates", "garbage"))
        kits = ", ".join(f"{name} {sum(self.per_kit(name).values()):.0f}"
                         for name in ("held", "missing", "faults"))
        lag = self.per_kit("kit_lag_seconds")
        slowest = max(lag, key=lag.__getitem__) if lag else ""
        worst = f"; lag at most {lag[slowest]:.1f} s ({slowest})" if lag else ""
        return f"HQ {self.url}: ledger {ledger}; {counts}; {kits}{worst}"

    def kit(self, kit_id: str) -> str:
        """What this instance says of one kit: only what is not zero."""
        said = [f"{name} {self.per_kit(name)[kit_id]:.0f}" for name in ("held", "missing",
                                                                        "faults")
                if self.per_kit(name).get(kit_id)]
        lag = self.per_kit("kit_lag_seconds").get(kit_id)
        return ", ".join(([f"lag {lag:.1f} s"] if lag is not None else []) + said)


def fetch(sample: HqSample, now: float, timeout: float = 2.0) -> None:
    """Read the instance's ``/metrics`` into ``sample`` (or say why it did not answer)."""
    try:
        with urllib.request.urlopen(sample.url.rstrip("/") + "/metrics",
                                    timeout=timeout) as answer:
            text = answer.read(MAX_BYTES + 1)
        if len(text) > MAX_BYTES:
            raise ValueError(f"a page over {MAX_BYTES} bytes")
        sample.samples, sample.error, sample.at = parse_metrics(text.decode("utf-8")), "", now
    except (OSError, ValueError, http.client.HTTPException) as exc:  # a broken reply too
        sample.error = str(getattr(exc, "reason", "") or exc)[:80]


class HqPoller:
    """Reads every instance's ``/metrics`` each :data:`POLL_S` seconds on a thread of its own;
    ``changed()`` is called after each round."""

    def __init__(self, urls: list[str], changed: Callable[[], object] = lambda: None) -> None:
        self.samples = [HqSample(url) for url in urls]
        self.changed = changed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="hq-metrics")

    def start(self) -> HqPoller:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            for sample in self.samples:
                fetch(sample, time.time())
            self.changed()
            if self._stop.wait(POLL_S):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
