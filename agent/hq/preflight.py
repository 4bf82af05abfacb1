"""``dropkit hq preflight``: the dry reconciliation before a drop, from the ledger alone.

Central stock against every kit's allocation and sales, each kit's manifest from HQ and its
answer, when HQ last heard each kit (its status and telemetry), its queue depth, its receipt
chain's head, the moves still open and the chains' faults, holds and gaps; then a verdict:
``READY`` (exit 0) or ``NOT READY`` with each problem named (exit 1).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from agent.hq.allocations import CENTRAL, sold_by
from agent.hq.ledger import Ledger
from agent.hq.sql import Tx

STALE_S = 60.0
"""A kit not heard for longer is a problem: six of its telemetry intervals (10 s)."""


@dataclass
class Preflight:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems

    def text(self) -> str:
        verdict = "verdict: READY" if self.ready else \
            f"verdict: NOT READY ({len(self.problems)} problem(s))"
        problems = ["problems:", *(f"  - {p}" for p in self.problems)] if self.problems else []
        return "\n".join([*self.lines, *problems, verdict])


def preflight(ledger: Ledger, now: float, stale_s: float = STALE_S) -> Preflight:
    """The check at wall-clock time ``now``."""
    out = Preflight()
    with ledger.db.reading() as tx:
        given: dict[str, Counter[str]] = {}
        for r in tx.all("SELECT kit_id, sku, qty FROM allocations ORDER BY kit_id, sku"):
            given.setdefault(r["kit_id"], Counter())[r["sku"]] = r["qty"]
        _stock(tx, given, out)
        _kits(tx, given, now, stale_s, out)
        for r in tx.all("SELECT * FROM moves WHERE state IN ('pending', 'releasing', 'adding') "
                        "ORDER BY id"):
            out.problems.append(
                f"move #{r['id']} ({r['qty']} x {r['sku']}, {r['from_kit'] or 'central stock'}"
                f" to {r['to_kit'] or 'central stock'}) is still {r['state']}")
    chain = [line for line in ledger.report() if not line.startswith("rejected: ")]
    out.problems += chain
    return out


def _stock(tx: Tx, given: dict[str, Counter[str]], out: Preflight) -> None:
    out.lines.append("central stock (SKU: qty; given to kits; not given; sold):")
    rows = tx.all("SELECT sku, qty, sold FROM stock ORDER BY sku")
    if not rows:
        out.lines.append("  none loaded (dropkit hq --stock): HQ only keeps the books")
    for r in rows:
        kits = {kit: qty[r["sku"]] for kit, qty in given.items() if qty[r["sku"]]}
        total = sum(kits.values())
        shown = ", ".join(f"{kit} {n}" for kit, n in sorted(kits.items())) or "none"
        out.lines.append(f"  {r['sku']}: {r['qty']}; {shown}; {r['qty'] - total}; "
                         f"{r['sold']}")
        if total > r["qty"]:
            out.problems.append(f"{r['sku']}: {total} given to kits, central stock has "
                                f"{r['qty']}")
        if r["sold"] > r["qty"]:
            out.problems.append(f"{r['sku']}: {r['sold']} sold, central stock has {r['qty']}")


def _kits(tx: Tx, given: dict[str, Counter[str]], now: float, stale_s: float,
          out: Preflight) -> None:
    heard = {r["kit_id"]: r for r in tx.all("SELECT * FROM kits")}
    manifests = {r["kit_id"]: r for r in tx.all("SELECT * FROM kit_manifests")}
    chains = {r["kit_id"]: r for r in tx.all("SELECT * FROM chains")}
    kits = sorted((set(heard) | set(manifests) | set(chains) | set(given)) - {CENTRAL})
    out.lines.append(f"kits ({len(kits)}):")
    for kit in kits:
        said: list[str] = []

        def problem(text: str, kit: str = kit, said: list[str] = said) -> None:
            said.append(text)
            out.problems.append(f"kit {kit}: {text}")

        seen = heard.get(kit)
        if seen is None or not seen["heard_at"]:
            problem("never heard on the broker by HQ")
        else:
            ago = now - seen["heard_at"]
            said.append(f"{seen['status'] or 'status unknown'}, heard {ago:.0f} s ago, mode "
                        f"{seen['mode'] or '?'}, queue {seen['queue_depth']}")
            if ago > stale_s:
                problem(f"not heard for {ago:.0f} s")
            elif seen["status"] != "online":
                problem(f"says {seen['status'] or 'nothing'}")
            if seen["queue_depth"]:
                problem(f"{seen['queue_depth']} message(s) not relayed yet")
        sent = manifests.get(kit)
        if sent is None:
            said.append("no allocation from HQ (sells the manifest it was given)")
        elif sent["state"] == "applied":
            said.append(f"manifest #{sent['seq']} applied ({sent['detail']})")
        elif sent["state"] == "refused":
            problem(f"refused manifest #{sent['seq']}: {sent['detail']}")
        else:
            problem(f"manifest #{sent['seq']} sent {sent['sent_at']}, not answered")
        sold = sold_by(tx, kit)
        if kit in given:
            said.append(", ".join(f"{sku} sold {sold[sku]} of {qty}"
                                  for sku, qty in sorted(given[kit].items())))
            for sku in sorted(sold):
                if sold[sku] > given[kit][sku]:
                    problem(f"{sku}: sold {sold[sku]}, allocated {given[kit][sku]}")
        head = chains.get(kit)
        said.append(f"chain head #{head['next_seq'] - 1} {head['head_hash'][:12] or '-'}"
                    if head else "no receipt yet")
        out.lines.append(f"  {kit}: " + "; ".join(said))
