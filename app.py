"""PairDesk: the Streamlit dashboard for live pair analytics on Binance USD-M futures.

Start it with ``streamlit run app.py`` (or ``python app.py``, which starts Streamlit on
itself). Arguments after ``--`` and the same settings as environment variables:

==================  =======================  =========================================
argument            environment variable     meaning (default)
==================  =======================  =========================================
``--source``        ``PAIRDESK_SOURCE``      ``live`` or ``demo`` (``live``)
``--db PATH``       ``PAIRDESK_DB``          database file (``data/market.db``;
                                             Demo always uses ``data/demo.db``)
``--symbols``       ``PAIRDESK_SYMBOLS``     ``BTCUSDT,ETHUSDT``
``--base-url URL``  ``PAIRDESK_BASE_URL``    exchange stream base URL, route included
``--no-ingest``     ``PAIRDESK_INGEST=0``    show the database without ingesting
==================  =======================  =========================================

The script reads top to bottom: configuration, sidebar controls, the ingestion service
(one per process through ``st.cache_resource``), then two auto-refreshing fragments:
the live panel (last prices, live z-score, signal; every ``refresh`` seconds) and the
bar panel (tabs with charts of completed bars; recomputed only when a bar closes).
Everything shown is read back from SQLite; the analytics come from ``analytics.py``
and the figures from ``charts.py``. No Streamlit call ever runs off the script thread.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from html import escape as html_escape  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit.runtime.scriptrunner import get_script_run_ctx  # noqa: E402

import analytics  # noqa: E402
import charts  # noqa: E402
import resampling  # noqa: E402
import storage  # noqa: E402
from models import parse_symbols  # noqa: E402

SOURCES = ("live", "demo")
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")
DEFAULT_LIVE_DB = Path("data/market.db")
DEFAULT_DEMO_DB = Path("data/demo.db")
TIMEFRAMES = ("1s", "1m", "5m", "custom")
LOOKBACKS: dict[str, int | None] = {
    "auto (3 windows)": None,
    "15m": 15 * 60,
    "1h": 3600,
    "4h": 4 * 3600,
    "12h": 12 * 3600,
    "24h": 24 * 3600,
}
MAX_LOOKBACK_S = 24 * 3600  # nothing needs more than a day of data
MIN_AUTO_LOOKBACK_S = 15 * 60
MAX_BARS = 20_000  # cap on bars per symbol in one view (1s over many hours)
HEDGE_METHODS: dict[str, str] = {
    "Rolling OLS": "rolling_ols",
    "Kalman": "kalman",
    "OLS": "ols",
    "Huber": "huber",
    "Theil-Sen": "theil_sen",
}
REFRESH_CHOICES = (0.5, 1.0, 2.0, 5.0, 10.0)
CLOSE_GRACE_MS = 500  # a bar counts as closed this long after its end (flush + lag)
MAX_CHART_REFRESH_S = 5.0
# Streamlit dims elements while a rerun is in flight; with a refresh every 500 ms
# that reads as flashing, so keep them at full opacity.
NO_FLASH_CSS = (
    "<style>.stElementContainer[data-stale='true']"
    "{opacity:1 !important;transition:none !important}</style>"
)
TABLE_ROWS_SHOWN = 2000  # rows drawn in the Table tab (the CSV has every row)
LIVE_HOSTS_HINT = "wss://fstream.binance.com/public"


# --------------------------------------------------------------------------------------
# Configuration: CLI arguments after `--`, environment variables, defaults.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppConfig:
    """Start-up settings of one dashboard process.

    Attributes
    ----------
    source : ``"live"`` or ``"demo"``, the source selected on first load.
    db_path : database of the Live source; imported datasets live in
        ``datasets/`` beside it.
    demo_db_path : database of the Demo source, never the live one.
    symbols : upper-case symbols ingested on first load.
    base_url : stream base URL for Live, route included; None for the default.
    ingest : False shows the database read-only and starts no ingestion or replay.
    """

    source: str = "live"
    db_path: Path = DEFAULT_LIVE_DB
    demo_db_path: Path = DEFAULT_DEMO_DB
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    base_url: str | None = None
    ingest: bool = True


def _arg_parser() -> argparse.ArgumentParser:
    """The parser of the arguments after ``--``."""
    parser = argparse.ArgumentParser(prog="app.py", add_help=False)
    parser.add_argument("--source", choices=SOURCES)
    parser.add_argument("--db")
    parser.add_argument("--symbols")
    parser.add_argument("--base-url", dest="base_url")
    parser.add_argument("--no-ingest", dest="no_ingest", action="store_true")
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
        ``PAIRDESK_BASE_URL``, ``PAIRDESK_INGEST`` (``0``/``false``/``no`` disables).

    Returns
    -------
    AppConfig
        ``--db`` names the database of the source started with: with
        ``--source demo`` it is the Demo database (the Live one stays
        ``data/market.db``); otherwise it is the Live database and Demo writes
        ``demo.db`` beside it. Demo and Live never share a file.

    Raises
    ------
    ValueError
        When the source is not live/demo or a symbol is invalid, naming the setting.
    """
    args, _unknown = _arg_parser().parse_known_args(list(argv))
    source = (args.source or environ.get("PAIRDESK_SOURCE") or "live").strip().lower()
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    db_text = args.db or environ.get("PAIRDESK_DB")
    live_db, demo_db = DEFAULT_LIVE_DB, DEFAULT_DEMO_DB
    if db_text and source == "demo":
        demo_db = Path(db_text)
    elif db_text:
        live_db = Path(db_text)
        demo_db = live_db.with_name("demo.db")
        if demo_db == live_db:
            demo_db = live_db.with_name("demo-source.db")
    symbols_text = (
        args.symbols or environ.get("PAIRDESK_SYMBOLS") or ",".join(DEFAULT_SYMBOLS)
    )
    symbols = tuple(parse_symbols(symbols_text))
    base_url = args.base_url or environ.get("PAIRDESK_BASE_URL") or None
    ingest_env = environ.get("PAIRDESK_INGEST", "1").strip().lower()
    ingest = not args.no_ingest and ingest_env not in ("0", "false", "no", "off")
    return AppConfig(
        source=source,
        db_path=live_db,
        demo_db_path=demo_db,
        symbols=symbols,
        base_url=base_url,
        ingest=ingest,
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
    (the demo replay restarted with other symbols).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._services: dict[tuple[str, str], Any] = {}
        self._urls: dict[tuple[str, str], str | None] = {}
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

    def service(
        self,
        source: str,
        db_path: Path,
        base_url: str | None,
        symbols: Sequence[str],
        *,
        start: bool = True,
    ) -> Any:
        """The (started) ingestion service of a source, with these symbols."""
        import ingestion

        key = (source, str(db_path))
        with self._lock:
            service = self._services.get(key)
            if service is not None and self._urls.get(key) != base_url:
                service.stop(timeout=2.0)
                service = None
            if service is None:
                kwargs: dict[str, Any] = {
                    "symbols": tuple(symbols),
                    "db_path": Path(db_path),
                }
                if base_url:
                    kwargs["base_url"] = base_url
                service = ingestion.IngestionService(
                    ingestion.IngestionConfig(**kwargs)
                )
                self._services[key] = service
                self._urls[key] = base_url
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
            if self._replay is not None:
                self._replay.stop(timeout=2.0)
                self._replay = None

    def existing(self, source: str, db_path: Path) -> Any:
        """The service of a source if one was created, else None."""
        with self._lock:
            return self._services.get((source, str(db_path)))


@st.cache_resource(show_spinner=False, on_release=ServiceRegistry.shutdown)
def registry() -> ServiceRegistry:
    """The one registry of this process."""
    return ServiceRegistry()


def _source_db(source: str, cfg: AppConfig) -> Path:
    """The database a source reads and writes."""
    if source == "demo":
        return cfg.demo_db_path
    if source.startswith("file:"):
        return storage.dataset_db_path(_data_dir(cfg), source.removeprefix("file:"))
    return cfg.db_path


def _data_dir(cfg: AppConfig) -> Path:
    """Folder holding the live database and ``datasets/`` beside it."""
    return cfg.db_path.parent


def _list_datasets(cfg: AppConfig) -> list[str]:
    """Names of imported datasets (``data/datasets/NAME.db``)."""
    try:
        return list(storage.list_datasets(_data_dir(cfg)))
    except (OSError, storage.StorageError):
        return []


def db_file_bytes(db_path: Path) -> int | None:
    """Size of the database file plus its WAL, bytes (None when absent)."""
    if not db_path.exists():
        return None
    wal = db_path.with_name(db_path.name + "-wal")
    return db_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


# --------------------------------------------------------------------------------------
# Data: read only the window shown, resample, analyse; cached by the newest closed bar.
# --------------------------------------------------------------------------------------


def now_ms() -> int:
    """Wall-clock time, integer ms UTC."""
    return time.time_ns() // 1_000_000


def closed_end_ms(clock_ms: int, interval_s: int) -> int:
    """End (exclusive) of the newest closed bar: ``floor((now - grace) / i) * i``."""
    step = interval_s * 1000
    return ((clock_ms - CLOSE_GRACE_MS) // step) * step


def window_start_ms(end_ms: int, interval_s: int, lookback_s: int) -> int:
    """Start of the window, aligned to a bar boundary so the first bar is whole."""
    step = interval_s * 1000
    lookback_s = min(lookback_s, MAX_LOOKBACK_S, MAX_BARS * interval_s)
    return ((end_ms - lookback_s * 1000) // step) * step


def effective_lookback_s(choice: str, interval_s: int, window: int) -> int:
    """Seconds of history a view reads: explicit, or auto = 3 windows (>= 15 min)."""
    explicit = LOOKBACKS.get(choice)
    if explicit is not None:
        return explicit
    return min(max(3 * window * interval_s, MIN_AUTO_LOOKBACK_S), MAX_LOOKBACK_S)


def read_window_bars(
    db_path: Path, symbol: str, interval_s: int, start_ms: int, end_ms: int
) -> pd.DataFrame:
    """Bars of ``symbol`` at ``interval_s`` over ``[start_ms, end_ms)``.

    Reads ``bars_1s`` for the window and resamples; where no 1 s bars exist (an
    imported kline dataset) falls back to stored coarser bars that divide the
    interval.
    """
    if not db_path.exists():
        return resampling.empty_bars()
    bars = storage.read_bars_1s(db_path, symbol, start_ms, end_ms)
    if len(bars) == 0:
        for stored_s in (60, 300, 900, 3600):
            if stored_s > interval_s or interval_s % stored_s:
                continue
            coarse = storage.read_bars(db_path, symbol, stored_s, start_ms, end_ms)
            if len(coarse):
                return (
                    coarse
                    if stored_s == interval_s
                    else resampling.resample_bars(coarse, interval_s)
                )
        return resampling.empty_bars()
    if interval_s == 1:
        return bars
    return resampling.resample_bars(bars, interval_s)


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

    def __init__(self, db_path: Path, symbol: str, interval_s: int) -> None:
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
    return WindowBars(Path(db), symbol, interval_s)


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


@dataclass(frozen=True, slots=True)
class TestsRun:
    """ADF / Engle-Granger run of one window (the costly part of the analytics).

    Attributes
    ----------
    result : ``analytics.PairAnalytics`` computed with ``with_tests=True``.
    end_ms : end of the window it ran on, ms UTC.
    computed_ms : wall-clock time of the run, ms UTC.
    cost_ms : how long it took, milliseconds.
    """

    result: Any
    end_ms: int
    computed_ms: int
    cost_ms: float


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
    cost_ms = (time.perf_counter() - began) * 1000.0
    return TestsRun(result, _end_ms, now_ms(), cost_ms)


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
            regime=tested.regime,
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
    )


# --------------------------------------------------------------------------------------
# Small presentation helpers.
# --------------------------------------------------------------------------------------

INSUFFICIENT_RE = re.compile(r"have (\d+)(?: [a-z]+)?, need (\d+)")


def interval_label(interval_s: int) -> str:
    """``60`` -> ``"1m"``, ``5`` -> ``"5s"``, ``7200`` -> ``"2h"``."""
    for unit, size in (("h", 3600), ("m", 60)):
        if interval_s % size == 0:
            return f"{interval_s // size}{unit}"
    return f"{interval_s}s"


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


def table_csv(table: pd.DataFrame) -> bytes:
    """The per-bar pair table as CSV bytes, timestamps written as ISO-8601 UTC."""
    out = table.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = out[col].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    return out.to_csv(index=False).encode()


def csv_file_name(symbol_y: str, symbol_x: str, interval_s: int, ts: pd.Series) -> str:
    """``pair_BTCUSDT_ETHUSDT_1m_20240808T2354Z_20240809T0000Z.csv``."""
    if len(ts) == 0:
        return f"pair_{symbol_y}_{symbol_x}_{interval_label(interval_s)}.csv"
    first = pd.Timestamp(ts.iloc[0]).strftime("%Y%m%dT%H%M%SZ")
    last = pd.Timestamp(ts.iloc[-1]).strftime("%Y%m%dT%H%M%SZ")
    return f"pair_{symbol_y}_{symbol_x}_{interval_label(interval_s)}_{first}_{last}.csv"


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
        "kalman_obs_var": 1.0,
        "price_space": "price",
        "corr_on": "returns",
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


def _sidebar(datasets: list[str]) -> None:
    """All controls; validated values land in session state, bad input keeps the old."""
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
        else:
            ss.symbols = wanted
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
            "Obs. variance", min_value=1e-9, format="%.4g", key="kalman_obs_var"
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
        kalman_obs_var=float(ss.kalman_obs_var),
        price_space=ss.price_space,
        corr_on=ss.corr_on,
        z_entry=float(ss.z_entry),
        z_exit=float(ss.z_exit),
        z_stop=float(ss.z_stop) if ss.use_stop else None,
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
    db_path : the database shown.
    service : the ingestion service (None for File or with ingestion disabled).
    historical : True for a dataset: the window ends at its last data, not now.
    """

    label: str
    db_path: Path
    service: Any
    historical: bool


def _service_for(source: str, cfg: AppConfig, symbols: tuple[str, ...]) -> Any:
    """Get (create once per process) the ingestion service of a source."""
    if not cfg.ingest or source.startswith("file:"):
        return None
    reg = registry()
    base_url = reg.demo_url(symbols) if source == "demo" else cfg.base_url
    user_stopped = bool(st.session_state.get("user_stopped", False))
    return reg.service(
        source, _source_db(source, cfg), base_url, symbols, start=not user_stopped
    )


def _select_source(cfg: AppConfig) -> SourceContext:
    """Resolve the sidebar source into a database and a running service."""
    ss = st.session_state
    choice = ss.source
    if choice.startswith("File: "):
        source = f"file:{choice.removeprefix('File: ')}"
        label = "FILE"
    else:
        source = choice.lower()
        label = choice.upper()
    previous = ss.get("active_source_key")
    if previous and previous != source and cfg.ingest:
        # The user switched away: stop what the previous source ran in this process.
        old = registry().existing(previous, _source_db(previous, cfg))
        if old is not None and old.running:
            old.stop(timeout=2.0)
        ss.user_stopped = False
    ss.active_source_key = source
    service = _service_for(source, cfg, tuple(ss.symbols))
    return SourceContext(
        label=label,
        db_path=_source_db(source, cfg),
        service=service,
        historical=source.startswith("file:"),
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
            f"Delete all ticks, bars and gaps in {ctx.db_path}? This cannot be undone."
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
    where = html_escape(str(ctx.db_path))
    st.markdown(
        f"{head} <span style='font-size:1.1rem;font-weight:600'>{state_text}</span>"
        f" <span style='opacity:0.6'>&nbsp;{where}</span>",
        unsafe_allow_html=True,
    )
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
    stats = storage.db_stats(Path(db))
    lasts = [s.last_ms for s in stats.symbols if s.last_ms is not None]
    return max(lasts) if lasts else None  # counts rows: fine for rare dataset views


def _live_panel(ctx: SourceContext, params: Any, interval_s: int) -> None:
    """Tick-driven numbers: last prices, live z from the newest trades, signal badge.

    Runs every refresh: one index lookup per leg for the last trade, the cached
    analytics of the closed bars (recomputed only when a bar closes), and the live
    z-score of the newest prices against the current window's spread statistics.
    """
    ss = st.session_state
    _status_bar(ctx, list(ss.symbols))
    start, end = _window(ctx, interval_s, now_ms())
    view = cached_pair(
        str(ctx.db_path), interval_s, start, end, params.to_json(), ss.data_version
    )
    result = view.result
    prices: dict[str, float | None] = {}
    for sym in (params.symbol_y, params.symbol_x):
        tick = storage.last_tick(ctx.db_path, sym)
        prices[sym] = tick.price if tick is not None else None
    py, px = prices[params.symbol_y], prices[params.symbol_x]
    live_z = (
        analytics.live_zscore(result, py, px)
        if py is not None and px is not None
        else None
    )
    signal = str(result.signal)
    if live_z is not None and not ctx.historical:
        # the call the strategy would make if the bar closed at the newest prices
        z_path = np.append(result.table["z"].to_numpy(dtype=float), live_z)
        signal = analytics.zscore_signals(
            z_path, params.z_entry, params.z_exit, params.z_stop
        ).signal
    cols = st.columns([1.2, 1.2, 0.9, 0.9, 2.0])
    cols[0].metric(f"{params.symbol_y} last", fmt_num(py, 8))
    cols[1].metric(f"{params.symbol_x} last", fmt_num(px, 8))
    cols[2].metric(
        "live z",
        fmt_num(live_z, 3),
        help="Newest trade prices against the latest beta/alpha and the window's "
        "spread mean and standard deviation.",
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


def _pair_tab(view: PairView, params: Any, interval_s: int) -> None:
    """Pair charts, statistic cards, ADF trigger and readiness messages."""
    result = view.result
    table = result.table
    waiting = _messages(result, interval_s)
    _pair_cards(result)
    col_a, col_b = st.columns([1, 4])
    col_a.button(
        "Run ADF now",
        key="btn_adf",
        on_click=_run_tests_now,
        help="Recompute ADF and Engle-Granger on the current window now.",
    )
    adf = result.adf
    nobs = adf.nobs if adf is not None and adf.ok else 0
    every = (
        f"each closed {interval_label(interval_s)} bar"
        if view.tests_every_bars == 1
        else f"every {view.tests_every_bars} closed {interval_label(interval_s)} "
        "bars (a run takes longer than a fifth of a bar)"
    )
    col_b.caption(
        f"ADF / Engle-Granger last ran {fmt_utc(view.tests_ms)} on {nobs} "
        f"observations (regression 'c', in-sample spread; took "
        f"{view.tests_cost_ms:.0f} ms); they rerun on {every}."
    )
    if int(table["z"].notna().sum()) == 0:
        if not waiting:
            need = 2 * params.window - 1
            st.info(waiting_text(result.n_bars, need, interval_s, "the z-score"))
        return
    fig = view.figures.get("pair")
    if fig is None:
        fig = view.figures["pair"] = _pair_figure(table, params)
    st.plotly_chart(fig, width="stretch", key="pair_chart")


def _pair_figure(table: pd.DataFrame, params: Any) -> Any:
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
    )


def _run_tests_now() -> None:
    """Button callback: forget cached test runs so the next refresh reruns them."""
    cached_tests.clear()
    cached_pair.clear()


def _pair_cards(result: Any) -> None:
    """Metric cards for beta, alpha, R², ADF, Engle-Granger, half-life and z."""
    hedge = result.in_sample
    adf = result.adf if result.adf is not None and result.adf.ok else None
    eg = result.eg if result.eg is not None and result.eg.ok else None
    latest = result.latest
    method = hedge.method.replace("_", "-")
    cards = [
        ("β (latest)", fmt_num(latest.beta), "hedge ratio used on the newest bar"),
        ("α (latest)", fmt_num(latest.alpha), "intercept used on the newest bar"),
        (
            f"β in-sample ({method})",
            fmt_num(hedge.beta if hedge.ok else None),
            "one fit over the whole view: descriptive, not used to trade",
        ),
        ("R² in-sample", fmt_num(hedge.r2 if hedge.ok else None, 3), None),
        ("z (latest bar)", fmt_num(latest.z, 3), None),
        ("ADF stat", fmt_num(adf.statistic if adf else None), "H0: unit root"),
        ("ADF p / lags", _p_lags(adf), "p < 0.05: the spread is stationary"),
        ("EG p", fmt_num(eg.pvalue if eg else None, 3), "H0: no cointegration"),
        (
            "half-life (bars)",
            fmt_num(result.half_life.bars, 3),
            "-ln 2 / ln(1 + b) from ds = a + b s(t-1)",
        ),
        (
            "corr (latest)",
            fmt_num(latest.corr, 3),
            f"rolling correlation of {result.params.corr_on}",
        ),
    ]
    for row in (cards[:5], cards[5:]):
        for col, (label, value, help_text) in zip(st.columns(5), row, strict=True):
            col.metric(label, value, help=help_text)


def _p_lags(adf: Any) -> str:
    """ADF p-value and lags used, e.g. ``0.012 / 3``."""
    if adf is None:
        return "-"
    return f"{fmt_num(adf.pvalue, 3)} / {adf.lags}"


@st.cache_resource(show_spinner=False, max_entries=16, ttl=3600)
def market_chart(
    db: str, symbols: tuple[str, ...], interval_s: int, start: int, end: int, v: int
) -> tuple[Any, dict[str, int]]:
    """The market figure of one window of closed bars, built once per bar close.

    An unchanged figure is also what keeps the chart on screen between bar closes:
    Streamlit remounts a plotly chart whose spec changed (zoom and pan reset).
    """
    bars = {sym: cached_bars(db, sym, interval_s, start, end, v) for sym in symbols}
    counts = {sym: len(frame) for sym, frame in bars.items()}
    if not any(counts.values()):
        return None, counts
    return charts.market_figure(bars), counts


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


def _scanner_rows(
    db: str, symbols: Sequence[str], interval_s: int, start: int, end: int, base: Any
) -> pd.DataFrame:
    """One row per pair (Y before X in the symbol list), ranked.

    Ranking: Engle-Granger p-value ascending (most mean-reverting first), ties and
    missing p-values broken by |z| descending (most stretched first).
    """
    version = st.session_state.data_version
    rows: list[dict[str, Any]] = []
    for sym_y, sym_x in itertools.combinations(symbols, 2):
        params = replace(base, symbol_y=sym_y, symbol_x=sym_x)
        res = cached_pair(db, interval_s, start, end, params.to_json(), version).result
        adf = res.adf if res.adf is not None and res.adf.ok else None
        eg = res.eg if res.eg is not None and res.eg.ok else None
        rows.append(
            {
                "Y": sym_y,
                "X": sym_x,
                "bars": res.n_bars,
                "beta": res.latest.beta,
                "return corr": res.latest.corr,
                "ADF p": adf.pvalue if adf else None,
                "EG p": eg.pvalue if eg else None,
                "half-life (bars)": res.half_life.bars,
                "z": res.latest.z,
                "signal": res.signal,
                "regime": res.regime.label,
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    numeric = ("beta", "return corr", "ADF p", "EG p", "half-life (bars)", "z")
    for col in numeric:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    order = frame.assign(abs_z=frame["z"].abs()).sort_values(
        ["EG p", "abs_z"], ascending=[True, False], na_position="last"
    )
    return frame.loc[order.index].reset_index(drop=True)


def _scanner_tab(
    ctx: SourceContext,
    symbols: Sequence[str],
    interval_s: int,
    params: Any,
    start: int,
    end: int,
) -> None:
    """Every pair among the symbols, most mean-reverting and most stretched first."""
    base = replace(params, corr_on="returns")
    frame = _scanner_rows(str(ctx.db_path), symbols, interval_s, start, end, base)
    if frame.empty:
        st.info("The scanner needs at least two symbols.")
        return
    st.caption(
        "Every pair among the symbols, ranked by Engle-Granger p-value (most "
        "mean-reverting first), then |z| (most stretched first); refreshed when a "
        f"{interval_label(interval_s)} bar closes. Select a row to make it the pair."
    )
    event = st.dataframe(
        frame,
        key="scanner_table",
        on_select="rerun",
        selection_mode="single-row",
        hide_index=True,
        width="stretch",
        column_config={
            "ADF p": st.column_config.NumberColumn(format="%.4f"),
            "EG p": st.column_config.NumberColumn(format="%.4f"),
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
    name = csv_file_name(params.symbol_y, params.symbol_x, interval_s, table["ts"])
    col_a, col_b = st.columns([1, 3])
    col_a.download_button(
        "Download CSV",
        data=functools.partial(table_csv, table),  # built only when clicked
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
            ("Sharpe (annualised)", fmt_num(bt.sharpe, 3)),
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
    st.caption(
        "Positions decided on bar t earn bar t+1's return, hedged with the "
        "no-look-ahead beta; fees and slippage are charged per leg and side."
    )


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


def _bar_panel(ctx: SourceContext, params: Any, interval_s: int) -> None:
    """Tabs with charts of completed bars; cached, recomputed only when a bar closes.

    Only the open tab's content runs (``on_change="rerun"``), so a refresh builds
    one tab's figures, not eight.
    """
    began = time.perf_counter()
    ss = st.session_state
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
            _pair_tab(view, params, interval_s)
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
            st.info("Alerts: coming with the alerts issue.")
    if panels["Data"].open:
        with panels["Data"]:
            st.info(
                "Data (uploads, datasets, retention): coming with the import issue."
            )
    st.caption(
        f"Server time of this refresh: {(time.perf_counter() - began) * 1000:.0f} ms; "
        f"analytics of the window ({view.result.n_bars} bars) last computed "
        f"{fmt_utc(view.computed_ms)} in {view.compute_ms:.0f} ms."
    )


def render(cfg: AppConfig) -> None:
    """The page, top to bottom: state, sidebar, source, live panel, bar panel."""
    st.set_page_config(page_title="PairDesk", page_icon="📈", layout="wide")
    st.markdown(NO_FLASH_CSS, unsafe_allow_html=True)
    _init_state(cfg)
    _apply_pending()
    _sidebar(_list_datasets(cfg))
    ctx = _select_source(cfg)
    _controls(ctx)
    ss = st.session_state
    interval_s = int(ss.interval_s)
    if ss.pair_y == ss.pair_x:
        _status_bar(ctx, list(ss.symbols))
        st.warning("Choose two different symbols for Y and X in the sidebar.")
        st.stop()
    params = _params()
    refresh_s = float(ss.refresh_s)
    chart_every = (
        None
        if ss.pause_charts
        else min(max(refresh_s, float(interval_s)), MAX_CHART_REFRESH_S)
    )
    if ctx.historical:
        _live_panel(ctx, params, interval_s)
        _bar_panel(ctx, params, interval_s)
        return
    st.fragment(run_every=refresh_s)(_live_panel)(ctx, params, interval_s)
    st.fragment(run_every=chart_every)(_bar_panel)(ctx, params, interval_s)


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
    render(cfg)


if __name__ == "__main__":
    main()
