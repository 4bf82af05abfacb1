"""``dropkit hq``: the co-op's reconciler, and ``report``, ``allocate`` and ``preflight`` on its
ledger (the extra ``dropkit[hq]``; each imports what it runs only when it runs)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from agent.clitools import fail as _fail
from agent.clitools import missing_extra as _missing_extra


def cmd_hq(args: argparse.Namespace) -> int:
    if missing := _missing_extra("hq", "hq"):
        return _fail(missing)
    from agent.config import MqttConfig, parse_config
    from agent.core.manifest import read_manifest
    from agent.hq.ledger import HOLD_S
    from agent.hq.server import run_hq

    # The broker URL is checked by the same rule as the kit's [mqtt] url.
    parse_config({"mqtt": {"url": args.broker}}, source="--broker")
    password = MqttConfig(password_file=args.password_file or "").password("--password-file")
    run_hq(args.broker, args.db, stock=read_manifest(args.stock) if args.stock else None,
           hold_s=HOLD_S if args.hold_s is None else args.hold_s,
           client_id=args.client_id, shared_group=args.shared_group,
           topic_prefix=args.topic_prefix, username=args.username or "", password=password,
           ca_file=args.ca_file or "", http_port=args.http_port, http_host=args.http_host)
    return 0


def _hq_ledger(command: str, db: str) -> Any:
    """The ledger at ``db`` for ``dropkit COMMAND``, or the exit code of why not (said)."""
    if missing := _missing_extra(command, "hq"):
        return _fail(missing)
    from agent.hq.ledger import Ledger
    from agent.hq.sql import is_postgresql

    if not is_postgresql(db) and not Path(db).exists():
        return _fail(f"{db}: no HQ ledger here")
    return Ledger(db)


def cmd_hq_report(args: argparse.Namespace) -> int:
    ledger = _hq_ledger("hq report", args.db)
    if isinstance(ledger, int):
        return ledger
    try:
        lines = ledger.report()
    finally:
        ledger.close()
    for line in lines:
        print(line)
    print(f"{len(lines)} mismatch(es)" if lines else "no mismatches")
    return 1 if lines else 0


def cmd_hq_allocate(args: argparse.Namespace) -> int:
    ledger = _hq_ledger("hq allocate", args.db)
    if isinstance(ledger, int):
        return ledger
    from agent.hq.allocations import Allocations, Refused

    try:
        allocations = Allocations(ledger.db)
        source, target = args.from_kit or "central stock", args.to_kit or "central stock"
        try:
            move_id = allocations.request(args.from_kit or "", args.to_kit or "", args.sku,
                                          args.qty)
        except Refused as refused:
            print(f"refused: {refused}")
            return 1
        print(f"move #{move_id}: {args.qty} x {args.sku} from {source} to {target}; waiting "
              f"for the kits (a running dropkit hq publishes their manifests)")
        deadline = time.monotonic() + args.wait
        while (move := allocations.move(move_id))["state"] not in ("done", "refused"):
            if time.monotonic() >= deadline:
                print(f"move #{move_id} is still {move['state']} after {args.wait:.0f} s: it "
                      f"goes on once the kit answers (dropkit hq preflight shows it)")
                return 3
            time.sleep(0.2)
        print(f"move #{move_id} {move['state']}" + (f": {move['reason']}" if move["reason"]
                                                   else ""))
        return 0 if move["state"] == "done" else 1
    finally:
        ledger.close()


def cmd_hq_preflight(args: argparse.Namespace) -> int:
    ledger = _hq_ledger("hq preflight", args.db)
    if isinstance(ledger, int):
        return ledger
    from agent.hq.preflight import preflight

    try:
        result = preflight(ledger, time.time(), args.stale_s)
    finally:
        ledger.close()
    print(result.text())
    return 0 if result.ready else 1


def add_hq(sub: Any) -> None:
    """``dropkit hq`` and its subcommands on the top parser's ``sub`` (its subparsers)."""
    hq = sub.add_parser("hq", help="the reference reconciler: central ledger and acks")
    hq.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port")
    hq.add_argument("--db", default="hq.db", help="the central ledger: a SQLite file, or "
                                                  "postgresql://user@host/dbname")
    hq.add_argument("--stock", help="central stock: a manifest whose qty is for all kits")
    hq.add_argument("--client-id", default="dropkit-hq",
                    help="MQTT client id; the broker keeps its session by this id")
    hq.add_argument("--shared-group", default="",
                    help="share the orders among HQ instances in this group")
    hq.add_argument("--topic-prefix", default="dropkit")
    hq.add_argument("--hold-s", type=float, metavar="SECONDS",
                    help="how long a message ahead of a missing receipt link waits for it "
                         "(default 5)")
    hq.add_argument("--http-port", type=int, metavar="PORT",
                    help="serve receipts (/r/KIT/SEQ/HASH) and /metrics on this port")
    hq.add_argument("--http-host", default="127.0.0.1",
                    help="address to serve them on (default 127.0.0.1)")
    hq.add_argument("--username")
    hq.add_argument("--password-file")
    hq.add_argument("--ca-file")
    hq.set_defaults(func=cmd_hq)
    hq_sub = hq.add_subparsers(dest="hq_command")
    report = hq_sub.add_parser("report", help="list rejected sales and receipt chain gaps")
    report.add_argument("--db", default="hq.db", help="as for dropkit hq")
    report.set_defaults(func=cmd_hq_report)
    allocate = hq_sub.add_parser(
        "allocate", help="move units of a SKU between kits (or from or to central stock)")
    allocate.add_argument("--db", default="hq.db", help="as for dropkit hq")
    allocate.add_argument("--from", dest="from_kit", metavar="KIT",
                          help="the kit giving the units (default: central stock no kit has)")
    allocate.add_argument("--to", dest="to_kit", metavar="KIT",
                          help="the kit taking them (default: back to central stock)")
    allocate.add_argument("--sku", required=True)
    allocate.add_argument("--qty", type=int, required=True, metavar="N")
    allocate.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                          help="how long to wait for the kits' answers (default 30)")
    allocate.set_defaults(func=cmd_hq_allocate)
    check = hq_sub.add_parser("preflight", help="the dry reconciliation before a drop: a "
                                                "verdict (exit 0 ready, 1 not)")
    check.add_argument("--db", default="hq.db", help="as for dropkit hq")
    check.add_argument("--stale-s", type=float, default=60.0, metavar="SECONDS",
                       help="a kit not heard for longer is a problem (default 60)")
    check.set_defaults(func=cmd_hq_preflight)
