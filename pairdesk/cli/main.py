"""The command line: ``python ingestion.py stream|import|export|alerts|migrate ...``.

One parser; each layer adds its own subcommands (``datafiles``, ``storage_pg``,
``alerts``) and this module holds no logic of its own beyond running the headless
ingester (``stream``) and printing its status.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import datafiles
import rest
import storage_pg
from ingestion import (
    DEFAULT_BASE_URL,
    DEFAULT_DB,
    IngestionConfig,
    IngestionService,
    ServiceStatus,
    _iso,
)
from models import parse_symbols

log = logging.getLogger("ingestion")


def format_status(s: ServiceStatus) -> str:
    """One status line for the CLI."""
    last = _iso(s.last_trade_ms) if s.last_trade_ms else "-"
    lag = (
        f"{s.lag_p50_ms:.0f}/{s.lag_p99_ms:.0f} ms"
        if s.lag_p50_ms is not None and s.lag_p99_ms is not None
        else "-"
    )
    line = (
        f"{s.state} [{s.role}] ticks={s.total_ticks} ({s.ticks_per_s:.1f}/s) "
        f"stored={s.stored_ticks} dup={s.duplicates} malformed={s.malformed} "
        f"gaps={s.gaps} reconnects={s.reconnects} queue={s.queue_depth} "
        f"lag p50/p99={lag} last={last}"
    )
    extra = [t for t in (s.lease_holder, s.last_error, *s.warnings) if t]
    return line + ("" if not extra else " | " + " | ".join(extra))


def _cmd_stream(args: argparse.Namespace) -> int:
    try:
        symbols = parse_symbols(args.symbols)
        config = IngestionConfig(
            symbols=tuple(symbols),
            db_path=args.db,
            base_url=args.url,
            record_path=args.record,
            max_trade_age_s=args.max_trade_age,
        )
        sync = rest.sync_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if sync is not None:
        check = sync.client.check_symbols_blocking(config.symbols)
        if check.invalid:
            print(f"error: {check.note}", file=sys.stderr)
            return 2
        if not check.checked:
            print(f"note: {check.note}", file=sys.stderr, flush=True)
    if args.duration is not None and not args.duration > 0:
        print(
            f"error: --duration must be > 0 seconds, got {args.duration}",
            file=sys.stderr,
        )
        return 2
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    import alerts  # the analytics behind it (statsmodels, scipy): when streaming

    # the writer runs the alert monitor, browser or not (architecture.md, decision 7)
    tasks = [alerts.AlertMonitor(config.db_path).run]
    if sync is not None:
        tasks.append(sync.run)
    service = IngestionService(config, tasks=tasks)
    print(
        f"streaming {','.join(config.symbols)} from {config.url} into {config.db_path}",
        flush=True,
    )
    service.start()
    end = None if args.duration is None else time.monotonic() + args.duration
    while not done.is_set():
        wait = args.status_every
        if end is not None:
            wait = min(wait, end - time.monotonic())
            if wait <= 0:
                break
        if done.wait(wait):
            break
        line = format_status(service.status())
        if sync is not None:
            rest_status = sync.status()
            line += f" rest={rest_status.state}"
            if rest_status.message:
                line += f" ({rest_status.message})"
        print(line, flush=True)
    service.stop(timeout=10.0)
    final = service.status()
    print("stopped: " + format_status(final), flush=True)
    return 0


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (its first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(
    argv: Sequence[str] | None = None,
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The CLI parser and its subparsers object (other modules add subcommands).

    ``alerts`` pulls in the analytics (statsmodels and scipy: about 75 MB and 0.7 s
    at start), so with ``argv`` given its subcommands are registered only when
    ``argv`` runs them; ``import`` of a large file then starts at ~125 MB.
    """
    parser = argparse.ArgumentParser(
        prog="ingestion.py", description="Binance USD-M Futures trades into SQLite."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stream", help="stream live trades into the database")
    p.add_argument("--symbols", required=True, help="e.g. btcusdt,ethusdt")
    p.add_argument(
        "--db",
        default=str(DEFAULT_DB),
        help="SQLite file, sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
    )
    p.add_argument("--url", default=DEFAULT_BASE_URL, help="WebSocket base URL + route")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--record", type=Path, default=None, help="append raw frames here")
    p.add_argument("--status-every", type=float, default=5.0, help="seconds")
    p.add_argument(
        "--max-trade-age",
        type=float,
        default=None,
        metavar="SECONDS",
        help="skip trades more than SECONDS behind (or 300 s ahead of) the receive "
        "time; default 86400 against an exchange, off against 127.0.0.1 (replays); "
        "0: off",
    )
    rest.add_cli_arguments(p)
    p.set_defaults(func=_cmd_stream)
    datafiles.add_cli_commands(sub)
    storage_pg.add_cli_commands(sub)
    if argv is None or _command(argv) == "alerts":
        import alerts

        alerts.add_cli_commands(sub)
    else:
        sub.add_parser("alerts", help="alert rules and their history (alerts -h)")
    return parser, sub


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, _sub = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))
