"""Binance USD-M Futures REST: warm start, gap refill, symbol check, rate limits.

- `RestClient`: blocking HTTP through ``urllib.request`` with a timeout, one attempt
  at a time (`RestClient.try_request`), plus async wrappers that run each attempt in a
  worker thread (``asyncio.to_thread``) and wait in the event loop. Every request
  declares its weight; the `RateLimiter` keeps the weight of the last 60 s under a
  share of the REQUEST_WEIGHT limit that ``exchangeInfo`` reports. HTTP 429 pauses all
  requests for ``Retry-After``; 418 stops all REST calls until the ban ends; 451/403
  (a blocked region) is reported once in plain words and never retried. Hostile
  answers are bounded: ``Retry-After`` is clamped to `MAX_RETRY_AFTER_S` (10 min),
  a ban to `MAX_BAN_MS` (3 days), an answer to `MAX_RESPONSE_BYTES` (32 MB); no REST
  failure stops the stream.
- `RestSync`: an `ingestion.IngestionService` task (``tasks=[sync.run]``, so it runs
  only while this process holds the writer lease). It checks the symbols against
  ``exchangeInfo``, warm-starts each symbol with the 1 m klines of the last 24 h that
  are missing from ``bars`` (interval 60 s), then watches the ``gaps`` table and
  refills each new gap: tick for tick from ``/fapi/v1/trades`` when the latest 1 000
  trades cover it, else from ``/fapi/v1/historicalTrades`` with an API key, else at
  bar level (``bars_1s`` only) from ``/fapi/v1/aggTrades`` by time.
- Pure helpers (`klines_to_bars`, `trades_to_ticks`, `agg_trades_to_bars_1s`,
  `check_symbols_against`, `rate_limit_per_minute`, `missing_minute_ranges`) carry
  Binance's wire format into our types and are tested without a network.

REST never runs on the WebSocket receive path: HTTP and SQLite work happen in worker
threads; the writes go through a second `storage.Writer` owned by one thread
(`WriterThread`, a longer busy timeout), as the alert monitor does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import email.utils
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import numpy as np
import pandas as pd

import storage
from models import BAR_COLUMNS, Tick, normalize_symbol

log = logging.getLogger("rest")

DEFAULT_REST_URL = "https://fapi.binance.com"
DEFAULT_WEIGHT_LIMIT = 2400  # REQUEST_WEIGHT per minute until exchangeInfo says
WINDOW_S = 60.0
MINUTE_MS = 60_000
DAY_MS = 86_400_000
KLINE_PAGE = 1500  # klines: max limit
TRADES_PAGE = 1000  # trades / historicalTrades / aggTrades: max limit
AGG_WINDOW_MS = 3_600_000 - 1  # aggTrades: startTime..endTime must be < 1 h
MAX_AGG_PAGES = 200
# Weights of GET /fapi/v1/... (Binance USD-M market data documentation).
WEIGHT_EXCHANGE_INFO = 1
WEIGHT_TRADES = 5
WEIGHT_HISTORICAL_TRADES = 20
WEIGHT_AGG_TRADES = 20
# A Retry-After (429 or 418) is clamped to 0..10 minutes: "inf" or "1e300" would
# otherwise pause REST for good (or overflow); NaN or garbage means "not given".
MAX_RETRY_AFTER_S = 600.0
# A ban named in a 418's message ("banned until T") is believed up to 3 days, the
# longest ban Binance documents.
MAX_BAN_MS = 3 * DAY_MS
# Largest answer read (the largest legitimate one, exchangeInfo, is a few MB); a
# larger one is refused unread (Content-Length) or as soon as it passes the limit.
MAX_RESPONSE_BYTES = 32 << 20
MAX_ERROR_BODY_BYTES = 64 << 10
USER_AGENT = "pair-analytics/rest (+urllib)"
API_KEY_ENV = "BINANCE_API_KEY"  # read from the environment, never a CLI argument
_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})")

FillMethod = Literal[
    "trades", "historicalTrades", "aggTrades", "pending", "skipped", "failed"
]
SyncState = Literal[
    "idle", "checking", "warming", "running", "paused", "blocked", "unavailable"
]


def klines_weight(limit: int) -> int:
    """Weight of GET /fapi/v1/klines: 1 below 100 rows, 2 below 500, 5 up to 1000,
    10 above."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


# ---------------------------------------------------------------------- errors


class RestError(RuntimeError):
    """A REST call failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RestUnavailableError(RestError):
    """No usable answer (network error, timeout, HTTP 5xx): transient."""


class RestRequestError(RestError):
    """Binance refused the request (HTTP 4xx with ``{"code", "msg"}``); not retried."""

    def __init__(self, message: str, *, status: int, code: int | None) -> None:
        super().__init__(message, status=status)
        self.code = code


class RestWaitError(RestError):
    """Wait `delay_s` before trying again (local rate limit or a 429 pause)."""

    def __init__(self, message: str, delay_s: float, *, status: int | None) -> None:
        super().__init__(message, status=status)
        self.delay_s = delay_s


class RestRateLimitedError(RestError):
    """HTTP 429 kept coming back after waiting out each ``Retry-After``."""


class RestBannedError(RestError):
    """HTTP 418: this IP is banned; no REST call is made before ``until_ms``."""

    def __init__(self, message: str, until_ms: int) -> None:
        super().__init__(message, status=418)
        self.until_ms = until_ms


class RestBlockedError(RestError):
    """HTTP 451/403: REST refused for this location; never retried."""


# ----------------------------------------------------------------- result types


@dataclass(frozen=True, slots=True)
class SymbolProblem:
    """A symbol refused by the symbol check.

    Attributes
    ----------
    symbol : the symbol as given (upper-cased when it was well-formed).
    reason : plain words: unknown, not trading (status), not a perpetual, malformed.
    suggestions : close matches among the trading perpetuals, best first.
    """

    symbol: str
    reason: str
    suggestions: tuple[str, ...]

    @property
    def message(self) -> str:
        """One sentence for the user, with the suggestions."""
        text = f"{self.symbol}: {self.reason}"
        if self.suggestions:
            text += "; did you mean " + " or ".join(self.suggestions) + "?"
        return text


@dataclass(frozen=True, slots=True)
class SymbolCheck:
    """Symbols checked against ``GET /fapi/v1/exchangeInfo``.

    Attributes
    ----------
    checked : False when REST was unavailable (then every well-formed symbol is in
        `valid`, unchecked, and `note` says why).
    valid : symbols to stream, in the given order.
    invalid : refused symbols with the reason and close matches.
    available : every USD-M perpetual that is trading (for a picker), sorted.
    note : plain-language note ("" when all symbols are valid).
    """

    checked: bool
    valid: tuple[str, ...]
    invalid: tuple[SymbolProblem, ...]
    available: tuple[str, ...]
    note: str

    @property
    def ok(self) -> bool:
        """True when no symbol was refused."""
        return not self.invalid


@dataclass(frozen=True, slots=True)
class WarmStart:
    """Exchange history fetched for one symbol at start.

    Attributes
    ----------
    symbol : the symbol.
    window_start_ms, window_end_ms : the 1 m buckets considered, ``[start, end)``
        (the last 24 h of closed minutes), ms since the epoch UTC.
    missing : minutes of the window with neither a stored kline nor 1 s bars.
    stored : klines written to ``bars`` (interval 60 s).
    requests : kline requests made.
    history_end_ms : end of the newest stored kline (where exchange history ends
        and live data begins), or None.
    detail : plain words ("" when all went well).
    """

    symbol: str
    window_start_ms: int
    window_end_ms: int
    missing: int
    stored: int
    requests: int
    history_end_ms: int | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class GapFill:
    """How one gap row (trade ids ``from_id..to_id``) was filled.

    Attributes
    ----------
    method : ``trades`` (latest 1 000 trades, tick for tick), ``historicalTrades``
        (tick for tick, API key), ``aggTrades`` (``bars_1s`` only, no ticks),
        ``pending``, ``skipped`` (recorded before this run, or older than 24 h) or
        ``failed`` (see `detail`).
    ticks_inserted : ticks written (tick-level fills).
    bars_1s : 1 s bars upserted (bar-level fills; tick fills upsert them too).
    trades : trades accounted for (ids the exchange returned inside the gap).
    filled_ms : wall-clock time of the fill, ms since the epoch UTC, or None.
    detail : plain words (non-market ids are missing by design, etc.).
    """

    symbol: str
    from_id: int
    to_id: int
    detected_ms: int
    method: FillMethod
    ticks_inserted: int = 0
    bars_1s: int = 0
    trades: int = 0
    filled_ms: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RestStatus:
    """Snapshot of the REST side, safe to read from any thread.

    Attributes
    ----------
    state : ``idle`` | ``checking`` | ``warming`` | ``running`` | ``paused`` (418
        ban or 429 pause) | ``blocked`` (451/403) | ``unavailable`` (network).
    rest_url : base URL in use.
    message : plain-language text of the current problem ("" when none).
    symbol_check : the last symbol check, or None.
    warm_starts : one per symbol warm-started in this run.
    gap_fills : every gap row seen by this run, oldest first.
    weight_used_1m : request weight spent in the last 60 s (local count).
    weight_limit : REQUEST_WEIGHT per minute reported by ``exchangeInfo``.
    banned_until_ms : end of a 418 ban, or None.
    requests : HTTP requests sent by this client.
    """

    state: SyncState
    rest_url: str
    message: str
    symbol_check: SymbolCheck | None
    warm_starts: tuple[WarmStart, ...]
    gap_fills: tuple[GapFill, ...]
    weight_used_1m: int
    weight_limit: int
    banned_until_ms: int | None
    requests: int


# ---------------------------------------------------------------- pure helpers


def _empty_bars(extra: Sequence[str] = ()) -> pd.DataFrame:
    cols: dict[str, Any] = {"ts": pd.Series([], dtype="datetime64[ms, UTC]")}
    for c in BAR_COLUMNS[1:]:
        cols[c] = pd.Series([], dtype="int64" if c == "trades" else "float64")
    for c in extra:
        cols[c] = pd.Series([], dtype="int64")
    return pd.DataFrame(cols)


def _utc(ms: np.ndarray) -> pd.Series:
    return pd.Series(
        pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True)
    ).dt.as_unit("ms")


def klines_to_bars(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """Binance kline rows to a bar DataFrame (`models.BAR_COLUMNS`).

    Parameters
    ----------
    rows : ``[openTime, open, high, low, close, volume, closeTime, quoteVolume,
        trades, takerBuyBase, takerBuyQuote, ignore]`` (numbers may be text).

    Returns
    -------
    pandas.DataFrame
        ``ts`` = openTime (datetime64[ms, UTC]), open..volume, quote_volume, trades,
        ``vwap = quote_volume / volume``; klines without trades are dropped (one row
        per non-empty bucket); sorted by ts, duplicates of one openTime keep the
        last row.

    Raises
    ------
    ValueError
        When a row has fewer than 9 fields or a field is not a number.
    """
    if len(rows) == 0:
        return _empty_bars()
    for i, row in enumerate(rows):
        if len(row) < 9:
            raise ValueError(f"rows: kline {i} has {len(row)} fields, need at least 9")
    try:
        arr = np.array(
            [[r[c] for c in (0, 1, 2, 3, 4, 5, 7, 8)] for r in rows], dtype=np.float64
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"rows: kline field is not a number: {exc}") from exc
    frame = pd.DataFrame(
        arr,
        columns=[
            "ts_ms",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "trades",
        ],
    )
    frame = frame.loc[frame["trades"] > 0]
    frame = frame.drop_duplicates("ts_ms", keep="last").sort_values("ts_ms")
    out = pd.DataFrame({"ts": _utc(frame["ts_ms"].to_numpy(np.int64))})
    for c in ("open", "high", "low", "close", "volume", "quote_volume"):
        out[c] = frame[c].to_numpy()
    out["trades"] = frame["trades"].to_numpy(np.int64)
    vol = out["volume"].to_numpy()
    quote = out["quote_volume"].to_numpy()
    out["vwap"] = np.divide(quote, vol, out=np.full(len(out), np.nan), where=vol > 0)
    return out.reset_index(drop=True)


def trades_to_ticks(symbol: str, rows: Iterable[Mapping[str, Any]]) -> list[Tick]:
    """``/fapi/v1/trades`` or ``historicalTrades`` rows to `Tick`s, sorted by id.

    Rows ``{"id", "price", "qty", "quoteQty", "time", "isBuyerMaker"}``; these
    endpoints return market trades only.

    Raises
    ------
    ValueError
        On a bad symbol or a row without the keys above.
    """
    sym = normalize_symbol(symbol)
    out = []
    for row in rows:
        try:
            out.append(
                Tick(
                    sym,
                    int(row["id"]),
                    int(row["time"]),
                    float(row["price"]),
                    float(row["qty"]),
                    bool(row["isBuyerMaker"]),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"rows: bad trade row {row!r}: {exc}") from exc
    out.sort(key=lambda t: t.trade_id)
    return out


def agg_trades_to_bars_1s(
    rows: Iterable[Mapping[str, Any]],
    from_id: int,
    to_id: int,
    known_qty: Mapping[int, float] | None = None,
) -> pd.DataFrame:
    """1 s bars of the trades ``from_id..to_id`` from aggregate trades.

    Parameters
    ----------
    rows : ``/fapi/v1/aggTrades`` rows ``{"a", "p", "q", "f", "l", "T", "m"}``; one
        row is trades ``f..l`` at one price and time.
    from_id, to_id : the gap (inclusive); rows outside it are ignored.
    known_qty : quantities of trade ids outside the gap that are already stored
        (the ticks next to the gap). An aggregate that straddles a gap edge counts
        only ``q - sum(known_qty[i] for i in f..l outside the gap)``.

    Returns
    -------
    pandas.DataFrame
        `models.BAR_COLUMNS` plus ``first_id``, ``last_id`` (the lowest and highest
        trade id of the bucket inside the gap), one row per 1 s bucket
        ``T - T mod 1000``: open/close = price of the lowest/highest id, high/low,
        ``volume = sum(q)``, ``quote_volume = sum(p q)``, ``trades = sum(l - f + 1)``
        (clipped to the gap), ``vwap = quote_volume / volume``.

    Raises
    ------
    ValueError
        When ``to_id < from_id`` or a row lacks a key.
    """
    if to_id < from_id:
        raise ValueError(f"to_id must be >= from_id, got {from_id}..{to_id}")
    known = known_qty or {}
    buckets: dict[int, list] = {}
    for row in rows:
        try:
            f, last = int(row["f"]), int(row["l"])
            price, qty, t_ms = float(row["p"]), float(row["q"]), int(row["T"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"rows: bad aggregate trade {row!r}: {exc}") from exc
        lo, hi = max(f, from_id), min(last, to_id)
        if lo > hi:
            continue
        outside = [i for i in range(f, last + 1) if i < from_id or i > to_id]
        qty -= sum(known.get(i, 0.0) for i in outside)
        if not qty > 1e-12:
            continue
        b = t_ms - t_ms % 1000
        bar = buckets.get(b)
        n = hi - lo + 1
        if bar is None:
            # open, high, low, close, volume, quote, trades, first_id, last_id
            buckets[b] = [price, price, price, price, qty, price * qty, n, lo, hi]
            continue
        if lo < bar[7]:
            bar[0], bar[7] = price, lo
        if hi > bar[8]:
            bar[3], bar[8] = price, hi
        bar[1] = max(bar[1], price)
        bar[2] = min(bar[2], price)
        bar[4] += qty
        bar[5] += price * qty
        bar[6] += n
    if not buckets:
        return _empty_bars(("first_id", "last_id"))
    keys = sorted(buckets)
    vals = np.array([buckets[k] for k in keys], dtype=np.float64)
    out = pd.DataFrame({"ts": _utc(np.array(keys, dtype=np.int64))})
    for j, c in enumerate(("open", "high", "low", "close", "volume", "quote_volume")):
        out[c] = vals[:, j]
    out["trades"] = vals[:, 6].astype(np.int64)
    out["vwap"] = vals[:, 5] / vals[:, 4]
    out["first_id"] = vals[:, 7].astype(np.int64)
    out["last_id"] = vals[:, 8].astype(np.int64)
    return out


def rate_limit_per_minute(exchange_info: Mapping[str, Any]) -> int | None:
    """The REQUEST_WEIGHT limit of ``exchangeInfo.rateLimits`` per minute, or None.

    A limit per N seconds/minutes/hours is scaled to one minute; with several, the
    strictest wins.
    """
    unit_s = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}
    best: float | None = None
    for lim in exchange_info.get("rateLimits") or ():
        if not isinstance(lim, Mapping) or lim.get("rateLimitType") != "REQUEST_WEIGHT":
            continue
        try:
            span_s = unit_s[str(lim["interval"])] * int(lim.get("intervalNum", 1))
            per_min = float(lim["limit"]) * 60.0 / span_s
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue
        best = per_min if best is None else min(best, per_min)
    return None if best is None else max(1, int(best))


def check_symbols_against(
    symbols: Sequence[str], exchange_info: Mapping[str, Any]
) -> SymbolCheck:
    """Check symbols against ``exchangeInfo``: trading USD-M perpetuals only.

    A symbol is valid when ``exchangeInfo.symbols[]`` lists it with ``status ==
    "TRADING"`` and ``contractType == "PERPETUAL"``; otherwise it is refused with
    the reason (unknown, not trading, not a perpetual, malformed) and up to three
    close matches (`difflib.get_close_matches`, cutoff 0.6) among the valid ones.
    """
    entries = {
        str(e.get("symbol")): e
        for e in exchange_info.get("symbols") or ()
        if isinstance(e, Mapping)
    }
    available = sorted(
        s
        for s, e in entries.items()
        if e.get("status") == "TRADING" and e.get("contractType") == "PERPETUAL"
    )
    avail_set = set(available)
    valid: list[str] = []
    invalid: list[SymbolProblem] = []
    for raw in symbols:
        try:
            sym = normalize_symbol(raw)
        except ValueError:
            invalid.append(
                SymbolProblem(str(raw), "not a symbol (2-20 letters or digits)", ())
            )
            continue
        if sym in avail_set:
            if sym not in valid:
                valid.append(sym)
            continue
        entry = entries.get(sym)
        if entry is None:
            reason = "not a USD-M futures symbol on Binance"
        elif entry.get("status") != "TRADING":
            reason = f"not trading on Binance (status {entry.get('status')})"
        else:
            reason = (
                f"not a perpetual contract (contract type {entry.get('contractType')})"
            )
        close = difflib.get_close_matches(sym, available, n=3, cutoff=0.6)
        invalid.append(SymbolProblem(sym, reason, tuple(close)))
    note = "; ".join(p.message for p in invalid)
    if note:
        note = "refused: " + note
    return SymbolCheck(True, tuple(valid), tuple(invalid), tuple(available), note)


def unchecked_symbols(symbols: Sequence[str], reason: str) -> SymbolCheck:
    """The result when ``exchangeInfo`` could not be read: well-formed symbols pass."""
    valid: list[str] = []
    invalid: list[SymbolProblem] = []
    for raw in symbols:
        try:
            sym = normalize_symbol(raw)
        except ValueError:
            invalid.append(
                SymbolProblem(str(raw), "not a symbol (2-20 letters or digits)", ())
            )
            continue
        if sym not in valid:
            valid.append(sym)
    note = f"symbol check skipped ({reason}); streaming the symbols unchecked"
    return SymbolCheck(False, tuple(valid), tuple(invalid), (), note)


def missing_minute_ranges(
    have_ms: Iterable[int], start_ms: int, end_ms: int
) -> list[tuple[int, int]]:
    """Runs ``[lo, hi)`` of 1 m buckets in ``[start_ms, end_ms)`` not in `have_ms`.

    `start_ms`, `end_ms` are minute-aligned; `have_ms` are bucket starts.
    """
    have = set(int(x) for x in have_ms)
    out: list[tuple[int, int]] = []
    run: int | None = None
    for t in range(start_ms, end_ms, MINUTE_MS):
        if t in have:
            if run is not None:
                out.append((run, t))
                run = None
        elif run is None:
            run = t
    if run is not None:
        out.append((run, end_ms))
    return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ------------------------------------------------------------------ rate limiter


class RateLimiter:
    """Request-weight budget over a sliding 60 s window, plus 429 pauses.

    Parameters
    ----------
    limit_per_minute : REQUEST_WEIGHT per minute (from ``exchangeInfo``).
    share : fraction of the limit this client may use (room for other clients on
        the same IP, e.g. a second dashboard).
    clock : monotonic seconds (injectable for tests).

    Notes
    -----
    A request of weight w may start at t when ``sum(weights in (t - 60, t]) + w <=
    floor(share * limit)``; otherwise `reserve` returns how long until enough weight
    leaves the window. Binance counts per calendar minute, so a sliding window is
    never looser than the server.
    """

    def __init__(
        self,
        limit_per_minute: int = DEFAULT_WEIGHT_LIMIT,
        *,
        share: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(share, int | float) and 0 < share <= 1):
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        self._share = float(share)
        self._clock = clock
        self._lock = threading.Lock()
        self._spent: deque[tuple[float, int]] = deque()
        self._paused_until = 0.0
        self.set_limit(limit_per_minute)

    @property
    def limit(self) -> int:
        """REQUEST_WEIGHT per minute in force."""
        return self._limit

    @property
    def budget(self) -> int:
        """Weight this client may spend per 60 s: ``max(1, floor(share * limit))``."""
        return max(1, int(self._share * self._limit))

    def set_limit(self, limit_per_minute: int) -> None:
        """Adopt a new per-minute limit (from ``exchangeInfo``)."""
        if not (isinstance(limit_per_minute, int) and limit_per_minute >= 1):
            raise ValueError(
                f"limit_per_minute must be an integer >= 1, got {limit_per_minute!r}"
            )
        self._limit = limit_per_minute

    def _expire(self, now: float) -> int:
        while self._spent and now - self._spent[0][0] >= WINDOW_S:
            self._spent.popleft()
        return sum(w for _t, w in self._spent)

    def used(self) -> int:
        """Weight spent in the last 60 s."""
        with self._lock:
            return self._expire(self._clock())

    def reserve(self, weight: int) -> float:
        """Spend `weight` now and return 0.0, or return the seconds to wait first.

        Raises
        ------
        ValueError
            When `weight` exceeds the whole budget.
        """
        budget = self.budget
        if weight > budget:
            raise ValueError(
                f"weight {weight} exceeds the budget of {budget} per minute"
            )
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return self._paused_until - now
            used = self._expire(now)
            if used + weight <= budget:
                self._spent.append((now, weight))
                return 0.0
            freed = 0
            for t, w in self._spent:
                freed += w
                if used - freed + weight <= budget:
                    return max(1e-3, t + WINDOW_S - now)
            return WINDOW_S  # unreachable: weight <= budget

    def pause(self, seconds: float) -> None:
        """Hold every request for `seconds` (a 429's ``Retry-After``), at most
        `MAX_RETRY_AFTER_S`."""
        seconds = min(MAX_RETRY_AFTER_S, seconds) if seconds > 0 else 0.0
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def observe_server_used(self, used: int) -> None:
        """Align with ``X-MBX-USED-WEIGHT-1M`` when the server counted more."""
        with self._lock:
            now = self._clock()
            mine = self._expire(now)
            if used > mine:
                self._spent.append((now, used - mine))


# ------------------------------------------------------------------- the client


class RestClient:
    """Blocking Binance USD-M REST client with weights, pauses, bans and blocks.

    Parameters
    ----------
    base_url : ``https://fapi.binance.com`` or a local test server (``http://``).
    api_key : sent as ``X-MBX-APIKEY`` to endpoints that need it (historicalTrades).
    timeout_s : socket timeout per request.
    limiter : request-weight budget (a new `RateLimiter` by default).
    max_429 : 429 answers in a row for one request before giving up.
    wall_ms : wall clock in ms since the epoch (ban ends).

    Thread-safe: `try_request` may be called from several worker threads.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_REST_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        limiter: RateLimiter | None = None,
        max_429: int = 3,
        wall_ms: Callable[[], int] = storage.now_ms,
    ) -> None:
        url = str(base_url).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"base_url: must be an http:// or https:// URL, got {base_url!r}"
            )
        if not (isinstance(timeout_s, int | float) and 0 < timeout_s < math.inf):
            raise ValueError(f"timeout_s must be a number > 0, got {timeout_s!r}")
        self.base_url = url
        self.api_key = api_key or None
        self.timeout_s = float(timeout_s)
        self.limiter = limiter or RateLimiter()
        self.max_429 = max_429
        self._wall_ms = wall_ms
        self._lock = threading.Lock()
        self._banned_until_ms = 0
        self._blocked: RestBlockedError | None = None
        self._exchange_info: tuple[float, dict] | None = None
        self.requests = 0

    # ------------------------------------------------------------ state

    @property
    def blocked(self) -> RestBlockedError | None:
        """The 451/403 refusal, once seen (REST stays off for this client)."""
        return self._blocked

    @property
    def banned_until_ms(self) -> int | None:
        """End of a 418 ban (ms since the epoch), or None when not banned."""
        until = self._banned_until_ms
        return until if until > self._wall_ms() else None

    def _gate(self) -> None:
        """Raise instead of sending while blocked or banned."""
        if self._blocked is not None:
            raise self._blocked
        until = self._banned_until_ms
        if until > self._wall_ms():
            raise RestBannedError(
                f"REST paused: Binance banned this IP until {_iso(until)} (HTTP 418, "
                "too many requests); no REST call is made before then",
                until,
            )

    # ------------------------------------------------------------ one attempt

    def try_request(
        self,
        path: str,
        params: Mapping[str, Any],
        weight: int,
        *,
        with_key: bool = False,
    ) -> Any:
        """Send one GET and return the decoded JSON; never sleeps.

        Raises
        ------
        RestWaitError
            Wait ``delay_s`` first (local budget, or a 429 pause), then call again.
        RestBannedError, RestBlockedError, RestRequestError, RestUnavailableError
            See the classes.
        """
        self._gate()
        delay = self.limiter.reserve(weight)
        if delay > 0:
            raise RestWaitError("request weight budget spent", delay, status=None)
        query = urlencode({k: v for k, v in params.items() if v is not None})
        url = self.base_url + path + ("?" + query if query else "")
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if with_key and self.api_key:
            headers["X-MBX-APIKEY"] = self.api_key
        request = urllib.request.Request(url, headers=headers, method="GET")
        with self._lock:
            self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310 - http(s) checked
                status, hdrs = resp.status, resp.headers
                body = _read_capped(resp, path, MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            status, hdrs = exc.code, exc.headers
            try:
                body = exc.read(MAX_ERROR_BODY_BYTES)
            except OSError:
                body = b""
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RestUnavailableError(
                f"REST unavailable: cannot reach {self.base_url} ({reason})"
            ) from exc
        used = hdrs.get("X-MBX-USED-WEIGHT-1M") if hdrs is not None else None
        if used and used.isdigit():
            self.limiter.observe_server_used(int(used))
        if status == 200:
            try:
                return json.loads(body)
            except ValueError as exc:
                raise RestUnavailableError(
                    f"REST answer from {path} is not JSON: {exc}", status=200
                ) from exc
        return self._raise_for(status, hdrs, body, path)

    def _raise_for(self, status: int, hdrs: Any, body: bytes, path: str) -> Any:
        code, msg = None, body[:200].decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            payload = json.loads(body)
            code, msg = payload.get("code"), str(payload.get("msg", msg))
        retry_after = _retry_after_s(hdrs, self._wall_ms())
        if status == 429:
            wait = retry_after if retry_after is not None else WINDOW_S
            self.limiter.pause(wait)
            log.warning("HTTP 429 from %s: waiting %.0f s (Retry-After)", path, wait)
            raise RestWaitError(
                f"rate limited by Binance (HTTP 429): waiting {wait:.0f} s",
                wait,
                status=429,
            )
        if status == 418:
            until = None
            m = _BANNED_UNTIL.search(msg)
            if m:
                until = min(int(m.group(1)), self._wall_ms() + MAX_BAN_MS)
            if until is None:
                until = self._wall_ms() + int(1000 * (retry_after or 120))
            self._banned_until_ms = max(self._banned_until_ms, until)
            log.error("HTTP 418: REST banned until %s", _iso(until))
            self._gate()
        if status in (451, 403):
            err = RestBlockedError(
                f"Binance refused REST access from this location (HTTP {status}): "
                "exchange history, gap refill and the symbol check are off; the live "
                "stream is not affected. Binance says: " + msg,
                status=status,
            )
            if self._blocked is None:
                self._blocked = err
                log.error("%s", err)
            raise self._blocked
        if status >= 500:
            raise RestUnavailableError(
                f"REST unavailable: HTTP {status} from {path}: {msg}", status=status
            )
        raise RestRequestError(
            f"Binance refused {path} (HTTP {status}, code {code}): {msg}",
            status=status,
            code=code if isinstance(code, int) else None,
        )

    # ------------------------------------------------------------ blocking

    def request(
        self,
        path: str,
        params: Mapping[str, Any],
        weight: int,
        *,
        with_key: bool = False,
        max_wait_s: float = 120.0,
    ) -> Any:
        """`try_request`, sleeping through budget waits and 429 pauses (blocking).

        For callers outside an event loop (the dashboard). Gives up with
        `RestRateLimitedError` after `max_429` 429s or `max_wait_s` of waiting.
        """
        waited = 0.0
        n429 = 0
        while True:
            try:
                return self.try_request(path, params, weight, with_key=with_key)
            except RestWaitError as exc:
                n429 += exc.status == 429
                if n429 >= self.max_429 or waited + exc.delay_s > max_wait_s:
                    raise RestRateLimitedError(str(exc), status=exc.status) from exc
                time.sleep(exc.delay_s)
                waited += exc.delay_s

    async def arequest(
        self,
        path: str,
        params: Mapping[str, Any],
        weight: int,
        *,
        with_key: bool = False,
        tries: int = 3,
        backoff_s: float = 0.5,
    ) -> Any:
        """`try_request` in a worker thread; waits (budget, 429) in the loop.

        Network errors and 5xx are retried `tries` times with doubling backoff.
        """
        n429 = 0
        failures = 0
        while True:
            try:
                return await asyncio.to_thread(
                    self.try_request, path, params, weight, with_key=with_key
                )
            except RestWaitError as exc:
                if exc.status == 429:
                    n429 += 1
                    if n429 >= self.max_429:
                        raise RestRateLimitedError(str(exc), status=429) from exc
                await asyncio.sleep(exc.delay_s)
            except RestUnavailableError:
                failures += 1
                if failures >= tries:
                    raise
                await asyncio.sleep(backoff_s * 2 ** (failures - 1))

    # ------------------------------------------------------------ endpoints

    def _exchange_info_cached(self, max_age_s: float) -> dict | None:
        cached = self._exchange_info
        if cached is not None and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        return None

    def _adopt_exchange_info(self, info: Any) -> dict:
        if not isinstance(info, dict):
            raise RestUnavailableError("exchangeInfo answer is not an object")
        limit = rate_limit_per_minute(info)
        if limit is not None:
            self.limiter.set_limit(limit)
        self._exchange_info = (time.monotonic(), info)
        return info

    async def exchange_info(self, *, max_age_s: float = 600.0) -> dict:
        """``GET /fapi/v1/exchangeInfo`` (weight 1), cached; adopts its rate limit."""
        info = self._exchange_info_cached(max_age_s)
        if info is not None:
            return info
        raw = await self.arequest("/fapi/v1/exchangeInfo", {}, WEIGHT_EXCHANGE_INFO)
        return self._adopt_exchange_info(raw)

    def exchange_info_blocking(
        self, *, max_age_s: float = 600.0, max_wait_s: float = 5.0
    ) -> dict:
        """`exchange_info` for callers outside an event loop (waits at most
        `max_wait_s` for the budget or a 429 pause)."""
        info = self._exchange_info_cached(max_age_s)
        if info is not None:
            return info
        raw = self.request(
            "/fapi/v1/exchangeInfo", {}, WEIGHT_EXCHANGE_INFO, max_wait_s=max_wait_s
        )
        return self._adopt_exchange_info(raw)

    def check_symbols_blocking(self, symbols: Sequence[str]) -> SymbolCheck:
        """Symbol check for the dashboard thread; never raises for REST problems."""
        try:
            info = self.exchange_info_blocking()
        except RestError as exc:
            return unchecked_symbols(symbols, str(exc))
        except Exception as exc:  # never let REST stop the stream
            log.exception("symbol check failed")
            return unchecked_symbols(symbols, f"REST error: {exc!r}")
        return check_symbols_against(symbols, info)

    async def klines(
        self, symbol: str, start_ms: int, end_ms: int, *, limit: int = KLINE_PAGE
    ) -> list[list]:
        """``GET /fapi/v1/klines`` 1 m rows with openTime in [start_ms, end_ms]."""
        params = {
            "symbol": normalize_symbol(symbol),
            "interval": "1m",
            "startTime": int(start_ms),
            "endTime": int(end_ms),
            "limit": int(limit),
        }
        rows = await self.arequest("/fapi/v1/klines", params, klines_weight(limit))
        return list(rows or [])

    async def trades(self, symbol: str, *, limit: int = TRADES_PAGE) -> list[dict]:
        """``GET /fapi/v1/trades``: the latest `limit` market trades (weight 5)."""
        params = {"symbol": normalize_symbol(symbol), "limit": int(limit)}
        return list(await self.arequest("/fapi/v1/trades", params, WEIGHT_TRADES) or [])

    async def historical_trades(
        self, symbol: str, from_id: int, *, limit: int = TRADES_PAGE
    ) -> list[dict]:
        """``GET /fapi/v1/historicalTrades?fromId=`` (weight 20, API key)."""
        if not self.api_key:
            raise ValueError("api_key: historicalTrades needs an API key")
        params = {
            "symbol": normalize_symbol(symbol),
            "fromId": int(from_id),
            "limit": int(limit),
        }
        rows = await self.arequest(
            "/fapi/v1/historicalTrades", params, WEIGHT_HISTORICAL_TRADES, with_key=True
        )
        return list(rows or [])

    async def agg_trades(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        from_id: int | None = None,
        limit: int = TRADES_PAGE,
    ) -> list[dict]:
        """``GET /fapi/v1/aggTrades`` by time window (< 1 h) or aggregate id."""
        params = {
            "symbol": normalize_symbol(symbol),
            "startTime": start_ms,
            "endTime": end_ms,
            "fromId": from_id,
            "limit": int(limit),
        }
        rows = await self.arequest("/fapi/v1/aggTrades", params, WEIGHT_AGG_TRADES)
        return list(rows or [])


def _retry_after_s(hdrs: Any, now_ms: int) -> float | None:
    """Seconds of a ``Retry-After`` header (delay seconds or an HTTP date), clamped
    to ``0..MAX_RETRY_AFTER_S``; None when absent or unreadable (NaN, garbage)."""
    value = hdrs.get("Retry-After") if hdrs is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now_ms / 1000.0
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _read_capped(resp: Any, path: str, limit: int) -> bytes:
    """The body of `resp`, refused with `RestUnavailableError` when it is larger
    than `limit` bytes: unread when Content-Length says so, else once `limit`
    bytes have passed (memory stays about `limit`)."""
    length = resp.headers.get("Content-Length") if resp.headers else None
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise RestUnavailableError(
            f"REST answer from {path} is {int(length):,} bytes, over the "
            f"{limit >> 20} MB limit (MAX_RESPONSE_BYTES); not read",
            status=resp.status,
        )
    body = bytearray()
    while block := resp.read(min(1 << 20, limit + 1 - len(body))):
        body += block
        if len(body) > limit:
            raise RestUnavailableError(
                f"REST answer from {path} is over the {limit >> 20} MB limit "
                "(MAX_RESPONSE_BYTES); not read further",
                status=resp.status,
            )
    return bytes(body)


# --------------------------------------------------------------- writer thread


class WriterThread:
    """One dedicated thread owning a second `storage.Writer` (opened lazily).

    The ingestion service does not share its writer, and a lock wait must never
    happen on the receive loop (architecture.md, decision 11), so side writers (REST
    history, gap refills) go through their own connection with a longer busy
    timeout, used from this one thread only. (`alerts.AlertMonitor` follows the
    same pattern; this class could move to storage and serve both.)
    """

    def __init__(
        self,
        db_path: str | Path,
        *,
        busy_timeout_ms: int = 2_000,
        name: str = "rest-db",
    ) -> None:
        self.db_path = storage.as_target(db_path)
        self._busy_timeout_ms = busy_timeout_ms
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._writer: storage.Writer | None = None

    def _call(self, fn: Callable[..., Any], args: tuple) -> Any:
        if self._writer is None:
            self._writer = storage.Writer(
                self.db_path, busy_timeout_ms=self._busy_timeout_ms
            )
        return fn(self._writer, *args)

    async def call(self, fn: Callable[..., Any], *args: Any, tries: int = 5) -> Any:
        """Run ``fn(writer, *args)`` in the thread; retry a locked database."""
        loop = asyncio.get_running_loop()
        for attempt in range(tries):
            try:
                return await loop.run_in_executor(self._pool, self._call, fn, args)
            except storage.DatabaseLockedError:
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        return None  # unreachable

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def aclose(self) -> None:
        """Close the writer in its thread and release the thread."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=False)


# ------------------------------------------------------------------ db lookups


def _stored_minutes(
    db_path: Path, symbol: str, lo: int, hi: int
) -> tuple[set[int], int | None]:
    """Worker thread: minute buckets in [lo, hi) with a kline or 1 s bars, and the
    newest stored kline start."""
    klines = storage.read_bars(db_path, symbol, 60, lo, hi)
    from_1s = storage.read_bars_agg(db_path, symbol, 60, lo, hi)
    have: set[int] = set()
    for frame in (klines, from_1s):
        if len(frame):
            have.update(frame["ts"].dt.as_unit("ms").astype("int64").tolist())
    last = None
    if len(klines):
        last = int(klines["ts"].dt.as_unit("ms").astype("int64").iloc[-1])
    return have, last


def exchange_history_end_ms(
    db_path: str | Path, symbol: str, now_ms: int | None = None
) -> int | None:
    """End of the newest stored 1 m kline of the last day (where exchange history
    ends and live data begins on a chart), or None without klines."""
    now = storage.now_ms() if now_ms is None else int(now_ms)
    bars = storage.read_bars(db_path, symbol, 60, now - 2 * DAY_MS, None)
    if not len(bars):
        return None
    return int(bars["ts"].dt.as_unit("ms").astype("int64").iloc[-1]) + MINUTE_MS


def _newest_id_before(db_path: Path, symbol: str, t_ms: int) -> int | None:
    frame = storage.read_ticks(db_path, symbol, None, t_ms, limit=1)
    return int(frame["trade_id"].iloc[-1]) if len(frame) else None


def gap_time_bounds(
    db_path: Path, symbol: str, from_id: int, to_id: int
) -> tuple[int, int] | None:
    """Trade times around a gap: (time of the stored tick before it, time of the
    first stored tick after it), or None while the tick after it is not stored.

    Bisects trade time with ``read_ticks(..., limit=1)`` (newest tick before t, an
    index lookup): about 40 probes over any span.
    """
    span = storage.data_span(db_path, symbol)
    if span is None:
        return None
    lo, hi = span.first_ms, span.last_ms + 1000
    newest = _newest_id_before(db_path, symbol, hi)
    if newest is None or newest <= to_id:
        return None
    while hi - lo > 1:  # invariant: newest_id_before(hi) > to_id
        mid = (lo + hi) // 2
        nid = _newest_id_before(db_path, symbol, mid)
        if nid is not None and nid > to_id:
            hi = mid
        else:
            lo = mid
    after_ms = hi - 1
    before = storage.read_ticks(db_path, symbol, None, after_ms + 1, limit=256)
    before = before.loc[before["trade_id"] < from_id]
    if len(before):
        before_ms = int(before["ts"].dt.as_unit("ms").astype("int64").iloc[-1])
    else:
        before_ms = max(span.first_ms, after_ms - AGG_WINDOW_MS)
    return before_ms, after_ms


def _known_qty(
    db_path: Path, symbol: str, times: Iterable[int], from_id: int, to_id: int
) -> dict[int, float]:
    """Stored quantities of ids outside the gap at the given trade times."""
    out: dict[int, float] = {}
    for t in set(times):
        frame = storage.read_ticks(db_path, symbol, t, t + 1)
        for tid, qty in zip(
            frame["trade_id"].tolist(), frame["qty"].tolist(), strict=True
        ):
            if tid < from_id or tid > to_id:
                out[int(tid)] = float(qty)
    return out


# ------------------------------------------------------------------- the task


class RestSync:
    """Warm start, symbol check and gap refill as an ingestion-service task.

    Usage::

        sync = RestSync("https://fapi.binance.com", api_key=None)
        service = IngestionService(config, tasks=[sync.run])
        ...
        sync.status()          # RestStatus snapshot, any thread

    Parameters
    ----------
    rest_url : REST base URL (tests: a 127.0.0.1 server).
    api_key : enables tick-level refill of older gaps via historicalTrades.
    db_path : database; None takes ``service.config.db_path`` in `run`.
    history_ms : how far back the warm start reaches (24 h; never more).
    gap_poll_s : how often the gaps table is read.
    retry_s : pause before retrying work that failed on a transient error.
    timeout_s : HTTP timeout per request.
    clock_ms : "now" for the warm-start window and the 24 h horizon (injectable).
    busy_timeout_ms : lock wait of the side writer connection (its own thread).
    client : a ready `RestClient` (else one is built from rest_url/api_key).
    """

    def __init__(
        self,
        rest_url: str = DEFAULT_REST_URL,
        *,
        api_key: str | None = None,
        db_path: str | Path | None = None,
        history_ms: int = DAY_MS,
        gap_poll_s: float = 1.0,
        retry_s: float = 30.0,
        timeout_s: float = 10.0,
        clock_ms: Callable[[], int] = storage.now_ms,
        busy_timeout_ms: int = 2_000,
        client: RestClient | None = None,
    ) -> None:
        if not (isinstance(history_ms, int) and 0 < history_ms <= DAY_MS):
            raise ValueError(f"history_ms must be in 1..{DAY_MS}, got {history_ms!r}")
        for name, value in (("gap_poll_s", gap_poll_s), ("retry_s", retry_s)):
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        self.client = client or RestClient(
            rest_url, api_key=api_key, timeout_s=timeout_s
        )
        self.db_path = None if db_path is None else storage.as_target(db_path)
        self.history_ms = history_ms
        self.gap_poll_s = float(gap_poll_s)
        self.retry_s = float(retry_s)
        self._clock = clock_ms
        self._busy_timeout_ms = busy_timeout_ms
        self._state: SyncState = "idle"
        self._message = ""
        self._check: SymbolCheck | None = None
        self._warm: dict[str, WarmStart] = {}
        self._fills: dict[tuple[str, int, int], GapFill] = {}
        # pending gaps: (attempts, loop time of the next attempt)
        self._retry: dict[tuple[str, int, int], tuple[int, float]] = {}
        self._db: WriterThread | None = None
        self._warming = True

    # ------------------------------------------------------------ public

    def status(self) -> RestStatus:
        """A snapshot of the REST side; safe from any thread."""
        return RestStatus(
            state=self._state,
            rest_url=self.client.base_url,
            message=self._message,
            symbol_check=self._check,
            warm_starts=tuple(self._warm.copy().values()),
            gap_fills=tuple(self._fills.copy().values()),
            weight_used_1m=self.client.limiter.used(),
            weight_limit=self.client.limiter.limit,
            banned_until_ms=self.client.banned_until_ms,
            requests=self.client.requests,
        )

    async def check_symbols(self, symbols: Sequence[str]) -> SymbolCheck:
        """Check symbols against exchangeInfo; without REST, pass them with a note."""
        try:
            info = await self.client.exchange_info()
        except RestError as exc:
            check = unchecked_symbols(symbols, str(exc))
            self._note_error(exc)
        except Exception as exc:  # never let REST stop the stream
            log.exception("symbol check failed")
            check = unchecked_symbols(symbols, f"REST error: {exc!r}")
            self._note_error(exc)
        else:
            check = check_symbols_against(symbols, info)
        self._check = check
        if check.invalid:
            log.warning("symbol check: %s", check.note)
        return check

    async def run(self, service: Any = None) -> None:
        """Check symbols, warm-start them, then refill new gaps until cancelled."""
        if self.db_path is None:
            if service is None:
                raise ValueError("db_path: give a db_path or a service with a config")
            self.db_path = storage.as_target(service.config.db_path)
        symbols = tuple(service.config.symbols) if service is not None else ()
        started_wall = storage.now_ms()
        self._db = WriterThread(self.db_path, busy_timeout_ms=self._busy_timeout_ms)
        try:
            self._state = "checking"
            check = await self.check_symbols(symbols)
            usable = [s for s in check.valid if s in symbols]
            await self._mark_old_gaps(started_wall)
            self._state = "warming"
            pending = list(usable)
            loop = asyncio.get_running_loop()
            next_warm = 0.0
            next_check = loop.time() + self.retry_s
            while True:
                try:
                    if not check.checked and loop.time() >= next_check:
                        # the check was skipped (REST down): try it again
                        check = await self.check_symbols(symbols)
                        pending = [s for s in pending if s in check.valid]
                        next_check = loop.time() + self.retry_s
                    if pending and loop.time() >= next_warm:
                        pending = await self._warm_all(pending)
                        if pending:
                            next_warm = loop.time() + self.retry_s
                    await self._fill_new_gaps(symbols)
                except Exception as exc:
                    # a locked/unwritable database, an odd payload or a bug: say
                    # so and go on (REST never stops the stream)
                    self._message = f"REST sync: {exc}"
                    log.warning(
                        "%s (retrying in %.0f s)",
                        self._message,
                        self.retry_s,
                        exc_info=not isinstance(exc, storage.StorageError | ValueError),
                    )
                    await asyncio.sleep(self.retry_s)
                    continue
                if not pending and self._state == "warming":
                    self._state = "running"
                self._warming = bool(pending)
                await asyncio.sleep(self.gap_poll_s)
        finally:
            await self._db.aclose()
            self._db = None

    # ------------------------------------------------------------ errors

    def _note_error(self, exc: BaseException) -> None:
        if isinstance(exc, RestBlockedError):
            self._state, self._message = "blocked", str(exc)
        elif isinstance(exc, RestBannedError):
            self._state, self._message = "paused", str(exc)
        elif isinstance(exc, RestRateLimitedError):
            self._state, self._message = "paused", str(exc)
        elif isinstance(exc, RestUnavailableError):
            self._state, self._message = "unavailable", str(exc)
        else:
            self._message = str(exc)

    def _recovered(self) -> None:
        """A REST call succeeded: clear a transient problem (not a 451 block)."""
        if self._state in ("unavailable", "paused"):
            self._state = "warming" if self._warming else "running"
            self._message = ""

    async def _wait_ban(self) -> None:
        until = self.client.banned_until_ms
        if until is not None:
            await asyncio.sleep(max(0.0, (until - storage.now_ms()) / 1000.0))

    # ------------------------------------------------------------ warm start

    async def _warm_all(self, symbols: list[str]) -> list[str]:
        """Warm-start each symbol; return those to retry (transient failures)."""
        retry = []
        for sym in symbols:
            try:
                await self.warm_start(sym)
                self._recovered()
            except (RestBlockedError, RestRequestError) as exc:
                self._note_error(exc)
                prev = self._warm.get(sym)
                if prev is not None:
                    self._warm[sym] = replace(prev, detail=str(exc))
            except RestError as exc:
                self._note_error(exc)
                retry.append(sym)
        return retry

    async def warm_start(self, symbol: str) -> WarmStart:
        """Fetch the closed 1 m klines of the last 24 h missing for `symbol`.

        Missing = minutes with neither a stored kline (``bars``, 60 s) nor 1 s bars.
        Requests cover the first to the last missing minute in pages of 1 500
        (weight 10 each); only missing minutes are written. Klines still open at
        "now" are not stored.
        """
        if self._db is None or self.db_path is None:
            raise RuntimeError("warm_start: call it through run()")
        sym = normalize_symbol(symbol)
        now = int(self._clock())
        end = now - now % MINUTE_MS
        start = end - self.history_ms // MINUTE_MS * MINUTE_MS
        have, last = await asyncio.to_thread(
            _stored_minutes, self.db_path, sym, start, end
        )
        ranges = missing_minute_ranges(have, start, end)
        missing = sum((hi - lo) // MINUTE_MS for lo, hi in ranges)
        result = WarmStart(
            sym, start, end, missing, 0, 0, None if last is None else last + MINUTE_MS
        )
        self._warm[sym] = result
        if not ranges:
            return result
        wanted = {t for lo, hi in ranges for t in range(lo, hi, MINUTE_MS)}
        cursor, stop = ranges[0][0], ranges[-1][1]
        stored = requests = 0
        while cursor < stop:
            await self._wait_ban()
            rows = await self.client.klines(sym, cursor, stop - 1)
            requests += 1
            rows = [r for r in rows if int(r[0]) >= cursor and int(r[6]) < now]
            if not rows:
                break
            keep = [r for r in rows if int(r[0]) in wanted]
            if keep:
                bars = klines_to_bars(keep)
                stored += await self._db.call(
                    lambda w, b=bars: w.write_bars(sym, 60, b)
                )
                last = max(last or 0, int(keep[-1][0]))
            cursor = int(rows[-1][0]) + MINUTE_MS
            self._warm[sym] = replace(
                result,
                stored=stored,
                requests=requests,
                history_end_ms=None if last is None else last + MINUTE_MS,
            )
        log.info("warm start %s: %d klines stored (%d requests)", sym, stored, requests)
        return self._warm[sym]

    # ------------------------------------------------------------ gaps

    async def _mark_old_gaps(self, started_wall: int) -> None:
        """Gaps whose fill the database already records are done; the others, even
        when recorded before this run (e.g. the hole a crash left), are filled."""
        frame = await asyncio.to_thread(storage.read_gaps, self.db_path)
        for sym, f, t, det, by, at, detail in zip(
            frame["symbol"].tolist(),
            frame["from_id"].tolist(),
            frame["to_id"].tolist(),
            frame["detected_ms"].tolist(),
            frame["filled_by"].tolist(),
            frame["filled_ms"].tolist(),
            frame["fill_detail"].tolist(),
            strict=True,
        ):
            if by is not None and (sym, f, t) not in self._fills:
                self._fills[(sym, f, t)] = GapFill(
                    sym,
                    f,
                    t,
                    det,
                    by,
                    detail=detail or "",
                    filled_ms=None if at is None or at is pd.NA else int(at),
                )

    async def _record_fill(self, fill: GapFill) -> None:
        """Persist how a gap was filled, so a restart neither refills nor re-counts."""
        if fill.method in ("pending", "failed") or self._db is None:
            return
        at = fill.filled_ms if fill.filled_ms is not None else storage.now_ms()
        await self._db.call(
            lambda w: w.mark_gap_filled(
                fill.symbol,
                fill.from_id,
                fill.to_id,
                by=fill.method,
                at_ms=at,
                detail=fill.detail,
            )
        )

    async def _fill_new_gaps(self, symbols: Sequence[str]) -> None:
        """Fill gap rows not yet handled; a gap still pending is retried with a
        doubling delay (gap_poll_s, 2 gap_poll_s, ... up to retry_s)."""
        frame = await asyncio.to_thread(storage.read_gaps, self.db_path)
        page_cache: dict[str, list[dict]] = {}
        now = asyncio.get_running_loop().time()
        for sym, f, t, det in zip(
            frame["symbol"].tolist(),
            frame["from_id"].tolist(),
            frame["to_id"].tolist(),
            frame["detected_ms"].tolist(),
            strict=True,
        ):
            key = (sym, int(f), int(t))
            prev = self._fills.get(key)
            if prev is not None and prev.method != "pending":
                continue
            if sym not in symbols:
                continue
            attempts, next_at = self._retry.get(key, (0, 0.0))
            if now < next_at:
                continue
            gap = prev or GapFill(sym, int(f), int(t), int(det), "pending")
            self._fills[key] = gap
            delay = min(self.retry_s, self.gap_poll_s * 2**attempts)
            self._retry[key] = (attempts + 1, now + delay)
            try:
                await self._wait_ban()
                fill = await self.fill_gap(gap, page_cache)
                await self._record_fill(fill)  # stored before the status shows it
                self._fills[key] = fill
            except (RestBlockedError, RestRequestError) as exc:
                self._note_error(exc)
                self._fills[key] = replace(gap, method="failed", detail=str(exc))
            except RestError as exc:  # transient: stays pending, retried later
                self._note_error(exc)
                self._fills[key] = replace(gap, detail=str(exc))
                return
            if self._fills[key].method != "pending":
                self._retry.pop(key, None)
                self._recovered()

    async def fill_gap(
        self, gap: GapFill, page_cache: dict[str, list[dict]] | None = None
    ) -> GapFill:
        """Refill one gap: trades page, else historicalTrades (key), else aggTrades."""
        assert self._db is not None and self.db_path is not None  # noqa: S101
        cache = page_cache if page_cache is not None else {}
        sym, lo_id, hi_id = gap.symbol, gap.from_id, gap.to_id
        if sym not in cache:
            cache[sym] = await self.client.trades(sym)
        page = cache[sym]
        ids = [int(r["id"]) for r in page]
        if ids and min(ids) <= lo_id:
            rows = [r for r in page if lo_id <= int(r["id"]) <= hi_id]
            return await self._write_ticks(gap, rows, "trades")
        if self.client.api_key:
            rows = await self._historical(sym, lo_id, hi_id)
            return await self._write_ticks(gap, rows, "historicalTrades")
        return await self._fill_from_aggs(gap)

    async def _historical(self, sym: str, lo_id: int, hi_id: int) -> list[dict]:
        out: list[dict] = []
        cursor = lo_id
        while cursor <= hi_id:
            page = await self.client.historical_trades(sym, cursor)
            if not page:
                break
            out += [r for r in page if lo_id <= int(r["id"]) <= hi_id]
            cursor = max(int(r["id"]) for r in page) + 1
        return out

    async def _write_ticks(
        self, gap: GapFill, rows: list[dict], method: FillMethod
    ) -> GapFill:
        ticks = trades_to_ticks(gap.symbol, rows)
        result = await self._db.call(lambda w: w.write_batch(ticks))  # type: ignore[union-attr]
        missing = gap.to_id - gap.from_id + 1 - len(ticks)
        detail = f"{result.inserted} ticks restored from {method}"
        if missing:
            detail += (
                f"; {missing} ids not returned (non-market prints such as insurance "
                "fund or ADL trades are missing by design)"
            )
        buckets = len({t.ts_ms // 1000 for t in ticks})
        log.info("gap %s %d..%d filled: %s", gap.symbol, gap.from_id, gap.to_id, detail)
        return replace(
            gap,
            method=method,
            ticks_inserted=result.inserted,
            bars_1s=buckets,
            trades=len(ticks),
            filled_ms=storage.now_ms(),
            detail=detail,
        )

    async def _fill_from_aggs(self, gap: GapFill) -> GapFill:
        sym, lo_id, hi_id = gap.symbol, gap.from_id, gap.to_id
        bounds = await asyncio.to_thread(
            gap_time_bounds, self.db_path, sym, lo_id, hi_id
        )
        if bounds is None:
            return replace(
                gap, detail="waiting for the trade after the gap to be stored"
            )
        before_ms, after_ms = bounds
        if before_ms < int(self._clock()) - DAY_MS:
            return replace(
                gap,
                method="skipped",
                detail="older than the 24 h REST horizon",
                filled_ms=storage.now_ms(),
            )
        aggs: list[dict] = []
        start = before_ms
        page = await self.client.agg_trades(
            sym, start_ms=start, end_ms=min(start + AGG_WINDOW_MS, after_ms)
        )
        pages = 1
        while True:
            aggs += page
            if page and int(page[-1]["l"]) >= hi_id:
                break
            if pages >= MAX_AGG_PAGES:
                break
            if page:
                page = await self.client.agg_trades(sym, from_id=int(page[-1]["a"]) + 1)
            else:
                start += AGG_WINDOW_MS + 1
                if start > after_ms:
                    break
                page = await self.client.agg_trades(
                    sym, start_ms=start, end_ms=min(start + AGG_WINDOW_MS, after_ms)
                )
            pages += 1
        inside = [a for a in aggs if int(a["l"]) >= lo_id and int(a["f"]) <= hi_id]
        edges = [
            int(a["T"]) for a in inside if int(a["f"]) < lo_id or int(a["l"]) > hi_id
        ]
        known = await asyncio.to_thread(
            _known_qty, self.db_path, sym, edges, lo_id, hi_id
        )
        bars = agg_trades_to_bars_1s(inside, lo_id, hi_id, known)
        n = (
            await self._db.call(lambda w: w.upsert_bars_1s(sym, bars))
            if len(bars)
            else 0
        )  # type: ignore[union-attr]
        trades = int(bars["trades"].sum()) if len(bars) else 0
        detail = (
            f"bar level from aggTrades: {n} 1 s bars, {trades} trades; individual "
            "ticks not restored (no API key for historicalTrades)"
        )
        if pages >= MAX_AGG_PAGES and (not aggs or int(aggs[-1]["l"]) < hi_id):
            detail += f"; stopped after {MAX_AGG_PAGES} pages (partial)"
        log.info("gap %s %d..%d filled: %s", sym, lo_id, hi_id, detail)
        return replace(
            gap,
            method="aggTrades",
            bars_1s=n,
            trades=trades,
            filled_ms=storage.now_ms(),
            detail=detail,
        )


# ----------------------------------------------------------------------------- CLI


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--rest-url`` and ``--no-rest`` to a command (e.g. ``ingestion stream``).

    The API key (optional, for historicalTrades) comes from the environment
    variable ``BINANCE_API_KEY`` so that it never shows in a process list.
    """
    parser.add_argument(
        "--rest-url",
        default=DEFAULT_REST_URL,
        help="Binance USD-M REST base URL (exchange history, gap refill, symbol check)",
    )
    parser.add_argument(
        "--no-rest",
        action="store_true",
        help="work from the WebSocket alone (no history, no refill, no symbol check)",
    )


def sync_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> RestSync | None:
    """The `RestSync` the parsed ``--rest-url``/``--no-rest`` ask for, or None.

    Raises
    ------
    ValueError
        When ``--rest-url`` is not an http(s) URL.
    """
    if getattr(args, "no_rest", False):
        return None
    url = getattr(args, "rest_url", DEFAULT_REST_URL) or DEFAULT_REST_URL
    return RestSync(url, api_key=environ.get(API_KEY_ENV) or None)
