"""Binance USD-M Futures trades into SQLite: stream client, service, CLI.

- `parse_frame` (the venue module `pairdesk/venues/binance.py`, re-exported here)
  turns one raw WebSocket frame into a `ParseResult` (a `Tick`, a filtered
  non-market trade, an ignored message, or a malformed frame with its reason).
- `TradeStream` holds one connection for all symbols on the combined-stream URL
  ``BASE_URL + "/stream?streams=" + "/".join(f"{s.lower()}@trade")``, reconnects with
  exponential backoff and jitter, reconnects on a silent socket (watchdog) and before
  Binance's 24 h cut, deduplicates by trade id and records gaps.
- `IngestionService` runs the stream and the batching writer in one daemon thread with
  its own event loop (architecture.md, decision 11: batched inserts from the loop
  itself), takes the writer lease (decision 8) and exposes a thread-safe
  `ServiceStatus`.

CLI::

    python ingestion.py stream --symbols btcusdt,ethusdt [--db data/market.db]
        [--url wss://fstream.binance.com/public] [--duration S] [--record FILE.ndjson]
        [--max-trade-age S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import random
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from models import Gap, Tick, normalize_symbol, parse_symbols
from pairdesk.venues.binance import (  # the Binance venue; "X as X": re-exported
    DEFAULT_BASE_URL,
    MAX_TRADE_ID,
    _parse,
    stream_url,
)
from pairdesk.venues.binance import MAX_AHEAD_MS as MAX_AHEAD_MS
from pairdesk.venues.binance import MAX_TRADE_MS as MAX_TRADE_MS
from pairdesk.venues.binance import MAX_VALUE as MAX_VALUE
from pairdesk.venues.binance import MIN_TRADE_MS as MIN_TRADE_MS
from pairdesk.venues.binance import Kind as Kind
from pairdesk.venues.binance import ParseResult as ParseResult
from pairdesk.venues.binance import parse_frame as parse_frame

if TYPE_CHECKING:
    from storage import FileChange

log = logging.getLogger("ingestion")

DEFAULT_DB = Path("data/market.db")
MAX_FRAME_BYTES = 4 * 1024 * 1024
LAG_SAMPLES = 10_000
RATE_WINDOW_S = 10.0
# The live window (`IngestionConfig.max_trade_age_s`): on a live feed a trade time
# more than a day behind or five minutes ahead of the receive clock is refused
# before it reaches storage, where each trade day is a partition (PostgreSQL).
LIVE_MAX_TRADE_AGE_S = 86_400.0
LIVE_MAX_TRADE_AHEAD_S = 300.0
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_HTTP_HINTS = {
    451: "region blocked?",
    403: "forbidden: region or IP blocked?",
    404: "wrong URL path?",
    429: "rate limited",
    418: "IP banned after rate limits",
    500: "server error, retrying",
    502: "server error, retrying",
    503: "server error, retrying",
    504: "server error, retrying",
}
_CLOSE_HINTS = {
    1007: "a text frame that is not valid UTF-8",
    1009: "a frame over the 4 MiB limit was refused",
    1011: "the server stopped answering pings",
}

State = Literal["connecting", "live", "reconnecting", "stopped", "error", "read-only"]


def _window_reason(trade_ms: int, recv_ms: int, window: tuple[int, int]) -> str:
    """Why a trade time lies outside the live window (`IngestionConfig`)."""
    off = recv_ms - trade_ms
    where = "before" if off > 0 else "after"
    return (
        f"field 'T' is {_iso(trade_ms)}, {abs(off) / 1000:.0f} s {where} the "
        f"receive time: outside the live window ({window[0] / 1000:g} s behind, "
        f"{window[1] / 1000:g} s ahead; --max-trade-age 0 turns it off)"
    )


# ---------------------------------------------------------------- configuration


def _db_label(db: Path | str) -> str:
    """A short name for logs and thread names: the file name, or the URL's db."""
    return db.name if isinstance(db, Path) else db.rsplit("/", 1)[-1].split("?")[0]


def _db_setting(value: Path | str) -> Path | str:
    """A database URL (``postgresql://``, ``sqlite:///``) stays a string, since
    ``Path`` would mangle its ``//``; a plain file name becomes a Path."""
    text = os.fspath(value)
    if "://" in text:
        return text
    return Path(text)


def _check_trade_age(age: object) -> None:
    """Validate ``IngestionConfig.max_trade_age_s``: None, or a number >= 0."""
    if age is None:
        return
    if isinstance(age, bool) or not isinstance(age, int | float):
        raise ValueError(f"max_trade_age_s: must be a number or None, got {age!r}")
    if not 0 <= age < math.inf:
        raise ValueError(f"max_trade_age_s: must be >= 0 (0: off), got {age!r}")


@dataclass(frozen=True)
class IngestionConfig:
    """Everything the ingestion service needs; validated on construction.

    Attributes
    ----------
    symbols : symbols to stream, validated and upper-cased (``^[A-Za-z0-9]{2,20}$``).
    db_path : SQLite database file the writer appends to.
    base_url : WebSocket base URL including the route, e.g.
        ``wss://fstream.binance.com/public``; the stream path is appended to it.
    flush_interval_s : flush pending ticks at least this often, seconds.
    flush_max_ticks : flush as soon as this many ticks are pending.
    watchdog_s : no frame at all for this long closes the socket and reconnects.
    no_trade_warn_s : connected without a single trade this long -> route warning.
    symbol_silent_s : one symbol without trades this long while others trade ->
        "no trades for XYZ: check the symbol".
    planned_reconnect_s : reconnect on purpose after this long (Binance cuts at 24 h).
    backoff_initial_s, backoff_factor, backoff_max_s : reconnect delays grow from the
        initial delay by the factor up to the cap; each delay is jittered to
        ``uniform(d / 2, d)``.
    healthy_after_s : a connection that lived this long resets the backoff.
    open_timeout_s : WebSocket opening handshake timeout.
    max_queue_ticks : bound of unwritten ticks; when reached, reading pauses.
    lease_retry_s : a read-only service retries taking the writer lease this often.
    heartbeat_s : the writer refreshes its lease this often.
    lease_stale_after_ms : a lease from another host without heartbeat this long
        may be taken over.
    busy_timeout_ms : SQLite busy timeout of the writer connection (short on purpose).
    record_path : append every raw frame received to this NDJSON file, or None.
    ping_interval_s : client keepalive pings (None disables).
    max_trade_age_s : the live window: a trade whose time ``T`` is more than this
        many seconds before the receive time, or more than
        ``LIVE_MAX_TRADE_AHEAD_S`` (300 s) after it, is counted as malformed and
        skipped. None (default): ``LIVE_MAX_TRADE_AGE_S`` (one day) against an
        exchange, off against a loopback host (``127.0.0.1``, ``localhost``,
        ``::1``: the replay server serving recordings, Demo); 0: off.
    """

    symbols: tuple[str, ...]
    db_path: Path | str
    base_url: str = DEFAULT_BASE_URL
    flush_interval_s: float = 0.25
    flush_max_ticks: int = 5000
    watchdog_s: float = 60.0
    no_trade_warn_s: float = 30.0
    symbol_silent_s: float = 600.0
    planned_reconnect_s: float = 23.5 * 3600
    backoff_initial_s: float = 1.0
    backoff_factor: float = 2.0
    backoff_max_s: float = 60.0
    healthy_after_s: float = 60.0
    open_timeout_s: float = 10.0
    max_queue_ticks: int = 1_000_000
    lease_retry_s: float = 3.0
    heartbeat_s: float = 5.0
    lease_stale_after_ms: int = 15_000
    busy_timeout_ms: int = 50
    record_path: Path | None = None
    ping_interval_s: float | None = 20.0
    max_trade_age_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.symbols, str):
            syms = parse_symbols(self.symbols)
        else:
            if not self.symbols:
                raise ValueError("symbols: give at least one symbol, like BTCUSDT")
            syms = list(dict.fromkeys(normalize_symbol(s) for s in self.symbols))
        object.__setattr__(self, "symbols", tuple(syms))
        object.__setattr__(self, "db_path", _db_setting(self.db_path))
        if self.record_path is not None:
            object.__setattr__(self, "record_path", Path(self.record_path))
        url = str(self.base_url).rstrip("/")
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(
                f"base_url: must start with ws:// or wss://, got {self.base_url!r}"
            )
        object.__setattr__(self, "base_url", url)
        for name in (
            "flush_interval_s",
            "watchdog_s",
            "no_trade_warn_s",
            "symbol_silent_s",
            "planned_reconnect_s",
            "backoff_initial_s",
            "backoff_max_s",
            "healthy_after_s",
            "open_timeout_s",
            "lease_retry_s",
            "heartbeat_s",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name}: must be a number > 0, got {value!r}")
        if not self.backoff_factor >= 1:
            raise ValueError(
                f"backoff_factor: must be >= 1, got {self.backoff_factor!r}"
            )
        for name in ("flush_max_ticks", "max_queue_ticks"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if self.max_queue_ticks < self.flush_max_ticks:
            raise ValueError(
                "max_queue_ticks: must be >= flush_max_ticks "
                f"({self.flush_max_ticks}), got {self.max_queue_ticks}"
            )
        _check_trade_age(self.max_trade_age_s)

    @property
    def trade_window_ms(self) -> tuple[int, int] | None:
        """(ms behind, ms ahead) of the receive time a trade may be, or None (off).

        See ``max_trade_age_s``: None means on against an exchange, off against a
        loopback host (recordings replayed locally).
        """
        age = self.max_trade_age_s
        if age is None:
            host = (urlsplit(self.base_url).hostname or "").lower()
            age = 0.0 if host in _LOOPBACK_HOSTS else LIVE_MAX_TRADE_AGE_S
        if not age:
            return None
        return int(age * 1000), int(LIVE_MAX_TRADE_AHEAD_S * 1000)

    @property
    def url(self) -> str:
        """The combined-stream URL the client connects to."""
        return stream_url(self.base_url, self.symbols)


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """Snapshot of the ingestion service, safe to read from any thread.

    Attributes
    ----------
    state : ``connecting`` | ``live`` | ``reconnecting`` | ``stopped`` | ``error`` |
        ``read-only``.
    last_error : plain-language text of the last problem ("" when none).
    role : ``writer`` (holds the lease), ``read-only`` (another process ingests) or
        ``pending`` (the lease has not been tried yet: nothing is written).
    lease_holder : who ingests when read-only ("read-only: ingestion by pid N on HOST
        since ISO"), else "".
    url : the stream URL in use.
    symbols : subscribed symbols.
    ticks_per_s : market trades received per second over the last 10 s.
    total_ticks : market trades accepted (after dedupe) since start.
    duplicates : trades dropped because their id was not above the last seen id.
    malformed : frames rejected as malformed.
    gaps : gap rows recorded (holes in trade ids).
    reconnects : connections re-opened after the first.
    last_trade_ms : trade time ``T`` of the newest trade, ms since the epoch, or None.
    lag_p50_ms, lag_p99_ms : receive time minus event time ``E`` over the last 10 000
        trades, ms (None before the first trade).
    queue_depth : ticks received but not yet written.
    warnings : current warnings (silent route, silent symbol, write errors).
    filtered : non-market trades skipped (insurance fund, ADL...).
    stored_ticks : ticks committed to the database by this service.
    unsubscribed : well-formed trades of symbols not subscribed, dropped.
    """

    state: State
    last_error: str
    role: Literal["writer", "read-only", "pending"]
    lease_holder: str
    url: str
    symbols: tuple[str, ...]
    ticks_per_s: float
    total_ticks: int
    duplicates: int
    malformed: int
    gaps: int
    reconnects: int
    last_trade_ms: int | None
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    queue_depth: int
    warnings: tuple[str, ...]
    filtered: int = 0
    stored_ticks: int = 0
    unsubscribed: int = 0


@dataclass(slots=True)
class _Counters:
    """Mutable counters owned by the loop thread (plain attribute reads elsewhere)."""

    state: State = "connecting"
    last_error: str = ""
    role: Literal["writer", "read-only", "pending"] = "pending"
    lease_holder: str = ""
    frames: int = 0
    ticks: int = 0
    duplicates: int = 0
    malformed: int = 0
    filtered: int = 0
    gaps: int = 0
    reconnects: int = 0
    stored: int = 0
    last_trade_ms: int | None = None
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    ticks_per_s: float = 0.0
    warnings: tuple[str, ...] = ()
    write_error: str = ""
    db_notice: str = ""
    unsubscribed: int = 0
    unsubscribed_symbols: set[str] = field(default_factory=set)
    lags: deque[int] = field(default_factory=lambda: deque(maxlen=LAG_SAMPLES))


# ------------------------------------------------------------------------- backoff


class Backoff:
    """Exponential backoff with jitter: ``uniform(d/2, d)``, ``d = min(cap, i*f^n)``."""

    def __init__(
        self, initial_s: float, factor: float, max_s: float, rng: random.Random
    ) -> None:
        self.initial_s, self.factor, self.max_s = initial_s, factor, max_s
        self._rng = rng
        self.attempt = 0

    def next_delay(self) -> float:
        """Return the next delay in seconds and advance."""
        d = min(self.max_s, self.initial_s * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        return self._rng.uniform(d / 2.0, d)

    def reset(self) -> None:
        """Start again from the initial delay (after a healthy connection)."""
        self.attempt = 0


def describe_error(exc: BaseException, url: str) -> str:
    """Plain-language text for a connection failure."""
    parts = urlsplit(url)
    host = parts.hostname or url
    if isinstance(exc, InvalidStatus):
        code = exc.response.status_code
        hint = _HTTP_HINTS.get(code)
        return f"HTTP {code} from the exchange" + (f" ({hint})" if hint else "")
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed for {host}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {host}:{parts.port or 443}"
    if isinstance(exc, TimeoutError):
        return f"timed out opening {url}"
    if isinstance(exc, ConnectionClosed):
        rcvd, sent = exc.rcvd, exc.sent
        if sent is not None and (rcvd is None or not exc.rcvd_then_sent):
            what = _CLOSE_HINTS.get(sent.code, "protocol error")
            why = sent.reason or "no reason given"
            if sent.code == 1009:
                why = "message too big"
            return f"closed by this client: {what} (code {sent.code} {why})"
        if rcvd is not None:
            return f"connection closed by the server (code {rcvd.code} {rcvd.reason})"
        return "connection lost (no close frame)"
    if isinstance(exc, InvalidURI):
        return f"invalid URL {url}: {exc}"
    if isinstance(exc, InvalidHandshake):
        return f"WebSocket handshake failed: {exc}"
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------ batching

LOCK_REPORT_S = 1.0  # a lock held this long shows in the status warnings
DUP_RUN_WARN = 1000  # this many duplicates in a row: the ids went backwards
LOG_FIRST = 20  # per kind (malformed frame, gap): this many logged one by one...
LOG_SUMMARY_S = 10.0  # ...then one summary line at most this often
GAP_MERGE_IDS = 64  # a new gap this close to an unwritten one of its symbol extends it


def _storage_hint(message: str) -> str:
    """A plain-words prefix for common storage failures ("" when none applies)."""
    text = message.lower()
    if "readonly" in text or "read-only" in text:
        return "the database is read-only: "
    if "full" in text:
        return "the disk or database is full: "
    if "disk i/o" in text or "ioerr" in text:
        return "disk I/O error: "
    return ""


class _Batcher:
    """Pending ticks and gaps, written by the loop thread in batched transactions."""

    def __init__(
        self,
        writer: object,
        config: IngestionConfig,
        c: _Counters,
        owner: object = None,
    ) -> None:
        self.writer = writer
        self.config = config
        self.c = c
        self.owner = owner  # the lease owner, re-taken when the file is recreated
        self.ticks: list[Tick] = []
        self.gaps: list[Gap] = []
        # filtered trades as (pending ticks before it, symbol, id): their ids are
        # persisted with the chunk that covers them, so a restart resumes after them
        self.filtered: list[tuple[int, str, int]] = []
        self.room = asyncio.Event()
        self.room.set()
        self._retry_at = 0.0
        self.locked = 0
        self.locked_since: float | None = None
        self.reopened = 0

    @property
    def depth(self) -> int:
        """Trades received but not written: ticks and non-market trades whose ids
        are still to be persisted (both count towards ``max_queue_ticks``)."""
        return len(self.ticks) + len(self.filtered)

    def _held(self) -> str:
        """ "N ticks held in memory (limit M)" for status texts."""
        return (
            f"{self.depth} ticks held in memory "
            f"(limit {self.config.max_queue_ticks}), retrying"
        )

    def _reopen_if_changed(self) -> bool:
        """Reopen the database when its file or write-ahead log changed under the
        writer (deleted, or replaced by another file such as a backup moved over
        it); False when that failed.

        SQLite keeps writing to the file it opened: to an unlinked file, which
        vanishes on close, and through a ``-wal`` that, left beside a replaced
        file, corrupts it. The writer compares device and inode before each batch.
        """
        from storage import StorageError

        try:
            change = self.writer.reopen_if_changed()  # type: ignore[attr-defined]
        except StorageError as exc:
            what = self.writer.file_change() or ("changed", "")  # type: ignore[attr-defined]
            self.c.write_error = (
                f"database file {self.config.db_path} was {what[0]} while running "
                f"and cannot be opened again: {exc}; " + self._held()
            )
            log.error(self.c.write_error)
            return False
        if change is None:
            return True
        if self.owner is not None:
            try:
                self.writer.acquire_lease(  # type: ignore[attr-defined]
                    self.owner, stale_after_ms=self.config.lease_stale_after_ms
                )
            except StorageError as exc:
                log.warning("lease on the reopened database failed: %s", exc)
        self.reopened += 1
        self.c.stored = max(0, self.c.stored - change.lost_ticks)
        self.c.db_notice = self._change_text(change)
        log.error(self.c.db_notice)
        return True

    def _lost_gaps(self, missing: dict[str, tuple[int, int]], now_ms: int) -> str:
        """Queue gap rows for trade ids the reopened file lacks; describe them."""
        first_pending: dict[str, int] = {}
        for t in self.ticks:
            if t.trade_id < first_pending.get(t.symbol, MAX_TRADE_ID):
                first_pending[t.symbol] = t.trade_id
        parts = []
        for sym, (lo, hi) in sorted(missing.items()):
            hi = min(hi, first_pending.get(sym, MAX_TRADE_ID) - 1)  # still queued
            if lo <= hi:
                self.gaps.append(Gap(sym, lo, hi, now_ms))
                self.c.gaps += 1
                parts.append(f"{sym} {lo}..{hi}")
        return ", ".join(parts)

    def _change_text(self, change: FileChange) -> str:
        """The status text for a `storage.FileChange` (and its gap rows queued)."""
        path = self.config.db_path
        now = datetime.now(tz=UTC)
        when = now.isoformat(timespec="seconds")
        if change.kind == "deleted":
            return (
                f"database file {path} was deleted while running; recreated it at "
                f"{when} (data stored before that is gone)"
            )
        gaps = self._lost_gaps(dict(change.missing), int(now.timestamp() * 1000))
        gap_text = f", recorded as gaps ({gaps})" if gaps else ""
        n = change.lost_ticks
        if change.kind == "wal":
            head = (
                "database write-ahead log was lost under the ingester: "
                f"{change.detail}; "
            )
            if change.wal_saved and not n:
                return head + (
                    f"its committed ticks were copied into {path} and the file "
                    f"reopened at {when}: nothing lost"
                )
            return head + f"reopened {path} at {when}; lost {n} ticks{gap_text}"
        lost = (
            f"{n} ticks stored in the old file are not in the new one{gap_text}"
            if n
            else "the new file holds every tick of the old one"
        )
        return (
            f"database file was replaced under the ingester: {change.detail}; "
            f"stopped writing to the old file and reopened {path} at {when}; {lost}"
        )

    def flush_once(self) -> bool:
        """Write one chunk (up to flush_max_ticks and all gaps); True when written."""
        from storage import DatabaseLockedError, StorageError

        chunk = self.ticks[: self.config.flush_max_ticks]
        gaps = list(self.gaps)
        n = len(chunk)
        seen = {sym: tid for pos, sym, tid in self.filtered if pos <= n}
        if not chunk and not gaps and not seen:
            return True
        if not self._reopen_if_changed():
            self._retry_at = time.monotonic() + self.config.flush_interval_s
            return False
        try:
            result = self.writer.write_batch(  # type: ignore[attr-defined]
                chunk, gaps, last_seen=seen or None
            )
        except DatabaseLockedError as exc:
            self.locked += 1
            now = time.monotonic()
            if self.locked_since is None:
                self.locked_since = now
            elif now - self.locked_since >= LOCK_REPORT_S:
                self.c.write_error = (
                    f"database {self.config.db_path} is locked by another "
                    f"connection for {now - self.locked_since:.0f} s; " + self._held()
                )
            log.debug("batch of %d ticks kept, database locked: %s", len(chunk), exc)
            self._retry_at = now + self.config.flush_interval_s
            return False
        except StorageError as exc:
            self.c.write_error = (
                f"writing to {self.config.db_path} failed: "
                f"{_storage_hint(str(exc))}{exc}; " + self._held()
            )
            log.error(self.c.write_error)
            self._retry_at = time.monotonic() + self.config.flush_interval_s
            return False
        self.locked_since = None
        self.c.stored += result.inserted
        if self.writer.file_change() is not None:  # type: ignore[attr-defined]
            # changed while writing: the chunk stays queued for the reopened file
            return self._reopen_if_changed()
        del self.ticks[:n]
        del self.gaps[: len(gaps)]
        if self.filtered:
            self.filtered = [(p - n, s, t) for p, s, t in self.filtered if p > n]
        self.c.write_error = ""
        if self.depth < self.config.max_queue_ticks:
            self.room.set()
        return True

    async def flush_all(self) -> bool:
        """Write everything pending in chunks, yielding between chunks."""
        while self.ticks or self.gaps or self.filtered:
            if not self.flush_once():
                return False
            await asyncio.sleep(0)
        return True

    async def on_full(self) -> None:
        """Called by the receive loop when flush_max_ticks are pending."""
        if time.monotonic() >= self._retry_at:
            self.flush_once()
        while self.depth >= self.config.max_queue_ticks:
            self.room.clear()
            log.warning("queue full (%d trades): pausing reads", self.depth)
            await self.room.wait()

    async def run(self) -> None:
        """Flush every flush_interval_s; an unexpected error is reported, not fatal."""
        while True:
            await asyncio.sleep(self.config.flush_interval_s)
            try:
                await self.flush_all()
            except Exception as exc:  # noqa: BLE001 - the flusher must keep running
                self.c.write_error = (
                    f"writing to {self.config.db_path} failed: "
                    f"{type(exc).__name__}: {exc}; " + self._held()
                )
                log.exception("flush failed")


# ---------------------------------------------------------------------- the client


class TradeStream:
    """One combined-stream connection for all symbols, kept alive.

    Parses each frame (`parse_frame`), drops trades whose id is not above the last
    seen id of their symbol (counted as duplicates), records a `Gap` when ids jump
    (before the non-market filter, so a filtered trade advances the last id and
    creates no gap), and appends market ticks to the batcher. Reconnects with
    `Backoff`; closes a socket that is silent for ``watchdog_s``; reconnects on
    purpose after ``planned_reconnect_s``.
    """

    def __init__(
        self,
        config: IngestionConfig,
        batcher: _Batcher,
        last_ids: dict[str, int],
        counters: _Counters,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.url = config.url
        self.batcher = batcher
        self.last_ids = last_ids
        self.c = counters
        self.backoff = Backoff(
            config.backoff_initial_s,
            config.backoff_factor,
            config.backoff_max_s,
            rng or random.Random(),
        )
        self._record: IO[str] | None = None
        self._conn_warnings: tuple[str, ...] = ()
        self._opened = 0
        # per symbol: (last id, duplicates received in a row while it was the last)
        self._dup_runs: dict[str, tuple[int, int]] = {}
        self._log_counts: dict[str, int] = {}  # per kind: messages so far
        self._log_held: dict[str, tuple[int, str]] = {}  # kind: (not logged, latest)
        self._log_summary_at = time.monotonic()

    @property
    def warnings(self) -> tuple[str, ...]:
        """Warnings about the current connection (silent route or symbol)."""
        return self._conn_warnings

    async def run(self) -> None:
        """Connect, receive and reconnect until cancelled."""
        cfg = self.config
        if cfg.record_path is not None:
            cfg.record_path.parent.mkdir(parents=True, exist_ok=True)
            self._record = open(cfg.record_path, "a", encoding="utf-8")  # noqa: SIM115
        try:
            while True:
                delay = await self._connect_once()
                if delay > 0:
                    log.info("reconnecting in %.3f s (%s)", delay, self.c.last_error)
                    await asyncio.sleep(delay)
        finally:
            if self._record is not None:
                self._record.close()
                self._record = None

    async def _connect_once(self) -> float:
        """One connection attempt and its life; returns the delay before the next."""
        cfg = self.config
        try:
            ws = await connect(
                self.url,
                compression=None,
                max_size=MAX_FRAME_BYTES,
                open_timeout=cfg.open_timeout_s,
                ping_interval=cfg.ping_interval_s,
                ping_timeout=cfg.ping_interval_s,
                close_timeout=0.5,
                max_queue=64,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self.c.state = "error"
            self.c.last_error = describe_error(exc, self.url)
            log.warning("cannot connect to %s: %s", self.url, self.c.last_error)
            return self.backoff.next_delay()
        self.c.state = "live"
        if self._opened:
            self.c.reconnects += 1
        self._opened += 1
        opened = time.monotonic()
        log.info("connected to %s", self.url)
        try:
            reason = await self._live(ws, opened)
        finally:
            self._conn_warnings = ()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
        lived = time.monotonic() - opened
        self.c.last_error = reason
        self.c.state = "reconnecting"
        if reason.startswith("planned reconnect"):
            return 0.0
        if lived >= cfg.healthy_after_s:
            self.backoff.reset()
        return self.backoff.next_delay()

    async def _live(self, ws: ClientConnection, opened: float) -> str:
        """Run the receive loop with watchdog checks; return why it ended."""
        cfg = self.config
        recv_task = asyncio.create_task(self._receive(ws))
        check_s = max(0.002, min(1.0, cfg.watchdog_s / 4, cfg.no_trade_warn_s / 4))
        deadline = opened + cfg.planned_reconnect_s
        frames_seen, frames_changed = self.c.frames, opened
        ticks_at_open = self.c.ticks + self.c.filtered
        sym_seen = {s: self.last_ids.get(s) for s in cfg.symbols}
        sym_changed = dict.fromkeys(cfg.symbols, opened)
        reason = ""
        try:
            while True:
                done, _ = await asyncio.wait({recv_task}, timeout=check_s)
                now = time.monotonic()
                if done:
                    exc = recv_task.exception()
                    if exc is not None and not isinstance(exc, ConnectionClosed):
                        log.error("receive loop failed", exc_info=exc)
                    return describe_error(exc, self.url) if exc else "stream ended"
                if self.c.frames != frames_seen or not self.batcher.room.is_set():
                    frames_seen, frames_changed = self.c.frames, now
                elif now - frames_changed >= cfg.watchdog_s:
                    reason = f"no data for {cfg.watchdog_s:g} s, reconnecting"
                    log.warning(reason)
                    return reason
                if now >= deadline:
                    reason = "planned reconnect before Binance's 24 h limit"
                    log.info(reason)
                    return reason
                self._conn_warnings = self._check_silence(
                    now, opened, ticks_at_open, sym_seen, sym_changed
                )
        finally:
            recv_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await recv_task

    def _check_silence(
        self,
        now: float,
        opened: float,
        ticks_at_open: int,
        sym_seen: dict[str, int | None],
        sym_changed: dict[str, float],
    ) -> tuple[str, ...]:
        """Warnings for a silent route (no trade at all) or a silent symbol."""
        cfg = self.config
        self._log_summary()
        warns: list[str] = self._backwards_warnings()
        if self.c.ticks + self.c.filtered == ticks_at_open:
            if now - opened >= cfg.no_trade_warn_s:
                route = urlsplit(cfg.base_url).path or "/"
                warns.append(
                    f"connected to {self.url} but no trades arrived in "
                    f"{cfg.no_trade_warn_s:g} s: check the route ({route})"
                )
            return tuple(warns)
        for sym in cfg.symbols:
            last = self.last_ids.get(sym)
            if last != sym_seen[sym]:
                sym_seen[sym], sym_changed[sym] = last, now
        newest = max(sym_changed.values())
        for sym in cfg.symbols:
            silent = now - sym_changed[sym]
            if silent >= cfg.symbol_silent_s and now - newest < cfg.symbol_silent_s:
                warns.append(f"no trades for {sym}: check the symbol")
        return tuple(warns)

    def _backwards_warnings(self) -> list[str]:
        """A symbol whose ids stay at or below its last id for DUP_RUN_WARN trades.

        One frame with an id far ahead (or an exchange that restarted its ids) would
        otherwise make every later trade a silent duplicate.
        """
        warns = []
        for sym in self.config.symbols:
            run = self._dup_runs.get(sym)
            last = self.last_ids.get(sym)
            if run is not None and run[0] == last and run[1] >= DUP_RUN_WARN:
                warns.append(
                    f"the last {run[1]} trades of {sym} had ids at or below "
                    f"the last stored id {last}: the feed's trade ids went backwards"
                )
        return warns

    async def _receive(self, ws: ClientConnection) -> None:
        """Hot path: receive, parse, dedupe, detect gaps, queue ticks."""
        parse = _parse
        last_ids = self.last_ids
        ticks = self.batcher.ticks
        flush_max = self.config.flush_max_ticks
        c = self.c
        lags = c.lags
        record = self._record
        clock = time.time
        recv = ws.recv
        subscribed = frozenset(self.config.symbols)
        window = self.config.trade_window_ms
        behind_ms, ahead_ms = window or (0, 0)
        while True:
            raw = await recv()
            c.frames += 1
            recv_ms = int(clock() * 1000)
            if record is not None:
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                record.write(text.replace("\n", " ") + "\n")
            kind, tick, reason, event_ms, sym, tid = parse(raw, recv_ms)
            if kind == "trade" or kind == "filtered":
                if sym not in subscribed:
                    self._drop_unsubscribed(sym)  # type: ignore[arg-type]
                    continue
                if (
                    window
                    and kind == "trade"
                    and not recv_ms - behind_ms <= tick.ts_ms <= recv_ms + ahead_ms  # type: ignore[union-attr]
                ):
                    self._drop_outside_window(tick.ts_ms, recv_ms, raw)  # type: ignore[union-attr]
                    continue
                last = last_ids.get(sym)  # type: ignore[arg-type]
                if last is not None:
                    if tid <= last:  # type: ignore[operator]
                        self._count_duplicate(sym, last)  # type: ignore[arg-type]
                        continue
                    if tid > last + 1:  # type: ignore[operator]
                        self._record_gap(sym, last + 1, tid - 1, recv_ms)  # type: ignore[arg-type, operator]
                last_ids[sym] = tid  # type: ignore[index]
                lags.append(recv_ms - event_ms)
                if kind == "trade":
                    ticks.append(tick)
                    c.ticks += 1
                    c.last_trade_ms = tick.ts_ms
                    if len(ticks) >= flush_max:
                        await self.batcher.on_full()
                else:
                    c.filtered += 1
                    if self._queue_filtered(len(ticks), sym, tid) >= flush_max:  # type: ignore[arg-type]
                        await self.batcher.on_full()
            elif kind == "malformed":
                c.malformed += 1
                self._warn("malformed frame", "skipped (%s): %.300r", reason, raw)

    def _count_duplicate(self, sym: str, last: int) -> None:
        """Count a trade whose id is not above the last id of its symbol, and the
        run of such trades while that last id stays (`_backwards_warnings`)."""
        self.c.duplicates += 1
        run = self._dup_runs.get(sym)
        self._dup_runs[sym] = (
            (last, run[1] + 1) if run is not None and run[0] == last else (last, 1)
        )

    def _drop_unsubscribed(self, sym: str) -> None:
        """Count a trade of a symbol not subscribed; log each such symbol once."""
        self.c.unsubscribed += 1
        seen_syms = self.c.unsubscribed_symbols
        if sym not in seen_syms and len(seen_syms) < 100:
            seen_syms.add(sym)
            log.warning("trades of %s dropped: not subscribed", sym)

    def _drop_outside_window(self, trade_ms: int, recv_ms: int, raw: object) -> None:
        """Count a trade outside the live window as malformed, with the reason."""
        self.c.malformed += 1
        window = self.config.trade_window_ms
        assert window is not None  # noqa: S101 - only called with the window on
        reason = _window_reason(trade_ms, recv_ms, window)
        self._warn("malformed frame", "skipped (%s): %.300r", reason, raw)

    def _queue_filtered(self, pos: int, sym: str, tid: int) -> int:
        """Queue a non-market trade's id (to persist with the ticks before it);
        return the queue depth. Only the highest id per symbol and position
        matters, so a run of them takes one entry per symbol, not one each."""
        pending = self.batcher.filtered
        for i in range(len(pending) - 1, max(-1, len(pending) - 3), -1):
            if pending[i][0] == pos and pending[i][1] == sym:
                pending[i] = (pos, sym, tid)
                return self.batcher.depth
        pending.append((pos, sym, tid))
        return self.batcher.depth

    def _record_gap(self, sym: str, lo: int, hi: int, recv_ms: int) -> None:
        """Queue a gap row for ids ``lo..hi``, or extend the symbol's unwritten
        one when it ends at most GAP_MERGE_IDS ids before ``lo`` (garbage ids
        would otherwise write a row per frame; the few ids seen in between are
        stored, and a refill drops them as duplicates)."""
        gaps = self.batcher.gaps
        for i in range(len(gaps) - 1, max(-1, len(gaps) - 5), -1):
            g = gaps[i]
            if g.symbol == sym:
                if g.to_id < lo <= g.to_id + 1 + GAP_MERGE_IDS:
                    gaps[i] = Gap(sym, g.from_id, hi, g.detected_ms)
                    self._warn("gap", "in %s trade ids: %d..%d", sym, lo, hi)
                    return
                break
        gaps.append(Gap(sym, lo, hi, recv_ms))
        self.c.gaps += 1
        self._warn("gap", "in %s trade ids: %d..%d", sym, lo, hi)

    def _warn(self, kind: str, msg: str, *args: object) -> None:
        """``log.warning(kind + " " + msg)``, the first LOG_FIRST of a kind one by
        one, then counted into one summary line per LOG_SUMMARY_S."""
        n = self._log_counts.get(kind, 0) + 1
        self._log_counts[kind] = n
        if n <= LOG_FIRST:
            log.warning(f"{kind} {msg}", *args)
            if n == LOG_FIRST:
                log.warning(
                    "further '%s' messages are summarised every %g s",
                    kind,
                    LOG_SUMMARY_S,
                )
            return
        held = self._log_held.get(kind, (0, ""))[0]
        self._log_held[kind] = (held + 1, msg % args)
        self._log_summary()

    def _log_summary(self) -> None:
        """Log the held message counts when LOG_SUMMARY_S has passed."""
        now = time.monotonic()
        if now - self._log_summary_at < LOG_SUMMARY_S or not self._log_held:
            return
        for kind, (n, latest) in self._log_held.items():
            log.warning(
                "%d more '%s' messages in the last %.0f s (latest: %s %.300s)",
                n,
                kind,
                now - self._log_summary_at,
                kind,
                latest,
            )
        self._log_held.clear()
        self._log_summary_at = now


# ------------------------------------------------------------------------- service


ServiceTask = Callable[["IngestionService"], Awaitable[None]]


def _log_task_failure(task: asyncio.Task) -> None:
    """Log a service task that ended with an exception (other than cancellation)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("service task %s failed", task.get_name(), exc_info=task.exception())


def _remove_import_leftovers(db: Path | str) -> None:
    """Delete the hidden copies that imports killed mid-way left beside the
    database's ``datasets`` folder (and in the temporary directory); log what
    was reclaimed. Never raises: a cleanup problem must not stop ingestion."""
    import datafiles
    import storage

    base = db if storage.is_postgres_url(db) else storage._as_path(db).parent
    try:
        note = datafiles.remove_import_leftovers(base).note()
    except Exception as exc:  # noqa: BLE001 - logged, ingestion goes on
        log.warning("could not look for leftovers of killed imports: %s", exc)
        return
    if note:
        log.warning("%s (datasets of %s)", note, db)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


class IngestionService:
    """TradeStream plus the batching writer in one daemon thread with its own loop.

    Parameters
    ----------
    config : what to stream and where to write.
    tasks : coroutine functions ``f(service)`` started inside the service loop while
        this process holds the writer lease (e.g. the alert monitor); cancelled on
        stop or when the lease is lost.
    """

    def __init__(
        self, config: IngestionConfig, *, tasks: Sequence[ServiceTask] = ()
    ) -> None:
        self._config = config
        self._tasks = tuple(tasks)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._c = _Counters(state="stopped")
        self._batcher: _Batcher | None = None
        self._stream: TradeStream | None = None
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=64)
        self._lock = threading.Lock()

    @property
    def config(self) -> IngestionConfig:
        """The configuration in use."""
        return self._config

    @property
    def running(self) -> bool:
        """True while the service thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the service thread (no-op when already running)."""
        with self._lock:
            if self.running:
                return
            self._c = _Counters(state="connecting")
            self._rate_samples.clear()
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._thread_main,
                args=(ready,),
                name=f"ingestion-{_db_label(self._config.db_path)}",
                daemon=True,
            )
            self._thread.start()
            ready.wait(5.0)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop streaming, flush everything pending, release the lease, join."""
        with self._lock:
            thread, loop, ev = self._thread, self._loop, self._stop_event
            if thread is None:
                return
            if loop is not None and ev is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(ev.set)
            if thread is threading.current_thread():
                return  # called from a service task: the loop stops by itself
            thread.join(timeout)
            if thread.is_alive():
                log.error("ingestion thread did not stop within %.1f s", timeout)
            self._thread = None

    def restart(self, symbols: Sequence[str]) -> None:
        """Stop, then start again with a new symbol list (the old thread is joined).

        Raises
        ------
        ValueError
            When a symbol is invalid (the service keeps running unchanged).
        """
        names = parse_symbols(symbols) if isinstance(symbols, str) else symbols
        new_config = dataclasses.replace(self._config, symbols=tuple(names))
        self.stop()
        self._config = new_config
        self.start()

    def status(self) -> ServiceStatus:
        """A consistent-enough snapshot of counters; safe from any thread."""
        c = self._c
        batcher = self._batcher
        stream = self._stream
        warns = list(stream.warnings if stream is not None else ())
        if c.write_error:
            warns.append(c.write_error)
        if c.db_notice:
            warns.append(c.db_notice)
        if c.unsubscribed:
            names = ", ".join(sorted(c.unsubscribed_symbols)[:5])
            warns.append(
                f"{c.unsubscribed} trades of symbols not subscribed ({names}) dropped"
            )
        return ServiceStatus(
            state=c.state,
            last_error=c.last_error,
            role=c.role,
            lease_holder=c.lease_holder,
            url=self._config.url,
            symbols=self._config.symbols,
            ticks_per_s=c.ticks_per_s,
            total_ticks=c.ticks,
            duplicates=c.duplicates,
            malformed=c.malformed,
            gaps=c.gaps,
            reconnects=c.reconnects,
            last_trade_ms=c.last_trade_ms,
            lag_p50_ms=c.lag_p50_ms,
            lag_p99_ms=c.lag_p99_ms,
            queue_depth=batcher.depth if batcher is not None else 0,
            warnings=tuple(warns),
            filtered=c.filtered,
            stored_ticks=c.stored,
            unsubscribed=c.unsubscribed,
        )

    # --------------------------------------------------------------- loop thread

    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop_event = asyncio.Event()
        ready.set()
        try:
            loop.run_until_complete(self._main())
        except Exception as exc:  # last resort: report, never crash silently
            log.exception("ingestion service crashed")
            self._c.state = "error"
            self._c.last_error = f"service crashed: {type(exc).__name__}: {exc}"
            return
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        self._c.state = "stopped"

    async def _wait_stop(self, timeout: float) -> bool:
        """Wait up to timeout for a stop request; True when stop was requested."""
        assert self._stop_event is not None  # noqa: S101 - set before _main runs
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), timeout)
        return self._stop_event.is_set()

    async def _main(self) -> None:
        from storage import StorageError, Writer, new_lease_owner

        cfg = self._config
        c = self._c
        writer = None
        _remove_import_leftovers(cfg.db_path)
        try:
            while writer is None:
                try:
                    writer = Writer(cfg.db_path, busy_timeout_ms=cfg.busy_timeout_ms)
                except StorageError as exc:
                    c.state, c.last_error = "error", f"cannot open database: {exc}"
                    log.error(c.last_error)
                    if await self._wait_stop(cfg.lease_retry_s):
                        return
            owner = new_lease_owner()
            while not self._stop_event.is_set():  # type: ignore[union-attr]
                if await self._acquire(writer, owner):
                    # a deleted database file is recreated: continue with the new one
                    writer = await self._ingest(writer, owner)
        finally:
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()

    async def _acquire(self, writer: object, owner: object) -> bool:
        """Take the lease, or wait read-only; True once held, False on stop."""
        from storage import StorageError

        cfg = self._config
        c = self._c
        while True:
            try:
                state = writer.acquire_lease(  # type: ignore[attr-defined]
                    owner, stale_after_ms=cfg.lease_stale_after_ms
                )
            except StorageError as exc:
                log.warning("lease acquisition failed: %s", exc)
                state = None
            if state is not None and state.acquired:
                c.role, c.lease_holder = "writer", ""
                c.state = "connecting"
                log.info("writer lease taken for %s", cfg.db_path)
                return True
            if state is not None and state.holder is not None:
                h = state.holder
                c.role, c.state = "read-only", "read-only"
                c.lease_holder = (
                    f"read-only: ingestion by pid {h.pid} on {h.host} "
                    f"since {_iso(h.since_ms)}"
                )
            if await self._wait_stop(cfg.lease_retry_s):
                return False

    async def _ingest(self, writer: object, owner: object) -> object:
        """Stream and write while holding the lease; flush and release at the end.

        Returns the writer in use at the end (a new one when the file was recreated).
        """
        cfg = self._config
        c = self._c
        last_ids: dict[str, int] = dict(writer.last_trade_ids())  # type: ignore[attr-defined]
        batcher = _Batcher(writer, cfg, c, owner)
        stream = TradeStream(cfg, batcher, last_ids, c)
        self._batcher, self._stream = batcher, stream
        workers = [
            asyncio.create_task(stream.run(), name="stream"),
            asyncio.create_task(batcher.run(), name="flusher"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        ]
        for fn in self._tasks:
            task = asyncio.create_task(fn(self), name=getattr(fn, "__name__", "task"))
            task.add_done_callback(_log_task_failure)
            workers.append(task)
        heartbeat = asyncio.create_task(
            self._heartbeat(batcher, owner), name="heartbeat"
        )
        stop_wait = asyncio.create_task(self._stop_event.wait())  # type: ignore[union-attr]
        try:
            await asyncio.wait(
                {heartbeat, stop_wait, workers[0]}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (*workers, heartbeat, stop_wait):
                task.cancel()
            await asyncio.gather(*workers, heartbeat, stop_wait, return_exceptions=True)
            await self._final_flush(batcher)
            writer = batcher.writer
            with contextlib.suppress(Exception):
                writer.release_lease(owner)  # type: ignore[attr-defined]
            self._sample_rate()
            if not self._stop_event.is_set():  # type: ignore[union-attr]
                c.state = "read-only"
                c.role = "read-only"
        return writer

    async def _final_flush(self, batcher: _Batcher) -> None:
        """Flush on stop, retrying a locked database for up to about two seconds."""
        for _ in range(40):
            if await batcher.flush_all():
                return
            await asyncio.sleep(0.05)
        log.error("stop: %d ticks could not be written", len(batcher.ticks))

    async def _heartbeat(self, batcher: _Batcher, owner: object) -> None:
        """Refresh the lease (on the batcher's current writer); return when lost."""
        from storage import StorageError

        while True:
            await asyncio.sleep(self._config.heartbeat_s)
            try:
                held = batcher.writer.heartbeat(owner)  # type: ignore[attr-defined]
            except StorageError as exc:
                log.warning("lease heartbeat failed: %s", exc)
                continue
            if not held:
                self._c.last_error = "writer lease lost to another process"
                log.error(self._c.last_error)
                return

    def _sample_rate(self) -> None:
        now = time.monotonic()
        c = self._c
        samples = self._rate_samples
        samples.append((now, c.ticks))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()
        t0, n0 = samples[0]
        c.ticks_per_s = (c.ticks - n0) / (now - t0) if now > t0 else 0.0

    async def _housekeeping(self) -> None:
        """Twice a second: tick rate over 10 s and lag percentiles."""
        c = self._c
        while True:
            self._sample_rate()
            if c.lags:
                ordered = sorted(c.lags)
                n = len(ordered)
                c.lag_p50_ms = float(ordered[(n - 1) // 2])
                c.lag_p99_ms = float(ordered[min(n - 1, math.ceil(0.99 * n) - 1)])
            await asyncio.sleep(0.5)


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``pairdesk/cli/main.py``); returns the exit code."""
    from pairdesk.cli.main import main as cli_main  # the CLI sits above this layer

    return cli_main(argv)


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The CLI parser (``pairdesk/cli/main.py``)."""
    from pairdesk.cli.main import build_parser as cli_parser

    return cli_parser()


if __name__ == "__main__":
    sys.exit(main())
