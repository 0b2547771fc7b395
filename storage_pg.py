"""PostgreSQL backend of `storage`: the same tables, semantics and readers on a server.

Chosen by the database setting: ``postgresql://USER[:PASSWORD]@HOST:PORT/DBNAME``
(psycopg 3). Query parameters ``schema=NAME`` (default ``public``) or
``dataset=NAME`` (a dataset's own schema) pick the schema; any other parameter
(``sslmode``, ``connect_timeout``...) goes to libpq. Nothing above `storage` changes:
``storage.Writer(url)`` returns a `PgWriter` and every ``storage.read_*`` function
runs its SQL here when given a URL.

Schema (as in `storage`, with PostgreSQL types):

- ``ticks`` is range-partitioned by day on ``ts_ms`` (``ticks_pYYYYMMDD``, created on
  demand inside the batch's transaction, the next day's with it); primary key
  ``(symbol, trade_id, ts_ms)``, since PostgreSQL needs the partition key inside it.
  A trade's time never changes, so deduplication by (symbol, trade_id) is the same
  as on SQLite; the stored-id probe of a batch is bounded by the batch's time range,
  which prunes it to the one or two partitions the batch touches.
  A write creates partitions for at most ``MAX_NEW_DAYS_PER_BATCH`` (3) days that
  lack one (those with the most rows, then the newest); rows of any further day
  go to the DEFAULT partition ``ticks_default`` and move to their day's partition
  when a later write creates it. So a batch of trades spread over thousands of
  days (garbage times) cannot create thousands of partitions in one transaction
  (each is a lock: "out of shared memory"). Migration creates every day it copies,
  ``MAX_NEW_DAYS_PER_BATCH`` days per transaction; `PgWriter.prune` drops one
  partition per transaction.
- ``bars_1s``, ``bars``, ``gaps`` (with how each was filled), ``last_seen``,
  ``writer_lease``, ``alert_rules``, ``alert_events`` and ``schema_version``.

Writes: ticks go in with binary ``COPY``, the batch's 1 s bars with one
``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE``, in one transaction.
A lock wait longer than ``busy_timeout_ms`` (``lock_timeout``) raises
`storage.DatabaseLockedError`; a server that cannot be reached raises
`storage.StorageError` naming host and port (the writer reconnects on the next call).

Writer lease: a session-level advisory lock (``pg_try_advisory_lock``) held on a
dedicated connection, plus the ``writer_lease`` row for display (pid, host, since,
heartbeat). The server frees the lock the moment the holder's session ends (a killed
process), so at most one writer exists per schema; a holder that is alive but stale
(no heartbeat for ``stale_after_ms``) has its session terminated on takeover.

Readers: one connection per thread and target, read-only, autocommit; numeric
window reads stream through binary ``COPY (SELECT ...) TO STDOUT`` straight into a
numpy array.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import socket
import sqlite3
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import numpy as np
import psycopg
from psycopg import errors, sql

import storage
from models import Tick
from storage import (
    BAR_MS,
    DATASET_NAME_PATTERN,
    DEFAULT_ADMIN_TIMEOUT_MS,
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_STALE_AFTER_MS,
    DatabaseLockedError,
    LeaseOwner,
    LeaseState,
    StorageError,
    Writer,
    is_postgres_url,
    now_ms,
)

DAY_MS = 86_400_000
DEFAULT_CONNECT_TIMEOUT_S = 5
DEFAULT_PORT = 5432
DEFAULT_SCHEMA = "public"
DATASET_SCHEMA_PREFIX = "ds_"
DATASET_COMMENT_PREFIX = "dataset:"
LEASE_LOCK_CLASS = 0x5041_4952  # "PAIR": first key of the writer-lease advisory lock
MIGRATE_LOCK_CLASS = 0x5041_4953  # serialises schema migrations per schema
SCHEMA_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
MIGRATION_CHUNK_ROWS = 50_000
# A write creates day partitions of ``ticks`` for at most this many days that lack
# one (each with the day after it); rows of further days go to DEFAULT_PARTITION.
MAX_NEW_DAYS_PER_BATCH = 3
DEFAULT_PARTITION = "ticks_default"

_OUR_PARAMS = ("schema", "dataset")


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class PgTarget:
    """A parsed PostgreSQL database setting.

    Attributes
    ----------
    url : canonical URL (``postgresql://...``, with ``schema``/``dataset``).
    conninfo : URL handed to libpq (without ``schema``/``dataset``).
    host, port, dbname, user : where it points (for messages; host "localhost"
        when the URL names none).
    schema : schema holding the tables.
    dataset : dataset name when the target is a dataset, else None.
    """

    url: str
    conninfo: str
    host: str
    port: int
    dbname: str
    user: str
    schema: str
    dataset: str | None

    @property
    def where(self) -> str:
        """``HOST:PORT/DBNAME schema S`` for messages (never the password)."""
        return f"{self.host}:{self.port}/{self.dbname} schema {self.schema}"


def dataset_schema(name: str) -> str:
    """Schema of dataset `name`: ``ds_NAME`` (names over 60 characters are hashed)."""
    storage._check_dataset_name(name)
    if len(name) <= 60:
        return DATASET_SCHEMA_PREFIX + name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{DATASET_SCHEMA_PREFIX}{name[:50]}_{digest}"


def parse_target(target: object) -> PgTarget:
    """Parse a PostgreSQL URL (see the module docstring).

    Raises
    ------
    ValueError
        When it is not a PostgreSQL URL, names no database, or has a bad
        ``schema``/``dataset``/port.
    """
    text = str(target)
    m = storage._PG_URL.match(text)
    if m is None:
        raise ValueError(
            f"database: expected postgresql://user@host:port/dbname, got {text!r}"
        )
    text = "postgresql://" + text[m.end() :]
    parts = urlsplit(text)
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ValueError(
            f"database: the URL names no database (postgresql://user@host:port/"
            f"DBNAME), got {_mask(text)!r}"
        )
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"database: bad port in {_mask(text)!r}: {exc}") from exc
    params = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in params if k in _OUR_PARAMS}
    rest = [(k, v) for k, v in params if k not in _OUR_PARAMS]
    if "connect_timeout" not in dict(rest):
        rest.append(("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT_S)))
    if "schema" in ours and "dataset" in ours:
        raise ValueError("database: give schema= or dataset=, not both")
    dataset = ours.get("dataset")
    if dataset is not None:
        schema = dataset_schema(dataset)
    else:
        schema = ours.get("schema", DEFAULT_SCHEMA)
        if not SCHEMA_NAME_PATTERN.fullmatch(schema):
            raise ValueError(
                "database: schema= must be 1-63 letters, digits, '_' or '-' "
                f"starting with a letter or '_', got {schema!r}"
            )
    netloc = parts.netloc
    base = f"postgresql://{netloc}/{quote(dbname)}"
    conninfo = base + "?" + urlencode(rest)
    shown = [(k, v) for k, v in (*sorted(ours.items()),)]
    url = base + ("?" + urlencode(shown) if shown else "")
    return PgTarget(
        url=url,
        conninfo=conninfo,
        host=parts.hostname or "localhost",
        port=port,
        dbname=dbname,
        user=unquote(parts.username or ""),
        schema=schema,
        dataset=dataset,
    )


def _mask(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    return storage.display_target(url)


def dataset_url(base: object, name: str) -> str:
    """URL of dataset `name` in the database of `base` (a PostgreSQL URL)."""
    t = parse_target(base)
    storage._check_dataset_name(name)
    return t.url.split("?", 1)[0] + "?" + urlencode([("dataset", name)])


# --------------------------------------------------------------------------- errors


_TRANSIENT = (
    errors.LockNotAvailable,
    errors.DeadlockDetected,
    errors.SerializationFailure,
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _error(
    op: str, exc: BaseException, t: PgTarget, conn: psycopg.Connection | None = None
) -> StorageError:
    """Map a psycopg error to DatabaseLockedError (lock waits) or StorageError."""
    if isinstance(exc, _TRANSIENT):
        return DatabaseLockedError(
            f"{op} failed: database is locked by another connection ({t.where}); "
            "the transaction was rolled back, retry it"
        )
    lost = conn is not None and (conn.closed or conn.broken)
    if lost or (
        isinstance(exc, psycopg.OperationalError)
        and getattr(exc, "sqlstate", None) in (None, "57P01", "57P02", "57P03")
    ):
        return StorageError(
            f"{op} failed: cannot reach PostgreSQL at {t.host}:{t.port} "
            f"(database {t.dbname}): {_first_line(exc)}"
        )
    state = getattr(exc, "sqlstate", None) or type(exc).__name__
    return StorageError(f"{op} failed: {_first_line(exc)} [{state}] ({t.where})")


def connect(
    t: PgTarget, op: str, *, read_only: bool = False, lock_timeout_ms: int | None = None
) -> psycopg.Connection:
    """An autocommit connection to `t` with ``search_path`` set to its schema.

    Raises
    ------
    StorageError
        "OP failed: cannot reach PostgreSQL at HOST:PORT (database D): REASON",
        or "refused by PostgreSQL at ..." when the server answered (no such
        database, role, or a wrong password).
    """
    try:
        conn = psycopg.connect(t.conninfo, autocommit=True)
    except psycopg.Error as exc:
        reason = _first_line(exc)
        # "FATAL:" is the server's own answer (no such database, role or
        # password): it was reached, so do not send the user looking for it
        status = "refused by" if "FATAL:" in reason else "cannot reach"
        raise StorageError(
            f"{op} failed: {status} PostgreSQL at {t.host}:{t.port} "
            f"(database {t.dbname}): {reason}"
        ) from exc
    try:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(t.schema)))
        if lock_timeout_ms is not None:
            conn.execute(f"SET lock_timeout = {max(1, int(lock_timeout_ms)):d}")
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
    except psycopg.Error as exc:
        conn.close()
        raise _error(op, exc, t) from exc
    return conn


# --------------------------------------------------------------------------- schema

_SCHEMA_1 = """
CREATE TABLE ticks (
    symbol TEXT COLLATE "C" NOT NULL,
    trade_id BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    price DOUBLE PRECISION NOT NULL,
    qty DOUBLE PRECISION NOT NULL,
    is_buyer_maker SMALLINT NOT NULL,
    PRIMARY KEY (symbol, trade_id, ts_ms)
) PARTITION BY RANGE (ts_ms);
CREATE INDEX ticks_symbol_ts ON ticks (symbol, ts_ms);
CREATE TABLE bars_1s (
    symbol TEXT COLLATE "C" NOT NULL,
    ts_ms BIGINT NOT NULL,
    open DOUBLE PRECISION NOT NULL,
    high DOUBLE PRECISION NOT NULL,
    low DOUBLE PRECISION NOT NULL,
    close DOUBLE PRECISION NOT NULL,
    volume DOUBLE PRECISION NOT NULL,
    quote_volume DOUBLE PRECISION NOT NULL,
    trades BIGINT NOT NULL,
    vwap DOUBLE PRECISION,
    first_id BIGINT NOT NULL,
    last_id BIGINT NOT NULL,
    PRIMARY KEY (symbol, ts_ms)
);
CREATE TABLE bars (
    symbol TEXT COLLATE "C" NOT NULL,
    interval_s INTEGER NOT NULL,
    ts_ms BIGINT NOT NULL,
    open DOUBLE PRECISION NOT NULL,
    high DOUBLE PRECISION NOT NULL,
    low DOUBLE PRECISION NOT NULL,
    close DOUBLE PRECISION NOT NULL,
    volume DOUBLE PRECISION NOT NULL,
    quote_volume DOUBLE PRECISION,
    trades BIGINT,
    PRIMARY KEY (symbol, interval_s, ts_ms)
);
CREATE TABLE gaps (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    symbol TEXT COLLATE "C" NOT NULL,
    from_id BIGINT NOT NULL,
    to_id BIGINT NOT NULL,
    detected_ms BIGINT NOT NULL,
    filled_by TEXT,
    filled_ms BIGINT,
    fill_detail TEXT,
    UNIQUE (symbol, from_id, to_id)
);
CREATE TABLE writer_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid BIGINT NOT NULL,
    host TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);
CREATE TABLE alert_rules (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    text TEXT NOT NULL,
    params_json TEXT NOT NULL,
    cooldown_s DOUBLE PRECISION NOT NULL,
    enabled SMALLINT NOT NULL,
    webhook_url TEXT,
    webhook_format TEXT,
    created_ms BIGINT NOT NULL
);
CREATE TABLE alert_events (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    rule_id BIGINT NOT NULL,
    fired_ms BIGINT NOT NULL,
    value DOUBLE PRECISION,
    snapshot_json TEXT,
    notify_status TEXT NOT NULL DEFAULT 'pending',
    notify_detail TEXT
);
CREATE INDEX alert_events_fired ON alert_events (fired_ms);
CREATE INDEX alert_events_rule ON alert_events (rule_id, fired_ms);
CREATE TABLE last_seen (
    symbol TEXT COLLATE "C" PRIMARY KEY,
    trade_id BIGINT NOT NULL
)
"""


def _pg_migration_1(conn: psycopg.Connection) -> None:
    """The schema of SQLite version 3 (ticks partitioned by day)."""
    conn.execute(_SCHEMA_1)  # no parameters: one simple-query round trip


def _pg_migration_2(conn: psycopg.Connection) -> None:
    """The DEFAULT partition of ``ticks``, for rows of days without a partition."""
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF ticks DEFAULT").format(
            sql.Identifier(DEFAULT_PARTITION)
        )
    )


# Applied in order, one transaction each; step i moves schema_version from i to
# i + 1. Never edit a released step: append one.
MIGRATIONS: tuple[Callable[[psycopg.Connection], None], ...] = (
    _pg_migration_1,
    _pg_migration_2,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _schema_key(schema: str) -> int:
    """A signed 32-bit key of a schema name (second advisory-lock key)."""
    value = zlib.crc32(schema.encode())
    return value - 2**32 if value >= 2**31 else value


def _migrate(conn: psycopg.Connection, t: PgTarget) -> None:
    """Create the schema if needed and apply pending migrations, one transaction each.

    Serialised across processes by a transaction-level advisory lock.
    """
    ident = sql.Identifier(t.schema)
    while True:
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                (MIGRATE_LOCK_CLASS, _schema_key(t.schema)),
            )
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            if t.dataset is not None:
                conn.execute(
                    sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
                        ident, sql.Literal(DATASET_COMMENT_PREFIX + t.dataset)
                    )
                )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
            )
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"open failed: database schema version {version} is newer than "
                    f"this program's {SCHEMA_VERSION} ({t.where})"
                )
            if version == SCHEMA_VERSION:
                return
            MIGRATIONS[version](conn)
            conn.execute(
                "INSERT INTO schema_version(id, version) VALUES (1, %s) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (version + 1,),
            )


def _partition_name(day: int) -> str:
    """``ticks_pYYYYMMDD`` of day number `day` (days since the epoch, UTC)."""
    return "ticks_p" + time.strftime("%Y%m%d", time.gmtime(day * 86_400))


def _day_of_partition(name: str) -> int | None:
    """Day number of a ``ticks_pYYYYMMDD`` partition name, None for other names."""
    m = re.fullmatch(r"ticks_p(\d{8})", name)
    if m is None:
        return None
    tm = time.strptime(m.group(1), "%Y%m%d")
    return int(_timegm(tm) // 86_400)


def _create_partition(conn: psycopg.Connection, day: int) -> None:
    """Create the ``ticks`` partition of `day`, moving its rows out of the DEFAULT
    partition first when some landed there (PostgreSQL refuses a partition whose
    range the default partition still holds rows of)."""
    name = sql.Identifier(_partition_name(day))
    bounds = (sql.Literal(day * DAY_MS), sql.Literal((day + 1) * DAY_MS))
    default = sql.Identifier(DEFAULT_PARTITION)
    held = conn.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE ts_ms >= {} AND ts_ms < {})"
        ).format(default, *bounds)
    ).fetchone()[0]
    if not held:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF ticks "
                "FOR VALUES FROM ({}) TO ({})"
            ).format(name, *bounds)
        )
        return
    cols = sql.SQL("symbol, trade_id, ts_ms, price, qty, is_buyer_maker")
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE ticks)").format(name))
    conn.execute(
        sql.SQL(
            "WITH moved AS (DELETE FROM {} WHERE ts_ms >= {} AND ts_ms < {} "
            "RETURNING {}) INSERT INTO {} ({}) SELECT {} FROM moved"
        ).format(default, *bounds, cols, name, cols, cols)
    )
    conn.execute(
        sql.SQL(
            "ALTER TABLE ticks ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
        ).format(name, *bounds)
    )


def _timegm(tm: time.struct_time) -> int:
    import calendar

    return calendar.timegm(tm)


# --------------------------------------------------------------------------- writer

_UPSERT_BAR_1S = """
INSERT INTO bars_1s(symbol, ts_ms, open, high, low, close, volume, quote_volume,
                    trades, vwap, first_id, last_id)
{source}
ON CONFLICT (symbol, ts_ms) DO UPDATE SET
    open = CASE WHEN excluded.first_id < bars_1s.first_id
                THEN excluded.open ELSE bars_1s.open END,
    close = CASE WHEN excluded.last_id > bars_1s.last_id
                 THEN excluded.close ELSE bars_1s.close END,
    high = GREATEST(bars_1s.high, excluded.high),
    low = LEAST(bars_1s.low, excluded.low),
    volume = bars_1s.volume + excluded.volume,
    quote_volume = bars_1s.quote_volume + excluded.quote_volume,
    trades = bars_1s.trades + excluded.trades,
    vwap = (bars_1s.quote_volume + excluded.quote_volume)
           / NULLIF(bars_1s.volume + excluded.volume, 0),
    first_id = LEAST(bars_1s.first_id, excluded.first_id),
    last_id = GREATEST(bars_1s.last_id, excluded.last_id)
"""
_UPSERT_BAR_1S_STAGED = _UPSERT_BAR_1S.format(source="SELECT * FROM bars_1s_stage")
_BAR_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS bars_1s_stage "
    "(LIKE bars_1s INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_BAR_COPY = (
    "COPY bars_1s_stage (symbol, ts_ms, open, high, low, close, volume, "
    "quote_volume, trades, vwap, first_id, last_id) FROM STDIN (FORMAT BINARY)"
)
_BAR_TYPES = ("text", "int8", *(["float8"] * 6), "int8", "float8", "int8", "int8")
_UPSERT_BAR_1S_ROW = _UPSERT_BAR_1S.format(
    source="VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_TICK_COPY = (
    "COPY ticks (symbol, trade_id, ts_ms, price, qty, is_buyer_maker) "
    "FROM STDIN (FORMAT BINARY)"
)
_TICK_TYPES = ("text", "int8", "int8", "float8", "float8", "int2")
_RETURNING_ID = ("INSERT INTO alert_rules", "INSERT INTO alert_events")


def _to_pg_sql(text: str) -> str:
    """SQLite-style ``?`` placeholders -> psycopg ``%s`` (``%`` escaped first)."""
    return text.replace("%", "%%").replace("?", "%s")


class _Cursor:
    """What `storage.Writer` methods use of a sqlite3 cursor: rowcount, lastrowid,
    fetchone, fetchall, iteration."""

    __slots__ = ("_cur", "lastrowid", "rowcount")

    def __init__(self, cur: psycopg.Cursor, lastrowid: int | None = None) -> None:
        self._cur = cur
        self.rowcount = cur.rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list:
        return self._cur.fetchall()

    def __iter__(self) -> Iterator:
        return iter(self._cur)


class _Conn:
    """A psycopg connection behind the sqlite3 calls `storage.Writer` makes.

    ``execute``/``executemany`` translate ``?`` placeholders; the tick insert
    becomes a binary COPY (creating missing day partitions first) and the 1 s bar
    upsert one ``unnest`` statement with PostgreSQL's GREATEST/LEAST.
    """

    __slots__ = ("_conn", "_writer")

    def __init__(self, conn: psycopg.Connection, writer: PgWriter) -> None:
        self._conn = conn
        self._writer = writer

    def execute(self, text: str, params: Sequence = ()) -> _Cursor:
        if text.startswith(_RETURNING_ID):
            cur = self._conn.execute(_to_pg_sql(text) + " RETURNING id", params)
            return _Cursor(cur, int(cur.fetchone()[0]))
        return _Cursor(self._conn.execute(_to_pg_sql(text), params))

    def executemany(self, text: str, rows: Any) -> None:
        if text is storage._INSERT_TICK:
            self._writer._copy_ticks(self._conn, rows)
        elif text is storage._UPSERT_BAR_1S:
            self._writer._upsert_bars_1s(self._conn, list(rows))
        else:
            self._conn.cursor().executemany(_to_pg_sql(text), list(rows))


class PgWriter(Writer):
    """`storage.Writer` on PostgreSQL (``storage.Writer(url)`` returns one).

    Same methods, arguments, results and errors as the SQLite writer; one
    connection for writes, a second one holding the writer-lease advisory lock.

    Parameters
    ----------
    path : ``postgresql://...`` URL (see the module docstring).
    busy_timeout_ms : ``lock_timeout`` of hot-path calls.
    admin_timeout_ms : ``lock_timeout`` of rare calls (migration, lease, prune...).

    Raises
    ------
    ValueError
        When a timeout is negative or the URL is malformed.
    StorageError
        When the server cannot be reached (message names host and port) or the
        schema cannot be created or migrated.
    """

    def __init__(
        self,
        path: object,
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
        self._target = parse_target(path)
        self._path = self._target.url  # type: ignore[assignment]
        self._busy_timeout_ms = busy_timeout_ms
        self._admin_timeout_ms = admin_timeout_ms
        self._closed = False
        self._pg: psycopg.Connection | None = None
        self._lease_conn: psycopg.Connection | None = None
        self._lease_tag = ""  # application_name of the lease session: its owner
        self._lock_held = False
        self._days: set[int] = set()
        self._pending_days: set[int] = set()
        self._staged: psycopg.Connection | None = None
        self._pg = self._open("open")
        self._conn = _Conn(self._pg, self)  # type: ignore[assignment]

    # ------------------------------------------------------------------ plumbing

    def file_change(self) -> None:
        """A server database has no file that could change under the writer."""
        return None

    def reopen_if_changed(self) -> None:
        """Nothing to reopen: see `file_change`."""
        return None

    @property
    def target(self) -> PgTarget:
        """The parsed database setting."""
        return self._target

    def _open(self, op: str) -> psycopg.Connection:
        """Connect, migrate, load the known partitions."""
        conn = connect(self._target, op, lock_timeout_ms=self._admin_timeout_ms)
        try:
            _migrate(conn, self._target)
            self._days = self._load_days(conn)
            conn.execute(f"SET lock_timeout = {max(1, self._busy_timeout_ms):d}")
        except psycopg.Error as exc:
            conn.close()
            raise _error(op, exc, self._target) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _load_days(conn: psycopg.Connection) -> set[int]:
        """Days of the existing ``ticks`` partitions."""
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'ticks'::regclass"
        ).fetchall()
        return {d for (name,) in rows if (d := _day_of_partition(name)) is not None}

    def close(self) -> None:
        """Close both connections (idempotent; frees the lease lock)."""
        self._closed = True
        for conn in (self._lease_conn, self._pg):
            if conn is not None:
                with suppress(Exception):
                    conn.close()
        self._lease_conn = None
        self._pg = None
        self._conn = None
        self._lock_held = False

    def _connection(self, op: str) -> _Conn:  # type: ignore[override]
        """The open connection (reconnecting a broken one), or StorageError."""
        if self._closed:
            raise StorageError(f"{op} failed: writer for {self._target.url} is closed")
        if self._pg is None or self._pg.closed or self._pg.broken:
            if self._pg is not None:
                with suppress(Exception):
                    self._pg.close()
            self._pg = None
            self._pg = self._open(op)
            self._conn = _Conn(self._pg, self)  # type: ignore[assignment]
        return self._conn  # type: ignore[return-value]

    @contextmanager
    def _transaction(  # type: ignore[override]
        self, op: str, *, timeout_ms: int | None = None
    ) -> Iterator[_Conn]:
        """BEGIN ... COMMIT; roll back and map errors on failure."""
        wrapped = self._connection(op)
        conn = self._pg
        assert conn is not None  # set by _connection
        self._pending_days = set()
        try:
            with conn.transaction():
                if timeout_ms is not None:
                    conn.execute(f"SET LOCAL lock_timeout = {max(1, timeout_ms):d}")
                yield wrapped
        except psycopg.Error as exc:
            self._pending_days = set()
            self._staged = None  # a staging table made in this transaction is gone
            raise _error(op, exc, self._target, conn) from exc
        except BaseException:
            self._pending_days = set()
            self._staged = None
            raise
        self._days |= self._pending_days
        self._pending_days = set()

    def _ensure_partitions(
        self, conn: psycopg.Connection, rows_per_day: Counter[int]
    ) -> None:
        """Create missing day partitions of ``ticks`` (and the following day's) for
        at most MAX_NEW_DAYS_PER_BATCH of the days in `rows_per_day`: those with
        the most rows, then the newest. Rows of the other days without a partition
        land in DEFAULT_PARTITION."""
        known = self._days | self._pending_days
        missing = [d for d in rows_per_day if d not in known]
        if not missing:
            return
        missing.sort(key=lambda d: (rows_per_day[d], d), reverse=True)
        chosen = missing[:MAX_NEW_DAYS_PER_BATCH]
        for day in sorted(set(chosen) | {d + 1 for d in chosen}):
            if day not in known:
                _create_partition(conn, day)
                self._pending_days.add(day)

    def _upsert_bars_1s(self, conn: psycopg.Connection, rows: list[tuple]) -> None:
        """Upsert 1 s bar rows: binary COPY into a temporary staging table, then one
        ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` (row by row when a bucket
        repeats, merging in order as SQLite's executemany does)."""
        if not rows:
            return
        if len({(r[0], r[1]) for r in rows}) != len(rows):
            conn.cursor().executemany(_UPSERT_BAR_1S_ROW, rows)
            return
        if self._staged is not conn:
            conn.execute(_BAR_STAGE)
            self._staged = conn
        else:
            conn.execute("DELETE FROM bars_1s_stage")
        with conn.cursor().copy(_BAR_COPY) as copy:
            copy.set_types(_BAR_TYPES)
            write = copy.write_row
            for row in rows:
                write(row)
        conn.execute(_UPSERT_BAR_1S_STAGED)

    def _copy_ticks(self, conn: psycopg.Connection, rows: Any) -> None:
        """Binary COPY of tick rows (symbol, id, ts, price, qty, maker 0/1)."""
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return
        self._ensure_partitions(conn, Counter([r[2] // DAY_MS for r in rows]))
        with conn.cursor().copy(_TICK_COPY) as copy:
            copy.set_types(_TICK_TYPES)
            write = copy.write_row
            for row in rows:
                write(row)

    # ------------------------------------------------------------------ hot path

    @staticmethod
    def _drop_stored(  # type: ignore[override]
        conn: _Conn, symbol: str, group: dict[int, Tick]
    ) -> None:
        """Remove from `group` the trade ids already stored for `symbol`.

        The probe is bounded by the group's trade times too (a trade's time never
        changes), so only the partitions of those days are searched.
        """
        times = [int(t.ts_ms) for t in group.values()]
        found = _stored(conn, symbol, list(group), times)
        for tid in found:
            group.pop(tid, None)

    @staticmethod
    def _stored_ids(  # type: ignore[override]
        conn: _Conn, symbol: str, ids: np.ndarray, ts: np.ndarray | None = None
    ) -> np.ndarray:
        """Those of the sorted unique `ids` already stored for `symbol` (int64)."""
        times = None if ts is None else ts.tolist()
        found = _stored(conn, symbol, ids.tolist(), times, ordered=True)
        return np.fromiter(found, dtype=np.int64, count=len(found))

    @staticmethod
    def _write_gaps_and_seen(  # type: ignore[override]
        conn: _Conn, gap_rows: list[tuple], seen_rows: list[tuple]
    ) -> int:
        """Insert gap rows (skipping stored ones) and raise last_seen ids."""
        pg = conn._conn
        stored = 0
        if gap_rows:
            cur = pg.execute(
                "INSERT INTO gaps(symbol, from_id, to_id, detected_ms) "
                "SELECT * FROM unnest(%b::text[], %b::int8[], %b::int8[], "
                "%b::int8[]) ON CONFLICT (symbol, from_id, to_id) DO NOTHING",
                [list(c) for c in zip(*gap_rows, strict=True)],
            )
            stored = cur.rowcount
        if seen_rows:
            pg.execute(
                "INSERT INTO last_seen(symbol, trade_id) "
                "SELECT * FROM unnest(%b::text[], %b::int8[]) "
                "ON CONFLICT (symbol) DO UPDATE SET "
                "trade_id = GREATEST(last_seen.trade_id, excluded.trade_id)",
                [list(c) for c in zip(*seen_rows, strict=True)],
            )
        return stored

    def last_trade_ids(self) -> dict[str, int]:
        """Highest trade id per symbol: stored ticks, or a higher ``last_seen`` id."""
        conn = self._connection("last_trade_ids")._conn
        try:
            symbols = [r[0] for r in conn.execute(storage._SYMBOL_SCANS["ticks"])]
            out = {}
            for symbol in symbols:
                row = conn.execute(
                    "SELECT max(trade_id) FROM ticks WHERE symbol = %s", (symbol,)
                ).fetchone()
                out[symbol] = int(row[0])
            for symbol, tid in conn.execute("SELECT symbol, trade_id FROM last_seen"):
                out[symbol] = max(out.get(symbol, tid), int(tid))
            return out
        except psycopg.Error as exc:
            raise _error("last_trade_ids", exc, self._target, conn) from exc

    # ------------------------------------------------------------------ lease

    def _lease_key(self) -> tuple[int, int]:
        return (LEASE_LOCK_CLASS, _schema_key(self._target.schema))

    def _lease_session(self, op: str) -> psycopg.Connection:
        """The dedicated lease connection; a broken one is replaced (lock lost)."""
        conn = self._lease_conn
        if conn is not None and not conn.closed and not conn.broken:
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                pass
        if conn is not None:
            with suppress(Exception):
                conn.close()
        self._lease_conn = None
        self._lock_held = False
        self._lease_conn = connect(
            self._target, op, lock_timeout_ms=self._admin_timeout_ms
        )
        if self._lease_tag:
            self._name_lease_session(op)
        return self._lease_conn

    def _name_lease_session(self, op: str) -> None:
        """Label the lease session with its owner (``application_name``), so that a
        takeover terminates the stale owner's session and never a newer holder's."""
        conn = self._lease_conn
        if conn is None:
            return
        try:
            conn.execute(
                "SELECT set_config('application_name', %s, false)", (self._lease_tag,)
            )
        except psycopg.Error as exc:
            raise _error(op, exc, self._target, conn) from exc

    def _try_lock(self, op: str) -> bool:
        """pg_try_advisory_lock on the lease connection; True when held now."""
        if self._closed:
            raise StorageError(f"{op} failed: writer for {self._target.url} is closed")
        conn = self._lease_session(op)
        if self._lock_held:
            return True
        try:
            got = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", self._lease_key()
            ).fetchone()[0]
        except psycopg.Error as exc:
            raise _error(op, exc, self._target, conn) from exc
        self._lock_held = bool(got)
        return self._lock_held

    def _unlock(self) -> None:
        """Release the lease lock if held."""
        if self._lock_held and self._lease_conn is not None:
            with suppress(psycopg.Error):
                self._lease_conn.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", self._lease_key()
                )
        self._lock_held = False

    def _take_from_stale(self, op: str, holder: LeaseOwner) -> bool:
        """Terminate the stale `holder`'s session holding the lease lock, then wait
        for the lock; False when another session holds it.

        Only a session labelled with `holder` is terminated: a dashboard that took
        the free lock a moment ago, and has not yet written its row over the stale
        one, keeps it (terminating it let two processes take turns as writer).
        """
        conn = self._lease_session(op)
        key = self._lease_key()
        try:
            ended = conn.execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks AS l "
                "JOIN pg_stat_activity AS a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.classid = %s::oid "
                "AND l.objid = %s::oid AND l.objsubid = 2 AND l.granted "
                "AND l.pid <> pg_backend_pid() AND a.application_name = %s",
                (key[0], key[1] % 2**32, _lease_tag(holder)),
            ).fetchall()
            if not ended:
                return False
            conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
        except (errors.LockNotAvailable, errors.InsufficientPrivilege):
            return False
        except psycopg.Error as exc:
            raise _error(op, exc, self._target, conn) from exc
        self._lock_held = True
        return True

    def acquire_lease(
        self,
        owner: LeaseOwner,
        *,
        stale_after_ms: int = DEFAULT_STALE_AFTER_MS,
        now: int | None = None,
    ) -> LeaseState:
        """Take the writer lease: the advisory lock, then the ``writer_lease`` row.

        A free lock is taken at once (its previous holder's session is gone). When
        this writer already holds the lock, the row decides as on SQLite (free,
        ours, dead pid on this host, or stale). When another session holds it, the
        lease is taken only when the row is stale or its pid is gone from this
        host: that session is terminated first.

        Returns
        -------
        LeaseState
            ``acquired`` and the holder after the call.

        Raises
        ------
        ValueError
            When `stale_after_ms` is not positive.
        DatabaseLockedError, StorageError
            When the database cannot be written or reached.
        """
        if stale_after_ms <= 0:
            raise ValueError(f"stale_after_ms must be > 0, got {stale_after_ms!r}")
        t = now_ms() if now is None else int(now)
        tag = _lease_tag(owner)
        if tag != self._lease_tag:
            self._lease_tag = tag
            self._name_lease_session("acquire_lease")
        had_lock = self._lock_held and self._lease_conn is not None
        fresh = self._try_lock("acquire_lease") and not had_lock
        if not self._lock_held:
            state = _lease_row(self._connection("acquire_lease")._conn, self._target)
            holder = state.holder
            if holder is None or not _takeable(holder, owner, state, t, stale_after_ms):
                return state
            if not self._take_from_stale("acquire_lease", holder):
                return state
            fresh = True
        with self._transaction("acquire_lease", timeout_ms=self._admin_timeout_ms) as c:
            row = c.execute(
                "SELECT pid, host, since_ms, heartbeat_ms FROM writer_lease "
                "WHERE id = 1 FOR UPDATE"
            ).fetchone()
            if row is not None and not fresh:
                holder = LeaseOwner(pid=int(row[0]), host=row[1], since_ms=int(row[2]))
                state = LeaseState(False, holder, int(row[3]))
                if not _takeable(holder, owner, state, t, stale_after_ms):
                    return state
            c.execute(
                "INSERT INTO writer_lease(id, pid, host, since_ms, heartbeat_ms) "
                "VALUES (1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "pid = excluded.pid, host = excluded.host, "
                "since_ms = excluded.since_ms, heartbeat_ms = excluded.heartbeat_ms",
                (int(owner.pid), owner.host, int(owner.since_ms), t),
            )
        return LeaseState(acquired=True, holder=owner, heartbeat_ms=t)

    def heartbeat(self, owner: LeaseOwner, *, now: int | None = None) -> bool:
        """Refresh the heartbeat if `owner` still holds the lease (lock and row).

        A lease connection lost since the last call (server restart, network) is
        re-established and the lock taken again if free; False when the lease was
        lost (taken over or released).
        """
        t = now_ms() if now is None else int(now)
        regained = not self._lock_held
        if not self._try_lock("heartbeat"):
            return False
        regained = regained and self._lock_held
        with self._transaction("heartbeat") as conn:
            cur = conn.execute(
                "UPDATE writer_lease SET heartbeat_ms = ? "
                "WHERE id = 1 AND pid = ? AND host = ? AND since_ms = ?",
                (t, owner.pid, owner.host, owner.since_ms),
            )
            held = cur.rowcount == 1
        if not held and regained:
            self._unlock()
        return held

    def release_lease(self, owner: LeaseOwner) -> None:
        """Give the lease up if `owner` holds it (otherwise nothing happens)."""
        with self._transaction(
            "release_lease", timeout_ms=min(self._admin_timeout_ms, 1_000)
        ) as conn:
            cur = conn.execute(
                "DELETE FROM writer_lease "
                "WHERE id = 1 AND pid = ? AND host = ? AND since_ms = ?",
                (owner.pid, owner.host, owner.since_ms),
            )
            released = cur.rowcount == 1
        if released:
            self._unlock()

    # ------------------------------------------------------------------ retention

    def prune(self, older_than_ms: int) -> int:
        """Delete market data older than a time; return the number of rows deleted.

        Same rows as on SQLite: ticks with ``ts_ms < older_than_ms`` and bars that
        end at or before it. Day partitions wholly before the cutoff are dropped,
        one per transaction (their rows counted first), so the locks a transaction
        holds do not grow with the number of days; then the partition holding the
        cutoff and ``ticks_default`` lose their older rows, and bars go in
        transactions of at most ``storage.PRUNE_CHUNK_ROWS`` rows. Stopped
        part-way (an error, a kill), what was committed stays deleted and the next
        prune goes on.
        """
        cutoff = int(older_than_ms)
        deleted = 0
        with self._transaction("prune", timeout_ms=self._admin_timeout_ms) as c:
            days = sorted(self._load_days(c._conn))
        for day in days:
            if (day + 1) * DAY_MS > cutoff:
                break
            with self._transaction("prune", timeout_ms=self._admin_timeout_ms) as c:
                name = sql.Identifier(_partition_name(day))
                n = c._conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name))
                deleted += int(n.fetchone()[0])
                c._conn.execute(sql.SQL("DROP TABLE {}").format(name))
            self._days.discard(day)
        with self._transaction("prune", timeout_ms=self._admin_timeout_ms) as c:
            deleted += c._conn.execute(
                "DELETE FROM ticks WHERE ts_ms < %s", (cutoff,)
            ).rowcount
            symbols = [r[0] for r in c._conn.execute(storage._SYMBOL_SCANS["bars_1s"])]
        for symbol in symbols:
            deleted += self._delete_chunks(
                storage._PRUNE_BARS_1S, (symbol, symbol, cutoff - BAR_MS)
            )
        return deleted + self._delete_chunks(storage._PRUNE_BARS, (cutoff,))

    def partitions(self) -> list[str]:
        """Names of the ``ticks`` day partitions, oldest first."""
        conn = self._connection("partitions")._conn
        try:
            return [_partition_name(d) for d in sorted(self._load_days(conn))]
        except psycopg.Error as exc:
            raise _error("partitions", exc, self._target, conn) from exc

    def clear_market_data(self) -> None:
        """Empty ticks, 1 s bars, coarser bars, gaps, last seen ids; keep alerts."""
        with self._transaction(
            "clear_market_data", timeout_ms=self._admin_timeout_ms
        ) as c:
            c._conn.execute("TRUNCATE ticks, bars_1s, bars, gaps, last_seen")

    def checkpoint(self) -> None:
        """Nothing to do on PostgreSQL (the server checkpoints); kept for the API."""
        self._connection("checkpoint")

    # ------------------------------------------------------------------ migration

    def _copy_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[tuple]
    ) -> None:
        """COPY rows into `table` in one transaction (ticks: `_copy_ticks_by_day`)."""
        if table == "ticks":
            self._copy_ticks_by_day(rows)
            return
        with self._transaction("migrate", timeout_ms=self._admin_timeout_ms) as c:
            pg = c._conn
            stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            with pg.cursor().copy(stmt) as copy:
                for row in rows:
                    copy.write_row(row)

    def _copy_ticks_by_day(self, rows: Sequence[tuple]) -> None:
        """COPY tick rows MAX_NEW_DAYS_PER_BATCH days per transaction, so that
        every day copied gets its partition and no transaction locks many."""
        by_day: dict[int, list[tuple]] = {}
        for row in rows:
            by_day.setdefault(row[2] // DAY_MS, []).append(row)
        days = sorted(by_day)
        for i in range(0, len(days), MAX_NEW_DAYS_PER_BATCH):
            group = [r for d in days[i : i + MAX_NEW_DAYS_PER_BATCH] for r in by_day[d]]
            with self._transaction("migrate", timeout_ms=self._admin_timeout_ms) as c:
                self._copy_ticks(c._conn, group)

    def _after_copy(self) -> None:
        """Move identity sequences past the copied ids."""
        with self._transaction("migrate", timeout_ms=self._admin_timeout_ms) as c:
            for table in ("gaps", "alert_rules", "alert_events"):
                c._conn.execute(
                    sql.SQL(
                        "SELECT setval(pg_get_serial_sequence({}, 'id'), "
                        "coalesce((SELECT max(id) FROM {}), 0) + 1, false)"
                    ).format(sql.Literal(table), sql.Identifier(table))
                )


def _lease_tag(owner: LeaseOwner) -> str:
    """``application_name`` of `owner`'s lease session (under PostgreSQL's 63 bytes)."""
    host = zlib.crc32(owner.host.encode())
    return f"pairdesk lease {owner.pid} {owner.since_ms} {host:08x}"


def _takeable(
    holder: LeaseOwner, owner: LeaseOwner, state: LeaseState, t: int, stale_ms: int
) -> bool:
    """SQLite's rule: ours, stale, or a pid gone from this host."""
    beat = state.heartbeat_ms if state.heartbeat_ms is not None else 0
    return (
        holder == owner
        or t - beat > stale_ms
        or (holder.host == socket.gethostname() and not storage._pid_alive(holder.pid))
    )


def _lease_row(conn: psycopg.Connection, t: PgTarget) -> LeaseState:
    """The writer_lease row as a LeaseState (acquired False)."""
    try:
        row = conn.execute(
            "SELECT pid, host, since_ms, heartbeat_ms FROM writer_lease WHERE id = 1"
        ).fetchone()
    except psycopg.Error as exc:
        raise _error("acquire_lease", exc, t, conn) from exc
    if row is None:
        return LeaseState(acquired=False, holder=None, heartbeat_ms=None)
    holder = LeaseOwner(pid=int(row[0]), host=row[1], since_ms=int(row[2]))
    return LeaseState(acquired=False, holder=holder, heartbeat_ms=int(row[3]))


def _stored(
    conn: _Conn,
    symbol: str,
    ids: list[int],
    times: list[int] | None,
    *,
    ordered: bool = False,
) -> list[int]:
    """Stored trade ids of `symbol` among `ids` (trade times `times`, same order).

    Dense ids: one range scan of the primary key, bounded in time by the batch's
    trade times so only their day partitions are searched. Sparse ids over a
    wide range: an exact (trade_id, ts_ms) probe per id, as a stored duplicate
    has the same trade time.
    """
    pg = conn._conn
    lo = ids[0] if ordered else min(ids)
    hi = ids[-1] if ordered else max(ids)
    if times:
        lo_t, hi_t = min(times), max(times)
    if times is None:
        cur = pg.execute(
            "SELECT trade_id FROM ticks WHERE symbol = %s "
            "AND trade_id BETWEEN %s AND %s",
            (symbol, lo, hi),
        )
    elif hi - lo < 4 * len(ids) + 1_000:
        cur = pg.execute(
            "SELECT trade_id FROM ticks WHERE symbol = %s "
            "AND trade_id BETWEEN %s AND %s AND ts_ms BETWEEN %s AND %s",
            (symbol, lo, hi, lo_t, hi_t),
        )
    else:  # sparse ids over a wide range: probe them, not the whole range
        cur = pg.execute(
            "SELECT u.id FROM unnest(%b::int8[], %b::int8[]) AS u(id, ts) "
            "WHERE EXISTS (SELECT 1 FROM ticks AS t WHERE t.symbol = %s "
            "AND t.trade_id = u.id AND t.ts_ms = u.ts "
            "AND t.ts_ms BETWEEN %s AND %s)",
            (ids, times, symbol, lo_t, hi_t),
        )
    return [r[0] for r in cur]


# --------------------------------------------------------------------------- readers

_local = threading.local()


def _reader(t: PgTarget, op: str) -> psycopg.Connection:
    """This thread's read-only connection to `t` (opened on first use)."""
    cache: dict[tuple[str, str], psycopg.Connection] | None = getattr(
        _local, "conns", None
    )
    if cache is None:
        cache = _local.conns = {}
    key = (t.conninfo, t.schema)
    conn = cache.get(key)
    if conn is not None and not conn.closed and not conn.broken:
        return conn
    conn = connect(t, op, read_only=True)
    cache[key] = conn
    return conn


def _drop_reader(t: PgTarget) -> None:
    cache = getattr(_local, "conns", None) or {}
    conn = cache.pop((t.conninfo, t.schema), None)
    if conn is not None:
        with suppress(Exception):
            conn.close()


def close_readers() -> None:
    """Close this thread's cached read-only connections."""
    cache = getattr(_local, "conns", None) or {}
    for conn in cache.values():
        with suppress(Exception):
            conn.close()
    cache.clear()


_MISSING = (errors.UndefinedTable, errors.InvalidSchemaName)


def _run(op: str, target: object, fn: Callable[[psycopg.Connection], Any], empty: Any):
    """Run `fn` on this thread's reader; `empty` when the tables do not exist.

    A broken connection (server restarted) is reopened and the read tried once more.
    """
    t = parse_target(target)
    for attempt in (0, 1):
        conn = _reader(t, op)
        try:
            return fn(conn)
        except _MISSING:
            return empty
        except psycopg.Error as exc:
            if (conn.closed or conn.broken) and attempt == 0:
                _drop_reader(t)
                continue
            raise _error(op, exc, t, conn) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def query(op: str, target: object, text: str, params: Sequence = ()) -> list:
    """Rows of a read query written for SQLite (``?`` placeholders)."""
    pg_sql = _to_pg_sql(text)
    return _run(op, target, lambda c: c.execute(pg_sql, params).fetchall(), [])


def query_matrix(
    op: str, target: object, text: str, params: Sequence, width: int
) -> np.ndarray:
    """A numeric read query (``?`` placeholders) as float64 (rows, width); NULL=NaN.

    The query runs inside ``COPY (...) TO STDOUT (FORMAT BINARY)`` with every
    column cast to float8 and NULL turned into NaN, so every row has the same
    byte layout and numpy reads the whole result with one ``frombuffer``.
    """
    cols = [f"c{i}" for i in range(width)]
    outer = ", ".join(f"coalesce({c}::float8, 'NaN'::float8)" for c in cols)
    inner = _to_pg_sql(text)
    stmt = f"COPY (SELECT {outer} FROM ({inner}) AS q({', '.join(cols)})) TO STDOUT"
    stmt += " (FORMAT BINARY)"

    def fetch(conn: psycopg.Connection) -> np.ndarray:
        buf = bytearray()
        with conn.cursor().copy(stmt, params) as copy:
            for chunk in copy:
                buf += chunk
        return _parse_binary_floats(bytes(buf), width)

    return _run(op, target, fetch, np.empty((0, width), dtype=np.float64))


def _parse_binary_floats(data: bytes, width: int) -> np.ndarray:
    """Rows of a binary COPY whose fields are all non-NULL float8 -> (rows, width)."""
    if len(data) < 21:
        return np.empty((0, width), dtype=np.float64)
    ext = int.from_bytes(data[15:19], "big")
    body = memoryview(data)[19 + ext : len(data) - 2]
    fields = [("n", ">i2")]
    for i in range(width):
        fields += [(f"l{i}", ">i4"), (f"v{i}", ">f8")]
    rows = np.frombuffer(body, dtype=np.dtype(fields))
    out = np.empty((rows.size, width), dtype=np.float64)
    for i in range(width):
        out[:, i] = rows[f"v{i}"]
    return out


def file_bytes(target: object) -> int:
    """On-disk bytes of the target schema's tables and indexes (0 when absent)."""
    t = parse_target(target)
    rows = _run(
        "db_stats",
        target,
        lambda c: c.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
            (t.schema,),
        ).fetchall(),
        [(0,)],
    )
    return int(rows[0][0])


# --------------------------------------------------------------------------- datasets


@contextmanager
def _admin(op: str, base: object) -> Iterator[psycopg.Connection]:
    """A short-lived connection to the database of `base`."""
    t = parse_target(base)
    conn = connect(t, op, lock_timeout_ms=DEFAULT_ADMIN_TIMEOUT_MS)
    try:
        yield conn
    except psycopg.Error as exc:
        raise _error(op, exc, t, conn) from exc
    finally:
        conn.close()


def _schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return row.fetchone() is not None


def list_datasets(base: object) -> list[str]:
    """Names of the datasets (schemas commented ``dataset:NAME``), sorted."""
    with _admin("list_datasets", base) as conn:
        rows = conn.execute(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace "
            "WHERE nspname LIKE 'ds\\_%%'"
        ).fetchall()
    names = []
    for (comment,) in rows:
        if comment and comment.startswith(DATASET_COMMENT_PREFIX):
            name = comment[len(DATASET_COMMENT_PREFIX) :]
            if DATASET_NAME_PATTERN.fullmatch(name):
                names.append(name)
    return sorted(names)


def delete_dataset(base: object, name: str) -> bool:
    """Drop a dataset's schema; False when it did not exist."""
    schema = dataset_schema(name)
    close_readers()
    with _admin("delete_dataset", base) as conn:
        existed = _schema_exists(conn, schema)
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )
    return existed


def _rename_to_dataset(conn: psycopg.Connection, schema: str, name: str) -> None:
    """Rename `schema` to the schema of dataset `name` and label it (in a tx)."""
    conn.execute(
        sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
            sql.Identifier(schema), sql.Identifier(dataset_schema(name))
        )
    )
    conn.execute(
        sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
            sql.Identifier(dataset_schema(name)),
            sql.Literal(DATASET_COMMENT_PREFIX + name),
        )
    )


def rename_dataset(base: object, old: str, new: str) -> str:
    """Rename a dataset's schema; return the new dataset URL.

    Raises
    ------
    ValueError
        When a name is invalid, `old` does not exist or `new` already exists.
    """
    src = dataset_schema(storage._check_dataset_name(old, "old"))
    dst = dataset_schema(storage._check_dataset_name(new, "new"))
    close_readers()
    with _admin("rename_dataset", base) as conn, conn.transaction():
        if not _schema_exists(conn, src):
            raise ValueError(f"old: no dataset named {old!r}")
        if _schema_exists(conn, dst):
            raise ValueError(f"new: a dataset named {new!r} already exists")
        _rename_to_dataset(conn, src, new)
    return dataset_url(base, new)


# --------------------------------------------------------------------------- migration

# (table, columns, key columns for keyset pagination)
_COPY_TABLES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "ticks",
        ("symbol", "trade_id", "ts_ms", "price", "qty", "is_buyer_maker"),
        ("symbol", "trade_id"),
    ),
    (
        "bars_1s",
        (
            "symbol",
            "ts_ms",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "trades",
            "vwap",
            "first_id",
            "last_id",
        ),
        ("symbol", "ts_ms"),
    ),
    (
        "bars",
        (
            "symbol",
            "interval_s",
            "ts_ms",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "trades",
        ),
        ("symbol", "interval_s", "ts_ms"),
    ),
    (
        "gaps",
        (
            "id",
            "symbol",
            "from_id",
            "to_id",
            "detected_ms",
            "filled_by",
            "filled_ms",
            "fill_detail",
        ),
        ("id",),
    ),
    ("last_seen", ("symbol", "trade_id"), ("symbol",)),
    (
        "alert_rules",
        (
            "id",
            "text",
            "params_json",
            "cooldown_s",
            "enabled",
            "webhook_url",
            "webhook_format",
            "created_ms",
        ),
        ("id",),
    ),
    (
        "alert_events",
        (
            "id",
            "rule_id",
            "fired_ms",
            "value",
            "snapshot_json",
            "notify_status",
            "notify_detail",
        ),
        ("id",),
    ),
)
_CHECKSUM_TABLES = ("bars_1s", "bars")


@dataclass(frozen=True, slots=True)
class TableCopy:
    """Rows of one table on both sides after a migration.

    Attributes
    ----------
    table : table name.
    source_rows, target_rows : row counts read back from each side.
    """

    table: str
    source_rows: int
    target_rows: int


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """Outcome of `migrate`.

    Attributes
    ----------
    source, target : the two database settings (passwords masked).
    tables : per-table row counts on both sides.
    bars_checksum_source, bars_checksum_target : SHA-256 over every row of
        ``bars_1s`` and ``bars`` in key order (exact float representations).
    seconds : wall-clock duration of copy and verification.
    ok : counts and checksums agree.
    """

    source: str
    target: str
    tables: tuple[TableCopy, ...]
    bars_checksum_source: str
    bars_checksum_target: str
    seconds: float
    ok: bool

    def summary(self) -> str:
        """A few lines for the CLI."""
        lines = [f"migrated {self.source} -> {self.target} in {self.seconds:.1f} s"]
        for tc in self.tables:
            mark = "ok" if tc.source_rows == tc.target_rows else "MISMATCH"
            lines.append(
                f"  {tc.table:<13} {tc.source_rows:>12} -> {tc.target_rows:>12} {mark}"
            )
        same = self.bars_checksum_source == self.bars_checksum_target
        lines.append(
            f"  bars checksum {self.bars_checksum_source[:16]} "
            f"{'==' if same else '!='} {self.bars_checksum_target[:16]}"
        )
        lines.append("verified: OK" if self.ok else "verified: FAILED")
        return "\n".join(lines)


def _display(target: object) -> str:
    return _mask(parse_target(target).url) if is_postgres_url(target) else str(target)


def _chunks(
    target: object, table: str, columns: Sequence[str], key: Sequence[str], size: int
) -> Iterator[list[tuple]]:
    """Rows of `table` in key order, `size` at a time (keyset pagination)."""
    cols = ", ".join(columns)
    order = ", ".join(key)
    base = f"SELECT {cols} FROM {table}"  # fixed names, not user input
    positions = [columns.index(k) for k in key]
    last: tuple | None = None
    while True:
        if last is None:
            text, params = f"{base} ORDER BY {order} LIMIT ?", (size,)
        else:
            marks = ", ".join("?" * len(key))
            cond = f"({order}) > ({marks})" if len(key) > 1 else f"{order} > ?"
            text = f"{base} WHERE {cond} ORDER BY {order} LIMIT ?"
            params = (*last, size)
        rows = storage._query("migrate", target, text, params)
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        last = tuple(rows[-1][p] for p in positions)


def _count(target: object, table: str) -> int:
    rows = storage._query("migrate", target, f"SELECT count(*) FROM {table}")
    return int(rows[0][0]) if rows else 0


def bars_checksum(target: object, *, chunk_rows: int = MIGRATION_CHUNK_ROWS) -> str:
    """SHA-256 over all rows of ``bars_1s`` and ``bars`` in key order.

    Floats enter as ``repr`` (shortest exact decimal), integers as decimals, so
    two databases holding the same bars give the same digest whatever the backend.
    """
    digest = hashlib.sha256()
    for table, columns, key in _COPY_TABLES:
        if table not in _CHECKSUM_TABLES:
            continue
        digest.update(table.encode())
        for rows in _chunks(target, table, columns, key, chunk_rows):
            for row in rows:
                digest.update(("|".join(_canon(v) for v in row) + "\n").encode("utf-8"))
    return digest.hexdigest()


def _canon(value: object) -> str:
    if value is None:
        return "N"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def migrate(
    from_target: object,
    to_target: object,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    chunk_rows: int = MIGRATION_CHUNK_ROWS,
) -> MigrationReport:
    """Copy a database (SQLite file or PostgreSQL) into an empty PostgreSQL one.

    Streams table by table in key order, `chunk_rows` rows per transaction, then
    verifies: row counts of every table and a checksum of ``bars_1s`` and ``bars``
    (`bars_checksum`) on both sides. The lease row is not copied.

    Parameters
    ----------
    from_target : source database setting (file path, ``sqlite:///``, URL).
    to_target : destination PostgreSQL URL; its schema is created if needed and
        must hold no market data and no alert rows yet.
    progress : called as ``progress(table, rows_copied, rows_total)`` after each
        chunk.
    chunk_rows : rows per chunk (>= 1).

    Returns
    -------
    MigrationReport
        Counts, checksums and ``ok``.

    Raises
    ------
    ValueError
        When the destination is not a PostgreSQL URL, is the source, is not empty,
        or `chunk_rows` < 1.
    StorageError
        When either side cannot be read or written.
    """
    if not is_postgres_url(to_target):
        raise ValueError(
            f"to: the destination must be a postgresql:// URL, got {to_target!r}"
        )
    if (
        isinstance(chunk_rows, bool)
        or not isinstance(chunk_rows, int)
        or chunk_rows < 1
    ):
        raise ValueError(f"chunk_rows must be an integer >= 1, got {chunk_rows!r}")
    if is_postgres_url(from_target) and parse_target(from_target) == parse_target(
        to_target
    ):
        raise ValueError("to: the destination is the source")
    if not is_postgres_url(from_target) and not storage._as_path(from_target).exists():
        raise ValueError(f"from: no database file at {from_target}")
    started = time.monotonic()
    with PgWriter(to_target, admin_timeout_ms=30_000) as dst:
        busy = [t for t, _, _ in _COPY_TABLES if _count(dst.target.url, t)]
        if busy:
            raise ValueError(
                f"to: the destination already holds rows in {', '.join(busy)}; "
                "migrate into an empty database or schema"
            )
        for table, columns, key in _COPY_TABLES:
            total = _count(from_target, table)
            done = 0
            if progress is not None:
                progress(table, 0, total)
            for rows in _chunks(from_target, table, columns, key, chunk_rows):
                dst._copy_rows(table, columns, rows)
                done += len(rows)
                if progress is not None:
                    progress(table, done, total)
        dst._after_copy()
        target_url = dst.target.url
    storage.close_readers()
    tables = tuple(
        TableCopy(t, _count(from_target, t), _count(target_url, t))
        for t, _, _ in _COPY_TABLES
    )
    src_sum = bars_checksum(from_target, chunk_rows=chunk_rows)
    dst_sum = bars_checksum(target_url, chunk_rows=chunk_rows)
    ok = src_sum == dst_sum and all(tc.source_rows == tc.target_rows for tc in tables)
    return MigrationReport(
        source=_display(from_target),
        target=_display(to_target),
        tables=tables,
        bars_checksum_source=src_sum,
        bars_checksum_target=dst_sum,
        seconds=time.monotonic() - started,
        ok=ok,
    )


def copy_to_sqlite(
    from_target: object, db_file: Path, *, chunk_rows: int = MIGRATION_CHUNK_ROWS
) -> None:
    """Copy a PostgreSQL database or dataset into a new SQLite file (`migrate` back).

    Streams table by table in key order, `chunk_rows` rows per transaction; the
    lease row is not copied. Used to extend a dataset atomically: import into
    the copy, then `install_dataset` it.
    """
    Writer(db_file).close()  # creates the file with the current schema
    conn = sqlite3.connect(db_file, isolation_level=None)
    try:
        for table, columns, key in _COPY_TABLES:
            marks = ", ".join("?" * len(columns))
            stmt = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
            for rows in _chunks(from_target, table, columns, key, chunk_rows):
                conn.execute("BEGIN")
                conn.executemany(stmt, rows)
                conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"copy_to_sqlite failed: {exc} ({db_file})") from exc
    finally:
        conn.close()


STAGING_PREFIX = "_staging_"
STAGING_MAX_AGE_S = 86_400


def install_dataset(base: object, name: str, db_file: Path) -> str:
    """Replace (or create) dataset `name` of `base` with a SQLite file's contents.

    The file is copied with `migrate` into a staging schema
    ``_staging_<unix seconds>_<pid>`` (not listed as a dataset), verified by row
    counts and bars checksum, then one transaction drops the old dataset schema,
    renames the staging schema to ``ds_NAME`` and labels it: readers see the old
    dataset or the new one, never a part. On any error the staging schema is
    dropped and the old dataset is untouched. Staging schemas left by a crashed
    process are dropped after a day. Returns the dataset URL.

    Raises
    ------
    StorageError
        When the copy fails or does not verify.
    """
    t = parse_target(base)
    final = dataset_schema(name)
    staging = f"{STAGING_PREFIX}{int(time.time())}_{os.getpid()}"
    staging_url = t.url.split("?", 1)[0] + "?" + urlencode([("schema", staging)])
    _drop_stale_staging(base)
    try:
        report = migrate(db_file, staging_url)
        if not report.ok:
            raise StorageError(
                f"install_dataset failed: the copy into {t.host}:{t.port}/{t.dbname} "
                f"did not verify\n{report.summary()}"
            )
        close_readers()
        with _admin("install_dataset", base) as conn, conn.transaction():
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(final)
                )
            )
            _rename_to_dataset(conn, staging, name)
    except BaseException:
        with suppress(StorageError):
            _drop_schema(base, staging)
        raise
    return dataset_url(base, name)


def _drop_schema(base: object, schema: str) -> None:
    close_readers()
    with _admin("install_dataset", base) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


def _drop_stale_staging(base: object) -> None:
    """Drop staging schemas older than `STAGING_MAX_AGE_S` (left by a crash)."""
    with _admin("install_dataset", base) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
                (STAGING_PREFIX,),
            )
        ]
    cutoff = time.time() - STAGING_MAX_AGE_S
    for schema in names:
        m = re.fullmatch(re.escape(STAGING_PREFIX) + r"(\d+)_\d+", schema)
        if m is not None and int(m.group(1)) < cutoff:
            _drop_schema(base, schema)


def _cmd_migrate(args: argparse.Namespace) -> int:
    """``migrate --from SRC --to DST``: copy, print progress and the verification."""
    last = [0.0]

    def progress(table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last[0] >= 1.0:
            last[0] = now
            print(f"{table}: {done}/{total} rows", flush=True)

    try:
        report = migrate(args.source, args.target, progress, chunk_rows=args.chunk)
    except (ValueError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary(), flush=True)
    return 0 if report.ok else 1


def add_cli_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``migrate --from SRC --to DST [--chunk N]`` on a CLI's subparsers."""
    p = subparsers.add_parser(
        "migrate",
        help="copy a database (e.g. the SQLite file) into PostgreSQL, verified",
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        help="source: SQLite file, sqlite:///path or postgresql:// URL",
    )
    p.add_argument(
        "--to",
        dest="target",
        required=True,
        help="destination: postgresql://user@host:port/dbname (empty)",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=MIGRATION_CHUNK_ROWS,
        help=f"rows per transaction (default {MIGRATION_CHUNK_ROWS})",
    )
    p.set_defaults(func=_cmd_migrate)


# Public aliases kept next to their SQLite counterparts in `storage`.
__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "MigrationReport",
    "PgTarget",
    "PgWriter",
    "TableCopy",
    "add_cli_commands",
    "bars_checksum",
    "close_readers",
    "dataset_schema",
    "dataset_url",
    "delete_dataset",
    "file_bytes",
    "is_postgres_url",
    "list_datasets",
    "migrate",
    "parse_target",
    "query",
    "query_matrix",
    "rename_dataset",
]
