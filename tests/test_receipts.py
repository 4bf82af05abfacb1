"""The receipt chain, and `dropkit receipts verify` naming the first broken link."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from agent.core.receipts import GENESIS_HASH, canonical_json, chain_hash
from tests.conftest import Kit


def verify(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "receipts", "verify",
                           "--state-dir", str(state)], capture_output=True, text=True)


def test_hash_is_sha256_over_the_previous_hash_and_canonical_json() -> None:
    entry = {"seq": 1, "kind": "sale", "lines": [{"sku": "Ä", "qty": 1}]}
    body = '{"kind":"sale","lines":[{"qty":1,"sku":"Ä"}],"seq":1}'
    assert canonical_json(entry) == body
    import hashlib
    assert chain_hash(GENESIS_HASH, entry) == hashlib.sha256(
        ("0" * 64 + body).encode("utf-8")).hexdigest()


def test_each_receipt_links_to_the_one_before(kit: Kit) -> None:
    with kit.client() as client:
        hashes = [kit.order(client, [{"sku": "PIN-LOGO", "qty": 1}]).json()["receipt"]
                  for _ in range(3)]
    db = sqlite3.connect(kit.state_dir / "dropkit.db")
    rows = db.execute("SELECT seq, body, prev_hash, hash FROM receipts ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3]
    prev = GENESIS_HASH
    for (seq, body, prev_hash, link), answer in zip(rows, hashes, strict=True):
        assert prev_hash == prev and link == chain_hash(prev, body) == answer["hash"]
        assert json.loads(body)["seq"] == seq == answer["seq"]
        prev = link


def test_verify_names_the_first_broken_link(kit: Kit) -> None:
    with kit.client() as client:
        for _ in range(5):
            assert kit.order(client, [{"sku": "ZINE-07", "qty": 1}]).status_code == 201
    kit.stop()
    state = kit.state_dir
    ok = verify(state)
    assert ok.returncode == 0 and ok.stdout.strip() == "receipt chain OK: 5 links"

    db = sqlite3.connect(state / "dropkit.db")
    # An edited order (cheaper than it was sold) breaks the chain at its sale.
    order_id = db.execute("SELECT order_id FROM receipts WHERE seq = 3").fetchone()[0]
    db.execute("UPDATE order_lines SET price_cents = 1 WHERE order_id = ?", (order_id,))
    db.commit()
    broken = verify(state)
    assert broken.returncode == 1
    assert broken.stdout.startswith("receipt chain broken at #3:"), broken.stdout
    assert "differs from its receipt" in broken.stdout
    db.execute("UPDATE order_lines SET price_cents = 800 WHERE order_id = ?", (order_id,))
    # An edited link body breaks the chain at that link.
    body = json.loads(db.execute("SELECT body FROM receipts WHERE seq = 2").fetchone()[0])
    body["total_cents"] = 0
    db.execute("UPDATE receipts SET body = ? WHERE seq = 2", (canonical_json(body),))
    db.commit()
    assert "broken at #2: its hash does not match" in verify(state).stdout
    # A deleted link is named as missing.
    db.execute("DELETE FROM receipts WHERE seq = 1")
    db.execute("PRAGMA foreign_keys=OFF")
    db.commit()
    assert "broken at #1: link #1 is missing" in verify(state).stdout


def test_verify_without_a_store_says_so(tmp_path: Path) -> None:
    answer = verify(tmp_path)
    assert answer.returncode == 2 and "no store here" in answer.stderr
