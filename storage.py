"""SQLite store: ticks, 1 s bars, coarser bars, gaps, writer lease, alert rules/events.

One process writes a database through one `Writer` (one connection, used from one
thread at a time); any thread reads through the module-level reader functions, which
open a read-only ``file:...?mode=ro`` connection per thread and per database file and
cache it (WAL lets them read while the writer writes).

Schema (a contract other tools rely on; columns and tables may be added):

- ``ticks(symbol, trade_id, ts_ms, price, qty, is_buyer_maker)``, primary key
  ``(symbol, trade_id)``, index ``(symbol, ts_ms)``.
- ``bars_1s(symbol, ts_ms, open, high, low, close, volume, quote_volume, trades, vwap,
  first_id, last_id)``, primary key ``(symbol, ts_ms)``; ``ts_ms`` is the bucket start.
  ``first_id``/``last_id`` are the lowest and highest trade id in the bucket, so that
  ``open`` is the price of the lowest id and ``close`` of the highest whatever order the
  trades arrive in.
- ``bars(symbol, interval_s, ts_ms, open, high, low, close, volume, quote_volume,
  trades)`` for bars that arrive coarser than 1 s (imports, exchange history).
- ``gaps(symbol, from_id, to_id, detected_ms)``: ids ``from_id..to_id`` never seen.
- ``writer_lease`` (one row), ``alert_rules``, ``alert_events``, ``last_seen``.

Backends: the database setting is a file path or ``sqlite:///path`` (SQLite, this
module) or ``postgresql://user@host:port/dbname`` (PostgreSQL through `storage_pg`,
imported on first use). ``Writer(url)`` returns a `storage_pg.PgWriter` and every
reader below runs the same SQL there; see `is_postgres_url`.

All timestamps are integer milliseconds since the epoch, UTC. Errors: `StorageError`
("OPERATION failed: REASON"); `DatabaseLockedError` when another connection holds the
write lock longer than the busy timeout (the transaction was rolled back: retry it).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import socket
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from models import BAR_COLUMNS, Gap, Tick, normalize_symbol, now_ms

DEFAULT_DB_PATH = Path("data/market.db")
DEMO_DB_PATH = Path("data/demo.db")
DATASETS_DIRNAME = "datasets"
DATASET_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

DEFAULT_BUSY_TIMEOUT_MS = 50
DEFAULT_ADMIN_TIMEOUT_MS = 5_000
READER_BUSY_TIMEOUT_MS = 1_000
DEFAULT_STALE_AFTER_MS = 15_000
BAR_MS = 1_000

TICK_COLUMNS: tuple[str, ...] = ("ts", "trade_id", "price", "qty", "is_buyer_maker")
GAP_COLUMNS: tuple[str, ...] = ("symbol", "from_id", "to_id", "missing", "detected_ms")
EVENT_COLUMNS: tuple[str, ...] = (
    "id",
    "rule_id",
    "rule_text",
    "fired_ms",
    "fired",
    "value",
    "snapshot_json",
    "notify_status",
    "notify_detail",
)

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6

# "postgresql://", "postgres://", and the single-slash form Path() leaves of them.
_PG_URL = re.compile(r"^postgres(?:ql)?:/{1,2}(?=[^/])", re.IGNORECASE)
_SQLITE_URL = re.compile(r"^sqlite:(/*)(.*)$", re.IGNORECASE | re.DOTALL)


def db_exists(target: os.PathLike | str) -> bool:
    """True when a SQLite file exists, and always for PostgreSQL: the readers see
    tables that do not exist yet as empty (an unreachable server raises)."""
    return is_postgres_url(target) or Path(target).exists()


def is_postgres_url(target: object) -> bool:
    """True when a database setting names PostgreSQL (``postgresql://...``).

    Also true for ``postgres://`` and for the ``postgresql:/...`` that
    ``pathlib.Path`` makes of a URL, so a setting that went through ``Path`` still
    reaches the server (keep settings as ``str`` all the same).
    """
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if isinstance(target, bytes):
        target = target.decode("utf-8", "replace")
    return isinstance(target, str) and _PG_URL.match(target) is not None


def as_target(setting: os.PathLike | str) -> Path | str:
    """A database setting as the storage functions take it, for keeping around.

    A PostgreSQL URL stays a ``str`` (repaired if ``Path`` already turned its
    ``//`` into ``/``); anything else is a file path (``sqlite:///`` resolved).
    """
    text = os.fspath(setting)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = _PG_URL.match(text)
    if m is not None:
        return "postgresql://" + text[m.end() :]
    return _as_path(text)


def display_target(target: os.PathLike | str) -> str:
    """A database setting for messages: the path, or the URL with no password."""
    text = os.fspath(target)
    if is_postgres_url(text):
        return re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", str(text))
    return str(text)


def _as_path(target: os.PathLike | str) -> Path:
    """A SQLite setting as a path: ``sqlite:///rel/path`` is relative,
    ``sqlite:////abs/path`` absolute; anything else is a file path."""
    text = os.fspath(target)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = _SQLITE_URL.match(text)
    if m is None:
        return Path(text)
    slashes, rest = m.groups()
    return Path("/" + rest) if len(slashes) >= 4 else Path(rest)


def _pg():  # noqa: ANN202 - the storage_pg module
    """The PostgreSQL backend module (imports psycopg on first use)."""
    try:
        import storage_pg
    except ImportError as exc:
        raise StorageError(
            f"open failed: PostgreSQL support needs psycopg "
            f"(pip install 'psycopg[binary]'): {exc}"
        ) from exc
    return storage_pg


# --------------------------------------------------------------------------- errors


class StorageError(RuntimeError):
    """A storage operation failed; the message reads "OPERATION failed: REASON"."""


class DatabaseLockedError(StorageError):
    """Another connection held the write lock past the busy timeout.

    Transient: the transaction was rolled back, nothing of it is stored; keep the
    data and retry the call.
    """


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Outcome of `Writer.write_batch`.

    Attributes
    ----------
    inserted : ticks newly stored (and counted into ``bars_1s``).
    duplicates : ticks dropped because their (symbol, trade_id) was already stored or
        appeared earlier in the same batch.
    gaps : gap rows newly stored (a gap already recorded is not stored twice).
    """

    inserted: int
    duplicates: int
    gaps: int = 0


@dataclass(frozen=True, slots=True)
class FileChange:
    """What `Writer.reopen_if_changed` found and did.

    Attributes
    ----------
    kind : ``"deleted"`` (no file at the path any more), ``"replaced"`` (another
        file at the path, e.g. a backup moved over it) or ``"wal"`` (the file is the
        same but its ``-wal`` write-ahead log was deleted or replaced).
    detail : plain words, e.g. "data/market.db is another file now (inode 5, was 3)".
    lost_ticks : ticks the old file (as this writer saw it) held that the reopened
        file does not.
    missing : per symbol, the trade ids ``(first, last)`` above the reopened file's
        highest id that the old file held (symbols the new file lacks are absent).
    wal_saved : for ``"wal"``, whether the lost log's committed pages were copied
        into the file before reopening.
    """

    kind: str
    detail: str
    lost_ticks: int = 0
    missing: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    wal_saved: bool = False


_FileId = tuple[int, int] | None


def _file_id(path: os.PathLike | str) -> _FileId:
    """(device, inode) of a file, None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _wal_path(path: os.PathLike | str) -> str:
    return f"{os.fspath(path)}-wal"


def _shm_path(path: os.PathLike | str) -> str:
    return f"{os.fspath(path)}-shm"


def _file_ids(path: os.PathLike | str) -> tuple[_FileId, _FileId, _FileId]:
    """Identities of a database file, its ``-wal`` and its ``-shm``."""
    return (_file_id(path), _file_id(_wal_path(path)), _file_id(_shm_path(path)))


@dataclass(frozen=True, slots=True)
class LeaseOwner:
    """Identity of a writer: all three fields together identify one holder.

    Attributes
    ----------
    pid : operating-system process id of the holder.
    host : host name of the holder (``socket.gethostname()``).
    since_ms : when this holder was created, ms since the epoch UTC; it also tells two
        holders in one process apart (use `new_lease_owner`).
    """

    pid: int
    host: str
    since_ms: int


@dataclass(frozen=True, slots=True)
class LeaseState:
    """Outcome of `Writer.acquire_lease`.

    Attributes
    ----------
    acquired : True when the caller holds the lease now.
    holder : the holder after the call (the caller when acquired), None if free.
    heartbeat_ms : the holder's last heartbeat, ms since the epoch UTC, None if free.
    """

    acquired: bool
    holder: LeaseOwner | None
    heartbeat_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SymbolStats:
    """Row counts and time span of one symbol in a database.

    Attributes
    ----------
    symbol : upper-case symbol.
    ticks : rows in ``ticks``.
    bars_1s : rows in ``bars_1s``.
    first_ms, last_ms : first and last trade time (from ticks, else 1 s bars, else
        coarser bars), ms since the epoch UTC; None when the symbol has no rows.
    bars : rows in ``bars`` (coarser bars, all intervals).
    """

    symbol: str
    ticks: int
    bars_1s: int
    first_ms: int | None
    last_ms: int | None
    bars: int = 0


@dataclass(frozen=True, slots=True)
class DbStats:
    """Size and content summary of a database file.

    Attributes
    ----------
    file_bytes : size of the database file plus its WAL file, bytes.
    symbols : per-symbol statistics, sorted by symbol.
    gaps : number of gap rows (all symbols).
    """

    file_bytes: int
    symbols: tuple[SymbolStats, ...]
    gaps: int


@dataclass(frozen=True, slots=True)
class AlertRuleRow:
    """One stored alert rule.

    Attributes
    ----------
    id : rule id (primary key).
    text : the rule as the user wrote it, e.g. ``"z > 2"``.
    params_json : JSON of the pair parameters the rule is evaluated with.
    cooldown_s : minimum seconds between two firings.
    enabled : whether the monitor evaluates the rule.
    webhook_url : optional webhook to notify, None for dashboard only.
    webhook_format : payload flavour of the webhook (e.g. ``"json"``, ``"slack"``).
    created_ms : creation time, ms since the epoch UTC.
    """

    id: int
    text: str
    params_json: str
    cooldown_s: float
    enabled: bool
    webhook_url: str | None
    webhook_format: str | None
    created_ms: int


_owner_lock = threading.Lock()
_last_owner_ms = 0


def new_lease_owner() -> LeaseOwner:
    """Return a `LeaseOwner` for this process, distinct from any made before in it."""
    global _last_owner_ms
    with _owner_lock:
        since = max(now_ms(), _last_owner_ms + 1)
        _last_owner_ms = since
    return LeaseOwner(pid=os.getpid(), host=socket.gethostname(), since_ms=since)


# --------------------------------------------------------------------------- schema

# the ticks time index of _SCHEMA_1, rebuilt by `Writer.bulk_load` after a load
_TICKS_TIME_INDEX = "CREATE INDEX IF NOT EXISTS ticks_symbol_ts ON ticks(symbol, ts_ms)"

_SCHEMA_1 = """
CREATE TABLE ticks (
    symbol TEXT NOT NULL,
    trade_id INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    price REAL NOT NULL,
    qty REAL NOT NULL,
    is_buyer_maker INTEGER NOT NULL,
    PRIMARY KEY (symbol, trade_id)
) WITHOUT ROWID;
CREATE INDEX ticks_symbol_ts ON ticks(symbol, ts_ms);
CREATE TABLE bars_1s (
    symbol TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    open REAL NOT NULL,
    high REAL NOT NULL,
    low REAL NOT NULL,
    close REAL NOT NULL,
    volume REAL NOT NULL,
    quote_volume REAL NOT NULL,
    trades INTEGER NOT NULL,
    vwap REAL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    PRIMARY KEY (symbol, ts_ms)
) WITHOUT ROWID;
CREATE TABLE bars (
    symbol TEXT NOT NULL,
    interval_s INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    open REAL NOT NULL,
    high REAL NOT NULL,
    low REAL NOT NULL,
    close REAL NOT NULL,
    volume REAL NOT NULL,
    quote_volume REAL,
    trades INTEGER,
    PRIMARY KEY (symbol, interval_s, ts_ms)
) WITHOUT ROWID;
CREATE TABLE gaps (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    from_id INTEGER NOT NULL,
    to_id INTEGER NOT NULL,
    detected_ms INTEGER NOT NULL,
    UNIQUE (symbol, from_id, to_id)
);
CREATE TABLE writer_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL
);
CREATE TABLE alert_rules (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    params_json TEXT NOT NULL,
    cooldown_s REAL NOT NULL,
    enabled INTEGER NOT NULL,
    webhook_url TEXT,
    webhook_format TEXT,
    created_ms INTEGER NOT NULL
);
CREATE TABLE alert_events (
    id INTEGER PRIMARY KEY,
    rule_id INTEGER NOT NULL,
    fired_ms INTEGER NOT NULL,
    value REAL,
    snapshot_json TEXT,
    notify_status TEXT NOT NULL DEFAULT 'pending',
    notify_detail TEXT
);
CREATE INDEX alert_events_fired ON alert_events(fired_ms);
CREATE INDEX alert_events_rule ON alert_events(rule_id, fired_ms)
"""


def _migration_1(conn: sqlite3.Connection) -> None:
    """Create the initial schema (statements one by one, inside the transaction)."""
    for statement in _SCHEMA_1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migration_2(conn: sqlite3.Connection) -> None:
    """Add ``last_seen``: highest trade id seen per symbol, stored or filtered."""
    conn.execute(
        "CREATE TABLE last_seen (symbol TEXT PRIMARY KEY, trade_id INTEGER NOT NULL)"
    )


def _migration_3(conn: sqlite3.Connection) -> None:
    """Add how each gap was filled: ``filled_by`` ("trades", "historicalTrades",
    "aggTrades" (bars only) or "skipped"), ``filled_ms`` and ``fill_detail``."""
    conn.execute("ALTER TABLE gaps ADD COLUMN filled_by TEXT")
    conn.execute("ALTER TABLE gaps ADD COLUMN filled_ms INTEGER")
    conn.execute("ALTER TABLE gaps ADD COLUMN fill_detail TEXT")


# Applied in order inside one IMMEDIATE transaction each; step i moves
# `PRAGMA user_version` from i to i + 1. Never edit a released step: append one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _schema_problem(
    conn: sqlite3.Connection, path: object, *, foreign: bool = True
) -> str | None:
    """Why this program must not open the file: a newer schema, or (``foreign``,
    the writer's check before it migrates) tables of another program."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        return (
            f"database schema version {version} of {path} is newer than this "
            f"program's {SCHEMA_VERSION}: use a newer PairDesk to read it"
        )
    if version == 0 and foreign:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                "ORDER BY name LIMIT 4"
            )
        ]
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            return (
                f"{path} is not a PairDesk database (it has tables {shown} and "
                "no PairDesk schema version); it was left untouched"
            )
    return None


def _migrate(conn: sqlite3.Connection, path: object = "") -> None:
    """Refuse a newer or foreign file untouched, switch to WAL, then apply the
    pending migrations, each in its own IMMEDIATE transaction."""
    problem = _schema_problem(conn, path)
    if problem is not None:
        raise StorageError(f"open failed: {problem}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(
            f"open failed: cannot switch {path} to WAL (journal_mode is {mode})"
        )
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            problem = _schema_problem(conn, path)  # changed since the first look?
            if problem is not None:
                raise StorageError(f"open failed: {problem}")
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return
            MIGRATIONS[version](conn)
            # PRAGMA takes no parameters; the value is an int computed here.
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _error(op: str, exc: sqlite3.Error, path: os.PathLike | str) -> StorageError:
    """Map a sqlite3 error to DatabaseLockedError (busy/locked) or StorageError."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return DatabaseLockedError(
            f"{op} failed: database is locked by another connection ({path}); "
            "the transaction was rolled back, retry it"
        )
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return StorageError(f"{op} failed: {exc} [{name}] ({path})")


# Distinct symbols through the primary-key index, one seek per symbol ("loose index
# scan"), instead of a scan of every row.
_SYMBOL_SCAN = """
WITH RECURSIVE s(symbol) AS (
    SELECT (SELECT min(symbol) FROM {table})
    UNION ALL
    SELECT (SELECT min(symbol) FROM {table} WHERE symbol > s.symbol)
    FROM s WHERE s.symbol IS NOT NULL
)
SELECT symbol FROM s WHERE symbol IS NOT NULL
"""
_SYMBOL_SCANS = {t: _SYMBOL_SCAN.format(table=t) for t in ("ticks", "bars_1s", "bars")}
# Retention deletes in chunks of at most PRUNE_CHUNK_ROWS rows per transaction,
# oldest first (the last parameter of each statement is the chunk size).
PRUNE_CHUNK_ROWS = 50_000
_PRUNE_TICKS = (
    "DELETE FROM ticks WHERE symbol = ? AND trade_id IN (SELECT trade_id FROM ticks "
    "WHERE symbol = ? AND ts_ms < ? ORDER BY ts_ms LIMIT ?)"
)
_PRUNE_BARS_1S = (
    "DELETE FROM bars_1s WHERE symbol = ? AND ts_ms IN (SELECT ts_ms FROM bars_1s "
    "WHERE symbol = ? AND ts_ms <= ? ORDER BY ts_ms LIMIT ?)"
)
_PRUNE_BARS = (
    "DELETE FROM bars WHERE (symbol, interval_s, ts_ms) IN (SELECT symbol, "
    "interval_s, ts_ms FROM bars WHERE ts_ms + interval_s * 1000 <= ? LIMIT ?)"
)

_INSERT_TICK = (
    "INSERT INTO ticks(symbol, trade_id, ts_ms, price, qty, is_buyer_maker) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_UPSERT_BAR_1S = """
INSERT INTO bars_1s(symbol, ts_ms, open, high, low, close, volume, quote_volume,
                    trades, vwap, first_id, last_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(symbol, ts_ms) DO UPDATE SET
    open = CASE WHEN excluded.first_id < bars_1s.first_id
                THEN excluded.open ELSE bars_1s.open END,
    close = CASE WHEN excluded.last_id > bars_1s.last_id
                 THEN excluded.close ELSE bars_1s.close END,
    high = max(bars_1s.high, excluded.high),
    low = min(bars_1s.low, excluded.low),
    volume = bars_1s.volume + excluded.volume,
    quote_volume = bars_1s.quote_volume + excluded.quote_volume,
    trades = bars_1s.trades + excluded.trades,
    vwap = (bars_1s.quote_volume + excluded.quote_volume)
           / nullif(bars_1s.volume + excluded.volume, 0),
    first_id = min(bars_1s.first_id, excluded.first_id),
    last_id = max(bars_1s.last_id, excluded.last_id)
"""
_UPSERT_BAR = """
INSERT INTO bars(symbol, interval_s, ts_ms, open, high, low, close, volume,
                 quote_volume, trades)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(symbol, interval_s, ts_ms) DO UPDATE SET
    open = excluded.open, high = excluded.high, low = excluded.low,
    close = excluded.close, volume = excluded.volume,
    quote_volume = excluded.quote_volume, trades = excluded.trades
"""
_IN_CHUNK = 500


def _pid_alive(pid: int) -> bool:
    """True when a process with this pid runs on this host (or may: no permission)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _rows_and_bars(symbol: str, ticks: dict[int, Tick]) -> tuple[list, list]:
    """Tick insert rows and bars_1s upsert rows of one symbol's new ticks, one pass.

    `ticks` maps Python-int trade id to tick.

    Ticks may come in any order: a bucket's open is the price of its lowest trade
    id and its close of its highest (compared, not sorted).
    """
    rows: list[tuple] = []
    append = rows.append
    buckets: dict[int, list] = {}
    get = buckets.get
    # int()/float() because numpy scalars would be bound as BLOBs by sqlite3.
    for tid, t in ticks.items():
        p = float(t.price)
        q = float(t.qty)
        ts = int(t.ts_ms)
        append((symbol, tid, ts, p, q, 1 if t.is_buyer_maker else 0))
        b = ts - ts % BAR_MS
        bar = get(b)
        if bar is None:
            # open, high, low, close, volume, quote_volume, trades, first_id, last_id
            buckets[b] = [p, p, p, p, q, p * q, 1, tid, tid]
            continue
        if tid > bar[8]:
            bar[3] = p
            bar[8] = tid
        elif tid < bar[7]:
            bar[0] = p
            bar[7] = tid
        if p > bar[1]:
            bar[1] = p
        elif p < bar[2]:
            bar[2] = p
        bar[4] += q
        bar[5] += p * q
        bar[6] += 1
    bars = [
        (symbol, b, o, h, lo, c, v, qv, n, qv / v if v else None, fid, lid)
        for b, (o, h, lo, c, v, qv, n, fid, lid) in buckets.items()
    ]
    return rows, bars


def _int_column(name: str, values: object) -> np.ndarray:
    """A 1-D int64 array from `values`; floats only when they are whole numbers."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "b":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    try:
        as_float = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}") from exc
    whole = np.isfinite(as_float) & (as_float == np.floor(as_float))
    if not whole.all():
        i = int(np.flatnonzero(~whole)[0])
        bad = arr[i : i + 1].tolist()[0]
        raise ValueError(f"{name} must hold integers, got {bad!r}")
    return as_float.astype(np.int64)


def _float_column(name: str, values: object) -> np.ndarray:
    """A 1-D float64 array from `values`."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _gap_rows(gaps: Sequence[Gap]) -> list[tuple]:
    """Insert rows (symbol, from_id, to_id, detected_ms) of gap records."""
    return [(g.symbol, int(g.from_id), int(g.to_id), int(g.detected_ms)) for g in gaps]


def _bar_rows(
    symbol: str, ids: np.ndarray, ts: np.ndarray, price: np.ndarray, qty: np.ndarray
) -> list[tuple]:
    """bars_1s upsert rows of one symbol's new ticks, aggregated with numpy.

    `ids` must be unique. Rows are grouped by bucket ``ts - ts mod 1000`` and ordered
    by trade id inside a bucket, so open/close are the prices of the lowest/highest
    id whatever order the ticks came in.
    """
    bucket = ts - ts % BAR_MS
    if bucket.size > 1 and ((np.diff(bucket) < 0).any() or (np.diff(ids) <= 0).any()):
        order = np.lexsort((ids, bucket))
        bucket, ids, price, qty = bucket[order], ids[order], price[order], qty[order]
    n = bucket.size
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(bucket[1:], bucket[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1
    volume = np.add.reduceat(qty, starts)
    quote = np.add.reduceat(price * qty, starts)
    if (volume > 0).all():
        vwap: list = (quote / volume).tolist()
    else:
        vwap = [
            q / v if v else None
            for q, v in zip(quote.tolist(), volume.tolist(), strict=True)
        ]
    return list(
        zip(
            itertools.repeat(symbol, starts.size),
            bucket[starts].tolist(),
            price[starts].tolist(),
            np.maximum.reduceat(price, starts).tolist(),
            np.minimum.reduceat(price, starts).tolist(),
            price[ends].tolist(),
            volume.tolist(),
            quote.tolist(),
            (ends - starts + 1).tolist(),
            vwap,
            ids[starts].tolist(),
            ids[ends].tolist(),
            strict=True,
        )
    )


# --------------------------------------------------------------------------- writer


class Writer:
    """The single write connection to one database file.

    Opening creates the parent directories and the file, switches it to WAL with
    ``synchronous=NORMAL`` and applies pending migrations. Use one `Writer` from one
    thread at a time (it may be created in another thread than the one using it).

    Parameters
    ----------
    path : database file.
    busy_timeout_ms : how long hot-path calls (`write_batch`, `heartbeat`,
        `add_alert_event`, `update_alert_event_notification`) wait for a write lock
        held by another connection before raising `DatabaseLockedError`.
    admin_timeout_ms : the same for rare calls (opening and migrating, lease
        acquisition, `write_bars`, `prune`, `clear_market_data`, alert rule edits).

    Raises
    ------
    ValueError
        When a timeout is negative.
    StorageError
        When the file cannot be created, opened, switched to WAL or migrated.
    """

    def __new__(cls, path: os.PathLike | str = "", *args: object, **kwargs: object):
        """A `storage_pg.PgWriter` (a subclass) for a PostgreSQL URL, else a Writer."""
        if cls is Writer and is_postgres_url(path):
            return super().__new__(_pg().PgWriter)
        return super().__new__(cls)

    def __init__(
        self,
        path: os.PathLike | str,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        admin_timeout_ms: int = DEFAULT_ADMIN_TIMEOUT_MS,
    ) -> None:
        for name, value in (
            ("busy_timeout_ms", busy_timeout_ms),
            ("admin_timeout_ms", admin_timeout_ms),
        ):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        self._path = _as_path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._admin_timeout_ms = admin_timeout_ms
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"open failed: cannot create directory {self._path.parent}: {exc}"
            ) from exc
        self._conn: sqlite3.Connection | None = None
        self._files: tuple[_FileId, _FileId, _FileId] = (None, None, None)
        self._lost_view: tuple[str, str, dict[str, int], int] | None = None
        self._wal_saved = False
        self._open()

    def _open(self) -> None:
        """Connect, switch to WAL, migrate; record which files were opened."""
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {self._admin_timeout_ms:d}")
            _migrate(conn, self._path)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA cache_size = -16000")
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")
            conn.execute("SELECT count(*) FROM writer_lease").fetchone()  # opens -wal
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise _error("open", exc, self._path) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._conn = conn
        self._files = _file_ids(self._path)

    # ------------------------------------------------------------------ plumbing

    @property
    def path(self) -> Path:
        """The database file this writer writes."""
        return self._path

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise StorageError."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def file_change(self) -> tuple[str, str] | None:
        """``(kind, plain words)`` when the file or its ``-wal`` at this writer's
        path is no longer the one it opened (see `FileChange`), else None.

        Two ``stat`` calls: cheap enough before every batch.
        """
        main, wal = _file_id(self._path), _file_id(_wal_path(self._path))
        if main is None:
            return ("deleted", f"database file {self._path} was deleted")
        if main != self._files[0]:
            old = self._files[0][1] if self._files[0] else "?"
            return (
                "replaced",
                f"{self._path} is another file now (inode {main[1]}, was {old})",
            )
        if wal != self._files[1] and self._files[1] is not None:
            what = "deleted" if wal is None else "replaced by another file"
            return ("wal", f"{_wal_path(self._path)} was {what}")
        return None

    def reopen_if_changed(self) -> FileChange | None:
        """Stop using files that changed under this writer and reopen the path.

        When the file at the path is another one (replaced or deleted), the old
        file's write-ahead log must never be applied to the new one: the old
        connection is closed (SQLite folds its log into the old, unlinked file)
        and any ``-wal``/``-shm`` left at the path that still belongs to the old
        file is removed before the path is opened again. When only the ``-wal``
        was deleted, the file is the same, so the committed pages of the lost log
        (still open here) are first copied into it. Returns None when nothing
        changed.

        Raises
        ------
        StorageError
            When the path cannot be opened again (call again to retry).
        """
        if self._lost_view is None:
            change = self.file_change()
            if change is None:
                return None
            saved = change[0] == "wal" and self._save_lost_wal()
            ids, total = self._view()
            self._lost_view = (*change, ids, total)
            with contextlib.suppress(sqlite3.Error):
                self.close()
            self._conn = None
            self._remove_stale_files()
            self._wal_saved = saved
        kind, detail, old_ids, old_total = self._lost_view
        self._open()  # raises StorageError: _lost_view stays for the retry
        self._lost_view = None
        new_ids, new_total = self._view()
        missing = {
            sym: (new_ids[sym] + 1, last)
            for sym, last in old_ids.items()
            if sym in new_ids and new_ids[sym] < last
        }
        return FileChange(
            kind,
            detail,
            max(0, old_total - new_total),
            missing,
            kind == "wal" and self._wal_saved,
        )

    def _save_lost_wal(self) -> bool:
        """Copy the committed pages of this connection's (deleted) log into the
        file; True when all of them were copied."""
        conn = self._connection("reopen")
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._admin_timeout_ms:d}")
            row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")
        except sqlite3.Error:
            return False
        return row[0] == 0  # (busy, log pages, pages copied)

    def _view(self) -> tuple[dict[str, int], int]:
        """Highest trade ids and the number of ticks, as this connection sees them."""
        conn = self._connection("reopen")
        try:
            total = int(conn.execute("SELECT count(*) FROM ticks").fetchone()[0])
        except sqlite3.Error as exc:
            raise _error("reopen", exc, self._path) from exc
        return self.last_trade_ids(), total

    def _remove_stale_files(self) -> None:
        """Remove a ``-wal``/``-shm`` at the path that belongs to the old file."""
        for name, ident in zip(
            (_wal_path(self._path), _shm_path(self._path)),
            self._files[1:],
            strict=True,
        ):
            if ident is not None and _file_id(name) == ident:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)

    def _connection(self, op: str) -> sqlite3.Connection:
        """The open connection, or StorageError naming the operation."""
        if self._conn is None:
            raise StorageError(f"{op} failed: writer for {self._path} is closed")
        return self._conn

    @contextmanager
    def _transaction(
        self, op: str, *, timeout_ms: int | None = None
    ) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; roll back and map errors on failure."""
        conn = self._connection(op)
        if timeout_ms is not None:
            conn.execute(f"PRAGMA busy_timeout = {timeout_ms:d}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise _error(op, exc, self._path) from exc
        except BaseException:
            self._rollback(conn)
            raise
        finally:
            if timeout_ms is not None:
                conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Roll back if a transaction is open (SQLite may already have done it)."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    # ------------------------------------------------------------------ hot path

    def write_batch(
        self,
        ticks: Sequence[Tick],
        gaps: Sequence[Gap] = (),
        *,
        last_seen: Mapping[str, int] | None = None,
    ) -> BatchResult:
        """Store new ticks, fold them into ``bars_1s`` and store gap rows, atomically.

        In one transaction: drop ticks whose (symbol, trade_id) is already stored or
        repeats within the batch, insert the rest into ``ticks``, upsert ``bars_1s``
        from the inserted ticks only and insert the gap rows (a gap already stored
        is skipped).

        Parameters
        ----------
        ticks : trades in any order, any symbols (upper-case, as `Tick` carries them).
        gaps : gap rows detected alongside.
        last_seen : optional highest trade id seen per symbol, including trades
            that were filtered out (non-MARKET); kept so that `last_trade_ids`
            resumes after them and a restart records no false gap.

        Returns
        -------
        BatchResult
            Ticks inserted, duplicates dropped and gap rows stored.

        Raises
        ------
        DatabaseLockedError
            When another connection held the write lock past ``busy_timeout_ms``;
            nothing was stored: keep the batch and retry it.
        StorageError
            On any other SQLite failure (read-only file, disk full, I/O error);
            nothing of the batch was stored.

        Notes
        -----
        Per 1 s bucket ``b = ts_ms - ts_ms mod 1000`` of the inserted ticks:
        open/close are the prices of the lowest/highest trade id, high/low the
        extremes, ``volume = sum(qty)``, ``quote_volume = sum(price * qty)``,
        ``trades`` the count and ``vwap = quote_volume / volume``. The upsert keeps
        the open of the lower ``first_id`` and the close of the higher ``last_id``,
        so bars are right whatever order the batches arrive in.
        """
        groups: dict[str, dict[int, Tick]] = {}
        for t in ticks:
            group = groups.get(t.symbol)
            if group is None:
                group = groups[t.symbol] = {}
            group.setdefault(int(t.trade_id), t)
        gap_rows = _gap_rows(gaps)
        seen_rows = [(sym, int(tid)) for sym, tid in (last_seen or {}).items()]
        if not groups and not gap_rows and not seen_rows:
            return BatchResult(inserted=0, duplicates=0, gaps=0)
        inserted = 0
        with self._transaction("write_batch") as conn:
            for symbol, group in groups.items():
                self._drop_stored(conn, symbol, group)
                if not group:
                    continue
                tick_rows, bar_rows = _rows_and_bars(symbol, group)
                conn.executemany(_INSERT_TICK, tick_rows)
                conn.executemany(_UPSERT_BAR_1S, bar_rows)
                inserted += len(group)
            gaps_stored = self._write_gaps_and_seen(conn, gap_rows, seen_rows)
        return BatchResult(
            inserted=inserted, duplicates=len(ticks) - inserted, gaps=gaps_stored
        )

    @staticmethod
    def _drop_stored(
        conn: sqlite3.Connection, symbol: str, group: dict[int, Tick]
    ) -> None:
        """Remove from `group` the trade ids already stored for `symbol`."""
        lo = min(group)
        hi = max(group)
        if hi - lo < 4 * len(group) + 1_000:
            rows = conn.execute(
                "SELECT trade_id FROM ticks "
                "WHERE symbol = ? AND trade_id BETWEEN ? AND ?",
                (symbol, lo, hi),
            ).fetchall()
        else:  # sparse ids over a wide range: probe them, not the whole range
            ids = list(group)
            rows = []
            for i in range(0, len(ids), _IN_CHUNK):
                chunk = ids[i : i + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows += conn.execute(
                    f"SELECT trade_id FROM ticks WHERE symbol = ? "
                    f"AND trade_id IN ({marks})",
                    (symbol, *chunk),
                ).fetchall()
        for (tid,) in rows:
            group.pop(tid, None)

    def write_tick_columns(
        self,
        symbol: str,
        trade_id: object,
        ts_ms: object,
        price: object,
        qty: object,
        is_buyer_maker: object,
        gaps: Sequence[Gap] = (),
        *,
        last_seen: Mapping[str, int] | None = None,
    ) -> BatchResult:
        """`write_batch` for one symbol's ticks given as columns (numpy arrays).

        Same transaction and semantics as `write_batch`: drop ids already stored or
        repeated in the batch (the first occurrence is kept), insert the rest into
        ``ticks``, upsert ``bars_1s`` from the inserted ticks only, store gap rows.
        Deduplication and the 1 s aggregation run in numpy and the rows are bound
        from ``ndarray.tolist()``, which makes this the fast path for imports.

        Parameters
        ----------
        symbol : the symbol of every row (validated, upper-cased).
        trade_id, ts_ms : integer arrays (ids, trade time in ms since the epoch UTC).
        price, qty : float arrays.
        is_buyer_maker : boolean (or 0/1) array.
        gaps : gap rows detected alongside (any symbol).
        last_seen : as in `write_batch`.

        Returns
        -------
        BatchResult
            Ticks inserted, duplicates dropped and gap rows stored.

        Raises
        ------
        ValueError
            When the symbol is invalid, a column is not one-dimensional, does not
            hold integers where integers are needed, or the lengths differ.
        DatabaseLockedError, StorageError
            As `write_batch`; nothing of the batch was stored.

        Notes
        -----
        Per 1 s bucket ``b = ts_ms - ts_ms mod 1000``: open/close are the prices of
        the lowest/highest trade id, ``high = max(price)``, ``low = min(price)``,
        ``volume = sum(qty)``, ``quote_volume = sum(price * qty)``, ``trades`` the
        count, ``vwap = quote_volume / volume`` (sums in numpy's pairwise order, so
        they may differ from `write_batch` in the last bits).
        """
        sym = normalize_symbol(symbol)
        ids = _int_column("trade_id", trade_id)
        ts = _int_column("ts_ms", ts_ms)
        px = _float_column("price", price)
        q = _float_column("qty", qty)
        maker = np.asarray(is_buyer_maker)
        if maker.ndim != 1:
            raise ValueError(
                f"is_buyer_maker must be one-dimensional, got shape {maker.shape}"
            )
        n = ids.size
        sizes = {
            "trade_id": n,
            "ts_ms": ts.size,
            "price": px.size,
            "qty": q.size,
            "is_buyer_maker": maker.size,
        }
        if len(set(sizes.values())) != 1:
            shown = ", ".join(f"{k}={v}" for k, v in sizes.items())
            raise ValueError(f"columns must have the same length, got {shown}")
        gap_rows = _gap_rows(gaps)
        seen_rows = [(s, int(tid)) for s, tid in (last_seen or {}).items()]
        if n == 0 and not gap_rows and not seen_rows:
            return BatchResult(inserted=0, duplicates=0, gaps=0)
        if n > 1 and not (ids[1:] > ids[:-1]).all():
            # sorted unique ids, each at its first occurrence in the batch
            _, first = np.unique(ids, return_index=True)
            ids, ts, px, q, maker = (
                ids[first],
                ts[first],
                px[first],
                q[first],
                maker[first],
            )
        with self._transaction("write_tick_columns") as conn:
            if ids.size:
                stored = self._stored_ids(conn, sym, ids, ts)
                if stored.size:
                    keep = ~np.isin(ids, stored)
                    ids, ts, px, q = ids[keep], ts[keep], px[keep], q[keep]
                    maker = maker[keep]
            if ids.size:
                conn.executemany(
                    _INSERT_TICK,
                    zip(
                        itertools.repeat(sym, ids.size),
                        ids.tolist(),
                        ts.tolist(),
                        px.tolist(),
                        q.tolist(),
                        (maker != 0).astype(np.int8).tolist(),
                        strict=True,
                    ),
                )
                conn.executemany(_UPSERT_BAR_1S, _bar_rows(sym, ids, ts, px, q))
            stored_gaps = self._write_gaps_and_seen(conn, gap_rows, seen_rows)
        return BatchResult(
            inserted=int(ids.size), duplicates=n - int(ids.size), gaps=stored_gaps
        )

    @staticmethod
    def _stored_ids(
        conn: sqlite3.Connection,
        symbol: str,
        ids: np.ndarray,
        ts: np.ndarray | None = None,
    ) -> np.ndarray:
        """Those of the sorted unique `ids` already stored for `symbol` (int64).

        `ts` (the ids' trade times) bounds the probe on partitioned backends; the
        primary key (symbol, trade_id) needs no such bound here.
        """
        lo = int(ids[0])
        hi = int(ids[-1])
        if hi - lo < 4 * ids.size + 1_000:
            cur = conn.execute(
                "SELECT trade_id FROM ticks "
                "WHERE symbol = ? AND trade_id BETWEEN ? AND ?",
                (symbol, lo, hi),
            )
            return np.fromiter(itertools.chain.from_iterable(cur), dtype=np.int64)
        # sparse ids over a wide range: probe them, not the whole range
        found: list[tuple] = []
        wanted = ids.tolist()
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found += conn.execute(
                f"SELECT trade_id FROM ticks WHERE symbol = ? "
                f"AND trade_id IN ({marks})",
                (symbol, *chunk),
            ).fetchall()
        return np.fromiter(
            itertools.chain.from_iterable(found), dtype=np.int64, count=len(found)
        )

    @staticmethod
    def _write_gaps_and_seen(
        conn: sqlite3.Connection, gap_rows: list[tuple], seen_rows: list[tuple]
    ) -> int:
        """Insert gap rows (skipping stored ones) and raise last_seen ids.

        Returns the number of gap rows stored.
        """
        stored = 0
        if gap_rows:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO gaps(symbol, from_id, to_id, detected_ms) "
                "VALUES (?, ?, ?, ?)",
                gap_rows,
            )
            stored = conn.total_changes - before
        if seen_rows:
            conn.executemany(
                "INSERT INTO last_seen(symbol, trade_id) VALUES (?, ?) "
                "ON CONFLICT(symbol) DO UPDATE SET "
                "trade_id = max(trade_id, excluded.trade_id)",
                seen_rows,
            )
        return stored

    def last_trade_ids(self) -> dict[str, int]:
        """Highest trade id per symbol: stored ticks, or a higher ``last_seen`` id.

        Symbols with neither are absent.

        Raises
        ------
        StorageError
            When the query fails.
        """
        conn = self._connection("last_trade_ids")
        try:
            symbols = [r[0] for r in conn.execute(_SYMBOL_SCANS["ticks"])]
            out = {}
            for symbol in symbols:
                row = conn.execute(
                    "SELECT max(trade_id) FROM ticks WHERE symbol = ?", (symbol,)
                ).fetchone()
                out[symbol] = int(row[0])
            for symbol, tid in conn.execute("SELECT symbol, trade_id FROM last_seen"):
                out[symbol] = max(out.get(symbol, tid), int(tid))
            return out
        except sqlite3.Error as exc:
            raise _error("last_trade_ids", exc, self._path) from exc

    # ------------------------------------------------------------------ lease

    def acquire_lease(
        self,
        owner: LeaseOwner,
        *,
        stale_after_ms: int = DEFAULT_STALE_AFTER_MS,
        now: int | None = None,
    ) -> LeaseState:
        """Take the writer lease if it is free, ours, orphaned or stale.

        The lease is taken when no row exists, when `owner` already holds it, when
        the holder is on this host and its pid no longer runs, or when the holder's
        heartbeat is older than `stale_after_ms`. Decided inside one IMMEDIATE
        transaction, so two processes cannot both win.

        Parameters
        ----------
        owner : the candidate (see `new_lease_owner`).
        stale_after_ms : heartbeat age after which any holder may be replaced.
        now : current time in ms (defaults to the wall clock; for tests).

        Returns
        -------
        LeaseState
            ``acquired`` and the holder after the call.

        Raises
        ------
        ValueError
            When `stale_after_ms` is not positive.
        DatabaseLockedError, StorageError
            When the database cannot be written.
        """
        if stale_after_ms <= 0:
            raise ValueError(f"stale_after_ms must be > 0, got {stale_after_ms!r}")
        t = now_ms() if now is None else int(now)
        with self._transaction("acquire_lease", timeout_ms=self._admin_timeout_ms) as c:
            row = c.execute(
                "SELECT pid, host, since_ms, heartbeat_ms FROM writer_lease "
                "WHERE id = 1"
            ).fetchone()
            if row is not None:
                holder = LeaseOwner(pid=int(row[0]), host=row[1], since_ms=int(row[2]))
                takeable = (
                    holder == owner
                    or t - int(row[3]) > stale_after_ms
                    or (
                        holder.host == socket.gethostname()
                        and not _pid_alive(holder.pid)
                    )
                )
                if not takeable:
                    return LeaseState(
                        acquired=False, holder=holder, heartbeat_ms=row[3]
                    )
            c.execute(
                "INSERT OR REPLACE INTO writer_lease(id, pid, host, since_ms, "
                "heartbeat_ms) VALUES (1, ?, ?, ?, ?)",
                (int(owner.pid), owner.host, int(owner.since_ms), t),
            )
        return LeaseState(acquired=True, holder=owner, heartbeat_ms=t)

    def heartbeat(self, owner: LeaseOwner, *, now: int | None = None) -> bool:
        """Refresh the lease's heartbeat if `owner` still holds it.

        Returns
        -------
        bool
            False when the lease was lost (taken over or released).

        Raises
        ------
        DatabaseLockedError
            When the write lock was busy (lease state unknown: try again later).
        StorageError
            On other failures.
        """
        t = now_ms() if now is None else int(now)
        with self._transaction("heartbeat") as conn:
            cur = conn.execute(
                "UPDATE writer_lease SET heartbeat_ms = ? "
                "WHERE id = 1 AND pid = ? AND host = ? AND since_ms = ?",
                (t, owner.pid, owner.host, owner.since_ms),
            )
            held = cur.rowcount == 1
        return held

    def release_lease(self, owner: LeaseOwner) -> None:
        """Give the lease up if `owner` holds it (otherwise nothing happens)."""
        with self._transaction(
            "release_lease", timeout_ms=min(self._admin_timeout_ms, 1_000)
        ) as conn:
            conn.execute(
                "DELETE FROM writer_lease "
                "WHERE id = 1 AND pid = ? AND host = ? AND since_ms = ?",
                (owner.pid, owner.host, owner.since_ms),
            )

    # ------------------------------------------------------------------ bars, retention

    def upsert_bars_1s(self, symbol: str, bars: pd.DataFrame) -> int:
        """Fold bar-level 1 s bars (no ticks) into ``bars_1s`` (e.g. a REST gap fill).

        Parameters
        ----------
        symbol : symbol (validated, upper-cased).
        bars : columns ``ts`` (tz-aware UTC bucket start), ``open, high, low, close,
            volume, quote_volume, trades, vwap`` and ``first_id``, ``last_id`` (the
            trade-id range the bar covers, which decides open and close on merge).

        Returns
        -------
        int
            Bars upserted, merged exactly as ``write_batch`` merges ticks: open of
            the lower ``first_id``, close of the higher ``last_id``, sums of volume,
            quote volume and trades.
        """
        symbol = normalize_symbol(symbol)
        missing = [c for c in (*BAR_COLUMNS, "first_id", "last_id") if c not in bars]
        if missing:
            raise ValueError(f"bars: missing column(s) {', '.join(missing)}")
        if len(bars) == 0:
            return 0
        ts = _to_epoch_ms(bars["ts"]).tolist()
        rows = [
            (symbol, t, o, h, lo, c, v, qv, int(n), vw, int(f), int(la))
            for t, o, h, lo, c, v, qv, n, vw, f, la in zip(
                ts,
                *(bars[c].astype("float64").tolist() for c in BAR_COLUMNS[1:]),
                bars["first_id"].tolist(),
                bars["last_id"].tolist(),
                strict=True,
            )
        ]
        with self._transaction("upsert_bars_1s") as conn:
            conn.executemany(_UPSERT_BAR_1S, rows)
        return len(rows)

    def mark_gap_filled(
        self, symbol: str, from_id: int, to_id: int, *, by: str, at_ms: int, detail: str
    ) -> bool:
        """Record how the gap ``symbol, from_id..to_id`` was filled; False if unknown.

        ``by`` says with what: "trades", "historicalTrades", "aggTrades" (bar level,
        no ticks) or "skipped"; ``detail`` is a sentence for the status and the table.
        """
        symbol = normalize_symbol(symbol)
        with self._transaction(
            "mark_gap_filled", timeout_ms=self._admin_timeout_ms
        ) as c:
            cur = c.execute(
                "UPDATE gaps SET filled_by = ?, filled_ms = ?, fill_detail = ? "
                "WHERE symbol = ? AND from_id = ? AND to_id = ?",
                (str(by), int(at_ms), str(detail), symbol, int(from_id), int(to_id)),
            )
        return cur.rowcount > 0

    def write_bars(self, symbol: str, interval_s: int, bars: pd.DataFrame) -> int:
        """Upsert bars coarser than 1 s (imports, exchange history) into ``bars``.

        Parameters
        ----------
        symbol : symbol (validated, upper-cased).
        interval_s : bar length in seconds, >= 1.
        bars : columns ``ts`` (tz-aware or naive-UTC datetimes, or integer ms) or
            ``ts_ms`` (integer ms), ``open, high, low, close, volume``; optional
            ``quote_volume`` and ``trades`` (stored NULL when absent).

        Returns
        -------
        int
            Rows written; a bar at an existing (symbol, interval_s, ts) replaces it.

        Raises
        ------
        ValueError
            On a bad symbol, interval or missing column.
        StorageError
            When the write fails (nothing of it is stored).
        """
        symbol = normalize_symbol(symbol)
        interval_s = _check_interval(interval_s)
        missing = [
            c for c in ("open", "high", "low", "close", "volume") if c not in bars
        ]
        if "ts" not in bars and "ts_ms" not in bars:
            missing.insert(0, "ts")
        if missing:
            raise ValueError(f"bars: missing column(s) {', '.join(missing)}")
        if len(bars) == 0:
            return 0
        ts_ms = _to_epoch_ms(bars["ts_ms"] if "ts_ms" in bars else bars["ts"])
        n = len(bars)

        def col(name: str) -> list:
            if name not in bars:
                return [None] * n
            values = pd.to_numeric(bars[name], errors="coerce").astype("float64")
            return [None if v != v else v for v in values.tolist()]

        trades = [None if v is None else int(v) for v in col("trades")]
        rows = list(
            zip(
                [symbol] * n,
                [int(interval_s)] * n,
                ts_ms.tolist(),
                col("open"),
                col("high"),
                col("low"),
                col("close"),
                col("volume"),
                col("quote_volume"),
                trades,
                strict=True,
            )
        )
        with self._transaction("write_bars", timeout_ms=self._admin_timeout_ms) as conn:
            conn.executemany(_UPSERT_BAR, rows)
        return len(rows)

    def prune(self, older_than_ms: int) -> int:
        """Delete market data older than a time; return the number of rows deleted.

        Deletes ticks with ``ts_ms < older_than_ms`` and bars (1 s and coarser)
        that end at or before it (``ts_ms + interval <= older_than_ms``), so that no
        bar loses part of its trades. Gaps, alert rules and events are kept.
        Rows go oldest first in transactions of at most `PRUNE_CHUNK_ROWS`, so the
        write lock is held for moments (the ingester's batches go in between) and
        the write-ahead log stays small, however much is deleted.

        Raises
        ------
        DatabaseLockedError, StorageError
            When the database cannot be written; chunks committed before stay
            deleted and the next prune goes on from there.
        """
        cutoff = int(older_than_ms)
        with self._transaction("prune", timeout_ms=self._admin_timeout_ms) as conn:
            tick_symbols = [r[0] for r in conn.execute(_SYMBOL_SCANS["ticks"])]
            bar_symbols = [r[0] for r in conn.execute(_SYMBOL_SCANS["bars_1s"])]
        deleted = 0
        for symbol in tick_symbols:
            deleted += self._delete_chunks(_PRUNE_TICKS, (symbol, symbol, cutoff))
        for symbol in bar_symbols:
            deleted += self._delete_chunks(
                _PRUNE_BARS_1S, (symbol, symbol, cutoff - BAR_MS)
            )
        return deleted + self._delete_chunks(_PRUNE_BARS, (cutoff,))

    def _delete_chunks(self, text: str, params: tuple) -> int:
        """Run a DELETE whose last parameter is a row limit, PRUNE_CHUNK_ROWS rows
        per transaction, until a chunk comes short; return the rows deleted."""
        deleted = 0
        while True:
            with self._transaction("prune", timeout_ms=self._admin_timeout_ms) as tx:
                n = tx.execute(text, (*params, PRUNE_CHUNK_ROWS)).rowcount
            deleted += n
            if n < PRUNE_CHUNK_ROWS:
                return deleted

    def clear_market_data(self) -> None:
        """Delete ticks, 1 s bars, coarser bars, gaps, last seen ids; keep alerts."""
        with self._transaction(
            "clear_market_data", timeout_ms=self._admin_timeout_ms
        ) as conn:
            for table in ("ticks", "bars_1s", "bars", "gaps", "last_seen"):
                conn.execute(f"DELETE FROM {table}")  # fixed names, not user input

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Load a private, fresh database faster: build the time index once at the end.

        For a file no one else reads yet (an import's temporary dataset): on entry
        the ``ticks(symbol, ts_ms)`` index is dropped; on exit (also after an error,
        so the schema stays whole) it is built again in one sorted pass, which costs
        less than keeping it up to date row by row. Deduplication does not need it:
        it probes the primary key.
        """
        with self._transaction("bulk_load") as tx:
            tx.execute("DROP INDEX IF EXISTS ticks_symbol_ts")
        try:
            yield
        except BaseException:
            # keep the first error; the caller is about to discard the file anyway
            with contextlib.suppress(StorageError, sqlite3.Error):
                self._rebuild_time_index()
            raise
        self._rebuild_time_index()

    def _rebuild_time_index(self) -> None:
        with self._transaction("bulk_load") as tx:
            tx.execute(_TICKS_TIME_INDEX)

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file and truncate it."""
        conn = self._connection("checkpoint")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            raise _error("checkpoint", exc, self._path) from exc

    # ------------------------------------------------------------------ alerts

    def add_alert_rule(
        self,
        text: str,
        params_json: str,
        cooldown_s: float,
        enabled: bool = True,
        webhook_url: str | None = None,
        webhook_format: str | None = None,
    ) -> int:
        """Store an alert rule and return its id.

        Raises
        ------
        ValueError
            When `text` is empty or `cooldown_s` is negative or not finite.
        StorageError
            When the write fails.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text: an alert rule needs a condition, got {text!r}")
        cooldown = float(cooldown_s)
        if not np.isfinite(cooldown) or cooldown < 0:
            raise ValueError(
                f"cooldown_s must be a finite number >= 0, got {cooldown_s!r}"
            )
        with self._transaction(
            "add_alert_rule", timeout_ms=self._admin_timeout_ms
        ) as conn:
            cur = conn.execute(
                "INSERT INTO alert_rules(text, params_json, cooldown_s, enabled, "
                "webhook_url, webhook_format, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    text.strip(),
                    params_json,
                    cooldown,
                    1 if enabled else 0,
                    webhook_url or None,
                    webhook_format or None,
                    now_ms(),
                ),
            )
            rule_id = int(cur.lastrowid)
        return rule_id

    def set_alert_rule_enabled(self, rule_id: int, enabled: bool) -> None:
        """Enable or disable a rule.

        Raises
        ------
        ValueError
            When no rule has this id.
        """
        with self._transaction(
            "set_alert_rule_enabled", timeout_ms=self._admin_timeout_ms
        ) as conn:
            cur = conn.execute(
                "UPDATE alert_rules SET enabled = ? WHERE id = ?",
                (1 if enabled else 0, int(rule_id)),
            )
            found = cur.rowcount == 1
        if not found:
            raise ValueError(f"rule_id: no alert rule with id {rule_id!r}")

    def delete_alert_rule(self, rule_id: int) -> bool:
        """Delete a rule (its events stay as history); False when it did not exist."""
        with self._transaction(
            "delete_alert_rule", timeout_ms=self._admin_timeout_ms
        ) as conn:
            cur = conn.execute("DELETE FROM alert_rules WHERE id = ?", (int(rule_id),))
            found = cur.rowcount == 1
        return found

    def add_alert_event(
        self, rule_id: int, fired_ms: int, value: float | None, snapshot_json: str
    ) -> int:
        """Store one firing of a rule (notify_status "pending") and return its id.

        A firing of the same rule at the same `fired_ms` that is already stored is
        not stored again: its id is returned. A monitor retrying a store whose
        outcome it did not see (cancelled while the insert ran, a connection lost
        after the commit) thus never records one firing twice.
        """
        return self.add_alert_event_once(rule_id, fired_ms, value, snapshot_json)[0]

    def add_alert_event_once(
        self, rule_id: int, fired_ms: int, value: float | None, snapshot_json: str
    ) -> tuple[int, bool]:
        """`add_alert_event`, also saying whether this call stored the firing
        (False: it was stored before), in the same one transaction."""
        with self._transaction("add_alert_event") as conn:
            found = _alert_event_id(conn, rule_id, fired_ms)
            if found is not None:
                return found, False
            cur = conn.execute(
                "INSERT INTO alert_events(rule_id, fired_ms, value, snapshot_json) "
                "VALUES (?, ?, ?, ?)",
                (
                    int(rule_id),
                    int(fired_ms),
                    None if value is None else float(value),
                    snapshot_json,
                ),
            )
            event_id = int(cur.lastrowid)
        return event_id, True

    def alert_event_id(self, rule_id: int, fired_ms: int) -> int | None:
        """Id of the stored firing of `rule_id` at `fired_ms`, or None."""
        with self._transaction("alert_event_id") as conn:
            return _alert_event_id(conn, rule_id, fired_ms)

    def update_alert_event_notification(
        self, event_id: int, status: str, detail: str | None = None
    ) -> None:
        """Record how the notification of an event went (e.g. "sent", "failed")."""
        with self._transaction("update_alert_event_notification") as conn:
            conn.execute(
                "UPDATE alert_events SET notify_status = ?, notify_detail = ? "
                "WHERE id = ?",
                (status, detail, int(event_id)),
            )


def _alert_event_id(
    conn: sqlite3.Connection, rule_id: int, fired_ms: int
) -> int | None:
    """Id of the event of `rule_id` fired at `fired_ms` (index alert_events_rule)."""
    row = conn.execute(
        "SELECT id FROM alert_events WHERE rule_id = ? AND fired_ms = ?",
        (int(rule_id), int(fired_ms)),
    ).fetchone()
    return None if row is None else int(row[0])


def _to_epoch_ms(values: pd.Series) -> np.ndarray:
    """Datetimes (tz-aware, naive = UTC) or integer ms -> int64 epoch milliseconds."""
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = pd.to_datetime(values, utc=True)
        return ts.dt.as_unit("ms").astype("int64").to_numpy()
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("int64").to_numpy()
    ts = pd.to_datetime(values, utc=True)
    return ts.dt.as_unit("ms").astype("int64").to_numpy()


# --------------------------------------------------------------------------- readers

_local = threading.local()


def _reader(db_path: os.PathLike | str) -> sqlite3.Connection | None:
    """This thread's read-only connection to `db_path`, None if the file is absent.

    Cached per thread and per path; reopened when the file or its ``-wal`` was
    replaced (deleted, renamed over) since the connection was opened: a reader
    left on a replaced file's log would read the old file's pages into the new one.
    """
    key = os.path.abspath(_as_path(db_path))
    cache: dict[str, tuple[sqlite3.Connection, tuple]] | None = getattr(
        _local, "conns", None
    )
    if cache is None:
        cache = _local.conns = {}
    try:
        st = os.stat(key)
    except FileNotFoundError:
        entry = cache.pop(key, None)
        if entry is not None:
            entry[0].close()
        return None
    ident = (st.st_dev, st.st_ino, _file_id(_wal_path(key)))
    entry = cache.get(key)
    if entry is not None:
        if entry[1] == ident:
            return entry[0]
        entry[0].close()
        del cache[key]
    conn = sqlite3.connect(
        Path(key).as_uri() + "?mode=ro", uri=True, isolation_level=None
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {READER_BUSY_TIMEOUT_MS:d}")
        # readers refuse only a newer schema: a file the writer is creating may
        # show its first tables to a racing reader before its version (seen once
        # in CI); the writer alone refuses foreign files, before it migrates
        problem = _schema_problem(conn, key, foreign=False)
    except BaseException:
        conn.close()
        raise
    if problem is not None:  # else its tables would read as empty, not as wrong
        conn.close()
        raise StorageError(f"read failed: {problem}")
    cache[key] = (conn, ident)
    return conn


def close_readers() -> None:
    """Close this thread's cached read-only connections (both backends)."""
    cache = getattr(_local, "conns", None) or {}
    for conn, _ in cache.values():
        conn.close()
    cache.clear()
    backend = sys.modules.get("storage_pg")
    if backend is not None:
        backend.close_readers()


def _query(
    op: str, db_path: os.PathLike | str, sql: str, params: Sequence = ()
) -> list:
    """Rows of a read query; [] when the file or the table does not exist yet."""
    if is_postgres_url(db_path):
        return _pg().query(op, db_path, sql, params)
    try:
        conn = _reader(db_path)
        if conn is None:
            return []
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if str(exc).startswith("no such table"):
            return []
        raise _error(op, exc, db_path) from exc
    except sqlite3.Error as exc:
        raise _error(op, exc, db_path) from exc


def _query_matrix(
    op: str, db_path: os.PathLike | str, sql: str, params: Sequence, width: int
) -> np.ndarray:
    """Rows of a numeric read query as a float64 array of shape (rows, width).

    NULL becomes NaN; integers below 2**53 (ids, ms times, counts) are exact.
    The values stream from the cursor into the array (``np.fromiter``) without a
    list of row tuples in between: measured about 20% faster than ``fetchall``
    then ``np.fromiter`` or ``np.array`` (bench/bench_storage.py), whose cost is
    almost all the sqlite3 module making Python objects of the values.
    On PostgreSQL the same query runs through `storage_pg.query_matrix`.
    """
    if is_postgres_url(db_path):
        return _pg().query_matrix(op, db_path, sql, params, width)
    try:
        conn = _reader(db_path)
        if conn is None:
            return np.empty((0, width), dtype=np.float64)
        cursor = conn.execute(sql, params)
        flat = np.fromiter(itertools.chain.from_iterable(cursor), dtype=np.float64)
    except sqlite3.OperationalError as exc:
        if str(exc).startswith("no such table"):
            return np.empty((0, width), dtype=np.float64)
        raise _error(op, exc, db_path) from exc
    except sqlite3.Error as exc:
        raise _error(op, exc, db_path) from exc
    return flat.reshape(-1, width)


def _window(start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """Bounds of a [start, end) window, None meaning unbounded."""
    lo = -(2**62) if start_ms is None else int(start_ms)
    hi = 2**62 if end_ms is None else int(end_ms)
    return lo, hi


def _utc_ms(ts_ms: np.ndarray) -> pd.DatetimeIndex:
    """int64 epoch ms -> tz-aware UTC datetimes at millisecond resolution."""
    return pd.DatetimeIndex(ts_ms.astype("datetime64[ms]")).tz_localize("UTC")


def _empty_bars() -> pd.DataFrame:
    """A bar frame with no rows and the contract's dtypes."""
    frame = {c: np.empty(0, dtype=np.float64) for c in BAR_COLUMNS}
    frame["ts"] = _utc_ms(np.empty(0, dtype=np.int64))
    frame["trades"] = np.empty(0, dtype=np.int64)
    return pd.DataFrame(frame, columns=list(BAR_COLUMNS))


def _bars_frame(arr: np.ndarray) -> pd.DataFrame:
    """Rows (ts_ms, open, high, low, close, volume, quote_volume, trades) -> bars.

    `arr` is float64 of shape (rows, 8) from `_query_matrix`. ``vwap =
    quote_volume / volume`` is computed here (NaN where volume is 0 or quote volume
    unknown): one column less to fetch, the same division SQLite does.
    """
    if not len(arr):
        return _empty_bars()
    ts, o, h, lo, c, v, qv, n = np.ascontiguousarray(arr.T)
    return pd.DataFrame(
        {
            "ts": _utc_ms(ts.astype(np.int64)),
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": v,
            "quote_volume": qv,
            "trades": np.nan_to_num(n).astype(np.int64),
            "vwap": np.divide(qv, v, out=np.full(len(v), np.nan), where=v > 0),
        },
        columns=list(BAR_COLUMNS),
    )


def read_bars_1s(
    db_path: os.PathLike | str,
    symbol: str,
    start_ms: int | None,
    end_ms: int | None,
) -> pd.DataFrame:
    """1 s bars of one symbol with bucket start in ``[start_ms, end_ms)``.

    Reads through the primary key (symbol, ts_ms): the cost is the rows in the
    window, not in the table. None for a bound means unbounded.

    Returns
    -------
    pandas.DataFrame
        Columns `models.BAR_COLUMNS`, ``ts`` datetime64[ms, UTC], sorted by ts;
        empty (same columns) when the file, the table or the rows do not exist.

    Raises
    ------
    ValueError
        When the symbol is not valid.
    StorageError
        When the read fails.
    """
    lo, hi = _window(start_ms, end_ms)
    rows = _query_matrix(
        "read_bars_1s",
        db_path,
        "SELECT ts_ms, open, high, low, close, volume, quote_volume, trades "
        "FROM bars_1s WHERE symbol = ? AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms",
        (normalize_symbol(symbol), lo, hi),
        8,
    )
    return _bars_frame(rows)


def _check_interval(interval_s: int) -> int:
    """Validate a bar interval in seconds (integer >= 1)."""
    if isinstance(interval_s, bool) or not isinstance(interval_s, int | np.integer):
        raise ValueError(f"interval_s must be an integer >= 1, got {interval_s!r}")
    if interval_s < 1:
        raise ValueError(f"interval_s must be an integer >= 1, got {interval_s!r}")
    return int(interval_s)


def read_bars_agg(
    db_path: os.PathLike | str,
    symbol: str,
    interval_s: int,
    start_ms: int | None,
    end_ms: int | None,
) -> pd.DataFrame:
    """1 s bars aggregated into `interval_s` buckets inside SQLite.

    Buckets are aligned to the epoch: ``bucket = floor(ts_ms / (1000 * interval_s))
    * 1000 * interval_s``; only 1 s bars in ``[start_ms, end_ms)`` count, so give
    an aligned `start_ms` to avoid a partial first bucket.

    Returns
    -------
    pandas.DataFrame
        `models.BAR_COLUMNS`, one row per non-empty bucket: open of the earliest
        1 s bar, close of the latest, max high, min low, summed volume,
        quote_volume and trades, ``vwap = quote_volume / volume``.

    Raises
    ------
    ValueError
        On a bad symbol or interval.
    StorageError
        When the read fails.
    """
    width = _check_interval(interval_s) * BAR_MS
    symbol = normalize_symbol(symbol)
    if width == BAR_MS:
        return read_bars_1s(db_path, symbol, start_ms, end_ms)
    lo, hi = _window(start_ms, end_ms)
    rows = _query_matrix(
        "read_bars_agg",
        db_path,
        """
        WITH g AS (
            SELECT (ts_ms / ?) * ? AS bucket, min(ts_ms) AS t_open,
                   max(ts_ms) AS t_close, max(high) AS high, min(low) AS low,
                   sum(volume) AS volume, sum(quote_volume) AS quote_volume,
                   sum(trades) AS trades
            FROM bars_1s WHERE symbol = ? AND ts_ms >= ? AND ts_ms < ?
            GROUP BY bucket
        )
        SELECT g.bucket, o.open, g.high, g.low, c.close, g.volume, g.quote_volume,
               g.trades
        FROM g
        JOIN bars_1s AS o ON o.symbol = ? AND o.ts_ms = g.t_open
        JOIN bars_1s AS c ON c.symbol = ? AND c.ts_ms = g.t_close
        ORDER BY g.bucket
        """,
        (width, width, symbol, lo, hi, symbol, symbol),
        8,
    )
    return _bars_frame(rows)


def read_bars(
    db_path: os.PathLike | str,
    symbol: str,
    interval_s: int,
    start_ms: int | None,
    end_ms: int | None,
) -> pd.DataFrame:
    """Stored coarser bars (table ``bars``) of one symbol and interval in a window.

    Returns
    -------
    pandas.DataFrame
        `models.BAR_COLUMNS` with ``ts`` in ``[start_ms, end_ms)``;
        ``vwap = quote_volume / volume`` (NaN when quote volume is unknown),
        ``trades`` 0 when unknown.

    Raises
    ------
    ValueError
        On a bad symbol or interval.
    StorageError
        When the read fails.
    """
    width = _check_interval(interval_s)
    lo, hi = _window(start_ms, end_ms)
    rows = _query_matrix(
        "read_bars",
        db_path,
        "SELECT ts_ms, open, high, low, close, volume, quote_volume, trades "
        "FROM bars "
        "WHERE symbol = ? AND interval_s = ? AND ts_ms >= ? AND ts_ms < ? "
        "ORDER BY ts_ms",
        (normalize_symbol(symbol), width, lo, hi),
        8,
    )
    return _bars_frame(rows)


def list_bar_intervals(db_path: os.PathLike | str, symbol: str) -> list[int]:
    """Intervals (seconds) for which coarser bars of `symbol` are stored, ascending."""
    rows = _query(
        "list_bar_intervals",
        db_path,
        "SELECT DISTINCT interval_s FROM bars WHERE symbol = ? ORDER BY interval_s",
        (normalize_symbol(symbol),),
    )
    return [int(r[0]) for r in rows]


def read_ticks(
    db_path: os.PathLike | str,
    symbol: str,
    start_ms: int | None,
    end_ms: int | None,
    *,
    limit: int | None = None,
) -> pd.DataFrame:
    """Ticks of one symbol with trade time in ``[start_ms, end_ms)``, oldest first.

    Parameters
    ----------
    limit : when given, only the newest `limit` ticks of the window.

    Returns
    -------
    pandas.DataFrame
        Columns ``ts`` (datetime64[ms, UTC]), ``trade_id`` (int64), ``price``,
        ``qty`` (float64), ``is_buyer_maker`` (bool), sorted by (ts, trade_id).

    Raises
    ------
    ValueError
        On a bad symbol or a negative limit.
    StorageError
        When the read fails.
    """
    lo, hi = _window(start_ms, end_ms)
    sql = (
        "SELECT ts_ms, trade_id, price, qty, is_buyer_maker FROM ticks "
        "WHERE symbol = ? AND ts_ms >= ? AND ts_ms < ? "
    )
    params: tuple = (normalize_symbol(symbol), lo, hi)
    if limit is None:
        arr = _query_matrix(
            "read_ticks", db_path, sql + "ORDER BY ts_ms, trade_id", params, 5
        )
    else:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an integer >= 0 or None, got {limit!r}")
        arr = _query_matrix(
            "read_ticks",
            db_path,
            sql + "ORDER BY ts_ms DESC, trade_id DESC LIMIT ?",
            (*params, limit),
            5,
        )[::-1]
    # ids and ms times are < 2**53, so the float64 round trip is exact.
    ts, tid, price, qty, maker = np.ascontiguousarray(arr.T)
    return pd.DataFrame(
        {
            "ts": _utc_ms(ts.astype(np.int64)),
            "trade_id": tid.astype(np.int64),
            "price": price,
            "qty": qty,
            "is_buyer_maker": maker != 0,
        }
    )


def last_tick(db_path: os.PathLike | str, symbol: str) -> Tick | None:
    """The stored tick with the highest trade id of `symbol`, None if there is none."""
    sym = normalize_symbol(symbol)
    rows = _query(
        "last_tick",
        db_path,
        "SELECT trade_id, ts_ms, price, qty, is_buyer_maker FROM ticks "
        "WHERE symbol = ? ORDER BY trade_id DESC LIMIT 1",
        (sym,),
    )
    if not rows:
        return None
    tid, ts, price, qty, maker = rows[0]
    return Tick(sym, int(tid), int(ts), float(price), float(qty), bool(maker))


def list_symbols(db_path: os.PathLike | str) -> list[str]:
    """Symbols with ticks, 1 s bars or coarser bars, sorted."""
    found: set[str] = set()
    for table, sql in _SYMBOL_SCANS.items():
        found.update(r[0] for r in _query(f"list_symbols ({table})", db_path, sql))
    return sorted(found)


@dataclass(frozen=True, slots=True)
class DataSpan:
    """Time span of a symbol's stored market data.

    Attributes
    ----------
    first_ms : start of the earliest 1 s bar (else coarser bar), ms since the epoch.
    last_ms : start of the latest 1 s bar (else coarser bar), ms since the epoch.
    """

    first_ms: int
    last_ms: int


def data_span(db_path: os.PathLike | str, symbol: str) -> DataSpan | None:
    """First and last bar start of `symbol` (1 s bars, else coarser), or None.

    Two primary-key lookups per table: cheap enough for every refresh.
    """
    sym = normalize_symbol(symbol)
    for table in ("bars_1s", "bars"):
        rows = _query(
            "data_span",
            db_path,
            f"SELECT (SELECT min(ts_ms) FROM {table} WHERE symbol = ?), "  # fixed name
            f"(SELECT max(ts_ms) FROM {table} WHERE symbol = ?)",
            (sym, sym),
        )
        if rows and rows[0][0] is not None:
            return DataSpan(first_ms=int(rows[0][0]), last_ms=int(rows[0][1]))
    return None


def db_bytes(db_path: os.PathLike | str) -> int:
    """Size of the database file plus its WAL, 0 for files that do not exist.

    On PostgreSQL: the on-disk size of the schema's tables and indexes (one
    catalog query: cheap enough for a status bar, unlike `db_stats`).
    """
    if is_postgres_url(db_path):
        return _pg().file_bytes(db_path)
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(os.fspath(_as_path(db_path)) + suffix).st_size
        except FileNotFoundError:
            pass
    return total


def db_stats(db_path: os.PathLike | str) -> DbStats:
    """File size, per-symbol row counts and time spans, and the number of gaps.

    Counting costs one pass over each symbol's index entries; first/last times are
    index lookups.
    """
    stats = []
    for symbol in list_symbols(db_path):
        n_ticks, t0, t1 = _query(
            "db_stats",
            db_path,
            "SELECT count(*), min(ts_ms), max(ts_ms) FROM ticks WHERE symbol = ?",
            (symbol,),
        )[0] or (0, None, None)
        n_1s, b0, b1 = _query(
            "db_stats",
            db_path,
            "SELECT count(*), min(ts_ms), max(ts_ms) + 999 FROM bars_1s "
            "WHERE symbol = ?",
            (symbol,),
        )[0] or (0, None, None)
        n_bars, c0, c1 = _query(
            "db_stats",
            db_path,
            "SELECT count(*), min(ts_ms), max(ts_ms + interval_s * 1000 - 1) FROM bars "
            "WHERE symbol = ?",
            (symbol,),
        )[0] or (0, None, None)
        firsts = [v for v in (t0, b0, c0) if v is not None]
        lasts = [v for v in (t1, b1, c1) if v is not None]
        stats.append(
            SymbolStats(
                symbol=symbol,
                ticks=int(n_ticks),
                bars_1s=int(n_1s),
                first_ms=int(t0 if t0 is not None else min(firsts)) if firsts else None,
                last_ms=int(t1 if t1 is not None else max(lasts)) if lasts else None,
                bars=int(n_bars),
            )
        )
    gap_rows = _query("db_stats", db_path, "SELECT count(*) FROM gaps")
    return DbStats(
        file_bytes=db_bytes(db_path),
        symbols=tuple(stats),
        gaps=int(gap_rows[0][0]) if gap_rows else 0,
    )


def read_gaps(db_path: os.PathLike | str, symbol: str | None = None) -> pd.DataFrame:
    """Gap rows, sorted: ``symbol, from_id, to_id, missing, detected_ms`` and how
    each was filled (``filled_by``, ``filled_ms``, ``fill_detail``; None while open).
    """
    sql = (
        "SELECT symbol, from_id, to_id, detected_ms, filled_by, filled_ms, fill_detail "
        "FROM gaps"
    )
    params: tuple = ()
    if symbol is not None:
        sql += " WHERE symbol = ?"
        params = (normalize_symbol(symbol),)
    rows = _query("read_gaps", db_path, sql + " ORDER BY symbol, from_id", params)
    frame = pd.DataFrame(
        {
            "symbol": pd.Series([r[0] for r in rows], dtype=object),
            "from_id": np.array([r[1] for r in rows], dtype=np.int64),
            "to_id": np.array([r[2] for r in rows], dtype=np.int64),
            "detected_ms": np.array([r[3] for r in rows], dtype=np.int64),
            "filled_by": pd.Series([r[4] for r in rows], dtype=object),
            "filled_ms": pd.Series([r[5] for r in rows], dtype="Int64"),
            "fill_detail": pd.Series([r[6] for r in rows], dtype=object),
        }
    )
    frame.insert(3, "missing", frame["to_id"] - frame["from_id"] + 1)
    return frame


def read_lease_state(db_path: os.PathLike | str) -> LeaseState:
    """The current lease holder and heartbeat (``acquired`` is always False here)."""
    rows = _query(
        "read_lease",
        db_path,
        "SELECT pid, host, since_ms, heartbeat_ms FROM writer_lease WHERE id = 1",
    )
    if not rows:
        return LeaseState(acquired=False, holder=None, heartbeat_ms=None)
    pid, host, since, beat = rows[0]
    return LeaseState(
        acquired=False,
        holder=LeaseOwner(pid=int(pid), host=host, since_ms=int(since)),
        heartbeat_ms=int(beat),
    )


def read_lease(db_path: os.PathLike | str) -> LeaseOwner | None:
    """The current writer-lease holder, None when the lease is free."""
    return read_lease_state(db_path).holder


def list_alert_rules(db_path: os.PathLike | str) -> list[AlertRuleRow]:
    """All stored alert rules, by id."""
    rows = _query(
        "list_alert_rules",
        db_path,
        "SELECT id, text, params_json, cooldown_s, enabled, webhook_url, "
        "webhook_format, created_ms FROM alert_rules ORDER BY id",
    )
    return [
        AlertRuleRow(
            id=int(r[0]),
            text=r[1],
            params_json=r[2],
            cooldown_s=float(r[3]),
            enabled=bool(r[4]),
            webhook_url=r[5],
            webhook_format=r[6],
            created_ms=int(r[7]),
        )
        for r in rows
    ]


def list_alert_events(
    db_path: os.PathLike | str,
    *,
    rule_id: int | None = None,
    since_ms: int | None = None,
    limit: int = 1000,
) -> pd.DataFrame:
    """Alert events, newest first.

    Returns
    -------
    pandas.DataFrame
        Columns ``id, rule_id, rule_text`` (None once the rule is deleted),
        ``fired_ms, fired`` (datetime64[ms, UTC]), ``value, snapshot_json,
        notify_status, notify_detail``; at most `limit` rows with
        ``fired_ms >= since_ms``.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer >= 0, got {limit!r}")
    where = []
    params: list = []
    if rule_id is not None:
        where.append("e.rule_id = ?")
        params.append(int(rule_id))
    if since_ms is not None:
        where.append("e.fired_ms >= ?")
        params.append(int(since_ms))
    sql = (
        "SELECT e.id, e.rule_id, r.text, e.fired_ms, e.value, e.snapshot_json, "
        "e.notify_status, e.notify_detail FROM alert_events AS e "
        "LEFT JOIN alert_rules AS r ON r.id = e.rule_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY e.fired_ms DESC, e.id DESC LIMIT ?"
    )
    rows = _query("list_alert_events", db_path, sql, (*params, limit))
    cols = list(zip(*rows, strict=True)) if rows else [()] * 8
    fired = np.array(cols[3], dtype=np.int64)
    return pd.DataFrame(
        {
            "id": np.array(cols[0], dtype=np.int64),
            "rule_id": np.array(cols[1], dtype=np.int64),
            "rule_text": pd.Series(cols[2], dtype=object),
            "fired_ms": fired,
            "fired": _utc_ms(fired),
            "value": np.array(cols[4], dtype=np.float64),
            "snapshot_json": pd.Series(cols[5], dtype=object),
            "notify_status": pd.Series(cols[6], dtype=object),
            "notify_detail": pd.Series(cols[7], dtype=object),
        },
        columns=list(EVENT_COLUMNS),
    )


# --------------------------------------------------------------------------- datasets


def _check_dataset_name(name: str, what: str = "name") -> str:
    """Validate a dataset name against ``^[A-Za-z0-9_-]{1,64}$``."""
    if not isinstance(name, str) or not DATASET_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{what}: a dataset name is 1-64 letters, digits, '_' or '-', got {name!r}"
        )
    return name


def dataset_db_path(base_dir: os.PathLike | str, name: str) -> Path:
    """Database file of a named dataset: ``BASE_DIR/datasets/NAME.db``.

    When `base_dir` is a PostgreSQL URL: the dataset's own schema in that database,
    as a URL (``...?dataset=NAME``, a ``str``).

    Raises
    ------
    ValueError
        When `name` does not match ``^[A-Za-z0-9_-]{1,64}$``.
    """
    if is_postgres_url(base_dir):
        return _pg().dataset_url(base_dir, name)
    return Path(base_dir) / DATASETS_DIRNAME / f"{_check_dataset_name(name)}.db"


def dataset_target(db: os.PathLike | str, name: str) -> Path | str:
    """Where dataset `name` of the live database setting `db` lives.

    SQLite: ``dataset_db_path(dirname(db), name)`` (a file beside the live one);
    PostgreSQL: the dataset's schema in the same database (a URL).
    """
    if is_postgres_url(db):
        return _pg().dataset_url(db, name)
    return dataset_db_path(_as_path(db).parent, name)


def datasets_base(db: os.PathLike | str) -> Path | str:
    """The `base_dir` argument of the dataset functions for live setting `db`."""
    return db if is_postgres_url(db) else _as_path(db).parent


def list_datasets(base_dir: os.PathLike | str) -> list[str]:
    """Names of the datasets under ``BASE_DIR/datasets``, sorted.

    When `base_dir` is a PostgreSQL URL: the dataset schemas of that database.
    """
    if is_postgres_url(base_dir):
        return _pg().list_datasets(base_dir)
    folder = Path(base_dir) / DATASETS_DIRNAME
    if not folder.is_dir():
        return []
    return sorted(
        p.stem
        for p in folder.glob("*.db")
        if p.is_file() and DATASET_NAME_PATTERN.fullmatch(p.stem)
    )


def _dataset_files(path: Path) -> list[Path]:
    """The database file and its -wal/-shm companions."""
    return [
        path,
        path.with_name(path.name + "-wal"),
        path.with_name(path.name + "-shm"),
    ]


def delete_dataset(base_dir: os.PathLike | str, name: str) -> bool:
    """Delete a dataset's database file(s); False when it did not exist.

    Close any `Writer` on it first. Readers notice the file is gone. When
    `base_dir` is a PostgreSQL URL, the dataset's schema is dropped.
    """
    if is_postgres_url(base_dir):
        return _pg().delete_dataset(base_dir, name)
    path = dataset_db_path(base_dir, name)
    existed = path.exists()
    close_readers()
    try:
        for file in _dataset_files(path):
            file.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"delete_dataset failed: {exc}") from exc
    return existed


def rename_dataset(base_dir: os.PathLike | str, old: str, new: str) -> Path:
    """Rename a dataset (close any `Writer` on it first); return the new path.

    Raises
    ------
    ValueError
        When a name is invalid, `old` does not exist or `new` already exists.
    StorageError
        When the files cannot be renamed.

    When `base_dir` is a PostgreSQL URL the schema is renamed and the new dataset
    URL returned.
    """
    if is_postgres_url(base_dir):
        return _pg().rename_dataset(base_dir, old, new)
    src = dataset_db_path(base_dir, _check_dataset_name(old, "old"))
    dst = dataset_db_path(base_dir, _check_dataset_name(new, "new"))
    if not src.exists():
        raise ValueError(f"old: no dataset named {old!r}")
    if dst.exists():
        raise ValueError(f"new: a dataset named {new!r} already exists")
    close_readers()
    try:
        conn = sqlite3.connect(src, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.close()
        for a, b in zip(_dataset_files(src), _dataset_files(dst), strict=True):
            if a.exists():
                a.rename(b)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"rename_dataset failed: {exc}") from exc
    return dst


def copy_dataset(base_dir: os.PathLike | str, name: str, db_file: Path) -> bool:
    """Copy dataset `name` into the new SQLite file `db_file`; False if none exists.

    The first half of changing a dataset atomically: change the copy, then
    `install_dataset` it. On PostgreSQL the dataset's schema is read out into
    the file (``storage_pg.copy_to_sqlite``).
    """
    if is_postgres_url(base_dir):
        if name not in list_datasets(base_dir):
            return False
        _pg().copy_to_sqlite(dataset_db_path(base_dir, name), db_file)
        return True
    src = dataset_db_path(base_dir, name)
    if not src.exists():
        return False
    try:
        pairs = zip(_dataset_files(src)[:2], _dataset_files(db_file)[:2], strict=True)
        for a, b in pairs:
            if a.exists():  # the database and its WAL: together they are the data
                shutil.copyfile(a, b)
    except OSError as exc:
        raise StorageError(f"copy_dataset failed: {exc}") from exc
    return True


def install_dataset(
    base_dir: os.PathLike | str, name: str, db_file: Path
) -> Path | str:
    """Make the SQLite file `db_file` dataset `name`, replacing any old one at once.

    SQLite: the file is renamed over ``BASE_DIR/datasets/NAME.db`` (checkpoint and
    close its writer first; `db_file` must be on the same filesystem). PostgreSQL:
    the file is copied into a staging schema, verified (row counts and bars
    checksum) and swapped in by one transaction; `db_file` is left to the caller.
    Readers see the old dataset or the new one, never a part. Returns where the
    dataset now lives.
    """
    if is_postgres_url(base_dir):
        return _pg().install_dataset(base_dir, name, db_file)
    target = dataset_db_path(base_dir, name)
    close_readers()
    try:
        for companion in _dataset_files(target)[1:]:
            companion.unlink(missing_ok=True)
        os.replace(db_file, target)
    except OSError as exc:
        raise StorageError(f"install_dataset failed: {exc}") from exc
    return target
