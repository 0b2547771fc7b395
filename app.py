"""PairDesk: the Streamlit dashboard for live pair analytics on Binance USD-M futures.

Start it with ``streamlit run app.py`` (or ``python app.py``, which starts Streamlit on
itself). Arguments after ``--`` and the same settings as environment variables:

==================  =======================  =========================================
argument            environment variable     meaning (default)
==================  =======================  =========================================
``--source``        ``PAIRDESK_SOURCE``      ``live`` or ``demo`` (``live``)
``--db PATH|URL``   ``PAIRDESK_DB``          database file, ``sqlite:///PATH`` or
                                             ``postgresql://USER@HOST:PORT/DB``
                                             (``data/market.db``; Demo
                                             ``data/demo.db``)
``--symbols``       ``PAIRDESK_SYMBOLS``     ``BTCUSDT,ETHUSDT``
``--base-url URL``  ``PAIRDESK_BASE_URL``    exchange stream base URL, route included
``--no-ingest``     ``PAIRDESK_INGEST=0``    show the database without ingesting
``--rest-url URL``  ``PAIRDESK_REST_URL``    Binance USD-M REST base URL for Live
                                             (``https://fapi.binance.com``)
``--no-rest``       ``PAIRDESK_REST=0``      Live from the WebSocket alone: no
                                             exchange history, gap refill or
                                             symbol check
(none)              ``PAIRDESK_MAX_UPLOAD_   rows an upload may hold (5 000 000; the
                    ROWS``                   size cap is ``server.maxUploadSize``)
==================  =======================  =========================================

The script reads top to bottom: configuration, sidebar controls, the ingestion service
(one per process through ``st.cache_resource``), then two auto-refreshing fragments:
the live panel (last prices, live z-score, signal; every ``refresh`` seconds) and the
bar panel (tabs with charts of completed bars; recomputed only when a bar closes).
Everything shown is read back from the database (SQLite, or PostgreSQL behind the
same storage API); the analytics come from ``analytics.py`` and the figures from
``charts.py``. No Streamlit call ever runs off the script thread.

Alerts: each ingestion service runs an ``alerts.AlertMonitor`` as a service task, so
rules fire (stored, webhooks called) with no browser open, in the process holding the
writer lease only. The sidebar's Alerts expander edits rules; the live panel toasts
new firings; the Alerts tab shows rule states and the event history (on a dataset: a
one-off preview of the rules on its latest bars). The Data tab imports uploads into
datasets (``datafiles.import_file``), renames and deletes datasets, and offers CSV
downloads of ticks, bars, the pair table, backtest trades and the alert history.

REST (Live only; never Demo, whose synthetic prices must not mix with real klines,
nor a dataset): the Live service also runs a ``rest.RestSync`` task that warm-starts
each symbol with the last 24 h of 1 m klines and refills gaps. Symbols typed in the
sidebar are checked against ``exchangeInfo`` first (``RestClient.
check_symbols_blocking``, cached 10 minutes): refused ones keep the previous symbols
running; when REST is unreachable the check is skipped with a note. The status bar
shows a one-line REST summary; the market and pair charts mark where exchange
history ends and live data begins.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from html import escape as html_escape  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit.runtime.scriptrunner import get_script_run_ctx  # noqa: E402

import alerts  # noqa: E402
import analytics  # noqa: E402
import charts  # noqa: E402
import datafiles  # noqa: E402
import resampling  # noqa: E402
import rest  # noqa: E402
import storage  # noqa: E402
from models import (  # noqa: E402
    BAR_COLUMNS,
    interval_label,
    now_ms,
    parse_symbols,
)
from pairdesk.view import window as view_window  # noqa: E402
from pairdesk.view.window import (  # noqa: E402  (the view's names, as before)
    MAX_BARS,
    closed_end_ms,
    read_window_bars,
    window_start_ms,
)

SOURCES = ("live", "demo")
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")
DEFAULT_LIVE_DB = Path("data/market.db")
DEFAULT_DEMO_DB = Path("data/demo.db")
DEMO_SCHEMA = "demo"  # the Demo source's schema beside a PostgreSQL live database
TIMEFRAMES = ("1s", "1m", "5m", "custom")
LOOKBACKS: dict[str, int | None] = {
    "auto (3 windows)": None,
    "15m": 15 * 60,
    "1h": 3600,
    "4h": 4 * 3600,
    "12h": 12 * 3600,
    "24h": 24 * 3600,
}
HEDGE_METHODS: dict[str, str] = {
    "Rolling OLS": "rolling_ols",
    "Kalman": "kalman",
    "OLS": "ols",
    "Huber": "huber",
    "Theil-Sen": "theil_sen",
}
SIGNAL_RULES: dict[str, str] = {
    "z thresholds": "z",
    "Bertram bands (OU, cost-aware)": "bertram",
}
REFRESH_CHOICES = (0.5, 1.0, 2.0, 5.0, 10.0)
MAX_CHART_REFRESH_S = 5.0
# Streamlit dims elements while a rerun is in flight; with a refresh every 500 ms
# that reads as flashing, so keep them at full opacity.
NO_FLASH_CSS = (
    "<style>.stElementContainer[data-stale='true']"
    "{opacity:1 !important;transition:none !important}</style>"
)
TABLE_ROWS_SHOWN = 2000  # rows drawn in the Table tab (the CSV has every row)
LIVE_HOSTS_HINT = "wss://fstream.binance.com/public"
DEFAULT_MAX_UPLOAD_ROWS = 5_000_000  # larger files: the CLI import, which streams
UPLOAD_TYPES = ("csv", "zip", "json", "ndjson", "txt")
MAX_TOASTS = 5  # alert toasts shown per refresh; the rest are summed up in one
EVENT_SINCE: dict[str, int | None] = {
    "last hour": 3600,
    "last 24 h": 24 * 3600,
    "last 7 days": 7 * 24 * 3600,
    "all": None,
}
WEBHOOK_FORMAT_LABELS = {
    "json": "generic JSON",
    "slack": "Slack-compatible",
    "discord": "Discord",
    "telegram": "Telegram sendMessage",
}
SYMBOL_CHECK_TTL_S = 600.0  # a symbol check is reused this long per symbol set
SKIPPED_CHECK_TTL_S = 60.0  # a skipped check (REST unreachable) is retried sooner


# --------------------------------------------------------------------------------------
# Configuration: CLI arguments after `--`, environment variables, defaults.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppConfig:
    """Start-up settings of one dashboard process.

    Attributes
    ----------
    source : ``"live"`` or ``"demo"``, the source selected on first load.
    db_path : database of the Live source, a file ``Path`` or a PostgreSQL URL
        ``str`` (``storage.as_target``); imported datasets live in ``datasets/``
        beside it (on PostgreSQL: a schema each in the same database).
    demo_db_path : database of the Demo source, never the live one.
    symbols : upper-case symbols ingested on first load.
    base_url : stream base URL for Live, route included; None for the default.
    ingest : False shows the database read-only and starts no ingestion or replay.
    max_upload_rows : an upload with more data rows is refused (nothing is kept).
    rest_url : Binance USD-M REST base URL used by Live (history, refill, check).
    rest : False turns the REST side off (Live from the WebSocket alone); Demo and
        datasets never use REST whatever this says.
    """

    source: str = "live"
    db_path: Path | str = DEFAULT_LIVE_DB
    demo_db_path: Path | str = DEFAULT_DEMO_DB
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    base_url: str | None = None
    ingest: bool = True
    max_upload_rows: int = DEFAULT_MAX_UPLOAD_ROWS
    rest_url: str = rest.DEFAULT_REST_URL
    rest: bool = True


def demo_db_beside(live_db: Path | str) -> Path | str:
    """The Demo database that goes with a live one, never the live one itself.

    SQLite: ``demo.db`` beside the live file (``demo-source.db`` when the live file
    is named ``demo.db``). PostgreSQL: schema ``demo`` of the same database, the
    live URL with ``schema=demo`` (``demo_source`` when the live schema is
    ``demo``).
    """
    if isinstance(live_db, Path):
        demo = live_db.with_name("demo.db")
        return demo if demo != live_db else live_db.with_name("demo-source.db")
    parts = urlsplit(live_db)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEMO_SCHEMA
    if ("schema", DEMO_SCHEMA) in query:
        schema = f"{DEMO_SCHEMA}_source"
    # a dataset= parameter would pick a schema too: storage refuses both at once
    kept = [(k, v) for k, v in query if k not in ("schema", "dataset")]
    return urlunsplit(parts._replace(query=urlencode([*kept, ("schema", schema)])))


db_exists = storage.db_exists


def _arg_parser() -> argparse.ArgumentParser:
    """The parser of the arguments after ``--``."""
    parser = argparse.ArgumentParser(prog="app.py", add_help=False)
    parser.add_argument("--source", choices=SOURCES)
    parser.add_argument("--db")
    parser.add_argument("--symbols")
    parser.add_argument("--base-url", dest="base_url")
    parser.add_argument("--no-ingest", dest="no_ingest", action="store_true")
    parser.add_argument("--rest-url", dest="rest_url")
    parser.add_argument("--no-rest", dest="no_rest", action="store_true")
    return parser


def parse_config(
    argv: Sequence[str], environ: dict[str, str] | os._Environ[str]
) -> AppConfig:
    """Resolve start-up settings: command line first, then environment, then defaults.

    Parameters
    ----------
    argv : arguments after ``--`` (unknown ones are ignored, so the test runner's
        own ``sys.argv`` is harmless).
    environ : ``PAIRDESK_SOURCE``, ``PAIRDESK_DB``, ``PAIRDESK_SYMBOLS``,
        ``PAIRDESK_BASE_URL``, ``PAIRDESK_INGEST`` (``0``/``false``/``no`` disables),
        ``PAIRDESK_MAX_UPLOAD_ROWS`` (integer >= 1), ``PAIRDESK_REST_URL``,
        ``PAIRDESK_REST`` (``0``/``false``/``no`` disables).

    Returns
    -------
    AppConfig
        ``--db`` names the database of the source started with (a file,
        ``sqlite:///PATH`` or ``postgresql://USER@HOST:PORT/DB``, kept as
        ``storage.as_target`` gives it: a URL stays a ``str``): with ``--source
        demo`` it is the Demo database (the Live one stays ``data/market.db``);
        otherwise it is the Live database and Demo writes ``demo.db`` beside it,
        or, on PostgreSQL, schema ``demo`` of the same database (the URL with
        ``?schema=demo``). Demo and Live never share a database (see
        `demo_db_beside`).

    Raises
    ------
    ValueError
        When the source is not live/demo, a symbol is invalid or the REST URL is
        not http(s), naming the setting.
    """
    args, _unknown = _arg_parser().parse_known_args(list(argv))
    source = (args.source or environ.get("PAIRDESK_SOURCE") or "live").strip().lower()
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    db_text = args.db or environ.get("PAIRDESK_DB")
    live_db, demo_db = DEFAULT_LIVE_DB, DEFAULT_DEMO_DB
    if db_text and source == "demo":
        demo_db = storage.as_target(db_text)
    elif db_text:
        live_db = storage.as_target(db_text)
        demo_db = demo_db_beside(live_db)
    symbols_text = (
        args.symbols or environ.get("PAIRDESK_SYMBOLS") or ",".join(DEFAULT_SYMBOLS)
    )
    symbols = tuple(parse_symbols(symbols_text))
    base_url = args.base_url or environ.get("PAIRDESK_BASE_URL") or None
    ingest_env = environ.get("PAIRDESK_INGEST", "1").strip().lower()
    ingest = not args.no_ingest and ingest_env not in ("0", "false", "no", "off")
    rest_url = (
        args.rest_url or environ.get("PAIRDESK_REST_URL") or rest.DEFAULT_REST_URL
    ).strip()
    if not re.match(r"^https?://[^/\s]+", rest_url):
        raise ValueError(
            f"rest_url must be an http:// or https:// URL, got {rest_url!r}"
        )
    rest_env = environ.get("PAIRDESK_REST", "1").strip().lower()
    rest_on = not args.no_rest and rest_env not in ("0", "false", "no", "off")
    rows_text = environ.get("PAIRDESK_MAX_UPLOAD_ROWS", "").strip()
    max_rows = DEFAULT_MAX_UPLOAD_ROWS
    if rows_text:
        if not rows_text.isdigit() or int(rows_text) < 1:
            raise ValueError(
                f"PAIRDESK_MAX_UPLOAD_ROWS must be an integer >= 1, got {rows_text!r}"
            )
        max_rows = int(rows_text)
    return AppConfig(
        source=source,
        db_path=live_db,
        demo_db_path=demo_db,
        symbols=symbols,
        base_url=base_url,
        ingest=ingest,
        max_upload_rows=max_rows,
        rest_url=rest_url.rstrip("/"),
        rest=rest_on,
    )


def streamlit_command(argv: Sequence[str], script: Path) -> list[str]:
    """The command ``python app.py ARGS`` re-executes as ``streamlit run``.

    Streamlit's own options (``--server.port 8502``, ``--theme.base=light``) go before
    ``--``; everything else is passed to the script after ``--``.
    """
    st_opts: list[str] = []
    app_args: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item == "--":
            app_args += items[i + 1 :]
            break
        if re.match(r"^--(server|browser|theme|logger|client|runner|global)\.", item):
            st_opts.append(item)
            if "=" not in item and i + 1 < len(items):
                st_opts.append(items[i + 1])
                i += 1
        else:
            app_args.append(item)
        i += 1
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), *st_opts]
    if app_args:
        cmd += ["--", *app_args]
    return cmd


# --------------------------------------------------------------------------------------
# Ingestion service and demo replay: one of each per process (st.cache_resource).
# --------------------------------------------------------------------------------------


class ServiceRegistry:
    """The process-wide ingestion services and the demo replay server.

    Created once per process (``st.cache_resource``), shared by every browser tab, and
    touched only from script threads (a lock serialises them); the services' own
    threads never call back into it or into Streamlit.

    One service per (source, database): ``service`` creates it on first use, restarts
    it with new symbols when they change, and replaces it when its base URL changes
    (the demo replay restarted with other symbols). Each service carries an
    ``alerts.AlertMonitor`` of its database as a service task, so rules fire with no
    browser open, and only in the process holding the writer lease (the service
    runs its tasks only while it writes). A Live service given a REST URL also
    carries a ``rest.RestSync`` task (warm start, gap refill); the sync exists
    before its service (``rest_sync``) so the sidebar can check symbols with its
    client (shared rate limit, ban and block state, cached ``exchangeInfo``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: dict[tuple[str, str], Any] = {}
        self._urls: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        self._monitors: dict[tuple[str, str], Any] = {}
        self._syncs: dict[tuple[str, str], Any] = {}
        self._replay: Any = None
        self._replay_symbols: tuple[str, ...] = ()

    def demo_url(self, symbols: Sequence[str]) -> str:
        """URL of the synthetic replay server, restarted when it lacks a symbol."""
        import replay

        with self._lock:
            if self._replay is None or not set(symbols) <= set(self._replay_symbols):
                if self._replay is not None:
                    self._replay.stop(timeout=2.0)
                self._replay = replay.start_replay_in_thread(
                    synthetic=True, symbols=list(symbols)
                )
                self._replay_symbols = tuple(symbols)
            return str(self._replay.url)

    def _sync_locked(
        self, key: tuple[str, str], db_path: Path | str, rest_url: str
    ) -> Any:
        """The REST sync of a key for ``rest_url`` (created or replaced); lock held."""
        sync = self._syncs.get(key)
        if sync is None or sync.client.base_url != rest_url.rstrip("/"):
            sync = rest.RestSync(
                rest_url,
                db_path=db_path,
                api_key=os.environ.get(rest.API_KEY_ENV) or None,
            )
            self._syncs[key] = sync
        return sync

    def rest_sync(self, source: str, db_path: Path | str, rest_url: str) -> Any:
        """The ``rest.RestSync`` of a source's service (created first if need be)."""
        with self._lock:
            return self._sync_locked((source, str(db_path)), db_path, rest_url)

    def service(
        self,
        source: str,
        db_path: Path | str,
        base_url: str | None,
        symbols: Sequence[str],
        *,
        start: bool = True,
        rest_url: str | None = None,
    ) -> Any:
        """The (started) ingestion service of a source, with these symbols.

        With ``rest_url`` the service also runs the source's ``rest.RestSync`` as a
        task; None runs no REST (Demo, ``--no-rest``).
        """
        import ingestion

        key = (source, str(db_path))
        urls = (base_url, rest_url.rstrip("/") if rest_url else None)
        with self._lock:
            service = self._services.get(key)
            if service is not None and self._urls.get(key) != urls:
                service.stop(timeout=2.0)
                service = None
            if service is None:
                kwargs: dict[str, Any] = {
                    "symbols": tuple(symbols),
                    "db_path": db_path,
                }
                if base_url:
                    kwargs["base_url"] = base_url
                monitor = alerts.AlertMonitor(db_path)
                tasks: list[Any] = [monitor.run]
                if rest_url:
                    tasks.append(self._sync_locked(key, db_path, rest_url).run)
                else:
                    self._syncs.pop(key, None)
                service = ingestion.IngestionService(
                    ingestion.IngestionConfig(**kwargs), tasks=tasks
                )
                self._services[key] = service
                self._monitors[key] = monitor
                self._urls[key] = urls
                if start:
                    service.start()
            elif tuple(service.config.symbols) != tuple(symbols):
                service.restart(list(symbols))
            elif start and not service.running:
                service.start()
            return service

    def shutdown(self) -> None:
        """Stop every service and the replay server (cache cleared, process exit)."""
        with self._lock:
            for service in self._services.values():
                service.stop(timeout=5.0)
            self._services.clear()
            self._monitors.clear()
            self._syncs.clear()
            if self._replay is not None:
                self._replay.stop(timeout=2.0)
                self._replay = None

    def existing(self, source: str, db_path: Path | str) -> Any:
        """The service of a source if one was created, else None."""
        with self._lock:
            return self._services.get((source, str(db_path)))

    def monitor(self, source: str, db_path: Path | str) -> Any:
        """The alert monitor run by a source's service, else None."""
        with self._lock:
            return self._monitors.get((source, str(db_path)))

    def existing_sync(self, source: str, db_path: Path | str) -> Any:
        """The REST sync run by a source's service, else None."""
        key = (source, str(db_path))
        with self._lock:
            if key not in self._services or self._urls[key][1] is None:
                return None
            return self._syncs.get(key)


@st.cache_resource(show_spinner=False, on_release=ServiceRegistry.shutdown)
def registry() -> ServiceRegistry:
    """The one registry of this process."""
    return ServiceRegistry()


def _source_db(source: str, cfg: AppConfig) -> Path | str:
    """The database a source reads and writes."""
    if source == "demo":
        return cfg.demo_db_path
    if source.startswith("file:"):
        return storage.dataset_target(cfg.db_path, source.removeprefix("file:"))
    return cfg.db_path


def _datasets_base(cfg: AppConfig) -> Path | str:
    """Where datasets live: the live database's folder (``datasets/`` in it), or
    the live PostgreSQL database (a schema each)."""
    return storage.datasets_base(cfg.db_path)


def _list_datasets(cfg: AppConfig) -> list[str]:
    """Names of imported datasets (``data/datasets/NAME.db``, or PG schemas)."""
    try:
        return list(storage.list_datasets(_datasets_base(cfg)))
    except (OSError, storage.StorageError):
        return []


def db_file_bytes(db_path: Path | str) -> int | None:
    """Size of the database file plus its WAL, bytes (None when absent).

    On PostgreSQL: the on-disk size of the schema's tables (`storage.db_bytes`).
    """
    if not db_exists(db_path):
        return None
    return storage.db_bytes(db_path)


# --------------------------------------------------------------------------------------
# Data: read only the window shown, resample, analyse; cached by the newest closed bar.
# --------------------------------------------------------------------------------------


def effective_lookback_s(choice: str, interval_s: int, window: int) -> int:
    """Seconds of history a view reads: explicit, or the auto lookback of
    ``pairdesk.view`` (3 windows, at least 15 min)."""
    explicit = LOOKBACKS.get(choice)
    if explicit is not None:
        return explicit
    return view_window.auto_lookback_s(interval_s, window)


REREAD_BARS = 2  # closed bars re-read on each update, for trades that arrive late


class WindowBars:
    """Closed bars of one (database, symbol, interval), extended as bars close.

    The first call reads the whole window; later calls read only the 1 s rows from
    ``REREAD_BARS`` bars before the previous end (a late trade may still change
    them) up to the new end, and drop bars that slid out of the window. So the cost
    of a bar close is a few bars' worth of rows, whatever the lookback and however
    large the database. A window that moves backwards or jumps is read in full.
    Shared by all sessions of the process; a lock serialises updates.
    """

    def __init__(self, db_path: Path | str, symbol: str, interval_s: int) -> None:
        self.db_path = db_path
        self.symbol = symbol
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._bars = resampling.empty_bars()
        self._start = 0
        self._end = 0

    def get(self, start_ms: int, end_ms: int) -> pd.DataFrame:
        """Bars with start in ``[start_ms, end_ms)`` (both on bar boundaries)."""
        step = self.interval_s * 1000
        with self._lock:
            incremental = (
                self._end > self._start
                and self._start <= start_ms < self._end
                and self._end <= end_ms
                and end_ms - self._end <= 100 * step
            )
            if not incremental:
                bars = read_window_bars(
                    self.db_path, self.symbol, self.interval_s, start_ms, end_ms
                )
            else:
                reread = max(self._end - REREAD_BARS * step, start_ms)
                fresh = read_window_bars(
                    self.db_path, self.symbol, self.interval_s, reread, end_ms
                )
                ts = charts.epoch_ms(self._bars["ts"])
                keep = self._bars[(ts >= start_ms) & (ts < reread)]
                parts = [f for f in (keep, fresh) if len(f)]
                bars = (
                    pd.concat(parts, ignore_index=True)
                    if len(parts) > 1
                    else (
                        parts[0].reset_index(drop=True)
                        if parts
                        else resampling.empty_bars()
                    )
                )
            self._bars, self._start, self._end = bars, start_ms, end_ms
            return bars


@st.cache_resource(show_spinner=False, max_entries=256)
def window_bars(db: str, symbol: str, interval_s: int, version: int) -> WindowBars:
    """The incremental bar cache of one (database, symbol, interval)."""
    del version  # part of the key only: "clear data" starts a new cache
    return WindowBars(storage.as_target(db), symbol, interval_s)


@st.cache_resource(show_spinner=False, max_entries=64, ttl=3600)
def cached_bars(
    db: str, symbol: str, interval_s: int, start_ms: int, end_ms: int, version: int
) -> pd.DataFrame:
    """Closed bars of one window, cached: the key changes only when a bar closes."""
    return window_bars(db, symbol, interval_s, version).get(start_ms, end_ms)


@dataclass(frozen=True, slots=True)
class PairView:
    """One pair's analytics over the closed bars of the window, with bookkeeping.

    Attributes
    ----------
    result : ``analytics.PairAnalytics`` of the window; its ``adf``, ``eg`` and
        ``regime`` come from the latest test run (see ``tests_ms``).
    bars_y, bars_x : the closed bars the result was computed from.
    computed_ms : wall-clock time the analytics ran, ms UTC.
    compute_ms : how long reading and computing took, milliseconds.
    tests_ms : wall-clock time ADF and Engle-Granger last ran, ms UTC.
    tests_cost_ms : how long that test run took, milliseconds.
    tests_every_bars : the tests rerun every this many closed bars.
    figures : figures built from this view, memoised (the view is cached per bar).
    stability : rolling two-way Engle-Granger of the latest test run, or None.
    """

    result: Any
    bars_y: pd.DataFrame
    bars_x: pd.DataFrame
    computed_ms: int
    compute_ms: float
    tests_ms: int
    tests_cost_ms: float
    tests_every_bars: int
    figures: dict[str, Any] = field(default_factory=dict)
    stability: Any = None


@dataclass(frozen=True, slots=True)
class TestsRun:
    """ADF / Engle-Granger run of one window (the costly part of the analytics).

    Attributes
    ----------
    result : ``analytics.PairAnalytics`` computed with ``with_tests=True``.
    end_ms : end of the window it ran on, ms UTC.
    computed_ms : wall-clock time of the run, ms UTC.
    cost_ms : how long it took, milliseconds.
    stability : (timestamps, ``analytics.RollingCointegration``) of the window.
    """

    result: Any
    end_ms: int
    computed_ms: int
    cost_ms: float
    stability: Any = None


TESTS_MAX_SHARE = 0.2  # ADF/EG may use at most this share of the wall clock


def tests_every_bars(cost_s: float, interval_s: int) -> int:
    """Closed bars between two test runs: every bar, unless that costs too much.

    ``k = max(1, ceil(cost / (share · interval)))``, so a run lasting ``cost``
    seconds takes at most ``TESTS_MAX_SHARE`` of the time (ADF's lag search on
    10 000+ one-second bars lasts seconds; it must not run every second).
    """
    return max(1, math.ceil(cost_s / (TESTS_MAX_SHARE * interval_s)))


@st.cache_resource(show_spinner=False)
def _tests_costs() -> dict[str, float]:
    """Last measured test cost (seconds) per (database, interval, parameters)."""
    return {}


@st.cache_resource(show_spinner=False, max_entries=32, ttl=3600)
def cached_tests(
    db: str,
    interval_s: int,
    epoch_end_ms: int,
    params_json: str,
    version: int,
    _bars_y: pd.DataFrame,
    _bars_x: pd.DataFrame,
    _end_ms: int,
) -> TestsRun:
    """ADF and Engle-Granger on the bars given, once per test epoch."""
    del db, interval_s, epoch_end_ms, version  # cache key only
    began = time.perf_counter()
    params = analytics.PairParams.from_json(params_json)
    result = analytics.pair_analytics(_bars_y, _bars_x, params, with_tests=True)
    stability = _stability(result)
    cost_ms = (time.perf_counter() - began) * 1000.0
    return TestsRun(result, _end_ms, now_ms(), cost_ms, stability)


STABILITY_POINTS = 30


def _stability(result: Any) -> tuple[pd.Series, Any] | None:
    """Two-way Engle-Granger on trailing windows of the pair's valid bars."""
    table = result.table[~result.table["excluded"]]
    window = max(result.params.window, analytics.ADF_MIN_OBS)
    if len(table) < window:
        return None
    y, x = table["y"].to_numpy(float), table["x"].to_numpy(float)
    if result.params.price_space == "log":
        y, x = np.log(y), np.log(x)
    roll = analytics.rolling_cointegration(y, x, window, points=STABILITY_POINTS)
    return table["ts"].iloc[roll.end].reset_index(drop=True), roll


@st.cache_resource(show_spinner=False, max_entries=32, ttl=3600)
def cached_pair(
    db: str,
    interval_s: int,
    start_ms: int,
    end_ms: int,
    params_json: str,
    version: int,
) -> PairView:
    """Pair analytics keyed by (window end = newest closed bar, parameters).

    Everything but ADF / Engle-Granger is recomputed on each closed bar; the tests
    rerun on each closed bar too while they are cheap, else every
    ``tests_every_bars`` bars (their result then lags by at most that many bars).
    """
    began = time.perf_counter()
    params = analytics.PairParams.from_json(params_json)
    bars_y = cached_bars(db, params.symbol_y, interval_s, start_ms, end_ms, version)
    bars_x = cached_bars(db, params.symbol_x, interval_s, start_ms, end_ms, version)
    costs = _tests_costs()
    cost_key = f"{db}|{interval_s}|{params_json}"
    every = tests_every_bars(costs.get(cost_key, 0.0), interval_s)
    step = interval_s * 1000
    epoch_end = end_ms - ((end_ms // step) % every) * step
    tests = cached_tests(
        db, interval_s, epoch_end, params_json, version, bars_y, bars_x, end_ms
    )
    costs[cost_key] = tests.cost_ms / 1000.0
    tested = tests.result
    if tests.end_ms == end_ms:  # the tests ran on this very window: use it whole
        result = tested
    else:
        fast = analytics.pair_analytics(bars_y, bars_x, params, with_tests=False)
        test_messages = tuple(
            m for m in tested.messages if m.startswith(("ADF:", "Engle-Granger:"))
        )
        result = replace(
            fast,
            adf=tested.adf,
            eg=tested.eg,
            coint=tested.coint,
            regime=tested.regime,
            ou=fast.ou if params.signal_rule == "bertram" else tested.ou,
            bands=fast.bands if params.signal_rule == "bertram" else tested.bands,
            messages=fast.messages + test_messages,
        )
    return PairView(
        result=result,
        bars_y=bars_y,
        bars_x=bars_x,
        computed_ms=now_ms(),
        compute_ms=(time.perf_counter() - began) * 1000.0,
        tests_ms=tests.computed_ms,
        tests_cost_ms=tests.cost_ms,
        tests_every_bars=every,
        stability=tests.stability,
    )


# --------------------------------------------------------------------------------------
# Small presentation helpers.
# --------------------------------------------------------------------------------------

INSUFFICIENT_RE = re.compile(r"have (\d+)(?: [a-z]+)?, need (\d+)")


def waiting_text(have: int, need: int, interval_s: int, what: str = "") -> str:
    """``"waiting for 42 more 1m bars (have 78, need 120)"`` plus what needs them."""
    more = max(need - have, 0)
    label = interval_label(interval_s)
    noun = "bar" if more == 1 else "bars"
    suffix = f" for {what}" if what else ""
    return f"waiting for {more} more {label} {noun}{suffix} (have {have}, need {need})"


def friendly_message(message: str, interval_s: int) -> str:
    """Rewrite an analytics "insufficient data: have n, need m" as a waiting line."""
    match = INSUFFICIENT_RE.search(message)
    if not match:
        return message
    what = message.split(":", 1)[0].replace("insufficient data", "").strip(" -:")
    return waiting_text(int(match.group(1)), int(match.group(2)), interval_s, what)


def fmt_utc(ms: int | float | None) -> str:
    """Milliseconds since the epoch as ``2024-08-08 23:59:59 UTC`` (or a dash)."""
    if ms is None or not np.isfinite(ms):
        return "-"
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_num(value: Any, digits: int = 4) -> str:
    """A number for a metric card, or a dash for None/NaN."""
    if value is None:
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not np.isfinite(number):
        return "-"
    if abs(number) >= 1000:
        return f"{number:,.2f}"
    return f"{number:.{digits}g}"


def fmt_bytes(size: int | None) -> str:
    """Bytes as a short human string."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def pair_table_csv(table: pd.DataFrame, params: Any) -> bytes:
    """The per-bar pair table as CSV, ``# PARAMS_JSON`` first, times ISO-8601 UTC.

    The comment line is ``params.to_json()``, so a notebook can rebuild the exact
    ``PairParams`` (``PairParams.from_json(first_line[2:])``).
    """
    return datafiles.frame_to_csv_bytes(table, [params.to_json()])


def _span_ms(ts: pd.Series) -> tuple[int | None, int | None]:
    """First and last timestamp of a series as ms UTC (None when empty)."""
    if len(ts) == 0:
        return None, None
    ms = charts.epoch_ms(ts.iloc[[0, -1]])
    return int(ms[0]), int(ms[1])


def pair_export_name(kind: str, params: Any, ts: pd.Series) -> str:
    """``pair_BTCUSDT-ETHUSDT_1m_rolling-ols-w60_20240808T235400Z_...csv``."""
    first, last = _span_ms(ts)
    extra = f"{params.hedge_method.replace('_', '-')}-w{params.window}"
    return datafiles.export_filename(
        kind,
        [params.symbol_y, params.symbol_x],
        params.interval,
        first,
        last,
        extra=extra,
    )


# --------------------------------------------------------------------------------------
# Session state and sidebar.
# --------------------------------------------------------------------------------------


def _state_defaults(cfg: AppConfig) -> dict[str, Any]:
    """Initial session values (widget keys and our own), from the start-up settings."""
    demo = cfg.source == "demo"
    return {
        "source": "Demo" if demo else "Live",
        "symbols": list(cfg.symbols),
        "symbols_text": ",".join(cfg.symbols),
        "pair_y": cfg.symbols[0],
        "pair_x": cfg.symbols[1] if len(cfg.symbols) > 1 else cfg.symbols[0],
        "timeframe": "1s" if demo else "1m",
        "custom_tf": "15s",
        "interval_s": 1 if demo else 60,
        "lookback": next(iter(LOOKBACKS)),
        "window": 60,
        "hedge_method": "Rolling OLS",
        "kalman_delta": 1e-4,
        "kalman_obs_var": None,  # None: R from the data (analytics.kalman_scale)
        "price_space": "price",
        "corr_on": "returns",
        "signal_rule": next(iter(SIGNAL_RULES)),
        "z_entry": 2.0,
        "z_exit": 0.0,
        "use_stop": False,
        "z_stop": 3.5,
        "fee_bps": 4.0,
        "slippage_bps": 0.0,
        "notional": 10_000.0,
        "refresh_s": 0.5,
        "pause_charts": False,
        "confirm_clear": False,
        "data_version": 0,
        "user_stopped": False,
    }


def _init_state(cfg: AppConfig) -> None:
    """Seed missing session values; keep (re-assign) the present ones.

    Re-assigning on every run keeps the values of widgets that are not drawn in this
    run (the custom timeframe, Kalman's parameters), which Streamlit would otherwise
    drop; values preset before the first run (tests) are kept too.
    """
    ss = st.session_state
    for key, value in _state_defaults(cfg).items():
        ss[key] = ss[key] if key in ss else value


def _apply_pending() -> None:
    """Apply what a fragment requested (scanner row, Switch to Demo) before widgets."""
    ss = st.session_state
    pending_pair = ss.pop("pending_pair", None)
    if pending_pair:
        ss.pair_y, ss.pair_x = pending_pair
    pending_source = ss.pop("pending_source", None)
    if pending_source:
        ss.source = pending_source


def source_key(choice: str) -> str:
    """The registry key of a sidebar source: ``live``, ``demo`` or ``file:NAME``."""
    if choice.startswith("File: "):
        return f"file:{choice.removeprefix('File: ')}"
    return choice.lower()


def rest_enabled(cfg: AppConfig, source: str) -> bool:
    """REST (history, refill, symbol check) runs for Live with ingestion on only.

    Never for Demo (synthetic prices must not mix with real klines) nor a dataset.
    """
    return cfg.ingest and cfg.rest and source == "live"


def cached_symbol_check(client: Any, symbols: Sequence[str]) -> Any:
    """``client.check_symbols_blocking(symbols)``, reused per symbol set in this
    session: ``SYMBOL_CHECK_TTL_S`` after a real check, ``SKIPPED_CHECK_TTL_S``
    after a skipped one (REST unreachable), so a rerun costs no request."""
    ss = st.session_state
    cache: dict[tuple[str, tuple[str, ...]], tuple[float, Any]] = ss.setdefault(
        "symbol_checks", {}
    )
    key = (str(client.base_url), tuple(symbols))
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None:
        at, check = hit
        ttl = SYMBOL_CHECK_TTL_S if check.checked else SKIPPED_CHECK_TTL_S
        if now - at < ttl:
            return check
    check = client.check_symbols_blocking(list(symbols))
    cache[key] = (now, check)
    while len(cache) > 16:
        del cache[next(iter(cache))]
    if check.available:
        ss.rest_available = list(check.available)
    return check


def _symbol_checker(cfg: AppConfig) -> Any:
    """For Live with REST: a function of symbols giving their ``rest.SymbolCheck``
    (through the Live sync's client); else None (no check)."""
    if not rest_enabled(cfg, source_key(st.session_state.source)):
        return None

    def check(symbols: Sequence[str]) -> Any:
        sync = registry().rest_sync("live", _source_db("live", cfg), cfg.rest_url)
        return cached_symbol_check(sync.client, symbols)

    return check


def _refused_by_check(wanted: Sequence[str], check: Any) -> bool:
    """Show the symbol check's outcome; True when the symbols must not be used.

    Refused symbols keep the previous ones running (at start, with nothing older,
    they stay, with the error); a skipped check passes the symbols with a note.
    """
    ss = st.session_state
    sb = st.sidebar
    if check is None:
        return False
    if not check.checked:
        sb.info(_sentence(check.note[:1].upper() + check.note[1:]))
        return False
    if not check.invalid:
        return False
    note = _sentence("Symbol check " + check.note)
    if list(wanted) == list(ss.symbols):
        sb.error(f"{note} Correct the symbols above.")
        return False
    sb.error(f"{note} Still using {', '.join(ss.symbols)}.")
    return True


def _sentence(text: str) -> str:
    """``text`` ending with a full stop (kept as is when it ends with ?, ! or .)."""
    text = text.rstrip()
    return text if text.endswith(("?", "!", ".")) else text + "."


def _pick_symbols() -> None:
    """Picker callback: the chosen perpetuals become the Symbols text."""
    ss = st.session_state
    ss.symbols_text = ",".join(ss.symbol_picker)


def _symbol_picker() -> None:
    """The trading perpetuals of the last symbol check, to pick symbols from."""
    ss = st.session_state
    available = list(ss.get("rest_available") or ())
    if not available:
        return
    ss.symbol_picker = [s for s in ss.symbols if s in set(available)]
    with st.sidebar.expander(f"Binance USD-M perpetuals ({len(available)})"):
        st.multiselect(
            "Pick symbols",
            available,
            key="symbol_picker",
            on_change=_pick_symbols,
            help="Trading perpetual contracts from exchangeInfo; the choice replaces "
            "the Symbols field.",
        )


def _sidebar(datasets: list[str], check_symbols: Any = None) -> None:
    """All controls; validated values land in session state, bad input keeps the old.

    ``check_symbols(symbols)`` returns a ``rest.SymbolCheck`` (Live with REST) or
    None; a refused symbol keeps the previous symbols.
    """
    ss = st.session_state
    sb = st.sidebar
    sb.header("PairDesk")
    options = ["Live", "Demo", *[f"File: {name}" for name in datasets]]
    if ss.source not in options:
        ss.source = "Live"
    sb.radio("Source", options, key="source", horizontal=len(options) <= 3)

    sb.text_input(
        "Symbols (comma separated)",
        key="symbols_text",
        help="Binance USD-M perpetuals, e.g. BTCUSDT,ETHUSDT,SOLUSDT",
    )
    try:
        wanted = parse_symbols(ss.symbols_text)
    except ValueError as exc:
        sb.error(f"{exc}. Still using {', '.join(ss.symbols)}.")
    else:
        if len(wanted) < 2:
            sb.error(
                f"symbols: a pair needs at least two symbols, got {len(wanted)}. "
                f"Still using {', '.join(ss.symbols)}."
            )
        elif not _refused_by_check(
            wanted, check_symbols(wanted) if check_symbols else None
        ):
            ss.symbols = wanted
    if check_symbols is not None:
        _symbol_picker()
    symbols = ss.symbols
    if ss.pair_y not in symbols:
        ss.pair_y = symbols[0]
    if ss.pair_x not in symbols:
        ss.pair_x = next((s for s in symbols if s != ss.pair_y), symbols[0])
    col_y, col_x = sb.columns(2)
    col_y.selectbox("Y (dependent)", symbols, key="pair_y")
    col_x.selectbox("X (hedge)", symbols, key="pair_x")
    if ss.pair_y == ss.pair_x:
        sb.warning("Y and X are the same symbol: choose two different legs.")

    col_tf, col_lb = sb.columns(2)
    col_tf.selectbox("Timeframe", TIMEFRAMES, key="timeframe")
    col_lb.selectbox(
        "Lookback",
        list(LOOKBACKS),
        key="lookback",
        help="History the view reads. auto = 3 rolling windows (at least 15 min); "
        f"never more than 24 h or {MAX_BARS:,} bars.",
    )
    if ss.timeframe == "custom":
        sb.text_input("Custom timeframe (N s/m/h)", key="custom_tf")
        tf_text = ss.custom_tf
    else:
        tf_text = ss.timeframe
    try:
        ss.interval_s = resampling.parse_interval(tf_text)
    except ValueError as exc:
        sb.error(f"{exc}. Still using {interval_label(ss.interval_s)}.")

    sb.number_input(
        "Rolling window (bars)", min_value=5, max_value=5000, step=5, key="window"
    )
    sb.selectbox("Hedge method", list(HEDGE_METHODS), key="hedge_method")
    if HEDGE_METHODS[ss.hedge_method] == "kalman":
        col_d, col_v = sb.columns(2)
        col_d.number_input(
            "Kalman δ", min_value=1e-9, max_value=1.0, format="%.1e", key="kalman_delta"
        )
        col_v.number_input(
            "Obs. variance R",
            min_value=1e-12,
            format="%.4g",
            key="kalman_obs_var",
            placeholder="from the data",
            help="Empty: R is the residual variance of the first window's OLS, and "
            "the state noise scales with it (delta alone sets how fast the hedge "
            "adapts).",
        )
    sb.selectbox(
        "Signal rule",
        list(SIGNAL_RULES),
        key="signal_rule",
        help="z thresholds, or Bertram's cost-aware bands from an Ornstein-Uhlenbeck "
        "fit of the traded spread, refitted walk-forward (no look-ahead).",
    )
    col_e, col_x2 = sb.columns(2)
    col_e.number_input(
        "z entry", min_value=0.1, max_value=10.0, step=0.1, key="z_entry"
    )
    col_x2.number_input("z exit", min_value=0.0, max_value=10.0, step=0.1, key="z_exit")
    col_s1, col_s2 = sb.columns(2)
    col_s1.checkbox("z stop", key="use_stop")
    col_s2.number_input(
        "z stop level",
        min_value=0.2,
        max_value=20.0,
        step=0.1,
        key="z_stop",
        disabled=not ss.use_stop,
        label_visibility="collapsed",
    )
    with sb.expander("More: price space, correlation, costs"):
        st.radio("Regress on", ["price", "log"], key="price_space", horizontal=True)
        st.radio(
            "Correlation of",
            ["returns", "prices"],
            key="corr_on",
            horizontal=True,
            help="Correlation of price levels is spurious; returns is the default.",
        )
        st.number_input("Fee (bps per leg)", min_value=0.0, step=0.5, key="fee_bps")
        st.number_input("Slippage (bps)", min_value=0.0, step=0.5, key="slippage_bps")
        st.number_input("Notional (USDT)", min_value=100.0, step=1000.0, key="notional")
    sb.select_slider(
        "Refresh every (s)",
        options=list(REFRESH_CHOICES),
        key="refresh_s",
        help="Last prices, live z and the signal. Charts redraw when a bar closes.",
    )
    sb.toggle(
        "Pause chart updates",
        key="pause_charts",
        help="Freeze the charts to zoom and pan at leisure (live numbers go on).",
    )


def _params() -> Any:
    """The analytics parameters from the sidebar state."""
    ss = st.session_state
    return analytics.PairParams(
        symbol_y=ss.pair_y,
        symbol_x=ss.pair_x,
        interval=interval_label(ss.interval_s),
        window=int(ss.window),
        hedge_method=HEDGE_METHODS[ss.hedge_method],
        kalman_delta=float(ss.kalman_delta),
        kalman_obs_var=(
            None if ss.kalman_obs_var is None else float(ss.kalman_obs_var)
        ),
        price_space=ss.price_space,
        corr_on=ss.corr_on,
        z_entry=float(ss.z_entry),
        z_exit=float(ss.z_exit),
        z_stop=float(ss.z_stop) if ss.use_stop else None,
        signal_rule=SIGNAL_RULES[ss.signal_rule],
        fee_bps=float(ss.fee_bps),
        slippage_bps=float(ss.slippage_bps),
        notional=float(ss.notional),
    )


# --------------------------------------------------------------------------------------
# Service control.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What the page reads from and who fills it.

    Attributes
    ----------
    label : ``"LIVE"``, ``"DEMO"`` or ``"FILE"`` for the badge.
    db_path : the database shown (a PostgreSQL URL stays a str).
    service : the ingestion service (None for File or with ingestion disabled).
    historical : True for a dataset: the window ends at its last data, not now.
    rules_db : database holding the alert rules and events shown: the source's own
        for Live and Demo; the Live database for a dataset (whose rules are
        previewed on the dataset, never fired).
    monitor : the alert monitor of the service (None without a service).
    rest : the ``rest.RestSync`` run by the service (Live with REST only), else None.
    dataset : the dataset's name for File, else None.
    """

    label: str
    db_path: Path | str
    service: Any
    historical: bool
    rules_db: Path | str
    monitor: Any = None
    rest: Any = None
    dataset: str | None = None


def _service_for(source: str, cfg: AppConfig, symbols: tuple[str, ...]) -> Any:
    """Get (create once per process) the ingestion service of a source."""
    if not cfg.ingest or source.startswith("file:"):
        return None
    reg = registry()
    base_url = reg.demo_url(symbols) if source == "demo" else cfg.base_url
    user_stopped = bool(st.session_state.get("user_stopped", False))
    return reg.service(
        source,
        _source_db(source, cfg),
        base_url,
        symbols,
        start=not user_stopped,
        rest_url=cfg.rest_url if rest_enabled(cfg, source) else None,
    )


def _select_source(cfg: AppConfig) -> SourceContext:
    """Resolve the sidebar source into a database and a running service."""
    ss = st.session_state
    choice = ss.source
    source = source_key(choice)
    label = "FILE" if source.startswith("file:") else choice.upper()
    previous = ss.get("active_source_key")
    if previous and previous != source and cfg.ingest:
        # The user switched away: stop what the previous source ran in this process.
        old = registry().existing(previous, _source_db(previous, cfg))
        if old is not None and old.running:
            old.stop(timeout=2.0)
        ss.user_stopped = False
    ss.active_source_key = source
    service = _service_for(source, cfg, tuple(ss.symbols))
    historical = source.startswith("file:")
    db_path = _source_db(source, cfg)
    monitor = (
        registry().monitor(source, db_path)
        if service is not None and cfg.ingest
        else None
    )
    sync = (
        registry().existing_sync(source, db_path)
        if service is not None and rest_enabled(cfg, source)
        else None
    )
    return SourceContext(
        label=label,
        db_path=db_path,
        service=service,
        historical=historical,
        rules_db=cfg.db_path if historical else db_path,
        monitor=monitor,
        rest=sync,
        dataset=source.removeprefix("file:") if historical else None,
    )


def _controls(ctx: SourceContext) -> None:
    """Start / stop / clear-data buttons (clear asks for confirmation)."""
    ss = st.session_state
    sb = st.sidebar
    sb.divider()
    col_a, col_b = sb.columns(2)
    service = ctx.service
    running = bool(service is not None and service.running)
    if col_a.button(
        "Start",
        key="btn_start",
        disabled=service is None or running,
        width="stretch",
    ):
        ss.user_stopped = False
        service.start()
        st.rerun()
    if col_b.button(
        "Stop",
        key="btn_stop",
        disabled=service is None or not running,
        width="stretch",
    ):
        ss.user_stopped = True
        service.stop(timeout=5.0)
        st.rerun()
    if sb.button(
        "Clear data…", key="btn_clear", disabled=ctx.historical, width="stretch"
    ):
        ss.confirm_clear = True
    if ss.confirm_clear:
        sb.warning(
            f"Delete all ticks, bars and gaps in "
            f"{storage.display_target(ctx.db_path)}? This cannot be undone."
        )
        col_yes, col_no = sb.columns(2)
        if col_yes.button("Yes, delete", key="btn_clear_yes", type="primary"):
            ss.confirm_clear = False
            error = _clear_data(ctx)
            if error:
                sb.error(error)
            else:
                ss.data_version += 1
                sb.success("Market data cleared.")
        if col_no.button("Cancel", key="btn_clear_no"):
            ss.confirm_clear = False
            st.rerun()


def _clear_data(ctx: SourceContext) -> str | None:
    """Stop ingestion, clear the market tables, restart; an error text or None."""
    service = ctx.service
    if service is not None:
        status = service.status()
        if getattr(status, "role", "writer") == "read-only":
            return "Another process holds the writer lease: clear data there."
    was_running = bool(service is not None and service.running)
    if was_running:
        service.stop(timeout=5.0)
    try:
        writer = storage.Writer(ctx.db_path)
        try:
            writer.clear_market_data()
        finally:
            writer.close()
    except storage.StorageError as exc:
        return f"Could not clear data: {exc}"
    finally:
        if was_running:
            service.start()
    cached_bars.clear()
    cached_pair.clear()
    cached_tests.clear()
    return None


# --------------------------------------------------------------------------------------
# Panels.
# --------------------------------------------------------------------------------------


def _status_bar(ctx: SourceContext, symbols: Sequence[str]) -> None:
    """Source badge, connection state (or read-only holder) and the key counters.

    Cheap on purpose (it runs every refresh): service counters, file sizes and one
    index lookup per symbol, never a count over the tables.
    """
    service = ctx.service
    status = service.status() if service is not None else None
    last_trade: int | None = None
    if status is not None and status.last_trade_ms:
        last_trade = status.last_trade_ms
    else:
        ticks = [storage.last_tick(ctx.db_path, sym) for sym in symbols]
        times = [t.ts_ms for t in ticks if t is not None]
        last_trade = max(times) if times else None
    state = getattr(status, "state", None)
    if status is None:
        state_text = "dataset, read only" if ctx.historical else "ingestion off"
    elif status.role == "read-only":
        holder = status.lease_holder or "another process"
        state_text = (
            holder
            if holder.startswith("read-only")
            else f"read-only: ingestion by {holder}"
        )
    else:
        state_text = f"{state}: {', '.join(status.symbols)}"
    head = charts.source_badge_html(ctx.label)
    where = html_escape(storage.display_target(ctx.db_path))
    st.markdown(
        f"{head} <span style='font-size:1.1rem;font-weight:600'>{state_text}</span>"
        f" <span style='opacity:0.6'>&nbsp;{where}</span>",
        unsafe_allow_html=True,
    )
    if ctx.rest is not None:
        st.caption(rest_status_line(ctx.rest.status(), symbols))
    if status is not None:
        if status.last_error and state in ("error", "reconnecting", "connecting"):
            st.error(f"Cannot reach the exchange: {status.last_error}. Retrying.")
            if ctx.label == "LIVE" and st.button(
                "Switch to Demo", key="btn_switch_demo", type="primary"
            ):
                st.session_state.pending_source = "Demo"
                st.rerun(scope="app")
        for warning in status.warnings:
            st.warning(warning)
    cols = st.columns(8)
    if status is not None:
        cols[0].metric("ticks/s", f"{status.ticks_per_s:.1f}")
        lag = f"{fmt_num(status.lag_p50_ms, 3)} / {fmt_num(status.lag_p99_ms, 3)}"
        cols[1].metric("lag p50/p99 ms", lag)
        cols[2].metric("reconnects", status.reconnects)
        cols[3].metric("gaps", status.gaps)
        cols[4].metric("queue", status.queue_depth)
        cols[5].metric("ticks stored", f"{status.total_ticks:,}")
    cols[6].metric("db size", fmt_bytes(db_file_bytes(ctx.db_path)))
    cols[7].metric(
        "last trade (UTC)", fmt_utc(last_trade)[11:19] if last_trade else "-"
    )


FILLED_METHODS = ("trades", "historicalTrades", "aggTrades")


def rest_status_line(status: Any, symbols: Sequence[str]) -> str:
    """One status-bar line from a ``rest.RestStatus``: state, exchange history per
    symbol (klines stored in this run, where the history ends), gap fills, request
    weight, and the current problem in words."""
    parts = [f"REST {status.state}"]
    warm = [
        w
        for w in status.warm_starts
        if w.symbol in set(symbols) and (w.stored or w.history_end_ms)
    ]
    if warm:
        parts.append(
            "history "
            + ", ".join(
                f"{w.symbol} +{w.stored:,}"
                + (
                    f" to {fmt_utc(w.history_end_ms)[11:16]}"
                    if w.history_end_ms
                    else ""
                )
                for w in warm
            )
            + " 1m klines"
        )
    filled = sum(g.method in FILLED_METHODS for g in status.gap_fills)
    pending = sum(g.method == "pending" for g in status.gap_fills)
    parts.append(f"gap fills {filled}" + (f" ({pending} pending)" if pending else ""))
    parts.append(f"weight {status.weight_used_1m}/{status.weight_limit} per min")
    if status.message:
        parts.append(status.message)
    return " · ".join(parts)


def _follow_rest(ctx: SourceContext) -> None:
    """Start fresh bar caches when REST stored history or filled a gap.

    Warm-start klines and refilled gaps land in bars that the incremental caches
    consider closed; a new ``data_version`` makes the next read a full one.
    """
    if ctx.rest is None:
        return
    status = ctx.rest.status()
    epoch = (
        sum(w.stored for w in status.warm_starts),
        sum(g.method in FILLED_METHODS for g in status.gap_fills),
    )
    ss = st.session_state
    if ss.get("rest_epoch", (0, 0)) != epoch:
        ss.rest_epoch = epoch
        ss.data_version += 1


@st.cache_resource(show_spinner=False, max_entries=64, ttl=60)
def history_end_ms(db: str, symbol: str, end_ms: int, version: int) -> int | None:
    """Where exchange history ends for ``symbol`` (``rest.exchange_history_end_ms``),
    looked up once per closed bar."""
    del end_ms, version  # cache key only
    target = storage.as_target(db)
    if not db_exists(target):
        return None
    return rest.exchange_history_end_ms(target, symbol)


def _window(ctx: SourceContext, interval_s: int, clock_ms: int) -> tuple[int, int]:
    """(start, end) of the closed-bar window in ms; datasets end at their last data."""
    ss = st.session_state
    lookback_s = effective_lookback_s(ss.lookback, interval_s, int(ss.window))
    if ctx.historical:
        last = _dataset_last_ms(str(ctx.db_path), ss.data_version)
        step = interval_s * 1000
        end = ((last // step) + 1) * step if last else 0
    else:
        end = closed_end_ms(clock_ms, interval_s)
    return window_start_ms(end, interval_s, lookback_s), end


@st.cache_resource(show_spinner=False, max_entries=16, ttl=60)
def _dataset_last_ms(db: str, version: int) -> int | None:
    """Last trade or bar time of a dataset, ms UTC (datasets change rarely)."""
    del version
    stats = storage.db_stats(storage.as_target(db))
    lasts = [s.last_ms for s in stats.symbols if s.last_ms is not None]
    return max(lasts) if lasts else None  # counts rows: fine for rare dataset views


def _dataset_notes(ctx: SourceContext, params: Any, interval_s: int) -> None:
    """Say when the pair or the timeframe does not fit the dataset shown."""
    name = ctx.dataset
    held = storage.list_symbols(ctx.db_path)
    missing = [s for s in (params.symbol_y, params.symbol_x) if s not in held]
    if missing:
        st.warning(
            f"Dataset {name!r} holds {', '.join(held) or 'no symbols'}; it has no "
            f"{', '.join(missing)}. Set Symbols in the sidebar to the dataset's."
        )
        return
    coarse = storage.list_bar_intervals(ctx.db_path, params.symbol_y)
    bars_only = storage.last_tick(ctx.db_path, params.symbol_y) is None
    if coarse and bars_only and interval_s % coarse[0]:
        st.warning(
            f"Dataset {name!r} holds {interval_label(coarse[0])} bars of "
            f"{params.symbol_y}: choose a timeframe that is a multiple of "
            f"{interval_label(coarse[0])}."
        )


def _live_panel(ctx: SourceContext, params: Any, interval_s: int) -> None:
    """Tick-driven numbers: last prices, live z from the newest trades, signal badge.

    Runs every refresh: one index lookup per leg for the last trade, the cached
    analytics of the closed bars (recomputed only when a bar closes), and the live
    z-score of the newest prices against the current window's spread statistics.
    """
    ss = st.session_state
    _follow_rest(ctx)
    _status_bar(ctx, list(ss.symbols))
    start, end = _window(ctx, interval_s, now_ms())
    view = cached_pair(
        str(ctx.db_path), interval_s, start, end, params.to_json(), ss.data_version
    )
    result = view.result
    prices: dict[str, float | None] = {}
    legs = ((params.symbol_y, view.bars_y), (params.symbol_x, view.bars_x))
    for sym, bars in legs:
        tick = storage.last_tick(ctx.db_path, sym)
        prices[sym] = tick.price if tick is not None else None
        if prices[sym] is None and ctx.historical and len(bars):
            prices[sym] = float(bars["close"].iloc[-1])  # a bars-only dataset
    py, px = prices[params.symbol_y], prices[params.symbol_x]
    live = (
        analytics.live_values(result, py, px)
        if py is not None and px is not None
        else None
    )
    live_z = None if live is None else live.z
    signal = str(result.signal)
    if live is not None and not ctx.historical:
        # the call the strategy would make if the bar closed at the newest prices
        signal = analytics.live_signal(result, live)
    cols = st.columns([1.2, 1.2, 0.9, 0.9, 2.0])
    cols[0].metric(f"{params.symbol_y} last", fmt_num(py, 8))
    cols[1].metric(f"{params.symbol_x} last", fmt_num(px, 8))
    cols[2].metric(
        "live z",
        fmt_num(live_z, 3),
        help="The forming bar as if it closed at the newest trade prices: the "
        "hedge re-estimated with it in the window, z over the window's spreads "
        "(Kalman: one filter step). Fed a bar's closes it equals that bar's z.",
    )
    cols[3].metric("bar z", fmt_num(result.latest.z, 3))
    badges = charts.signal_badge_html(signal) + charts.regime_badge_html(
        result.regime.label
    )
    cols[4].markdown(
        f"<div style='padding-top:1.5rem' title='{html_escape(result.regime.reason)}'>"
        f"{badges}</div><div style='opacity:0.7;font-size:0.8rem'>"
        f"{html_escape(result.regime.reason)}</div>",
        unsafe_allow_html=True,
    )
    if not ctx.historical:
        _alert_toasts(ctx.rules_db)


def _alert_toasts(db_path: Path | str) -> None:
    """Toast the alert events this session has not seen yet (newest ``MAX_TOASTS``).

    Each session remembers the largest event id it has shown, per database; a new
    session starts at the newest stored event, so old firings are not replayed.
    Costs one indexed lookup per refresh while nothing new fired.
    """
    ss = st.session_state
    seen: dict[str, int] = ss.setdefault("seen_event_ids", {})
    key = str(db_path)
    latest = alerts.latest_event_id(db_path)
    if key not in seen:
        seen[key] = latest
        return
    if latest <= seen[key]:
        return
    events = alerts.new_events_since(db_path, seen[key])
    for event in events[-MAX_TOASTS:]:
        text = alerts.alert_message(
            event.rule_text or f"rule {event.rule_id}",
            event.fired_ms,
            event.value,
            event.snapshot,
        )
        st.toast(text, icon="🔔")
    if len(events) > MAX_TOASTS:
        st.toast(
            f"{len(events) - MAX_TOASTS} more alerts fired: see the Alerts tab",
            icon="🔔",
        )
    seen[key] = max([latest, *(e.id for e in events)])


def _messages(result: Any, interval_s: int) -> bool:
    """Insufficient-data remarks in one waiting box; other remarks as captions.

    Returns True when something is still waiting for bars.
    """
    waiting = [
        friendly_message(m, interval_s)
        for m in result.messages
        if INSUFFICIENT_RE.search(m)
    ]
    if waiting:
        st.info("\n".join(f"- {line}" for line in waiting))
    for message in result.messages:
        if not INSUFFICIENT_RE.search(message):
            st.caption(message)
    return bool(waiting)


def _pair_tab(
    view: PairView,
    params: Any,
    interval_s: int,
    rules_db: Path | str | None = None,
    *,
    history_db: Path | str | None = None,
    end_ms: int = 0,
) -> None:
    """Pair charts, statistic cards, ADF trigger and readiness messages.

    With ``history_db`` (Live with REST) the figure marks where exchange history
    ends: the later of the two legs' ends, after which both are live.
    """
    result = view.result
    table = result.table
    waiting = _messages(result, interval_s)
    _pair_cards(result)
    st.caption(ou_text(result))
    col_a, col_b = st.columns([1, 4])
    col_a.button(
        "Run ADF now",
        key="btn_adf",
        on_click=_run_tests_now,
        help="Recompute ADF and Engle-Granger on the current window now.",
    )
    adf = result.adf
    nobs = adf.nobs if adf is not None and adf.ok else 0
    col_b.caption(_tests_caption(view, nobs, interval_s))
    if int(table["z"].notna().sum()) == 0:
        if not waiting:
            need = 2 * params.window - 1
            st.info(waiting_text(result.n_bars, need, interval_s, "the z-score"))
        return
    events = _pair_alert_events(rules_db, params, table) if rules_db else None
    fig_key = ("pair", 0 if events is None else int(events["id"].max()))
    fig = view.figures.get(fig_key)
    if fig is None:
        for old in [k for k in view.figures if isinstance(k, tuple)]:
            del view.figures[old]  # a figure with older alert markers
        history = None
        if history_db is not None:
            version = st.session_state.data_version
            ends = [
                history_end_ms(str(history_db), sym, end_ms, version)
                for sym in (params.symbol_y, params.symbol_x)
            ]
            history = max((e for e in ends if e is not None), default=None)
        fig = view.figures[fig_key] = _pair_figure(table, params, events, history)
    st.plotly_chart(fig, width="stretch", key="pair_chart")
    _stability_panel(view)


def _tests_caption(view: PairView, nobs: int, interval_s: int) -> str:
    """When ADF / Engle-Granger last ran, or what they still need."""
    if nobs == 0:  # "ran on 0 observations" read like a result
        return (
            f"ADF and Engle-Granger need at least {analytics.ADF_MIN_OBS} bars of "
            f"the pair; the view has {view.result.n_bars}. They run as bars close."
        )
    every = (
        f"each closed {interval_label(interval_s)} bar"
        if view.tests_every_bars == 1
        else f"every {view.tests_every_bars} closed {interval_label(interval_s)} "
        "bars (a run takes longer than a fifth of a bar)"
    )
    return (
        f"ADF / Engle-Granger last ran {fmt_utc(view.tests_ms)} on {nobs} "
        f"observations (regression 'c', in-sample spread; took "
        f"{view.tests_cost_ms:.0f} ms); they rerun on {every}."
    )


def _stability_panel(view: PairView) -> None:
    """Rolling Engle-Granger p-value: does cointegration hold across the view?"""
    if view.stability is None:
        return
    ts, roll = view.stability
    with st.expander("Stability: Engle-Granger on trailing windows", expanded=False):
        fig = view.figures.get("stability")
        if fig is None:
            fig = view.figures["stability"] = charts.stability_figure(
                ts, roll.pvalue, roll.window
            )
        st.plotly_chart(fig, width="stretch", key="stability_chart")
        st.caption(
            f"Each point tests the {roll.window} bars up to it (both directions); "
            "a run of points under 0.05 says the relation held there. Read the "
            "run, not one point: these are many tests, uncorrected. The hedge "
            "panel's band is β ± 2 standard errors; half-lives above carry a 95 % "
            "interval."
        )


def _pair_alert_events(
    rules_db: Path | str, params: Any, table: pd.DataFrame
) -> pd.DataFrame | None:
    """Firings of rules on this pair (Y/X) within the table's span, or None."""
    if table.empty or not db_exists(rules_db):
        return None
    since = int(charts.epoch_ms(table["ts"].iloc[:1])[0])
    frame = storage.list_alert_events(rules_db, since_ms=since, limit=1000)
    if frame.empty:
        return None
    pairs = {
        rule.id: rule
        for rule in alerts.load_rules(rules_db)
        if (rule.params.symbol_y, rule.params.symbol_x)
        == (params.symbol_y, params.symbol_x)
    }
    frame = frame[frame["rule_id"].isin(list(pairs))]
    if frame.empty:
        return None
    z_values = []
    for text in frame["snapshot_json"]:
        z = None
        try:
            z = (json.loads(text) or {}).get("z") if text else None
        except ValueError:
            z = None
        z_values.append(np.nan if z is None else float(z))
    labels = [
        f"alert #{int(r.id)}: {r.rule_text or r.rule_id} = {fmt_num(r.value, 4)} "
        f"at {fmt_utc(r.fired_ms)}"
        for r in frame.itertuples(index=False)
    ]
    return pd.DataFrame(
        {
            "id": frame["id"].to_numpy(),
            "fired_ms": frame["fired_ms"].to_numpy(),
            "z": z_values,
            "label": labels,
        }
    )


def _pair_figure(
    table: pd.DataFrame,
    params: Any,
    events: pd.DataFrame | None = None,
    history_end: int | None = None,
) -> Any:
    """The five-panel pair figure of a view (built once per bar close)."""
    return charts.pair_figure(
        table,
        symbol_y=params.symbol_y,
        symbol_x=params.symbol_x,
        z_entry=params.z_entry,
        z_exit=params.z_exit,
        z_stop=params.z_stop,
        band_k=params.z_entry,
        corr_label=(
            "rolling correlation of log returns"
            if params.corr_on == "returns"
            else "rolling correlation of price levels (spurious for trending prices)"
        ),
        alert_events=events,
        history_end_ms=history_end,
    )


def _run_tests_now() -> None:
    """Button callback: forget cached test runs so the next refresh reruns them."""
    cached_tests.clear()
    cached_pair.clear()


def _pair_cards(result: Any) -> None:
    """Metric cards: the traded hedge and z, the in-sample fit and the tests, each
    labelled with the spread it describes."""
    hedge = result.in_sample
    adf = result.adf if result.adf is not None and result.adf.ok else None
    coint = result.coint if result.coint is not None and result.coint.ok else None
    latest = result.latest
    method = hedge.method.replace("_", "-")
    traded = "Kalman" if result.trade_method == "kalman" else "rolling OLS"
    cards = [
        ("β traded (latest)", fmt_num(latest.beta), f"{traded}, no look-ahead"),
        ("α traded (latest)", fmt_num(latest.alpha), f"{traded}, no look-ahead"),
        (
            f"β in-sample ({method})",
            fmt_num(hedge.beta if hedge.ok else None),
            "one fit over the whole view: descriptive, not used to trade",
        ),
        ("R² in-sample", fmt_num(hedge.r2 if hedge.ok else None, 3), None),
        ("z (latest bar)", fmt_num(latest.z, 3), f"z of the traded ({traded}) spread"),
        (
            "EG p (both ways)",
            fmt_num(coint.pvalue if coint else None, 3),
            "Engle-Granger, H0: no cointegration; min(1, 2·min) of y~x and x~y. "
            "Drives the Mean-reverting badge.",
        ),
        (
            "ADF p / lags",
            _p_lags(adf),
            "ADF on the in-sample spread, descriptive: its one-series p-value "
            "is too small when β was fitted on the same data (use EG p)",
        ),
        (
            "half-life in-sample",
            _half_life_text(result.half_life),
            "bars, of the in-sample spread, with a 95 % interval; none unless the "
            "AR slope is significantly negative (Dickey-Fuller test at 5 %)",
        ),
        (
            "half-life traded",
            _half_life_text(result.half_life_traded),
            f"bars, of the traded ({traded}) spread",
        ),
        (
            "corr (latest)",
            fmt_num(latest.corr, 3),
            f"rolling correlation of {result.params.corr_on}"
            + (" between bars where both legs traded" if result.params.corr_on
               == "returns" else ""),
        ),
    ]  # fmt: skip
    for row in (cards[:5], cards[5:]):
        for col, (label, value, help_text) in zip(st.columns(5), row, strict=True):
            col.metric(label, value, help=help_text)


def ou_text(result: Any) -> str:
    """One line on the Ornstein-Uhlenbeck fit and Bertram's bands of the spread."""
    ou, bands = result.ou, result.bands
    traded = "Kalman" if result.trade_method == "kalman" else "rolling OLS"
    if ou is None or not ou.ok:
        why = "no data" if ou is None else ou.message
        return f"Ornstein-Uhlenbeck fit of the traded ({traded}) spread: {why}."
    used = (
        "traded (walk-forward refits; dashed on the chart)"
        if result.params.signal_rule == "bertram"
        else "not traded (signal rule: z thresholds)"
    )
    text = (
        f"Ornstein-Uhlenbeck fit of the traded ({traded}) spread: half-life "
        f"{ou.half_life_s:,.0f} s ({ou.half_life_s / result.interval_s:.1f} bars), "
        f"mean {ou.mu:.4g}, stationary sd {ou.sigma_eq:.4g}."
    )
    if bands is None or not bands.ok:
        reason = "-" if bands is None else bands.message
        return text + f" Bertram bands: {reason}."
    return text + (
        f" Bertram bands, {used}: mean ± {bands.band:.4g} "
        f"({bands.band_z:.2f} sd) after costs of {bands.cost:.4g} per round "
        f"trip; expected trade {bands.expected_trade_s:,.0f} s, expected net "
        f"{bands.return_per_s * 3600:.4g} per hour per unit of spread."
    )


def _half_life_text(hl: Any) -> str:
    """``12.3 (8.1-25.0)`` bars, ``none`` when not significant, ``-`` without data."""
    if hl is None or not hl.ok:
        return "-"
    if hl.bars is None:
        return "none"
    high = (
        "∞"
        if hl.bars_high is None or math.isinf(hl.bars_high)
        else f"{hl.bars_high:.1f}"
    )
    low = "-" if hl.bars_low is None else f"{hl.bars_low:.1f}"
    return f"{hl.bars:.1f} ({low}–{high})"


def _p_lags(adf: Any) -> str:
    """ADF p-value and lags used, e.g. ``0.012 / 3``."""
    if adf is None:
        return "-"
    return f"{fmt_num(adf.pvalue, 3)} / {adf.lags}"


@st.cache_resource(show_spinner=False, max_entries=16, ttl=3600)
def market_chart(
    db: str,
    symbols: tuple[str, ...],
    interval_s: int,
    start: int,
    end: int,
    v: int,
    history: bool = False,
) -> tuple[Any, dict[str, int]]:
    """The market figure of one window of closed bars, built once per bar close.

    An unchanged figure is also what keeps the chart on screen between bar closes:
    Streamlit remounts a plotly chart whose spec changed (zoom and pan reset).
    ``history`` marks where each symbol's exchange history (REST klines) ends.
    """
    bars = {sym: cached_bars(db, sym, interval_s, start, end, v) for sym in symbols}
    counts = {sym: len(frame) for sym, frame in bars.items()}
    if not any(counts.values()):
        return None, counts
    ends = (
        {sym: history_end_ms(db, sym, end, v) for sym in symbols} if history else None
    )
    return charts.market_figure(bars, history_end_ms=ends), counts


def _market_tab(
    ctx: SourceContext, symbols: Sequence[str], interval_s: int, start: int, end: int
) -> None:
    """Candles and volume for every symbol (closed bars; redrawn when a bar closes)."""
    fig, counts = market_chart(
        str(ctx.db_path),
        tuple(symbols),
        interval_s,
        start,
        end,
        st.session_state.data_version,
        ctx.rest is not None,
    )
    if fig is None:
        st.info(waiting_text(0, 1, interval_s, "the market chart"))
        return
    st.caption(
        f"{interval_label(interval_s)} candles of closed bars, "
        + ", ".join(f"{s}: {n} bars" for s, n in counts.items())
        + " (the forming bar appears when it closes; last prices are above)."
    )
    st.plotly_chart(fig, width="stretch", key="market_chart")


SCAN_FDR = 0.05
SCAN_LABELS = {
    "y": "Y",
    "x": "X",
    "bars": "bars",
    "significant": "significant",
    "q_value": "q-value",
    "eg_p": "EG p (both ways)",
    "beta": "beta",
    "half_life": "half-life (bars)",
    "z": "z",
    "corr": "return corr",
    "signal": "signal",
}


@st.cache_resource(show_spinner=False, max_entries=8, ttl=3600)
def cached_scan(
    db: str,
    symbols: tuple[str, ...],
    interval_s: int,
    start: int,
    end: int,
    params_json: str,
    version: int,
) -> pd.DataFrame:
    """``analytics.scan_pairs`` over the closed bars of the window, once per bar."""
    params = analytics.PairParams.from_json(params_json)
    bars = {s: cached_bars(db, s, interval_s, start, end, version) for s in symbols}
    frame = analytics.scan_pairs(bars, params, fdr=SCAN_FDR)
    return frame[list(SCAN_LABELS)].rename(columns=SCAN_LABELS)


def _scanner_tab(
    ctx: SourceContext,
    symbols: Sequence[str],
    interval_s: int,
    params: Any,
    start: int,
    end: int,
) -> None:
    """Every pair among the symbols, tested with false-discovery control."""
    if len(set(symbols)) < 2:
        st.info("The scanner needs at least two symbols.")
        return
    base = replace(params, corr_on="returns")
    frame = cached_scan(
        str(ctx.db_path),
        tuple(sorted(set(symbols))),
        interval_s,
        start,
        end,
        base.to_json(),
        st.session_state.data_version,
    )
    n_sig = int(frame["significant"].sum())
    tested = int(frame["q-value"].notna().sum())
    st.caption(
        f"{len(frame)} pairs, {tested} tested: Engle-Granger in both directions "
        f"(p = min(1, 2·min)), Benjamini-Hochberg q-values over all pairs of the "
        f"scan. {n_sig} significant at a false discovery rate of {SCAN_FDR:.0%}: "
        f"expect at most {SCAN_FDR * n_sig:.2f} of them to be chance. Ranked by "
        f"q-value, then |z|; refreshed when a {interval_label(interval_s)} bar "
        "closes. Select a row to make it the pair."
    )
    event = st.dataframe(
        frame,
        key="scanner_table",
        on_select="rerun",
        selection_mode="single-row",
        hide_index=True,
        width="stretch",
        column_config={
            "significant": st.column_config.CheckboxColumn(
                help=f"q-value <= {SCAN_FDR}"
            ),
            "q-value": st.column_config.NumberColumn(format="%.4f"),
            "EG p (both ways)": st.column_config.NumberColumn(format="%.4f"),
            "z": st.column_config.NumberColumn(format="%.2f"),
            "return corr": st.column_config.NumberColumn(format="%.3f"),
            "half-life (bars)": st.column_config.NumberColumn(format="%.1f"),
        },
    )
    selected = list(event.selection.rows) if event is not None else []
    if selected:
        row = frame.iloc[int(selected[0])]
        pair = (str(row["Y"]), str(row["X"]))
        ss = st.session_state
        if pair != (ss.pair_y, ss.pair_x):
            ss.pending_pair = pair
            st.rerun(scope="app")


def _stats_tab(
    ctx: SourceContext, symbols: Sequence[str], interval_s: int, start: int, end: int
) -> None:
    """Correlation heatmap of log returns and a price-stats table per symbol."""
    version = st.session_state.data_version
    closes: dict[str, pd.Series] = {}
    stats_rows: list[dict[str, Any]] = []
    for sym in symbols:
        bars = cached_bars(str(ctx.db_path), sym, interval_s, start, end, version)
        if len(bars) == 0:
            continue
        closes[sym] = pd.Series(bars["close"].to_numpy(), index=bars["ts"])
        ps = analytics.price_stats(bars, interval_s)
        stats_rows.append(
            {
                "symbol": sym,
                "last": ps.last,
                "change %": ps.change_pct,
                "high": ps.high,
                "low": ps.low,
                "VWAP": ps.vwap,
                "volume": ps.volume,
                "quote volume (USDT)": ps.quote_volume,
                "trades": ps.trades,
                "realised vol (ann.)": ps.realized_vol,
                "bars": ps.n_bars,
            }
        )
    if len(closes) < 2:
        st.info(waiting_text(len(closes), 2, interval_s, "symbols with bars"))
    else:
        frame = pd.DataFrame(closes).dropna()
        returns = pd.DataFrame(
            {sym: analytics.log_returns(frame[sym].to_numpy()) for sym in frame}
        ).dropna()
        if len(returns) < 3:
            st.info(waiting_text(len(frame), 4, interval_s, "the heatmap"))
        else:
            st.plotly_chart(
                charts.correlation_heatmap(
                    returns.corr(),
                    title=f"correlation of {interval_label(interval_s)} log returns "
                    f"({len(returns)} returns, common bars only)",
                ),
                width="stretch",
                key="corr_heatmap",
            )
    if stats_rows:
        st.caption(
            f"Price statistics over the window ({interval_label(interval_s)} bars); "
            "realised volatility is annualised from log close-to-close returns."
        )
        st.dataframe(
            pd.DataFrame(stats_rows),
            hide_index=True,
            width="stretch",
            column_config={
                "change %": st.column_config.NumberColumn(format="%.3f"),
                "VWAP": st.column_config.NumberColumn(format="%.2f"),
                "volume": st.column_config.NumberColumn(format="%.3f"),
                "quote volume (USDT)": st.column_config.NumberColumn(format="%.0f"),
                "realised vol (ann.)": st.column_config.NumberColumn(format="%.3f"),
            },
        )


def _table_tab(view: PairView, params: Any, interval_s: int) -> None:
    """The per-bar pair statistics with a CSV download."""
    table = view.result.table
    if table.empty:
        st.info(waiting_text(0, 1, interval_s, "the pair table"))
        return
    name = pair_export_name("pair", params, table["ts"])
    col_a, col_b = st.columns([1, 3])
    col_a.download_button(
        "Download CSV",
        data=functools.partial(pair_table_csv, table, params),  # built when clicked
        file_name=name,
        mime="text/csv",
        key="download_csv",
        on_click="ignore",
    )
    col_b.caption(
        f"{len(table)} bars, newest first; y/x are {params.symbol_y}/"
        f"{params.symbol_x} closes, *_trades and *_notional the liquidity of each "
        f"leg. File: {name}"
    )
    shown = table.iloc[::-1].head(TABLE_ROWS_SHOWN)
    if len(table) > TABLE_ROWS_SHOWN:
        st.caption(f"Showing the newest {TABLE_ROWS_SHOWN} rows; the CSV has all.")
    st.dataframe(shown, hide_index=True, width="stretch", height=520)


def _backtest_tab(view: PairView, interval_s: int) -> None:
    """Equity, drawdown, statistics and trades of the z-score strategy."""
    result = view.result
    bt = result.backtest
    need = 60
    if not bt.ok or result.n_bars < need or result.latest.z is None:
        if bt.message:
            st.info(friendly_message(bt.message, interval_s))
        st.info(
            waiting_text(
                result.n_bars,
                max(need, 2 * result.params.window - 1),
                interval_s,
                "the backtest",
            )
        )
        if not bt.ok:
            return
    equity = pd.Series(np.asarray(bt.equity, dtype=float))
    ts = result.table["ts"]
    fig = view.figures.get("equity")
    if fig is None:
        fig = view.figures["equity"] = charts.equity_figure(
            ts, (equity - 1.0) * 100.0, unit="% of notional"
        )
    st.plotly_chart(fig, width="stretch", key="equity_chart")
    stats = pd.DataFrame(
        [
            ("total return", f"{bt.total_return * 100:.3f} %"),
            ("total P&L (USDT, net)", f"{bt.total_pnl:,.2f}"),
            ("costs (USDT)", f"{bt.costs:,.2f}"),
            (
                "Sharpe (annualised)",
                fmt_num(bt.sharpe, 3) if bt.sharpe is not None else "n/a (sample)",
            ),
            ("t-stat of mean return", fmt_num(bt.sharpe_tstat, 3)),
            ("bars", str(bt.n_bars)),
            ("max drawdown", f"{bt.max_drawdown * 100:.3f} %"),
            ("closed trades", str(bt.n_trades)),
            (
                "hit rate",
                "-" if bt.hit_rate is None else f"{bt.hit_rate * 100:.1f} %",
            ),
        ],
        columns=["statistic", "value"],
    )
    col_a, col_b = st.columns([1, 2])
    col_a.dataframe(stats, hide_index=True, width="stretch")
    if len(bt.trades):
        col_b.dataframe(bt.trades.iloc[::-1], hide_index=True, width="stretch")
    else:
        col_b.info("No trades yet: the z-score has not crossed the entry level.")
    if bt.sharpe_message:
        st.caption(bt.sharpe_message)
    st.caption(
        "Positions decided on bar t earn bar t+1's return, hedged with the "
        "no-look-ahead beta (rolling OLS or Kalman, whatever hedge is shown); fees "
        "and slippage are charged per leg and side."
    )


# --------------------------------------------------------------------------------------
# Alerts: sidebar rule editor, Alerts tab (states, history), preview on datasets.
# --------------------------------------------------------------------------------------


def metric_help_text() -> str:
    """The rule editor's help: grammar, examples and what each metric means."""
    lines = [
        "A rule is `METRIC OP NUMBER`, OP one of `>`, `>=`, `<`, `<=`; e.g. "
        "`abs(z) >= 2.5`, `spread < -5`, `adf_p < 0.05`, `BTCUSDT.price > 90000`.",
        "",
    ]
    lines += [f"- `{name}`: {text}" for name, text in alerts.METRIC_HELP.items()]
    return "\n".join(lines)


def _add_rule(db_path: Path | str, params: Any) -> None:
    """Add-button callback: parse, validate and store the rule typed in the sidebar.

    The rule carries the current ``PairParams``. It is stored through a short-lived
    ``storage.Writer`` (its admin busy timeout waits out the ingesting writer's
    batches: SQLite serialises the two), so it works whether or not this process
    holds the writer lease.
    """
    ss = st.session_state
    try:
        rule = alerts.AlertRule.create(
            ss.rule_text,
            params,
            cooldown_s=float(ss.rule_cooldown),
            webhook_url=(ss.rule_webhook or "").strip() or None,
            webhook_format=ss.rule_webhook_format,
            created_ms=now_ms(),
        )
        with storage.Writer(db_path) as writer:
            saved = alerts.save_rule(writer, rule)
    except alerts.RuleError as exc:
        ss.rule_flash = ("error", str(exc))
        return
    except storage.StorageError as exc:
        ss.rule_flash = ("error", f"Could not save the rule: {exc}")
        return
    ss.rule_flash = (
        "success",
        f"Rule #{saved.id} added: {saved.expr.text} on {saved.pair} "
        f"{params.interval}, window {params.window}",
    )
    missing = saved.expr.symbol
    if missing is not None and missing not in set(ss.symbols):
        ss.rule_flash = (
            "warning",
            ss.rule_flash[1] + f". {missing} is not streamed: the rule cannot fire "
            f"until {missing} is added to the symbols.",
        )
    ss.rule_text = ""
    ss.rule_webhook = ""


def _set_rule_enabled(db_path: Path | str, rule_id: int) -> None:
    """Toggle callback: store a rule's enabled flag."""
    ss = st.session_state
    enabled = bool(ss.get(f"rule_on_{rule_id}", True))
    try:
        with storage.Writer(db_path) as writer:
            writer.set_alert_rule_enabled(rule_id, enabled)
    except storage.StorageError as exc:
        ss.rule_flash = ("error", f"Could not change rule #{rule_id}: {exc}")


def _delete_rule(db_path: Path | str, rule_id: int) -> None:
    """Delete-button callback: remove a rule (its events stay in the history)."""
    ss = st.session_state
    try:
        with storage.Writer(db_path) as writer:
            writer.delete_alert_rule(rule_id)
    except storage.StorageError as exc:
        ss.rule_flash = ("error", f"Could not delete rule #{rule_id}: {exc}")
        return
    ss.pop(f"rule_on_{rule_id}", None)
    ss.rule_flash = ("success", f"Rule #{rule_id} deleted.")


def _rule_where(rule: Any) -> str:
    """``BTCUSDT/ETHUSDT 1m, w60, rolling-ols``: the settings a rule evaluates with."""
    p = rule.params
    return f"{rule.pair} {p.interval}, w{p.window}, {p.hedge_method.replace('_', '-')}"


def _alert_editor(ctx: SourceContext, params: Any) -> None:
    """Sidebar expander: type a rule (validated on each change), add, list, toggle."""
    ss = st.session_state
    for key, value in (
        ("rule_text", ""),
        ("rule_cooldown", alerts.DEFAULT_COOLDOWN_S),
        ("rule_webhook", ""),
        ("rule_webhook_format", "json"),
    ):
        ss[key] = ss[key] if key in ss else value
    rules = alerts.load_rules(ctx.rules_db)
    with st.sidebar.expander(f"Alerts ({len(rules)} rules)", expanded=False):
        st.text_input(
            "Rule",
            key="rule_text",
            placeholder="abs(z) > 2",
            help=metric_help_text(),
        )
        text = ss.rule_text
        expr = None
        if text.strip():
            try:
                expr = alerts.parse_rule(text)
            except alerts.RuleError as exc:
                st.error(str(exc))
                st.code(exc.pointer(text), language=None)
            else:
                st.caption(
                    f"OK: `{expr.text}` on {params.symbol_y}/{params.symbol_x} "
                    f"{params.interval}, window {params.window}"
                )
        st.number_input("Cooldown (s)", min_value=0.0, step=10.0, key="rule_cooldown")
        st.text_input(
            "Webhook URL (optional)",
            key="rule_webhook",
            placeholder="https://hooks.example.com/...",
            help="http or https only; POSTed with a short timeout and a few "
            "retries; the outcome is recorded on the event.",
        )
        st.selectbox(
            "Webhook format",
            list(alerts.WEBHOOK_FORMATS),
            key="rule_webhook_format",
            format_func=lambda f: WEBHOOK_FORMAT_LABELS.get(f, f),
        )
        webhook_ok = True
        try:
            alerts.validate_webhook(ss.rule_webhook or None, ss.rule_webhook_format)
        except alerts.RuleError as exc:
            st.error(str(exc))
            webhook_ok = False
        st.button(
            "Add rule",
            key="btn_rule_add",
            disabled=expr is None or not webhook_ok,
            on_click=_add_rule,
            args=(ctx.rules_db, params),
            width="stretch",
        )
        flash = ss.pop("rule_flash", None)
        if flash:
            show = {"error": st.error, "warning": st.warning}.get(flash[0], st.success)
            show(flash[1])
        where = "previewed on this dataset, fired on Live" if ctx.historical else ""
        rules_db = ctx.rules_db
        name = (
            rules_db.name
            if isinstance(rules_db, Path)
            else storage.display_target(rules_db)
        )
        st.caption(f"Rules in {name} {where}".strip())
        for rule in rules:
            col_t, col_on, col_del = st.columns([3.2, 1.0, 0.8])
            col_t.markdown(
                f"`{rule.expr.text}`  \n"
                f"<span style='opacity:0.7;font-size:0.8rem'>#{rule.id} "
                f"{html_escape(_rule_where(rule))}</span>",
                unsafe_allow_html=True,
            )
            col_on.toggle(
                "on",
                value=rule.enabled,
                key=f"rule_on_{rule.id}",
                on_change=_set_rule_enabled,
                args=(ctx.rules_db, int(rule.id)),
            )
            col_del.button(
                "✕",
                key=f"rule_del_{rule.id}",
                on_click=_delete_rule,
                args=(ctx.rules_db, int(rule.id)),
                help=f"Delete rule #{rule.id}",
            )


def _rule_states(ctx: SourceContext) -> dict[int, Any] | None:
    """Rule states from this process's monitor, None when another process evaluates.

    The monitor runs only while this process's service holds the writer lease.
    """
    service, monitor = ctx.service, ctx.monitor
    if service is None or monitor is None or not service.running:
        return None
    if getattr(service.status(), "role", "writer") != "writer":
        return None
    return monitor.rule_states()


def rules_frame(rules: Sequence[Any], states: dict[int, Any] | None) -> pd.DataFrame:
    """One row per rule with its settings and state.

    ``states`` is the monitor's ``rule_states()``; None means this process does not
    evaluate rules (read-only, ingestion off or stopped).
    """
    rows = []
    for rule in rules:
        if not rule.enabled:
            state_text, value, fired = "disabled", None, None
        elif states is None:
            state_text, value, fired = (
                "state known to the ingesting process",
                None,
                None,
            )
        else:
            state = states.get(int(rule.id))
            if state is None:
                state_text, value, fired = "starting", None, None
            else:
                state_text = state.status
                value, fired = state.last_value, state.last_fired_ms
        rows.append(
            {
                "id": rule.id,
                "rule": rule.expr.text,
                "pair": rule.pair,
                "timeframe": rule.params.interval,
                "window": rule.params.window,
                "hedge": rule.params.hedge_method,
                "cooldown (s)": rule.cooldown_s,
                "webhook": (
                    f"{rule.webhook_format}: {rule.webhook_url}"
                    if rule.webhook_url
                    else ""
                ),
                "state": state_text,
                "value": value,
                "last fired (UTC)": fmt_utc(fired) if fired else "",
            }
        )
    return pd.DataFrame(rows)


def events_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Alert events (``storage.list_alert_events``) flattened for a table or CSV.

    Columns ``id, fired (UTC datetime), rule_id, rule, value, pair, interval,
    price_y, price_x, beta, spread, z, notification, detail``.
    """
    snap_cols = ("pair", "interval", "price_y", "price_x", "beta", "spread", "z")
    snaps = []
    for text in events["snapshot_json"] if len(events) else ():
        try:
            snap = json.loads(text) if text else {}
        except ValueError:
            snap = {}
        snaps.append(snap if isinstance(snap, dict) else {})
    out = pd.DataFrame(
        {
            "id": events["id"].to_numpy() if len(events) else [],
            "fired": (
                pd.to_datetime(events["fired_ms"].to_numpy(), unit="ms", utc=True)
                if len(events)
                else pd.to_datetime([], utc=True)
            ),
            "rule_id": events["rule_id"].to_numpy() if len(events) else [],
            "rule": events["rule_text"].to_numpy() if len(events) else [],
            "value": events["value"].to_numpy() if len(events) else [],
        }
    )
    for col in snap_cols:
        out[col] = [snap.get(col) for snap in snaps]
    out["notification"] = events["notify_status"].to_numpy() if len(events) else []
    out["detail"] = events["notify_detail"].to_numpy() if len(events) else []
    return out


def events_csv(events: pd.DataFrame) -> bytes:
    """The alert history as CSV bytes (``fired`` in ISO-8601 UTC)."""
    return datafiles.frame_to_csv_bytes(events_frame(events))


def events_export_name(events: pd.DataFrame) -> str:
    """``alerts_20240808T235400Z_20240809T000000Z.csv`` over the events' span."""
    if events.empty:
        return datafiles.export_filename("alerts", [], None, None, None)
    fired = events["fired_ms"]
    return datafiles.export_filename(
        "alerts", [], None, int(fired.min()), int(fired.max())
    )


def _dataset_end_ms(db_path: Path | str, interval_s: int) -> int:
    """End (exclusive) of a dataset's last bar at ``interval_s``, ms UTC (0: empty)."""
    last = _dataset_last_ms(str(db_path), st.session_state.data_version)
    step = interval_s * 1000
    return ((last // step) + 1) * step if last else 0


def preview_metrics(
    db_path: Path | str, rule: Any, version: int
) -> dict[str, float | None]:
    """The metrics of one rule on a dataset's latest bars (no ingestion, no firing).

    The view is the monitor's: ``view_window.auto_lookback_s`` of closed bars ending
    at the dataset's last bar, analysed with the rule's own ``PairParams``; "live"
    prices are the last trade (or, for bar-only datasets, the last close).
    """
    params = rule.params
    interval_s = params.interval_s
    end = _dataset_end_ms(db_path, interval_s)
    start = window_start_ms(
        end, interval_s, view_window.auto_lookback_s(interval_s, params.window)
    )
    db = str(db_path)
    view = cached_pair(db, interval_s, start, end, params.to_json(), version)
    out: dict[str, float | None] = {}
    symbols = {params.symbol_y, params.symbol_x}
    if rule.expr.symbol:
        symbols.add(rule.expr.symbol)
    for sym in symbols:
        bars = cached_bars(db, sym, interval_s, start, end, version)
        tick = storage.last_tick(db_path, sym)
        price = tick.price if tick is not None else None
        if price is None and len(bars):
            price = float(bars["close"].iloc[-1])
        out[f"{sym}.price"] = price
        out[f"{sym}.volume"] = float(bars["volume"].iloc[-1]) if len(bars) else None
        closes = bars["close"].to_numpy(dtype=float)
        out[f"{sym}.return"] = (
            float(closes[-1] / closes[-2] - 1.0)
            if len(closes) > 1 and closes[-2] > 0
            else None
        )
    out.update(
        alerts.pair_values(
            view.result,
            out[f"{params.symbol_y}.price"],
            out[f"{params.symbol_x}.price"],
        )
    )
    return out


def _alert_preview(ctx: SourceContext, rules: Sequence[Any]) -> None:
    """Evaluate each rule once on the dataset's latest bars and say which holds now."""
    st.subheader("Alert preview on this dataset")
    st.caption(
        "No ingestion runs on a dataset, so nothing fires here: each rule is "
        "evaluated once on the dataset's latest bars with its own pair, timeframe "
        "and window, marking which would be true now."
    )
    if not rules:
        st.info("No rules yet: add one in the sidebar (Alerts).")
        return
    version = st.session_state.data_version
    rows = []
    for rule in rules:
        value = preview_metrics(ctx.db_path, rule, version).get(rule.expr.key)
        if value is None:
            verdict = "waiting for data"
        else:
            verdict = "TRUE now" if rule.expr.holds(value) else "false now"
        rows.append(
            {
                "id": rule.id,
                "rule": rule.expr.text,
                "pair": rule.pair,
                "timeframe": rule.params.interval,
                "enabled": rule.enabled,
                "value": value,
                "would fire": verdict,
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _alerts_tab(ctx: SourceContext) -> None:
    """Rules with their state, or their preview on a dataset, then the event history."""
    ss = st.session_state
    rules = alerts.load_rules(ctx.rules_db)
    if ctx.historical:
        _alert_preview(ctx, rules)
    else:
        st.subheader("Rules")
        states = _rule_states(ctx)
        if not rules:
            st.info("No rules yet: add one in the sidebar (Alerts).")
        else:
            if states is None:
                st.caption(
                    "This process does not evaluate rules (ingestion off, stopped, "
                    "or another process holds the writer lease): their state is "
                    "known to the ingesting process."
                )
            else:
                st.caption(
                    "Evaluated every second by this process (it holds the writer "
                    "lease), with or without a browser open."
                )
            st.dataframe(rules_frame(rules, states), hide_index=True, width="stretch")
    st.subheader("Event history")
    by_id = {f"#{r.id} {r.expr.text} ({r.pair})": r.id for r in rules}
    rule_options = ["all rules", *by_id]
    if ss.get("ev_rule") not in rule_options:
        ss.ev_rule = rule_options[0]
    if ss.get("ev_since") not in EVENT_SINCE:
        ss.ev_since = "last 24 h"
    col_r, col_s = st.columns(2)
    col_r.selectbox("Rule", rule_options, key="ev_rule")
    col_s.selectbox("Since", list(EVENT_SINCE), key="ev_since")
    since_s = EVENT_SINCE[ss.ev_since]
    events = (
        storage.list_alert_events(
            ctx.rules_db,
            rule_id=by_id.get(ss.ev_rule),
            since_ms=None if since_s is None else now_ms() - since_s * 1000,
            limit=1000,
        )
        if db_exists(ctx.rules_db)
        else storage.list_alert_events(ctx.rules_db, limit=0)
    )
    if events.empty:
        st.info("No alert events for this filter.")
        return
    st.download_button(
        "Download alert history (CSV)",
        data=functools.partial(events_csv, events),
        file_name=events_export_name(events),
        mime="text/csv",
        key="dl_alert_history",
        on_click="ignore",
    )
    st.dataframe(events_frame(events), hide_index=True, width="stretch")


# --------------------------------------------------------------------------------------
# Data: upload into datasets, dataset rename/delete, CSV downloads of everything.
# --------------------------------------------------------------------------------------


class UploadTooLargeError(ValueError):
    """An upload holds more rows than the dashboard accepts (the CLI streams any)."""


def dataset_name_for(file_name: str) -> str:
    """A valid dataset name from an upload's file name (``BTCUSDT-trades-...``)."""
    stem = Path(file_name).name.split(".", 1)[0]
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:64]
    return name or "upload"


def import_upload(
    file_name: str,
    content: Any,
    *,
    dataset: str,
    base_dir: Path | str,
    symbol: str | None = None,
    fmt: str | None = None,
    max_rows: int = DEFAULT_MAX_UPLOAD_ROWS,
    progress: Any = None,
) -> Any:
    """Write an upload to a temporary file and import it into a dataset.

    Parameters
    ----------
    file_name : the upload's name (kept: a Binance name carries the symbol).
    content : the bytes, or a binary file object (Streamlit's ``UploadedFile``).
    dataset, base_dir, symbol, fmt : as ``datafiles.import_file``.
    max_rows : more data rows than this abort the import (nothing is kept).
    progress : called with each ``datafiles.ImportProgress``.

    Returns
    -------
    datafiles.ImportReport

    Raises
    ------
    UploadTooLargeError
        Over ``max_rows`` rows.
    datafiles.FileImportError, ValueError, storage.StorageError
        As ``datafiles.import_file`` (a bad file keeps nothing; an existing dataset
        of that name is left as it was).
    """

    def on_chunk(p: Any) -> None:
        if p.rows_read > max_rows:
            raise UploadTooLargeError(
                f"{file_name}: more than {max_rows:,} rows; nothing was imported. "
                "Import large files with the command line, which streams any size: "
                f"python ingestion.py import FILE --dataset {dataset}"
            )
        if progress is not None:
            progress(p)

    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(file_name).name).lstrip(".")
    with tempfile.TemporaryDirectory(prefix="pairdesk-upload-") as tmp:
        path = Path(tmp) / (safe or "upload.csv")
        with open(path, "wb") as out:
            if isinstance(content, bytes | bytearray):
                out.write(content)
            else:
                content.seek(0)
                while block := content.read(1 << 20):
                    out.write(block)
        return datafiles.import_file(
            path,
            dataset=dataset,
            base_dir=base_dir,
            symbol=symbol,
            fmt=fmt,
            progress=on_chunk,
            chunk_rows=max(1, min(datafiles.DEFAULT_CHUNK_ROWS, max_rows + 1)),
        )


@st.cache_resource(show_spinner=False, max_entries=64, ttl=300)
def _dataset_row(db: str, version: int, mtime_ns: int) -> dict[str, Any]:
    """One dataset's summary (counts rows: cached per file version)."""
    del version, mtime_ns
    stats = storage.db_stats(storage.as_target(db))
    firsts = [s.first_ms for s in stats.symbols if s.first_ms is not None]
    lasts = [s.last_ms for s in stats.symbols if s.last_ms is not None]
    return {
        "symbols": ", ".join(s.symbol for s in stats.symbols),
        "ticks": sum(s.ticks for s in stats.symbols),
        "1s bars": sum(s.bars_1s for s in stats.symbols),
        "coarser bars": sum(getattr(s, "bars", 0) for s in stats.symbols),
        "from (UTC)": fmt_utc(min(firsts)) if firsts else "-",
        "to (UTC)": fmt_utc(max(lasts)) if lasts else "-",
        "size": fmt_bytes(stats.file_bytes),
    }


def datasets_frame(
    base_dir: Path | str, names: Sequence[str], version: int
) -> pd.DataFrame:
    """One row per dataset: name, symbols, row counts, span and size."""
    rows = []
    for name in names:
        db = storage.dataset_db_path(base_dir, name)
        try:
            # a schema has no mtime: a new data_version (import, rename) renews it
            mtime = db.stat().st_mtime_ns if isinstance(db, Path) else 0
            row = _dataset_row(str(db), version, mtime)
        except (OSError, storage.StorageError) as exc:
            row = {"symbols": f"unreadable: {exc}"}
        rows.append({"dataset": name, **row})
    return pd.DataFrame(rows)


def _upload_section(cfg: AppConfig) -> None:
    """File uploader, dataset name / symbol / format, Import with a progress bar."""
    ss = st.session_state
    st.subheader("Import a file as a dataset")
    max_mb = st.get_option("server.maxUploadSize")
    uploaded = st.file_uploader(
        "Binance public-data trades, aggTrades or klines (CSV or .zip), a tick CSV, "
        "an OHLCV CSV or NDJSON ticks",
        type=list(UPLOAD_TYPES),
        key="upload_file",
        help=f"At most {max_mb} MB and {cfg.max_upload_rows:,} rows here; the "
        "command line imports any size: python ingestion.py import FILE "
        "--dataset NAME",
    )
    if uploaded is not None and ss.get("upload_for") != uploaded.name:
        ss.upload_for = uploaded.name
        ss.upload_name = dataset_name_for(uploaded.name)
    for key in ("upload_name", "upload_symbol"):
        ss[key] = ss[key] if key in ss else ""
    if ss.get("upload_format") not in ("auto", *datafiles.FORMAT_KINDS):
        ss.upload_format = "auto"
    col_n, col_s, col_f = st.columns(3)
    col_n.text_input("Dataset name", key="upload_name", help="letters, digits, _ -")
    col_s.text_input(
        "Symbol (optional)",
        key="upload_symbol",
        help="For files without a symbol column or Binance file name; with a "
        "symbol column, imports only this symbol's rows.",
    )
    col_f.selectbox("Format", ["auto", *datafiles.FORMAT_KINDS], key="upload_format")
    if st.button("Import", key="btn_import", type="primary", disabled=uploaded is None):
        bar = st.progress(0.0, text="importing…")

        def show(p: Any) -> None:
            bar.progress(p.fraction, text=f"{p.rows_read:,} rows read")

        try:
            report = import_upload(
                uploaded.name,
                uploaded,
                dataset=ss.upload_name.strip(),
                base_dir=_datasets_base(cfg),
                symbol=ss.upload_symbol.strip() or None,
                fmt=None if ss.upload_format == "auto" else ss.upload_format,
                max_rows=cfg.max_upload_rows,
                progress=show,
            )
        except (ValueError, storage.StorageError) as exc:
            # FileImportError and UploadTooLargeError are ValueErrors: shown as is
            prefix = (
                ""
                if isinstance(exc, datafiles.FileImportError | UploadTooLargeError)
                else "Import refused: "
            )
            ss.data_flash = ("error", f"{prefix}{exc}")
        else:
            ss.data_flash = ("success", report.summary())
            ss.data_version += 1
        bar.empty()
        st.rerun(scope="app")  # the sidebar lists the new dataset


def _datasets_section(cfg: AppConfig) -> None:
    """The dataset list with rename and delete (delete asks for confirmation)."""
    ss = st.session_state
    st.subheader("Datasets")
    names = _list_datasets(cfg)
    base = _datasets_base(cfg)
    if not names:
        where = (
            base / "datasets"
            if isinstance(base, Path)
            else storage.display_target(base)
        )
        st.info(f"No datasets yet in {where}: import a file above.")
        return
    st.dataframe(
        datasets_frame(base, names, ss.data_version), hide_index=True, width="stretch"
    )
    if ss.get("ds_selected") not in names:
        ss.ds_selected = names[0]
    col_d, col_n, col_r, col_x = st.columns([2, 2, 1, 1])
    col_d.selectbox("Dataset", names, key="ds_selected")
    col_n.text_input("New name", key="ds_new_name")
    selected = ss.ds_selected
    if col_r.button("Rename", key="btn_ds_rename", width="stretch"):
        new = (ss.get("ds_new_name") or "").strip()
        try:
            storage.rename_dataset(base, selected, new)
        except (ValueError, storage.StorageError) as exc:
            ss.data_flash = ("error", f"Rename refused: {exc}")
        else:
            ss.data_flash = ("success", f"Dataset {selected!r} renamed to {new!r}.")
            ss.data_version += 1
            if ss.source == f"File: {selected}":
                ss.pending_source = f"File: {new}"
        st.rerun(scope="app")
    if col_x.button("Delete…", key="btn_ds_delete", width="stretch"):
        ss.confirm_ds_delete = selected
    pending = ss.get("confirm_ds_delete")
    if pending:
        st.warning(
            f"Delete dataset {pending!r} "
            f"({storage.display_target(storage.dataset_db_path(base, pending))})? "
            "This cannot be undone."
        )
        col_y, col_no = st.columns(2)
        if col_y.button("Yes, delete", key="btn_ds_delete_yes", type="primary"):
            ss.confirm_ds_delete = None
            try:
                storage.delete_dataset(base, pending)
            except storage.StorageError as exc:
                ss.data_flash = ("error", f"Delete failed: {exc}")
            else:
                ss.data_flash = ("success", f"Dataset {pending!r} deleted.")
                ss.data_version += 1
                if ss.source == f"File: {pending}":
                    ss.pending_source = "Live"
            st.rerun(scope="app")
        if col_no.button("Cancel", key="btn_ds_delete_no"):
            ss.confirm_ds_delete = None
            st.rerun(scope="app")


def ticks_csv(db_path: Path | str, symbol: str, start_ms: int, end_ms: int) -> bytes:
    """Ticks of one symbol in ``[start_ms, end_ms)`` as CSV bytes (streamed read)."""
    buffer = io.BytesIO()
    if db_exists(db_path) and end_ms > start_ms:
        datafiles.export_ticks(db_path, symbol, start_ms, end_ms, buffer)
    else:
        buffer.write((",".join(datafiles.TICK_EXPORT_COLUMNS) + "\n").encode())
    return buffer.getvalue()


def bars_csv(
    db_path: Path | str, symbol: str, interval_s: int, start_ms: int, end_ms: int
) -> bytes:
    """Bars of one symbol at ``interval_s`` over ``[start_ms, end_ms)`` as CSV bytes."""
    buffer = io.BytesIO()
    if db_exists(db_path) and end_ms > start_ms:
        datafiles.export_bars(db_path, symbol, interval_s, start_ms, end_ms, buffer)
    else:
        buffer.write((",".join(BAR_COLUMNS) + "\n").encode())
    return buffer.getvalue()


def _downloads_section(
    ctx: SourceContext,
    view: PairView,
    params: Any,
    interval_s: int,
    start: int,
    end: int,
) -> None:
    """CSV downloads: ticks, bars, pair table, backtest trades, alert history."""
    ss = st.session_state
    st.subheader("Downloads (CSV)")
    st.caption(
        f"The window shown: {fmt_utc(start)} to {fmt_utc(end)}, "
        f"{interval_label(interval_s)} bars; file names carry symbols, interval and "
        "UTC range. Each file is built when its button is clicked."
    )
    symbols = list(ss.symbols)
    if ss.get("dl_symbol") not in symbols:
        ss.dl_symbol = params.symbol_y
    st.selectbox("Symbol for ticks and bars", symbols, key="dl_symbol")
    sym = ss.dl_symbol
    label = interval_label(interval_s)
    db = ctx.db_path
    table = view.result.table
    trades = view.result.backtest.trades
    events = (
        storage.list_alert_events(ctx.rules_db, limit=100_000)
        if db_exists(ctx.rules_db)
        else None
    )
    cols = st.columns(5)
    cols[0].download_button(
        f"Ticks {sym}",
        data=functools.partial(ticks_csv, db, sym, start, end),
        file_name=datafiles.export_filename("ticks", [sym], None, start, end),
        mime="text/csv",
        key="dl_ticks",
        on_click="ignore",
        width="stretch",
    )
    cols[1].download_button(
        f"Bars {sym} {label}",
        data=functools.partial(bars_csv, db, sym, interval_s, start, end),
        file_name=datafiles.export_filename("bars", [sym], label, start, end),
        mime="text/csv",
        key="dl_bars",
        on_click="ignore",
        width="stretch",
    )
    cols[2].download_button(
        "Pair analytics table",
        data=functools.partial(pair_table_csv, table, params),
        file_name=pair_export_name("pair", params, table["ts"]),
        mime="text/csv",
        key="dl_pair_table",
        on_click="ignore",
        disabled=table.empty,
        width="stretch",
    )
    cols[3].download_button(
        "Backtest trades",
        data=functools.partial(
            datafiles.frame_to_csv_bytes, trades, [params.to_json()]
        ),
        file_name=pair_export_name("trades", params, table["ts"]),
        mime="text/csv",
        key="dl_trades",
        on_click="ignore",
        disabled=trades is None or len(trades) == 0,
        width="stretch",
    )
    cols[4].download_button(
        "Alert history",
        data=functools.partial(
            events_csv,
            events if events is not None else storage.list_alert_events(db, limit=0),
        ),
        file_name=events_export_name(events) if events is not None else "alerts.csv",
        mime="text/csv",
        key="dl_alerts",
        on_click="ignore",
        disabled=events is None or events.empty,
        width="stretch",
    )


def _data_tab(
    ctx: SourceContext,
    cfg: AppConfig,
    view: PairView,
    params: Any,
    interval_s: int,
    start: int,
    end: int,
) -> None:
    """Upload, datasets and downloads."""
    flash = st.session_state.pop("data_flash", None)
    if flash:
        (st.error if flash[0] == "error" else st.success)(flash[1])
    _upload_section(cfg)
    _datasets_section(cfg)
    _downloads_section(ctx, view, params, interval_s, start, end)


TAB_NAMES = (
    "Market",
    "Pair",
    "Scanner",
    "Stats",
    "Table",
    "Backtest",
    "Alerts",
    "Data",
)


def _bar_panel(
    ctx: SourceContext, params: Any, interval_s: int, cfg: AppConfig | None = None
) -> None:
    """Tabs with charts of completed bars; cached, recomputed only when a bar closes.

    Only the open tab's content runs (``on_change="rerun"``), so a refresh builds
    one tab's figures, not eight.
    """
    began = time.perf_counter()
    ss = st.session_state
    _follow_rest(ctx)
    symbols = list(ss.symbols)
    start, end = _window(ctx, interval_s, now_ms())
    view = cached_pair(
        str(ctx.db_path), interval_s, start, end, params.to_json(), ss.data_version
    )
    tabs = st.tabs(TAB_NAMES, key="main_tab", on_change="rerun")
    panels = dict(zip(TAB_NAMES, tabs, strict=True))
    if panels["Market"].open:
        with panels["Market"]:
            _market_tab(ctx, symbols, interval_s, start, end)
    if panels["Pair"].open:
        with panels["Pair"]:
            _pair_tab(
                view,
                params,
                interval_s,
                ctx.rules_db,
                history_db=ctx.db_path if ctx.rest is not None else None,
                end_ms=end,
            )
    if panels["Scanner"].open:
        with panels["Scanner"]:
            _scanner_tab(ctx, symbols, interval_s, params, start, end)
    if panels["Stats"].open:
        with panels["Stats"]:
            _stats_tab(ctx, symbols, interval_s, start, end)
    if panels["Table"].open:
        with panels["Table"]:
            _table_tab(view, params, interval_s)
    if panels["Backtest"].open:
        with panels["Backtest"]:
            _backtest_tab(view, interval_s)
    if panels["Alerts"].open:
        with panels["Alerts"]:
            _alerts_tab(ctx)
    if panels["Data"].open:
        with panels["Data"]:
            _data_tab(ctx, cfg or AppConfig(), view, params, interval_s, start, end)
    st.caption(
        f"Server time of this refresh: {(time.perf_counter() - began) * 1000:.0f} ms; "
        f"analytics of the window ({view.result.n_bars} bars) last computed "
        f"{fmt_utc(view.computed_ms)} in {view.compute_ms:.0f} ms."
    )


def _require_reachable(db: Path | str) -> None:
    """Stop with a plain message when a database server cannot be reached.

    A PostgreSQL URL is probed with one catalog query (`storage.db_bytes`); the
    message names host and port. A SQLite file needs no probe.
    """
    if not storage.is_postgres_url(db):
        return
    try:
        storage.db_bytes(db)
    except storage.StorageError as exc:
        st.error(
            f"The database is not available: {exc}. Start the server or fix "
            "--db / PAIRDESK_DB, then reload the page."
        )
        st.stop()


DB_FAILED = "Reading the database failed"
DB_RETRY = "The next refresh tries again; stored data is untouched."


def _storage_guard(panel: Any) -> Any:
    """`panel` with a plain error in place of a traceback when the database fails.

    A database server can go away mid-session (a restart, a network cut) after the
    start-up probe passed: a panel then says so in one line and the next refresh
    tries again; nothing stored is touched.
    """

    @functools.wraps(panel)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            panel(*args, **kwargs)
        except storage.StorageError as exc:
            st.error(f"{DB_FAILED}: {exc}. {DB_RETRY}")

    return guarded


def render(cfg: AppConfig) -> None:
    """The page, top to bottom: state, sidebar, source, live panel, bar panel."""
    st.set_page_config(page_title="PairDesk", page_icon="📈", layout="wide")
    st.markdown(NO_FLASH_CSS, unsafe_allow_html=True)
    _require_reachable(cfg.db_path)
    _init_state(cfg)
    _apply_pending()
    _sidebar(_list_datasets(cfg), _symbol_checker(cfg))
    ctx = _select_source(cfg)
    _controls(ctx)
    ss = st.session_state
    interval_s = int(ss.interval_s)
    if ss.pair_y == ss.pair_x:
        _status_bar(ctx, list(ss.symbols))
        st.warning("Choose two different symbols for Y and X in the sidebar.")
        st.stop()
    params = _params()
    _alert_editor(ctx, params)
    if ctx.historical:
        _dataset_notes(ctx, params, interval_s)
    refresh_s = float(ss.refresh_s)
    chart_every = (
        None
        if ss.pause_charts
        else min(max(refresh_s, float(interval_s)), MAX_CHART_REFRESH_S)
    )
    live_panel, bar_panel = _storage_guard(_live_panel), _storage_guard(_bar_panel)
    if ctx.historical:
        live_panel(ctx, params, interval_s)
        bar_panel(ctx, params, interval_s, cfg)
        return
    st.fragment(run_every=refresh_s)(live_panel)(ctx, params, interval_s)
    st.fragment(run_every=chart_every)(bar_panel)(ctx, params, interval_s, cfg)


def main() -> None:
    """Entry point: render under Streamlit, or re-execute as ``streamlit run``."""
    if get_script_run_ctx(suppress_warning=True) is None:
        cmd = streamlit_command(sys.argv[1:], Path(__file__).resolve())
        os.execv(sys.executable, cmd)
    argv = sys.argv[1:]
    try:
        cfg = parse_config(argv, os.environ)
    except ValueError as exc:
        st.error(f"Bad start-up setting: {exc}")
        st.stop()
    _storage_guard(render)(cfg)


if __name__ == "__main__":
    main()
