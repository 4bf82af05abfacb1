"""A kit whose database was rewritten, caught by HQ at its next message: a real kit (``dropkit
sim``) sells through a real Mosquitto to a real ``dropkit hq``, is stopped, its store file is
rewritten with sqlite3 (a sale's contents changed and every later hash recomputed, the identity
file's mark too, so the kit itself starts on it), and sells again."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from agent.core.receipts import chain_hash
from tests.conftest import write_manifest
from tests.mqtt_helpers import Broker, Hq, kit_config, wait_for


def rewrite_from(store: sqlite3.Connection, seq: int) -> dict[str, str]:
    """Make sale ``seq`` a card payment (its order too) and recompute every hash from it on,
    each over the one before, as someone with the file and the rules would; old -> new hashes."""
    order_id = store.execute("SELECT order_id FROM receipts WHERE seq = ?", (seq,)).fetchone()[0]
    store.execute("UPDATE orders SET payment_method = 'card' WHERE order_id = ?", (order_id,))
    rows = store.execute("SELECT seq, body, hash FROM receipts WHERE seq >= ? ORDER BY seq",
                         (seq,)).fetchall()
    prev = store.execute("SELECT hash FROM receipts WHERE seq = ?", (seq - 1,)).fetchone()[0]
    renamed = {}
    for n, body, old in rows:
        if n == seq:
            body = body.replace('"payment_method":"cash"', '"payment_method":"card"')
        new = chain_hash(prev, body)
        store.execute("UPDATE receipts SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                      (body, prev, new, n))
        renamed[old], prev = new, new
    store.commit()
    return renamed


def test_a_rewritten_kit_database_is_caught_at_its_next_message(kit_factory, tmp_path,
                                                                hq_ledger) -> None:
    broker = Broker(tmp_path / "broker").start()
    hq = Hq(broker, hq_ledger).start()
    manifest = write_manifest(tmp_path / "stock.toml", [("A-1", "Item A", 250, 100)])
    config = kit_config(tmp_path / "agent.toml", broker, manifest)
    state = tmp_path / "state"
    kit = kit_factory(state, config)
    for _ in range(3):
        assert kit.place([{"sku": "A-1", "qty": 1}]).status == 201

    def statuses() -> list[str]:
        store = kit.open_store()
        try:
            return [r[0] for r in store.execute("SELECT status FROM orders ORDER BY seq")]
        finally:
            store.close()

    wait_for(lambda: statuses() == ["reconciled"] * 3, 30, "three sales reconciled")
    assert kit.stop() == 0

    store = sqlite3.connect(state / "dropkit.db")
    renamed = rewrite_from(store, 2)
    store.close()
    identity_file = state / "dropkit.identity"
    identity = json.loads(identity_file.read_text())
    identity["hash"] = renamed.get(identity["hash"], identity["hash"])
    identity_file.write_text(json.dumps(identity))
    verify = subprocess.run([sys.executable, "-m", "agent", "receipts", "verify",
                             "--state-dir", str(state)], capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr  # the kit alone cannot tell

    kit = kit_factory(state, config)
    fourth = kit.place([{"sku": "A-1", "qty": 1}])
    assert fourth.status == 201
    wait_for(lambda: statuses()[-1] == "rejected", 30, "the next sale answered")
    store = kit.open_store()
    reason = store.execute("SELECT ack_reason FROM orders WHERE seq = 4").fetchone()[0]
    store.close()
    assert reason == ("receipt #4 does not chain to the link before it as HQ holds it (the "
                      "chain was forked or rewritten)")
    report = subprocess.run([sys.executable, "-m", "agent", "hq", "report", "--db", hq_ledger],
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 1
    assert f"chain: kit kit-test sale {fourth.data['order_id']}: {reason}" in \
        report.stdout.splitlines(), report.stdout
    assert hq.query("SELECT count(*) FROM sales WHERE result = 'accepted'") == [(3,)]
    kit.stop()
    hq.stop()
    broker.stop()
