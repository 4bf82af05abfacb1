"""``dropkit``: the daemon, its simulator and the operator's checks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from agent.clihq import add_hq
from agent.clitools import fail as _fail
from agent.clitools import missing_extra as _missing_extra
from agent.config import Config, ConfigError, load_config


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def _state_dir(args: argparse.Namespace, config: Config) -> Path:
    return Path(args.state_dir) if args.state_dir else Path(config.kit.state_dir)


def cmd_run(args: argparse.Namespace) -> int:
    from agent.app.daemon import serve
    from agent.app.kit import Wiring

    config = load_config(args.config)
    state_dir = _state_dir(args, config)
    wiring = Wiring(simulated=False, state_dir=state_dir, host=config.http.host,
                    port=config.http.port, manifest=config.orders.manifest)
    state_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(config, wiring))
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from agent.app.daemon import demo_manifest, serve
    from agent.app.kit import Kit, Wiring

    config = load_config(args.config, required=args.config is not None)
    temporary = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="dropkit-sim-")) if temporary else \
        Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)

    def announce(url: str, kit: Kit) -> None:
        print(f"dropkit sim: kit {kit.kit_id} is open at {url} (the customers' shop; the "
              f"staff till is {url.rstrip('/')}/till)", flush=True)
        print(f"dropkit sim: staff token {kit.staff_token}; state in {state_dir}"
              f"{' (removed at exit)' if temporary else ''}; Ctrl-C stops", flush=True)

    wiring = Wiring(simulated=True, state_dir=state_dir, host=args.host,
                    port=config.http.port if args.http_port is None else args.http_port,
                    manifest=config.orders.manifest or demo_manifest(), on_ready=announce)
    try:
        asyncio.run(serve(config, wiring))
    finally:
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from agent.core.manifest import read_manifest

    config = load_config(args.path)
    config.staff_token()
    if config.orders.manifest:
        manifest = read_manifest(config.orders.manifest)
        print(f"{args.path}: manifest {manifest.version} with {len(manifest.items)} items")
    print(f"{args.path}: OK (kit {config.kit_id})")
    return 0


def cmd_receipts_verify(args: argparse.Namespace) -> int:
    from agent.core import receipts
    from agent.core.orders import sale_matches_order

    config = load_config(args.config, required=args.config is not None)
    path = _state_dir(args, config) / "dropkit.db"
    if not path.exists():
        return _fail(f"{path}: no store here (give --state-dir or --config)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        report = receipts.verify(db, sale_matches_order)
    except sqlite3.DatabaseError as exc:
        return _fail(f"{path}: {exc}")
    finally:
        db.close()
    if report.ok:
        print(f"receipt chain OK: {report.links} links")
        return 0
    print(f"receipt chain broken at #{report.broken_seq}: {report.reason} "
          f"({report.links} links before it are good)")
    return 1


STORE_FILES = ("dropkit.db", "dropkit.db-wal", "dropkit.db-shm", "dropkit.identity")
"""The store's files: the database, its write-ahead log and index, the kit's identity."""


def cmd_store_reset(args: argparse.Namespace) -> int:
    """Set the store's files aside (never deleted), so the next start is a new kit."""

    config = load_config(args.config, required=args.config is not None)
    state_dir = _state_dir(args, config)
    if not args.i_know:
        return _fail(f"this makes {state_dir} a new kit: receipts from #1 again and the "
                     f"manifest's full stock on sale again. Stop the kit first, then run "
                     f"dropkit store reset --i-know (the old files are moved aside, not deleted)")
    present = [state_dir / name for name in STORE_FILES if (state_dir / name).exists()]
    if not present:
        return _fail(f"{state_dir}: no store here (give --state-dir or --config)")
    aside = Path(tempfile.mkdtemp(prefix=time.strftime("set-aside-%Y%m%d-%H%M%S-"),
                                  dir=state_dir))
    for path in present:
        path.rename(aside / path.name)
    print(f"moved {', '.join(path.name for path in present)} to {aside}; the next start is a "
          f"new kit")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    if missing := _missing_extra("watch", "ops"):
        return _fail(missing)
    from agent.config import MqttConfig, parse_config
    from agent.ops.watch import watch

    parse_config({"mqtt": {"url": args.broker}}, source="--broker")
    if wrong := [url for url in args.hq_url if not url.startswith(("http://", "https://"))]:
        return _fail(f"--hq-url {wrong[0]!r}: expected http://host:port (dropkit hq --http-port)")
    password = MqttConfig(password_file=args.password_file or "").password("--password-file")
    watch(args.broker, topic_prefix=args.topic_prefix, once_after=args.once,
          username=args.username or "", password=password, ca_file=args.ca_file or "",
          hq_urls=args.hq_url)
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    if missing := _missing_extra("drill", "ops"):
        return _fail(missing)
    from agent.ops.drill import runner
    from agent.ops.drill.scenarios import DRILLS

    if args.list:
        return runner.list_drills(DRILLS, sys.stdout)
    if args.name is None:
        runner.list_drills(DRILLS, sys.stderr)
        return _fail("name a drill, or all")
    try:
        return runner.run_drills(DRILLS, args.name, keep=args.keep, out=sys.stdout,
                                 state_dir=Path(args.state_dir) if args.state_dir else None,
                                 config=Path(args.config) if args.config else None)
    except runner.DrillError as exc:
        return _fail(str(exc))


def cmd_preflight(args: argparse.Namespace) -> int:
    from agent.core.clock import wall_synced
    from agent.ops import preflight
    from agent.ops.harness import KitClient

    config = load_config(args.config, required=args.config is not None)
    state_dir = _state_dir(args, config)
    token = ""
    if args.test_slip or args.buttons:  # the staff calls: the kit's token, from its config
        token = config.staff_token()
        if not token:
            try:
                token = (state_dir / "staff-token").read_text().strip()
            except OSError as exc:
                return _fail(f"the staff token: {state_dir / 'staff-token'}: {exc.strerror} "
                             f"(give --state-dir or --config)")
    kit = KitClient(args.url or f"http://127.0.0.1:{config.http.port}", token)
    fitted = tuple(button for button, pin in (
        ("offline", config.panel.offline_button), ("reprint", config.panel.reprint_button),
        ("shutdown", config.panel.shutdown_button)) if pin >= 0)
    print(f"dropkit preflight: the kit at {kit.url}")
    checks = preflight.checklist(
        kit, preflight.Options(test_slip=args.test_slip,
                               buttons=fitted if args.buttons else ()),
        synced=wall_synced()(), source=preflight.clock_source(),
        identify=preflight.chip_identity(config.power), say=print)
    return preflight.report(checks, sys.stdout)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="dropkit", description=__doc__)
    top.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="the daemon systemd starts, on the kit's real devices")
    run.add_argument("--config", help="config file (default $DROPKIT_CONFIG or "
                                      "/etc/dropkit/agent.toml)")
    run.add_argument("--state-dir", help="where the store lives (default [kit] state_dir)")
    run.set_defaults(func=cmd_run)

    sim = sub.add_parser("sim", help="the same daemon with every device simulated")
    sim.add_argument("--config", help="config file (default: built-in defaults)")
    sim.add_argument("--state-dir", help="keep state here (default: a temporary directory)")
    sim.add_argument("--http-port", type=int, help="port of the staff page and order endpoint "
                                                   "(default [http] port, 8080; 0 picks one)")
    sim.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; 0.0.0.0 for phones)")
    sim.set_defaults(func=cmd_sim)

    drill = sub.add_parser("drill", help="rehearse a bad day on the simulators: a timeline "
                                         "and a verdict (exit 0 pass, 1 fail, 3 skipped)")
    drill.add_argument("name", nargs="?", help="a drill (see --list), or all")
    drill.add_argument("--list", action="store_true", help="list the drills")
    drill.add_argument("--state-dir", metavar="DIR",
                       help="run in DIR/<drill> and keep it (default: a temporary directory, "
                            "removed unless it failed)")
    drill.add_argument("--keep", action="store_true", help="keep the temporary directory")
    drill.add_argument("--config", metavar="PATH",
                       help="this kit's config under the drill's own settings ([mqtt] is left "
                            "out)")
    drill.set_defaults(func=cmd_drill)

    flight = sub.add_parser("preflight", help="the checklist before a drop, on the kit: "
                                               "each check pass, warn, fail or skipped "
                                               "(exit 1 on a fail)")
    flight.add_argument("--config", help="the kit's config (default $DROPKIT_CONFIG or "
                                         "/etc/dropkit/agent.toml, else the defaults)")
    flight.add_argument("--state-dir", help="the kit's state directory, for its staff token "
                                            "(default [kit] state_dir)")
    flight.add_argument("--url", help="the kit's HTTP address (default "
                                      "http://127.0.0.1:<[http] port>)")
    flight.add_argument("--test-slip", action="store_true",
                        help="print a test slip (it sells nothing)")
    flight.add_argument("--buttons", action="store_true",
                        help="ask for each panel button to be pressed, and watch for it")
    flight.set_defaults(func=cmd_preflight)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="check a config file and its manifest")
    check.add_argument("path")
    check.set_defaults(func=cmd_config_check)

    add_hq(sub)

    watch = sub.add_parser("watch", help="remote ops: a live table of every kit on the broker")
    watch.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port")
    watch.add_argument("--topic-prefix", default="dropkit")
    watch.add_argument("--once", type=float, metavar="SECONDS",
                       help="listen this long, print the table once and exit")
    watch.add_argument("--hq-url", action="append", default=[], metavar="URL",
                       help="an HQ instance's HTTP address (dropkit hq --http-port) whose "
                            "/metrics to show; again for each instance")
    watch.add_argument("--username")
    watch.add_argument("--password-file")
    watch.add_argument("--ca-file")
    watch.set_defaults(func=cmd_watch)

    store = sub.add_parser("store", help="the kit's store")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    reset = store_sub.add_parser("reset", help="set the store aside (moved, never deleted): "
                                               "the next start is a new kit")
    reset.add_argument("--i-know", action="store_true",
                       help="the kit starts over: receipts from #1, the manifest's full stock")
    reset.add_argument("--config")
    reset.add_argument("--state-dir")
    reset.set_defaults(func=cmd_store_reset)

    rcpt = sub.add_parser("receipts", help="receipt chain tools")
    rcpt_sub = rcpt.add_subparsers(dest="receipts_command", required=True)
    verify = rcpt_sub.add_parser("verify", help="walk the receipt chain, name the first "
                                                "broken link")
    verify.add_argument("--config")
    verify.add_argument("--state-dir")
    verify.set_defaults(func=cmd_receipts_verify)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _setup_logging(args.verbose)
    from agent.app.kit import StartError
    from agent.core.manifest import ManifestError

    try:
        return args.func(args)
    except (ConfigError, StartError, ManifestError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
