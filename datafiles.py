"""Data in and out: import market-data files into datasets, export bars and tables.

Import (``import_file``) reads, by content, with an explicit override:

- Binance public-data USD-M ``trades`` (``id,price,qty,quote_qty,time,is_buyer_maker``),
  ``aggTrades`` (``agg_trade_id,price,quantity,first_trade_id,last_trade_id,
  transact_time,is_buyer_maker``) and ``klines`` (12 columns, any interval, inferred
  from ``close_time - open_time + 1``), each with or without a header row, millisecond
  or microsecond timestamps, as CSV or as the ``.zip`` Binance publishes;
- a generic tick CSV (timestamp, [symbol], price, qty; synonyms matched
  case-insensitively: time/date/datetime/ts, px/last, size/amount/quantity);
- NDJSON ticks as a browser collector saves them (``{"symbol": "BTCUSDT", "ts":
  "2025-10-18T09:30:00.123Z", "price": 67000.5, "size": 0.01}``; no trade id: ids are
  assigned and duplicates are judged by the whole line);
- a generic OHLCV CSV (timestamp, optional symbol, open, high, low, close, optional
  volume).

Files stream in chunks (bounded memory) into a temporary database file beside the
dataset, which is renamed into place only when the whole file was read and written:
a bad file leaves nothing behind and an existing dataset is untouched. Problems are
reported as `FileImportError` naming the file, the 1-based line, the column and the
value. Zip bombs and giant lines are refused before they cost memory
(`MAX_ZIP_MEMBERS`, `MAX_ZIP_DIRECTORY_BYTES`, `MAX_ZIP_RATIO`, `MAX_LINE_BYTES`);
what an import killed mid-way left behind is removed by the next one
(`remove_import_leftovers`).

Export streams bars and ticks of a window to CSV (``ts`` in ISO-8601 UTC) in time
slices, so a large window never sits in memory at once; every CSV written here has
its formula-like text cells escaped (`escape_formula_cells`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import queue
import re
import struct
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

import resampling
import storage
from models import BAR_COLUMNS, interval_label, normalize_symbol
from models import now_ms as _now_ms
from pairdesk.view.window import read_bars_any  # re-exported: moved to the view

# ---------------------------------------------------------------------------- constants

TRADES = "trades"
AGG_TRADES = "aggTrades"
KLINES = "klines"
TICKS = "ticks"
NDJSON = "ndjson"
OHLCV = "ohlcv"
FORMAT_KINDS: tuple[str, ...] = (TRADES, AGG_TRADES, KLINES, TICKS, NDJSON, OHLCV)
BINANCE_KINDS: frozenset[str] = frozenset({TRADES, AGG_TRADES, KLINES})
TICK_KINDS: frozenset[str] = frozenset({TRADES, AGG_TRADES, TICKS, NDJSON})

TRADES_COLUMNS = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker")
AGG_TRADES_COLUMNS = (
    "agg_trade_id",
    "price",
    "quantity",
    "first_trade_id",
    "last_trade_id",
    "transact_time",
    "is_buyer_maker",
)
KLINES_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
BINANCE_COLUMNS: dict[str, tuple[str, ...]] = {
    TRADES: TRADES_COLUMNS,
    AGG_TRADES: AGG_TRADES_COLUMNS,
    KLINES: KLINES_COLUMNS,
}

# Role -> accepted header names (compared after lower-casing and mapping spaces and
# hyphens to underscores). First match wins, in this order.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "ts": (
        "timestamp",
        "time",
        "datetime",
        "date",
        "ts",
        "ts_ms",
        "time_ms",
        "timestamp_ms",
        "open_time",
        "transact_time",
        "trade_time",
    ),
    "symbol": ("symbol", "ticker", "instrument", "pair", "market"),
    "price": ("price", "px", "last", "last_price", "trade_price"),
    "qty": ("qty", "size", "amount", "quantity", "volume", "vol", "base_volume"),
    "id": ("id", "trade_id", "tradeid", "agg_trade_id"),
    "is_buyer_maker": ("is_buyer_maker", "buyer_maker", "isbuyermaker"),
    "side": ("side", "taker_side", "aggressor_side"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v", "base_volume", "qty"),
    "quote_volume": ("quote_volume", "quote_vol", "quote_asset_volume", "turnover"),
    "trades": ("trades", "count", "trade_count", "number_of_trades", "n_trades"),
}
# NDJSON keys: words case-insensitively, Binance one-letter keys exactly.
NDJSON_KEYS: dict[str, tuple[str, ...]] = {
    "ts": ("ts", "timestamp", "time", "datetime", "date", "T"),
    "symbol": ("symbol", "s"),
    "price": ("price", "px", "last", "p"),
    "qty": ("size", "qty", "quantity", "amount", "q"),
    "id": ("id", "trade_id", "t"),
    "is_buyer_maker": ("is_buyer_maker", "m"),
    "side": ("side",),
}

# Epoch magnitude bounds: a value below the bound is in that unit. Dates 1973..5138
# in seconds, 1973..5138 in ms, and so on: unambiguous for market data.
TS_UNITS: tuple[tuple[str, float], ...] = (
    ("s", 1e11),
    ("ms", 1e14),
    ("us", 1e17),
    ("ns", math.inf),
)
TS_UNIT_NAMES = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "iso": "ISO-8601 text",
}
USDM_OPEN_MS = 1_546_300_800_000  # 2019-01-01T00:00:00Z; USD-M futures opened in 2019
FUTURE_TOLERANCE_MS = 5 * 60_000  # clock skew allowed before a timestamp is "future"
HEAD_BYTES = 64 * 1024
DEFAULT_CHUNK_ROWS = 200_000
# rows per write transaction of an import (measured: see bench/bench_import.py)
IMPORT_TX_ROWS = 50_000
EXPORT_SLICE_MS = 6 * 3_600_000  # bars are read and written six hours at a time
EXPORT_TICK_SLICE_MS = 60_000 * 10
EPOCH = pd.Timestamp(0, tz="UTC")
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
ZIP_EOCD_SIZE = 22  # bytes of a zip's end-of-central-directory record
# Zip-bomb and giant-line limits (a file over one is refused with a FileImportError
# naming the limit). A Binance zip holds one CSV; market-data CSVs compress 3-10x
# and their lines are under 1 kB. The limits keep an import under ~400 MB RSS.
MAX_ZIP_MEMBERS = 1_000
MAX_ZIP_DIRECTORY_BYTES = 1 << 20
MAX_ZIP_RATIO = 100  # uncompressed / compressed size of the CSV member ...
ZIP_RATIO_FREE_BYTES = 256 << 20  # ... checked only above 256 MB uncompressed
MAX_LINE_BYTES = 4 << 20
QUOTE_SUFFIX = re.compile(r"^[A-Z0-9]{1,16}(USDT|USDC|BUSD|FDUSD|USD)$")
_TOKEN_SPLIT = re.compile(r"[-_. ]+")
_ZONE_SUFFIX = r"(?:[Zz]|[+-]\d{2}:?\d{2})$"
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}
# a text cell starting with one of these runs as a formula in a spreadsheet
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_START = r"[=+\-@\t\r]"


# ------------------------------------------------------------------------------ errors


class FileImportError(ValueError):
    """A file cannot be imported; the message names file, row, column and value.

    Attributes
    ----------
    file : the file's name (no directories).
    row : 1-based line number in the file (the header is line 1), or None when the
        problem concerns the file as a whole.
    column : the column (header name, or the Binance name for headerless files).
    value : the offending text, or None.
    """

    def __init__(
        self,
        file: str,
        reason: str,
        *,
        row: int | None = None,
        column: str | None = None,
        value: object = None,
    ) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.value = None if value is None else str(value)
        where = [file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        if value is not None:
            where.append(f"value {str(value)[:80]!r}")
        super().__init__(", ".join(where) + f": {reason}")


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class FileFormat:
    """What a file holds and how to read it.

    Attributes
    ----------
    kind : one of `FORMAT_KINDS` ("trades", "aggTrades", "klines", "ticks", "ndjson",
        "ohlcv").
    has_header : the first (non-comment) line names the columns.
    compression : "zip" for a Binance ``.zip`` (one CSV member), else None.
    member : name of the CSV member inside the zip, else None.
    columns : column names as read (header names, or the Binance names for headerless
        files); empty for NDJSON.
    roles : (role, column) pairs: which column holds ts, price, qty, symbol, ...
    ts_unit : unit of the first timestamp seen ("s", "ms", "us", "ns", "iso"), or None.
    interval_s : bar length in seconds for klines (from open/close time), else None.
    skip_lines : leading ``#`` comment lines (as written by `frame_to_csv_bytes`).
    """

    kind: str
    has_header: bool
    compression: str | None = None
    member: str | None = None
    columns: tuple[str, ...] = ()
    roles: tuple[tuple[str, str], ...] = ()
    ts_unit: str | None = None
    interval_s: int | None = None
    skip_lines: int = 0

    def column_for(self, role: str) -> str | None:
        """Return the column that plays `role` (e.g. "price"), or None."""
        for name, column in self.roles:
            if name == role:
                return column
        return None


@dataclass(frozen=True, slots=True)
class ImportProgress:
    """Progress of a running import, passed to the ``progress`` callback per chunk.

    Attributes
    ----------
    rows_read : data rows read so far.
    bytes_read : bytes of (uncompressed) file content consumed so far (approximate:
        the CSV reader reads ahead).
    total_bytes : size of the (uncompressed) content, 0 when unknown.
    """

    rows_read: int
    bytes_read: int
    total_bytes: int

    @property
    def fraction(self) -> float:
        """Share of the file read, 0..1 (0 when the size is unknown)."""
        if self.total_bytes <= 0:
            return 0.0
        return min(1.0, self.bytes_read / self.total_bytes)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """Outcome of one successful `import_file`.

    Attributes
    ----------
    dataset : dataset name.
    db_path : the dataset's database file (a URL for a PostgreSQL dataset).
    source : the imported file.
    format : detected (or forced) `FileFormat.kind`.
    symbols : symbols imported, upper case, sorted.
    rows_read : data rows read from the file (blank lines not counted).
    ticks_inserted : new ticks stored (0 for bar files).
    duplicates_dropped : rows dropped as duplicates (same trade id, same NDJSON line,
        or the same bar timestamp), within the file or already in the dataset.
    bars_written : bar rows written to ``bars`` (klines/OHLCV; 0 for tick files, whose
        1 s bars the writer builds).
    interval_s : bar length of bar files in seconds, else None.
    first_ts_ms, last_ts_ms : range of the imported timestamps, ms UTC (None if none).
    notes : plain-language remarks ("timestamps had no zone: UTC assumed", ...).
    leftover_files, leftover_bytes : temporary files of killed imports removed
        before this one (`remove_import_leftovers`), and their size.
    """

    dataset: str
    db_path: Path | str
    source: Path
    format: str
    symbols: tuple[str, ...]
    rows_read: int
    ticks_inserted: int
    duplicates_dropped: int
    bars_written: int
    interval_s: int | None
    first_ts_ms: int | None
    last_ts_ms: int | None
    notes: tuple[str, ...] = ()
    leftover_files: int = 0
    leftover_bytes: int = 0

    def summary(self) -> str:
        """One line for a CLI or a dashboard message."""
        span = ""
        if self.first_ts_ms is not None and self.last_ts_ms is not None:
            span = f", {_iso(self.first_ts_ms)} -> {_iso(self.last_ts_ms)}"
        what = (
            f"{self.ticks_inserted} ticks"
            if self.format in TICK_KINDS
            else f"{self.bars_written} bars of {self.interval_s} s"
        )
        text = (
            f"{self.source.name} ({self.format}) -> dataset {self.dataset!r}: "
            f"{','.join(self.symbols)}, {self.rows_read} rows, {what}, "
            f"{self.duplicates_dropped} duplicates dropped{span}"
        )
        if self.notes:
            text += "; " + "; ".join(self.notes)
        cleanup = LeftoverCleanup(self.leftover_files, self.leftover_bytes).note()
        if cleanup:
            text += "; " + cleanup
        return text


@dataclass(frozen=True, slots=True)
class ExportReport:
    """Outcome of a CSV export.

    Attributes
    ----------
    rows : data rows written (header and comment lines not counted).
    first_ts_ms, last_ts_ms : range of the written rows' ``ts``, ms UTC (None if none).
    source : where the rows came from ("bars_1s", "bars(60s)", "ticks", ...).
    """

    rows: int
    first_ts_ms: int | None
    last_ts_ms: int | None
    source: str


@dataclass(slots=True)
class _Chunk:
    """Normalised rows of one chunk (internal).

    ``frame`` for tick kinds: symbol, trade_id, ts_ms, price, qty, is_buyer_maker, line;
    for bar kinds: symbol, ts_ms, open, high, low, close, volume, quote_volume, trades,
    line. ``line`` is the 1-based line in the file.
    """

    frame: pd.DataFrame
    rows_read: int
    bytes_read: int
    duplicates: int = 0
    notes: set[str] = field(default_factory=set)


# ----------------------------------------------------------------------- small helpers


def _iso(ts_ms: int) -> str:
    """ISO-8601 UTC text of integer milliseconds."""
    return pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").isoformat()


def _norm_name(text: str) -> str:
    """Header name as compared with `SYNONYMS`: stripped, lower case, underscores."""
    return re.sub(r"[\s\-]+", "_", text.strip().strip('"').strip()).lower()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_bool(text: str) -> bool:
    return text.strip().lower() in ("true", "false")


def symbol_from_filename(name: str) -> str | None:
    """Symbol named by a file, or None.

    The token before the first ``-`` (``BTCUSDT-trades-2024-01-01.csv`` -> BTCUSDT),
    else the first ``_``/``-``/``.``-separated token that looks like a USD-quoted
    perpetual (``um_aggTrades_BTCUSDT_2023-05.csv`` -> BTCUSDT).
    """
    stem = Path(name).name
    head = stem.split("-", 1)[0]
    if "-" in stem and re.fullmatch(r"[A-Za-z0-9]{2,20}", head):
        return head.upper()
    for token in _TOKEN_SPLIT.split(stem):
        if QUOTE_SUFFIX.match(token):
            return token
    return None


# ------------------------------------------------------------------- format detection


def _open_source(path: Path) -> tuple[IO[bytes], str | None, int]:
    """Open `path` for binary reading; a zip's single CSV member is streamed.

    Returns (stream, member name or None, uncompressed size in bytes). The stream
    refuses a line longer than `MAX_LINE_BYTES`; a zip is checked against the
    zip-bomb limits (`_check_zip_directory`, `_check_zip_member`) before any
    member is read.
    """
    label = path.name
    with open(path, "rb") as probe:
        magic = probe.read(4)
        if magic in ZIP_MAGIC:
            _check_zip_directory(probe, label)
    if magic not in ZIP_MAGIC:
        return _LimitedStream(open(path, "rb"), label), None, path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise FileImportError(label, f"not a readable zip archive ({exc})") from exc
    try:
        member = _csv_member(archive, label)
        info = archive.getinfo(member)
        _check_zip_member(info, label)
        stream = archive.open(info)
    except BaseException:
        archive.close()
        raise
    return _LimitedStream(stream, label, archive), member, info.file_size


def _zip_end_record(fh: IO[bytes]) -> tuple[int, int, int]:
    """(members listed, central directory bytes, end offset) from a zip's end
    records (zip64 when present), or (0, 0, -1) when there is no end record."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    tail_at = max(0, size - ZIP_EOCD_SIZE - 0xFFFF)  # the comment is < 64 KiB
    fh.seek(tail_at)
    tail = fh.read(size - tail_at)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < ZIP_EOCD_SIZE:
        return 0, 0, -1
    fields = struct.unpack("<4s4H2LH", tail[at : at + ZIP_EOCD_SIZE])
    members, cd_bytes = fields[5], fields[6]
    locator = tail[at - 20 : at] if at >= 20 else b""
    if locator[:4] == b"PK\x06\x07":  # zip64: the counts are in its own record
        fh.seek(struct.unpack("<Q", locator[8:16])[0])
        record = fh.read(56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            members, cd_bytes = struct.unpack("<4sQ2H2L4Q", record)[7:9]
    return members, cd_bytes, tail_at + at


def _check_zip_directory(fh: IO[bytes], label: str) -> None:
    """Refuse a zip listing more than `MAX_ZIP_MEMBERS` members or a central
    directory over `MAX_ZIP_DIRECTORY_BYTES`, from its end record alone (before
    ``zipfile`` reads the directory, which costs time and memory per member)."""
    members, cd_bytes, _ = _zip_end_record(fh)
    if members > MAX_ZIP_MEMBERS:
        raise FileImportError(
            label,
            f"the zip archive lists {members:,} members; at most "
            f"{MAX_ZIP_MEMBERS:,} are accepted (MAX_ZIP_MEMBERS; a Binance zip "
            "holds one CSV)",
        )
    if cd_bytes > MAX_ZIP_DIRECTORY_BYTES:
        raise FileImportError(
            label,
            f"the zip archive's directory is {cd_bytes:,} bytes; at most "
            f"{MAX_ZIP_DIRECTORY_BYTES:,} are accepted (MAX_ZIP_DIRECTORY_BYTES)",
        )
    fh.seek(0)


def _check_zip_member(info: zipfile.ZipInfo, label: str) -> None:
    """Refuse a member that expands more than `MAX_ZIP_RATIO` times (above
    `ZIP_RATIO_FREE_BYTES`): market-data CSVs compress 3-10x, a zip bomb ~1000x."""
    allowed = max(ZIP_RATIO_FREE_BYTES, MAX_ZIP_RATIO * info.compress_size)
    if info.file_size > allowed:
        ratio = info.file_size / max(1, info.compress_size)
        raise FileImportError(
            label,
            f"{info.filename} would expand from {info.compress_size:,} to "
            f"{info.file_size:,} bytes ({ratio:,.0f}x); above "
            f"{ZIP_RATIO_FREE_BYTES >> 20} MB at most {MAX_ZIP_RATIO}x is accepted "
            "(MAX_ZIP_RATIO): a zip bomb?",
        )


def _csv_member(archive: zipfile.ZipFile, label: str) -> str:
    names = [
        info.filename
        for info in archive.infolist()
        if not info.is_dir() and not info.filename.startswith("__MACOSX/")
    ]
    csvs = [n for n in names if n.lower().endswith(".csv")]
    if not csvs:
        found = ", ".join(names[:5]) if names else "nothing"
        raise FileImportError(
            label, f"the zip archive holds no CSV file (found: {found})"
        )
    if len(csvs) > 1:
        raise FileImportError(
            label,
            f"the zip archive holds {len(csvs)} CSV files ({', '.join(csvs[:3])}, ...);"
            " import them one by one",
        )
    return csvs[0]


class _LimitedStream(io.RawIOBase):
    """A file or zip member, read forward, that refuses over-long lines.

    Raises `FileImportError` naming the line as soon as more than `MAX_LINE_BYTES`
    bytes pass without a line break, so that neither the CSV parser nor
    ``readline`` ever holds a giant line (a zip bomb of one 1 GiB line). Closing it
    closes the zip archive too.
    """

    def __init__(
        self, member: IO[bytes], label: str, archive: zipfile.ZipFile | None = None
    ) -> None:
        super().__init__()
        self._member = member
        self._label = label
        self._archive = archive
        self._pos = 0
        self._breaks = 0  # "\n" seen: the current line is self._breaks + 1
        self._run = 0  # bytes since the last line break

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # blocks of at most 1 MiB: a line inside one block is under the limit
        data = self._member.read(min(len(buffer), 1 << 20))
        n = len(data)
        buffer[:n] = data
        self._pos += n
        cuts = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
        if self._run + (min(cuts) if cuts else n) > MAX_LINE_BYTES:
            raise FileImportError(
                self._label,
                f"a line longer than {MAX_LINE_BYTES >> 20} MB (MAX_LINE_BYTES); "
                "market-data lines are under 1 kB: not a CSV of trades or bars?",
                row=self._breaks + 1,
            )
        if cuts:
            self._breaks += data.count(b"\n")
            self._run = n - 1 - max(data.rfind(b"\n"), data.rfind(b"\r"))
        else:
            self._run += n
        return n

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._member.close()
            if self._archive is not None:
                self._archive.close()
        super().close()


def _read_head(path: Path) -> tuple[bytes, str | None]:
    stream, member, _ = _open_source(path)
    with stream:
        return stream.read(HEAD_BYTES), member


def _head_lines(head: bytes, label: str) -> tuple[list[str], int]:
    """Decode the head and return (non-blank lines, leading comment lines)."""
    if not head.strip():
        raise FileImportError(label, "the file is empty")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise FileImportError(
            label, f"binary content (NUL byte at offset {nul}); expected a text CSV"
        )
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte char cut at the end
            raise FileImportError(
                label,
                f"binary content (not UTF-8 at offset {exc.start}); "
                "expected a text CSV",
            ) from exc
        text = head[: exc.start].decode("utf-8")
    lines = text.splitlines()
    if len(head) >= HEAD_BYTES and lines:
        lines = lines[:-1]  # the last line may be cut
    skip = 0
    for line in lines:
        if line.startswith("#"):
            skip += 1
        else:
            break
    body = [ln for ln in lines[skip:] if ln.strip()]
    if not body:
        raise FileImportError(label, "the file is empty")
    return body, skip


def detect_format(
    source: str | os.PathLike[str] | bytes,
    name: str | None = None,
    *,
    fmt: str | None = None,
) -> FileFormat:
    """Recognise a file's layout from its content.

    Parameters
    ----------
    source : a path, or the first bytes of the file (a zip needs the whole file or
        its path, since its directory sits at the end).
    name : file name used in messages (defaults to the path's name).
    fmt : force one of `FORMAT_KINDS` (case-insensitive) instead of guessing the kind;
        the header and the columns are still read from the content.

    Returns
    -------
    FileFormat

    Raises
    ------
    FileImportError
        Empty or binary file, wrong delimiter, a zip without a CSV, a layout that
        cannot be recognised, or a header without a price (or timestamp) column.
    ValueError
        `fmt` is not one of `FORMAT_KINDS`.
    """
    forced = _check_kind(fmt)
    if isinstance(source, bytes | bytearray):
        label = name or "<data>"
        head = bytes(source[:HEAD_BYTES])
        member = None
        if head[:4] in ZIP_MAGIC:
            data = io.BytesIO(bytes(source))
            _check_zip_directory(data, label)
            try:
                archive = zipfile.ZipFile(data)
            except zipfile.BadZipFile as exc:
                raise FileImportError(
                    label, "a zip archive needs the whole file, not its first bytes"
                ) from exc
            with archive:
                member = _csv_member(archive, label)
                _check_zip_member(archive.getinfo(member), label)
                with archive.open(member) as stream:
                    head = stream.read(HEAD_BYTES)
    else:
        path = Path(source)
        label = name or path.name
        if not path.is_file():
            raise FileImportError(label, "no such file")
        head, member = _read_head(path)
    lines, skip = _head_lines(head, label)
    found = _detect_from_lines(lines, label, forced)
    return FileFormat(
        kind=found.kind,
        has_header=found.has_header,
        compression="zip" if member else None,
        member=member,
        columns=found.columns,
        roles=found.roles,
        ts_unit=found.ts_unit,
        interval_s=found.interval_s,
        skip_lines=skip,
    )


def _check_kind(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    for kind in FORMAT_KINDS:
        if fmt.strip().lower() == kind.lower():
            return kind
    raise ValueError(f"fmt must be one of {', '.join(FORMAT_KINDS)}, got {fmt!r}")


def _detect_from_lines(lines: list[str], label: str, forced: str | None) -> FileFormat:
    first = lines[0].lstrip()
    if forced == NDJSON or (forced is None and first.startswith("{")):
        return _detect_ndjson(lines, label)
    if first.count(",") == 0:
        for delim, word in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if delim in first:
                raise FileImportError(
                    label,
                    f"fields are separated by {word}, expected commas",
                    row=1,
                    value=first[:60],
                )
    fields = next(csv.reader([first]))
    has_header = not all(_is_number(f) or _is_bool(f) or not f.strip() for f in fields)
    if has_header:
        return _detect_with_header(fields, lines, label, forced)
    return _detect_headerless(fields, label, forced)


def _detect_headerless(fields: list[str], label: str, forced: str | None) -> FileFormat:
    n = len(fields)
    if forced in (TICKS, OHLCV):
        raise FileImportError(
            label,
            f"a {forced} file needs a header row naming its columns",
            row=1,
        )
    kind = forced
    if kind is None:
        if n == 6 and _is_bool(fields[5]):
            kind = TRADES
        elif n == 7 and _is_bool(fields[6]):
            kind = AGG_TRADES
        elif n == 12:
            kind = KLINES
        else:
            raise FileImportError(
                label,
                f"cannot recognise a header-less layout with {n} columns (Binance "
                "trades have 6, aggTrades 7, klines 12); add a header row such as "
                "timestamp,symbol,price,qty or pass the format",
                row=1,
            )
    columns = BINANCE_COLUMNS[kind]
    if n != len(columns):
        raise FileImportError(
            label,
            f"format {kind} has {len(columns)} columns, the file has {n}",
            row=1,
        )
    return _binance_format(kind, False, fields, label)


def _binance_format(
    kind: str, has_header: bool, first_row: list[str] | None, label: str
) -> FileFormat:
    columns = BINANCE_COLUMNS[kind]
    ts_col = {TRADES: "time", AGG_TRADES: "transact_time", KLINES: "open_time"}[kind]
    roles = (("ts", ts_col), ("price", "price"))
    if kind == TRADES:
        roles += (("qty", "qty"), ("id", "id"), ("is_buyer_maker", "is_buyer_maker"))
    elif kind == AGG_TRADES:
        roles += (
            ("qty", "quantity"),
            ("id", "agg_trade_id"),
            ("is_buyer_maker", "is_buyer_maker"),
        )
    else:
        roles = (("ts", ts_col),) + tuple(
            (c, c) for c in ("open", "high", "low", "close", "volume", "quote_volume")
        )
        roles += (("trades", "count"),)
    ts_unit = None
    interval_s = None
    if first_row is not None:
        try:
            ts_value = float(first_row[columns.index(ts_col)])
            ts_unit = _unit_of(ts_value)
            if kind == KLINES:
                close = float(first_row[columns.index("close_time")])
                interval_s = _kline_interval_s(ts_value, close, ts_unit)
        except (ValueError, IndexError):
            pass
    return FileFormat(
        kind=kind,
        has_header=has_header,
        columns=columns,
        roles=roles,
        ts_unit=ts_unit,
        interval_s=interval_s,
    )


def _detect_with_header(
    fields: list[str], lines: list[str], label: str, forced: str | None
) -> FileFormat:
    names = tuple(_norm_name(f) for f in fields)
    second = next(csv.reader([lines[1]])) if len(lines) > 1 else None
    for kind, columns in BINANCE_COLUMNS.items():
        if names == columns and forced in (None, kind):
            return _binance_format(kind, True, second, label)
    if forced in BINANCE_KINDS:
        expected = ",".join(BINANCE_COLUMNS[forced])
        if len(names) != len(BINANCE_COLUMNS[forced]):
            raise FileImportError(
                label,
                f"format {forced} expects the columns {expected}",
                row=1,
                value=",".join(fields),
            )
        found = _binance_format(forced, True, second, label)
        return FileFormat(
            kind=forced,
            has_header=True,
            columns=BINANCE_COLUMNS[forced],
            roles=found.roles,
            ts_unit=found.ts_unit,
            interval_s=found.interval_s,
        )

    def find(role: str) -> str | None:
        for synonym in SYNONYMS[role]:
            if synonym in names:
                return synonym
        return None

    roles: list[tuple[str, str]] = []
    ts_col = find("ts")
    has_ohlc = all(find(r) for r in ("open", "high", "low", "close"))
    kind = forced or (OHLCV if has_ohlc else TICKS)
    if kind == OHLCV:
        for role in ("open", "high", "low", "close"):
            col = find(role)
            if col is None:
                raise FileImportError(
                    label,
                    f"no {role} column (looked for {', '.join(SYNONYMS[role])})",
                    row=1,
                    value=",".join(fields),
                )
            roles.append((role, col))
        for role in ("volume", "quote_volume", "trades", "symbol"):
            col = find(role)
            if col is not None and col not in {c for _, c in roles}:
                roles.append((role, col))
    else:
        for role, what in (("price", "price"), ("qty", "quantity")):
            col = find(role)
            if col is None:
                raise FileImportError(
                    label,
                    f"no {what} column (looked for " + ", ".join(SYNONYMS[role]) + ")",
                    row=1,
                    value=",".join(fields),
                )
            roles.append((role, col))
        for role in ("symbol", "id", "is_buyer_maker", "side"):
            col = find(role)
            if col is not None:
                roles.append((role, col))
    if ts_col is None:
        raise FileImportError(
            label,
            "no timestamp column (looked for " + ", ".join(SYNONYMS["ts"]) + ")",
            row=1,
            value=",".join(fields),
        )
    roles.insert(0, ("ts", ts_col))
    ts_unit = None
    if second is not None and len(second) == len(names):
        raw = second[names.index(ts_col)].strip()
        ts_unit = _unit_of(float(raw)) if _is_number(raw) else "iso"
    if len(set(names)) != len(names):
        raise FileImportError(
            label, "the header names a column twice", row=1, value=",".join(fields)
        )
    return FileFormat(
        kind=kind,
        has_header=True,
        columns=names,
        roles=tuple(roles),
        ts_unit=ts_unit,
    )


def _detect_ndjson(lines: list[str], label: str) -> FileFormat:
    try:
        obj = json.loads(lines[0])
    except json.JSONDecodeError as exc:
        raise FileImportError(
            label, f"not valid JSON ({exc.msg})", row=1, value=lines[0][:60]
        ) from exc
    if not isinstance(obj, dict):
        raise FileImportError(label, "each line must be a JSON object", row=1)
    roles = _ndjson_roles(obj)
    for role in ("ts", "price", "qty"):
        if role not in dict(roles):
            raise FileImportError(
                label,
                f"no {role} key (looked for {', '.join(NDJSON_KEYS[role])})",
                row=1,
                value=lines[0][:60],
            )
    ts_raw = obj[dict(roles)["ts"]]
    unit = "iso" if isinstance(ts_raw, str) and not _is_number(ts_raw) else None
    if unit is None:
        try:
            unit = _unit_of(float(ts_raw))
        except (TypeError, ValueError):
            unit = None
    return FileFormat(kind=NDJSON, has_header=False, roles=roles, ts_unit=unit)


def _ndjson_roles(obj: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    lowered = {k.lower(): k for k in obj if len(k) > 1}
    roles = []
    for role, keys in NDJSON_KEYS.items():
        for key in keys:
            if len(key) == 1 and key in obj:
                roles.append((role, key))
                break
            if len(key) > 1 and key.lower() in lowered:
                roles.append((role, lowered[key.lower()]))
                break
    return tuple(roles)


# ------------------------------------------------------------------------- timestamps


def _unit_of(value: float) -> str:
    """Epoch unit of a positive timestamp by magnitude ("s", "ms", "us", "ns")."""
    for unit, bound in TS_UNITS:
        if abs(value) < bound:
            return unit
    return "ns"


def _kline_interval_s(open_time: float, close_time: float, unit: str) -> int:
    per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    return max(1, round((close_time - open_time + 1) / per_s))


def _units_array(values: np.ndarray) -> np.ndarray:
    """Unit index (0=s, 1=ms, 2=us, 3=ns) per value, by magnitude."""
    mags = np.abs(values.astype("float64"))
    return np.searchsorted(np.array([b for _, b in TS_UNITS[:-1]]), mags, side="right")


def _epoch_to_ms(values: np.ndarray, unit: str) -> np.ndarray:
    """Epoch values in `unit` to int64 milliseconds (sub-ms floored)."""
    if values.dtype.kind in "iu":
        v = values.astype("int64")
        if unit == "s":
            return v * 1000
        if unit == "ms":
            return v
        if unit == "us":
            return v // 1000
        return v // 1_000_000
    scale = {"s": 1e3, "ms": 1.0, "us": 1e-3, "ns": 1e-6}[unit]
    return np.floor(values.astype("float64") * scale + 1e-6).astype("int64")


class _Parser:
    """Turns raw chunks of one file into validated, normalised frames.

    Holds the state that spans chunks: the pinned timestamp unit, the kline interval,
    NDJSON line hashes and the id counter.
    """

    def __init__(
        self, fmt: FileFormat, label: str, symbol: str | None, now_ms: int
    ) -> None:
        self.fmt = fmt
        self.label = label
        self.symbol = symbol
        self.now_ms = now_ms
        self.ts_unit: str | None = None
        self.ts_unit_line = 0
        self.interval_s: int | None = fmt.interval_s
        self.interval_line = 0
        self.seen_hashes = np.empty(0, dtype="uint64")
        self.row_counter = 0
        self.notes: set[str] = set()

    # -- common checks -----------------------------------------------------------

    def fail(
        self, reason: str, *, line: int | None, column: str | None, value: object
    ) -> FileImportError:
        return FileImportError(self.label, reason, row=line, column=column, value=value)

    def numeric(
        self,
        frame: pd.DataFrame,
        column: str,
        *,
        lines: np.ndarray,
        positive: bool = False,
        non_negative: bool = False,
        integer: bool = False,
        required: bool = True,
    ) -> np.ndarray:
        """Validated numbers of one column (vectorised; the first bad cell is named)."""
        raw = frame[column]
        values = raw
        if raw.dtype == object or str(raw.dtype).startswith(("str", "string")):
            values = pd.to_numeric(raw, errors="coerce")
            bad = values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
            if bad.any():
                i = int(np.argmax(bad.to_numpy()))
                raise self.fail(
                    "not a number",
                    line=int(lines[i]),
                    column=column,
                    value=raw.iloc[i],
                )
        elif raw.dtype == bool:
            values = raw.astype("int64")
        arr = values.to_numpy(dtype="float64" if not integer else None, na_value=np.nan)
        if arr.dtype == object:
            arr = arr.astype("float64")
        missing = pd.isna(arr)
        if missing.any():
            if not required:
                return arr
            i = int(np.argmax(missing))
            raise self.fail(
                "value is missing", line=int(lines[i]), column=column, value=""
            )
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            i = int(np.argmax(~np.isfinite(arr)))
            raise self.fail(
                "not a finite number", line=int(lines[i]), column=column, value=arr[i]
            )
        if positive and (arr <= 0).any():
            i = int(np.argmax(arr <= 0))
            raise self.fail(
                "must be greater than 0",
                line=int(lines[i]),
                column=column,
                value=raw.iloc[i],
            )
        if non_negative and (arr < 0).any():
            i = int(np.argmax(arr < 0))
            raise self.fail(
                "must not be negative",
                line=int(lines[i]),
                column=column,
                value=raw.iloc[i],
            )
        if integer:
            if arr.dtype.kind == "f":
                frac = arr != np.floor(arr)
                if frac.any():
                    i = int(np.argmax(frac))
                    raise self.fail(
                        "must be a whole number",
                        line=int(lines[i]),
                        column=column,
                        value=raw.iloc[i],
                    )
            arr = arr.astype("int64")
        return arr

    def timestamps(
        self, frame: pd.DataFrame, column: str, *, lines: np.ndarray
    ) -> np.ndarray:
        """int64 ms UTC of one timestamp column: epoch by magnitude or ISO-8601."""
        raw = frame[column]
        numeric = raw
        is_text = raw.dtype == object or str(raw.dtype).startswith(("str", "string"))
        if is_text:
            numeric = pd.to_numeric(raw, errors="coerce")
            if numeric.notna().all():
                is_text = False
        if not is_text:
            arr = self.numeric(frame, column, lines=lines, positive=True)
            if raw.dtype.kind in "iu":
                arr = raw.to_numpy()
            units = _units_array(arr)
            first_unit = TS_UNITS[int(units[0])][0] if self.ts_unit is None else None
            if self.ts_unit is None:
                self.ts_unit = first_unit
                self.ts_unit_line = int(lines[0])
            pinned = [u for u, _ in TS_UNITS].index(self.ts_unit)
            odd = units != pinned
            if odd.any():
                i = int(np.argmax(odd))
                raise self.fail(
                    f"mixed timestamp units: this looks like "
                    f"{TS_UNIT_NAMES[TS_UNITS[int(units[i])][0]]} but row "
                    f"{self.ts_unit_line} was in {TS_UNIT_NAMES[self.ts_unit]}",
                    line=int(lines[i]),
                    column=column,
                    value=raw.iloc[i],
                )
            ts_ms = _epoch_to_ms(arr, self.ts_unit)
        else:
            if self.ts_unit not in (None, "iso"):
                raise self.fail(
                    f"mixed timestamp units: ISO-8601 text but row "
                    f"{self.ts_unit_line} was in {TS_UNIT_NAMES[self.ts_unit]}",
                    line=int(lines[0]),
                    column=column,
                    value=raw.iloc[0],
                )
            if self.ts_unit is None:
                self.ts_unit = "iso"
                self.ts_unit_line = int(lines[0])
            text = raw.astype(str).str.strip()
            if (~numeric.isna()).any():
                i = int(np.argmax(numeric.notna().to_numpy()))
                raise self.fail(
                    "mixed timestamp units: an epoch number among ISO-8601 text",
                    line=int(lines[i]),
                    column=column,
                    value=raw.iloc[i],
                )
            parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
            bad = parsed.isna().to_numpy()
            if bad.any():
                i = int(np.argmax(bad))
                raise self.fail(
                    "not a timestamp (expected ISO-8601 or epoch s/ms/us/ns)",
                    line=int(lines[i]),
                    column=column,
                    value=raw.iloc[i],
                )
            if not text.str.contains(_ZONE_SUFFIX, regex=True).all():
                self.notes.add("timestamps had no zone: UTC assumed")
            ts_ms = parsed.dt.as_unit("ms").astype("int64").to_numpy()
        future = ts_ms > self.now_ms + FUTURE_TOLERANCE_MS
        if future.any():
            i = int(np.argmax(future))
            raise self.fail(
                f"timestamp {_iso(int(ts_ms[i]))} is in the future",
                line=int(lines[i]),
                column=column,
                value=raw.iloc[i],
            )
        if self.fmt.kind in BINANCE_KINDS:
            early = ts_ms < USDM_OPEN_MS
            if early.any():
                i = int(np.argmax(early))
                raise self.fail(
                    f"timestamp {_iso(int(ts_ms[i]))} is before 2019, when Binance "
                    "USD-M futures opened",
                    line=int(lines[i]),
                    column=column,
                    value=raw.iloc[i],
                )
        elif (ts_ms < 0).any():
            i = int(np.argmax(ts_ms < 0))
            raise self.fail(
                "timestamp before 1970",
                line=int(lines[i]),
                column=column,
                value=raw.iloc[i],
            )
        return ts_ms

    def symbols(self, frame: pd.DataFrame, lines: np.ndarray) -> np.ndarray:
        """Upper-case symbol per row: from the column, the option, or the file name."""
        col = self.fmt.column_for("symbol")
        if col is None:
            if self.symbol is None:
                guess = symbol_from_filename(self.label)
                if guess is None:
                    raise self.fail(
                        "cannot tell the symbol: the file has no symbol column and its "
                        "name does not start with one (like BTCUSDT-trades-...); "
                        "pass the symbol",
                        line=None,
                        column=None,
                        value=None,
                    )
                self.symbol = normalize_symbol(guess)
            return np.full(len(frame), self.symbol, dtype=object)
        raw = frame[col].astype(str).str.strip()
        out = raw.str.upper()
        for sym in out.unique():
            try:
                normalize_symbol(sym)
            except ValueError:
                i = int(np.argmax((out == sym).to_numpy()))
                raise self.fail(
                    "not a valid symbol (2-20 letters or digits)",
                    line=int(lines[i]),
                    column=col,
                    value=raw.iloc[i],
                ) from None
        return out.to_numpy(dtype=object)

    def buyer_maker(self, frame: pd.DataFrame, lines: np.ndarray) -> np.ndarray:
        col = self.fmt.column_for("is_buyer_maker")
        if col is not None:
            raw = frame[col]
            if raw.dtype == bool:
                return raw.to_numpy()
            text = raw.astype(str).str.strip().str.lower()
            mapped = text.map(_BOOL_TEXT)
            bad = mapped.isna().to_numpy()
            if bad.any():
                i = int(np.argmax(bad))
                raise self.fail(
                    "not a boolean (true/false)",
                    line=int(lines[i]),
                    column=col,
                    value=raw.iloc[i],
                )
            return mapped.to_numpy(dtype=bool)
        side = self.fmt.column_for("side")
        if side is not None:
            text = frame[side].astype(str).str.strip().str.lower()
            bad = ~text.isin(["buy", "sell", "b", "s", "bid", "ask"])
            if bad.any():
                i = int(np.argmax(bad.to_numpy()))
                raise self.fail(
                    "side must be buy or sell",
                    line=int(lines[i]),
                    column=side,
                    value=frame[side].iloc[i],
                )
            # the aggressor sold -> the buyer was the maker
            return text.isin(["sell", "s", "ask"]).to_numpy()
        self.notes.add("no side column: is_buyer_maker set to false")
        return np.zeros(len(frame), dtype=bool)

    # -- per kind -----------------------------------------------------------------

    def ticks(self, frame: pd.DataFrame, lines: np.ndarray) -> pd.DataFrame:
        fmt = self.fmt
        price = self.numeric(frame, fmt.column_for("price"), lines=lines, positive=True)
        qty = self.numeric(frame, fmt.column_for("qty"), lines=lines, positive=True)
        ts_ms = self.timestamps(frame, fmt.column_for("ts"), lines=lines)
        symbols = self.symbols(frame, lines)
        maker = self.buyer_maker(frame, lines)
        id_col = fmt.column_for("id")
        if id_col is not None:
            ids = self.numeric(
                frame, id_col, lines=lines, integer=True, non_negative=True
            )
        else:
            ids = self._assigned_ids(frame, ts_ms, symbols, price, qty, lines)
        out = pd.DataFrame(
            {
                "symbol": symbols,
                "trade_id": ids,
                "ts_ms": ts_ms,
                "price": price,
                "qty": qty,
                "is_buyer_maker": maker,
                "line": lines,
            }
        )
        return out

    def _assigned_ids(
        self,
        frame: pd.DataFrame,
        ts_ms: np.ndarray,
        symbols: np.ndarray,
        price: np.ndarray,
        qty: np.ndarray,
        lines: np.ndarray,
    ) -> np.ndarray:
        """Ids for rows without one: (ts_ms << 21) | row counter mod 2**21.

        Ids then order by time first, and by file order within a millisecond, whatever
        chunk a row arrives in; they fit int64 until the year 2109.
        """
        self.notes.add("no trade ids: ids assigned in time and file order")
        n = len(frame)
        counter = (
            np.arange(self.row_counter, self.row_counter + n) % (1 << 21)
        ).astype("int64")
        self.row_counter += n
        return (ts_ms.astype("int64") << 21) | counter

    def bars(self, frame: pd.DataFrame, lines: np.ndarray) -> pd.DataFrame:
        fmt = self.fmt
        ts_ms = self.timestamps(frame, fmt.column_for("ts"), lines=lines)
        values: dict[str, np.ndarray] = {}
        for role in ("open", "high", "low", "close"):
            values[role] = self.numeric(
                frame, fmt.column_for(role), lines=lines, positive=True
            )
        vol_col = fmt.column_for("volume")
        if vol_col is None:
            self.notes.add("no volume column: volume set to 0")
            values["volume"] = np.zeros(len(frame))
        else:
            values["volume"] = self.numeric(
                frame, vol_col, lines=lines, non_negative=True
            )
        qv_col = fmt.column_for("quote_volume")
        if qv_col is None:
            self.notes.add(
                "no quote volume column: quote_volume estimated as close x volume"
            )
            values["quote_volume"] = values["close"] * values["volume"]
        else:
            values["quote_volume"] = self.numeric(
                frame, qv_col, lines=lines, non_negative=True
            )
        tr_col = fmt.column_for("trades")
        if tr_col is None:
            values["trades"] = np.zeros(len(frame), dtype="int64")
        else:
            values["trades"] = self.numeric(
                frame, tr_col, lines=lines, integer=True, non_negative=True
            )
        hi, lo = values["high"], values["low"]
        bad = (hi < np.maximum(values["open"], values["close"])) | (
            lo > np.minimum(values["open"], values["close"])
        )
        bad |= hi < lo
        if bad.any():
            i = int(np.argmax(bad))
            raise self.fail(
                "high must be >= open, close, low and low <= open, close",
                line=int(lines[i]),
                column=fmt.column_for("high"),
                value=frame[fmt.column_for("high")].iloc[i],
            )
        if fmt.kind == KLINES:
            self._check_kline_interval(frame, lines)
        symbols = self.symbols(frame, lines)
        out = pd.DataFrame({"symbol": symbols, "ts_ms": ts_ms, **values, "line": lines})
        return out

    def _check_kline_interval(self, frame: pd.DataFrame, lines: np.ndarray) -> None:
        open_t = self.numeric(frame, "open_time", lines=lines, positive=True)
        close_t = self.numeric(frame, "close_time", lines=lines, positive=True)
        per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[
            self.ts_unit or "ms"
        ]
        interval = np.round((close_t - open_t + 1) / per_s).astype("int64")
        if self.interval_s is None:
            self.interval_s = int(interval[0])
            self.interval_line = int(lines[0])
        odd = interval != self.interval_s
        if odd.any() and self.interval_s < 28 * 86_400:
            i = int(np.argmax(odd))
            raise self.fail(
                f"kline interval {int(interval[i])} s differs from {self.interval_s} s "
                f"in row {self.interval_line}",
                line=int(lines[i]),
                column="close_time",
                value=frame["close_time"].iloc[i],
            )

    def ohlcv_interval(self, ts_ms: np.ndarray) -> None:
        """Infer (or check) the bar interval of a generic OHLCV file, in seconds."""
        diffs = np.diff(np.unique(ts_ms))
        if len(diffs) == 0:
            return
        step = int(diffs.min())
        if step % 1000:
            raise self.fail(
                f"bars {step} ms apart: bar intervals must be whole seconds",
                line=None,
                column=self.fmt.column_for("ts"),
                value=None,
            )
        if self.interval_s is None or step // 1000 < self.interval_s:
            if self.interval_s is not None:
                raise self.fail(
                    f"bars {step // 1000} s apart, but earlier rows were "
                    f"{self.interval_s} s apart",
                    line=None,
                    column=self.fmt.column_for("ts"),
                    value=None,
                )
            self.interval_s = step // 1000

    def ndjson_frame(self, lines_text: list[bytes], first_line: int) -> pd.DataFrame:
        """Parse NDJSON lines into a frame of role-named columns; drop whole-line
        duplicates (within the chunk and against earlier chunks)."""
        records = []
        line_no = []
        hashes = []
        roles = dict(self.fmt.roles)
        for offset, raw in enumerate(lines_text):
            text = raw.strip()
            if not text:
                continue
            line = first_line + offset
            try:
                obj = json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise self.fail(
                    f"not valid JSON ({getattr(exc, 'msg', exc)})",
                    line=line,
                    column=None,
                    value=text[:60].decode("utf-8", "replace"),
                ) from exc
            if not isinstance(obj, dict):
                raise self.fail(
                    "each line must be a JSON object",
                    line=line,
                    column=None,
                    value=None,
                )
            row = {}
            for key in roles.values():
                row[key] = obj.get(key)
            records.append(row)
            line_no.append(line)
            digest = hashlib.blake2b(text, digest_size=8).digest()
            hashes.append(int.from_bytes(digest, "little"))
        frame = pd.DataFrame.from_records(records, columns=list(roles.values()))
        frame.insert(0, "_line", np.asarray(line_no, dtype="int64"))
        h = np.asarray(hashes, dtype="uint64")
        _, first_idx = np.unique(h, return_index=True)
        keep = np.zeros(len(h), dtype=bool)
        keep[first_idx] = True
        keep &= ~np.isin(h, self.seen_hashes)
        self.seen_hashes = np.union1d(self.seen_hashes, h[keep])
        dropped = int((~keep).sum())
        frame = frame.loc[keep].reset_index(drop=True)
        frame.attrs["duplicates"] = dropped
        return frame


# --------------------------------------------------------------------- chunked reading


def _raw_chunks(
    path: Path, fmt: FileFormat, label: str, chunk_rows: int
) -> Iterator[tuple[pd.DataFrame, np.ndarray, int]]:
    """Yield (raw frame, 1-based line numbers, bytes consumed) per chunk of a CSV."""
    stream, _, _ = _open_source(path)
    skip = fmt.skip_lines + (1 if fmt.has_header else 0)
    with stream:
        buffered = io.BufferedReader(stream)
        try:
            # the reader tokenizes the first rows already (an unclosed quote raises)
            reader = pd.read_csv(
                buffered,
                header=None,
                names=list(fmt.columns),
                # never take an extra first field as the index: that would shift
                # every column of the file by one without an error
                index_col=False,
                skiprows=skip,
                chunksize=chunk_rows,
                skip_blank_lines=False,
                encoding="utf-8-sig",
                engine="c",
                low_memory=False,
            )
        except pd.errors.ParserError as exc:
            raise _parser_error(exc, label, len(fmt.columns)) from exc
        except UnicodeDecodeError as exc:
            raise FileImportError(
                label, "binary content (not UTF-8); expected a text CSV"
            ) from exc
        try:
            for chunk in reader:
                lines = chunk.index.to_numpy(dtype="int64") + skip + 1
                blank = chunk.isna().all(axis=1).to_numpy()
                if blank.any():
                    chunk = chunk.loc[~blank]
                    lines = lines[~blank]
                yield chunk, lines, stream.tell()
        except pd.errors.ParserError as exc:
            raise _parser_error(exc, label, len(fmt.columns)) from exc
        except UnicodeDecodeError as exc:
            raise FileImportError(
                label, "binary content (not UTF-8); expected a text CSV"
            ) from exc
        finally:
            reader.close()


def _parser_error(exc: Exception, label: str, n_columns: int) -> FileImportError:
    text = str(exc)
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if match:
        return FileImportError(
            label,
            f"expected {n_columns} columns, found {match.group(3)} "
            "(wrong delimiter or a stray comma?)",
            row=int(match.group(2)),
        )
    return FileImportError(label, f"cannot parse the CSV ({text.strip()})")


def _ndjson_chunks(
    path: Path, parser: _Parser, chunk_rows: int
) -> Iterator[tuple[pd.DataFrame, np.ndarray, int, int]]:
    """Yield (role frame, line numbers, bytes consumed, duplicates) per NDJSON chunk."""
    stream, _, _ = _open_source(path)
    with stream:
        buffered = io.BufferedReader(stream)
        line = 1
        while True:
            block = []
            for _ in range(chunk_rows):
                raw = buffered.readline()
                if not raw:
                    break
                block.append(raw)
            if not block:
                return
            frame = parser.ndjson_frame(block, line)
            line += len(block)
            lines = frame.pop("_line").to_numpy()
            yield frame, lines, stream.tell(), int(frame.attrs.get("duplicates", 0))


def _resolve_format(path: Path, fmt: FileFormat | str | None) -> tuple[FileFormat, str]:
    label = path.name
    if isinstance(fmt, FileFormat):
        return fmt, label
    return detect_format(path, label, fmt=fmt), label


def _iter_parsed(
    path: Path,
    fmt: FileFormat | str | None,
    symbol: str | None,
    chunk_rows: int,
    now_ms: int | None,
    parser_out: list[_Parser] | None = None,
) -> Iterator[_Chunk]:
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    resolved, label = _resolve_format(path, fmt)
    parser = _Parser(
        resolved,
        label,
        normalize_symbol(symbol) if symbol else None,
        _now_ms() if now_ms is None else now_ms,
    )
    if parser_out is not None:
        parser_out.append(parser)
    rows = 0
    if resolved.kind == NDJSON:
        source = (
            (frame, lines, pos, dups)
            for frame, lines, pos, dups in _ndjson_chunks(path, parser, chunk_rows)
        )
    else:
        source = (
            (frame, lines, pos, 0)
            for frame, lines, pos in _raw_chunks(path, resolved, label, chunk_rows)
        )
    for raw, lines, pos, dups in source:
        rows += len(raw) + dups
        if len(raw) == 0:
            yield _Chunk(
                frame=_empty_frame(resolved.kind),
                rows_read=len(lines) + dups,
                bytes_read=pos,
                duplicates=dups,
            )
            continue
        if resolved.kind in TICK_KINDS:
            frame = parser.ticks(raw, lines)
            frame = frame.sort_values(
                ["symbol", "trade_id"], kind="stable", ignore_index=True
            )
        else:
            frame = parser.bars(raw, lines)
            if resolved.kind == OHLCV:
                parser.ohlcv_interval(frame["ts_ms"].to_numpy())
            frame = frame.sort_values(
                ["symbol", "ts_ms"], kind="stable", ignore_index=True
            )
        yield _Chunk(
            frame=frame, rows_read=len(raw) + dups, bytes_read=pos, duplicates=dups
        )
    if rows == 0:
        if resolved.has_header:
            raise FileImportError(label, "the file has a header row but no data rows")
        raise FileImportError(label, "the file is empty")


def _prefetched(chunks: Iterator[_Chunk], depth: int = 1) -> Iterator[_Chunk]:
    """Yield `chunks`, parsing the next ones in a thread while the caller writes.

    pandas' CSV parser and SQLite both release the GIL for most of their work, so
    on two cores parsing chunk k + 1 overlaps writing chunk k. At most `depth`
    parsed chunks wait in the queue (memory stays bounded); an error in the parser
    is raised here, in the caller's thread; if the caller stops early (an error
    while writing) the thread is told to stop and joined.
    """
    done = object()
    handoff: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(done)
        except BaseException as exc:  # handed to the caller's thread
            put(exc)

    worker = threading.Thread(target=produce, name="import-parser", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _empty_frame(kind: str) -> pd.DataFrame:
    if kind in TICK_KINDS:
        cols = ["symbol", "trade_id", "ts_ms", "price", "qty", "is_buyer_maker", "line"]
    else:
        cols = [
            "symbol",
            "ts_ms",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "trades",
            "line",
        ]
    return pd.DataFrame({c: [] for c in cols})


# ---------------------------------------------------------------------------- import


# the temporary database of a running import (see `_temp_path`), and its companions
_TEMP_NAME = re.compile(
    r"^\.(?P<stem>.+)\.importing-(?P<pid>\d+)-(?P<ns>\d+)\.db(?:-wal|-shm|-journal)?$"
)


def _temp_path(target: Path) -> Path:
    return target.with_name(
        f".{target.stem}.importing-{os.getpid()}-{time.time_ns()}.db"
    )


def _companions(path: Path) -> list[Path]:
    return [path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _remove_db(path: Path) -> None:
    for file in (path, *_companions(path)):
        try:
            file.unlink(missing_ok=True)
        except OSError:
            pass


@dataclass(frozen=True, slots=True)
class LeftoverCleanup:
    """What `remove_import_leftovers` deleted: files and their bytes."""

    files: int = 0
    bytes: int = 0

    def note(self) -> str:
        """``removed 3 leftover files (120.5 MB) from killed imports`` ("" if none)."""
        if not self.files:
            return ""
        return (
            f"removed {self.files} leftover files ({self.bytes / 2**20:.1f} MB) "
            "from killed imports"
        )


def _process_start_ns(pid: int) -> int | None:
    """Start time of a running process (ns since the epoch) from /proc, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/stat").read_text()
    except OSError:
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
    btime = int(re.search(r"^btime (\d+)", boot, re.MULTILINE).group(1))
    return int((btime + ticks / os.sysconf("SC_CLK_TCK")) * 1e9)


def _import_running(pid: int, stamped_ns: int) -> bool:
    """True while the import that named a temporary file may still run: its pid is
    alive on this host and that process started before the file was named (else
    the pid was reused after the import died)."""
    if pid == os.getpid():
        return True
    if not storage._pid_alive(pid):
        return False
    started = _process_start_ns(pid)
    return started is None or started <= stamped_ns + 2 * 10**9  # btime is in s


def remove_import_leftovers(
    base_dir: str | os.PathLike[str] = Path("data"),
) -> LeftoverCleanup:
    """Delete what imports killed mid-way (SIGKILL, power loss) left behind.

    An import builds ``.NAME.importing-PID-TIME.db`` (plus ``-wal``/``-shm``)
    beside the dataset, or ``.pairdesk-NAME.importing-...`` in the temporary
    directory for a PostgreSQL dataset, and removes it when it ends; a killed one
    cannot. Files whose PID is gone from this host (or was reused by a process
    started later) are removed; those of running imports are kept. `import_file`
    calls this first; the app or the ingester may call it at start.
    """
    places = [(Path(tempfile.gettempdir()), "pairdesk-")]
    if not storage.is_postgres_url(base_dir):
        places.insert(0, (storage.dataset_db_path(base_dir, "x").parent, ""))
    files = size = 0
    for folder, prefix in places:
        try:
            names = list(folder.iterdir())
        except OSError:
            continue
        for file in names:
            match = _TEMP_NAME.match(file.name)
            if match is None or not match["stem"].startswith(prefix):
                continue
            if _import_running(int(match["pid"]), int(match["ns"])):
                continue
            try:
                n = file.stat().st_size
                file.unlink()
            except OSError:
                continue
            files, size = files + 1, size + n
    return LeftoverCleanup(files, size)


def _write_ticks(writer: storage.Writer, frame: pd.DataFrame) -> tuple[int, int]:
    """Store one chunk of ticks (any symbols); return (inserted, duplicates).

    Each symbol's rows go through `storage.Writer.write_tick_columns` (numpy
    dedupe and 1 s bars) in transactions of at most `IMPORT_TX_ROWS` rows; a
    transaction that is too large spills SQLite's page cache and gets slower.
    """
    symbols = frame["symbol"].to_numpy()
    columns = [
        frame[c].to_numpy()
        for c in ("trade_id", "ts_ms", "price", "qty", "is_buyer_maker")
    ]
    # the chunk is sorted by (symbol, trade_id): each symbol is one run of rows
    change = np.flatnonzero(symbols[1:] != symbols[:-1]) + 1
    bounds = [0, *change.tolist(), len(symbols)]
    inserted = duplicates = 0
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        for lo in range(start, stop, IMPORT_TX_ROWS):
            hi = min(lo + IMPORT_TX_ROWS, stop)
            result = writer.write_tick_columns(
                str(symbols[start]), *(col[lo:hi] for col in columns)
            )
            inserted += result.inserted
            duplicates += result.duplicates
    return inserted, duplicates


def _write_bar_chunk(
    writer: storage.Writer, frame: pd.DataFrame, interval_s: int
) -> tuple[int, int]:
    """Store one chunk of bars; return (written, duplicates within the chunk)."""
    dup = frame.duplicated(["symbol", "ts_ms"], keep="last").to_numpy()
    frame = frame.loc[~dup]
    written = 0
    for sym, group in frame.groupby("symbol", sort=True):
        cols = ["ts_ms", "open", "high", "low", "close", "volume", "quote_volume"]
        bars = group[cols].copy()
        bars["trades"] = group["trades"].to_numpy(dtype="int64")
        written += writer.write_bars(str(sym), interval_s, bars)
    return written, int(dup.sum())


def import_file(
    path: str | os.PathLike[str],
    *,
    dataset: str,
    base_dir: str | os.PathLike[str] = Path("data"),
    symbol: str | None = None,
    fmt: FileFormat | str | None = None,
    progress: Callable[[ImportProgress], None] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    interval_s: int | None = None,
    now_ms: int | None = None,
) -> ImportReport:
    """Import one file into the dataset ``BASE_DIR/datasets/NAME.db``, atomically.

    The file streams in chunks of `chunk_rows` rows into a temporary database file
    beside the dataset (a copy of it when the dataset exists, so imports add to it),
    which replaces the dataset only after the last chunk is written. On any error
    the temporary file is removed: nothing of a bad file is kept and an existing
    dataset is untouched. Peak memory is bounded by `chunk_rows`, not the file size.
    Temporary files left by killed imports are removed first
    (`remove_import_leftovers`; the report counts them).
    When `base_dir` is a PostgreSQL URL the dataset is the schema ``ds_NAME``: the
    file is built and checked in a local temporary SQLite file the same way (from
    a copy of the dataset when it exists), then swapped in by
    `storage.install_dataset` (staging schema, verified copy, one transaction).

    Tick files (trades, aggTrades, generic ticks, NDJSON) go to ``ticks`` and the
    writer builds their 1 s bars; duplicate trade ids (or, without ids, duplicate
    lines) are dropped and counted; each chunk is sorted by trade id (the 1 s bars
    do not depend on the order chunks arrive in). Bar files (klines, OHLCV) go to
    ``bars`` at their interval (klines: ``close_time - open_time + 1``; OHLCV: the
    smallest spacing of the timestamps, or `interval_s`).

    Parameters
    ----------
    path : the file (CSV, Binance ``.zip`` or NDJSON).
    dataset : dataset name, ``^[A-Za-z0-9_-]{1,64}$``.
    base_dir : data directory; datasets live in ``base_dir/datasets`` (storage's
        `dataset_db_path`); or a PostgreSQL URL (datasets are schemas there).
    symbol : instrument for files without a symbol column (else taken from the file
        name, as ``BTCUSDT-trades-2024-01-01.csv``); for files with a symbol column,
        import only the rows of this symbol.
    fmt : force a format (one of `FORMAT_KINDS`) or pass a detected `FileFormat`.
    progress : called after each chunk with an `ImportProgress`.
    chunk_rows : rows per chunk (and per write transaction), >= 1.
    interval_s : bar length of an OHLCV file when it cannot be inferred (one row).
    now_ms : "now" for the future-timestamp check (tests), default the clock.

    Returns
    -------
    ImportReport

    Raises
    ------
    FileImportError
        For a bad file, naming file, row, column and value.
    ValueError
        For a bad dataset name, symbol, format name, chunk size or interval.
    storage.StorageError
        When the database cannot be written.
    """
    src = Path(path)
    target = storage.dataset_db_path(base_dir, dataset)
    only_symbol = normalize_symbol(symbol) if symbol else None
    if interval_s is not None and (
        isinstance(interval_s, bool)
        or not isinstance(interval_s, int)
        or interval_s < 1
    ):
        raise ValueError(f"interval_s must be an integer >= 1, got {interval_s!r}")
    cleanup = remove_import_leftovers(base_dir)
    resolved, label = _resolve_format(src, fmt)
    if interval_s is not None and resolved.kind in (OHLCV, KLINES):
        resolved = FileFormat(**{**_asdict(resolved), "interval_s": interval_s})
    total = _content_size(src)
    if storage.is_postgres_url(base_dir):
        # built and checked in a local file, then copied in by one swap
        tmp = _temp_path(Path(tempfile.gettempdir()) / f"pairdesk-{dataset}.db")
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_path(target)
    writer: storage.Writer | None = None
    parsers: list[_Parser] = []
    rows = inserted = duplicates = bars_written = 0
    first_ts: int | None = None
    last_ts: int | None = None
    symbols: set[str] = set()
    skipped_other = 0
    try:
        # imports add to an existing dataset: work on a copy, swap it in at the end
        fresh = not storage.copy_dataset(base_dir, dataset, tmp)
        writer = storage.Writer(tmp, busy_timeout_ms=5_000)
        with writer.bulk_load() if fresh else contextlib.nullcontext():
            chunks = _iter_parsed(
                src, resolved, only_symbol, chunk_rows, now_ms, parsers
            )
            # bar files stay sequential: their interval is inferred chunk by chunk
            if resolved.kind in TICK_KINDS:
                chunks = _prefetched(chunks)
            for chunk in chunks:
                rows += chunk.rows_read
                duplicates += chunk.duplicates
                frame = chunk.frame
                if only_symbol is not None and resolved.column_for("symbol"):
                    keep = (frame["symbol"] == only_symbol).to_numpy()
                    skipped_other += int((~keep).sum())
                    frame = frame.loc[keep]
                if len(frame):
                    ts = frame["ts_ms"].to_numpy()
                    lo, hi = int(ts.min()), int(ts.max())
                    first_ts = lo if first_ts is None else min(first_ts, lo)
                    last_ts = hi if last_ts is None else max(last_ts, hi)
                    symbols.update(str(s) for s in pd.unique(frame["symbol"]))
                    if resolved.kind in TICK_KINDS:
                        n_in, n_dup = _write_ticks(writer, frame)
                        inserted += n_in
                        duplicates += n_dup
                    else:
                        step = parsers[0].interval_s
                        if step is None:
                            raise FileImportError(
                                label,
                                "cannot infer the bar interval from a single bar; "
                                "pass the interval",
                            )
                        n_bars, n_dup = _write_bar_chunk(writer, frame, step)
                        bars_written += n_bars
                        duplicates += n_dup
                if progress is not None:
                    progress(ImportProgress(rows, chunk.bytes_read, total))
        if not symbols:
            raise FileImportError(
                label, f"no rows of {only_symbol} (the file holds other symbols)"
            )
        writer.checkpoint()
        writer.close()
        writer = None
        target = storage.install_dataset(base_dir, dataset, tmp)
        _remove_db(tmp)
    except BaseException:
        if writer is not None:
            writer.close()
        _remove_db(tmp)
        raise
    parser = parsers[0]
    notes = set(parser.notes)
    if skipped_other:
        notes.add(f"{skipped_other} rows of other symbols skipped")
    if resolved.kind == AGG_TRADES:
        notes.add("aggTrades: each aggregate trade counts as one trade in the bars")
    if parser.ts_unit in ("us", "ns", "s"):
        notes.add(f"timestamps in {TS_UNIT_NAMES[parser.ts_unit]}")
    return ImportReport(
        dataset=dataset,
        db_path=target,
        source=src,
        format=resolved.kind,
        symbols=tuple(sorted(symbols)),
        rows_read=rows,
        ticks_inserted=inserted,
        duplicates_dropped=duplicates,
        bars_written=bars_written,
        interval_s=parser.interval_s if resolved.kind not in TICK_KINDS else None,
        first_ts_ms=first_ts,
        last_ts_ms=last_ts,
        notes=tuple(sorted(notes)),
        leftover_files=cleanup.files,
        leftover_bytes=cleanup.bytes,
    )


def _asdict(fmt: FileFormat) -> dict[str, Any]:
    return {name: getattr(fmt, name) for name in FileFormat.__slots__}


def _content_size(path: Path) -> int:
    try:
        stream, _, size = _open_source(path)
    except FileImportError:
        return 0
    stream.close()
    return size


# ---------------------------------------------------------------------------- export


def export_filename(
    kind: str,
    symbols: Sequence[str] | str,
    interval: str | int | None,
    start_ms: int | None,
    end_ms: int | None,
    *,
    extra: str | None = None,
) -> str:
    """File name carrying what, which symbols, interval and UTC range.

    ``export_filename("bars", ["BTCUSDT"], "1m", 1723161240000, 1723161600000)`` ->
    ``"bars_BTCUSDT_1m_20240808T235400Z_20240809T000000Z.csv"``. `extra` (e.g. the
    hedge method and window) is appended after the interval, sanitised.
    """
    names = [symbols] if isinstance(symbols, str) else list(symbols)
    parts = [re.sub(r"[^A-Za-z0-9]+", "-", kind).strip("-") or "export"]
    if names:
        parts.append("-".join(normalize_symbol(s) for s in names))
    if interval is not None:
        label = interval if isinstance(interval, str) else interval_label(interval)
        parts.append(re.sub(r"[^A-Za-z0-9]+", "", label))
    if extra:
        parts.append(re.sub(r"[^A-Za-z0-9.=]+", "-", extra).strip("-"))
    for bound in (start_ms, end_ms):
        if bound is not None:
            parts.append(
                pd.Timestamp(int(bound), unit="ms", tz="UTC").strftime("%Y%m%dT%H%M%SZ")
            )
    return "_".join(parts) + ".csv"


def _iso_series(values: pd.Series) -> pd.Series:
    """Datetimes (tz-aware or naive = UTC) or epoch ms -> ISO-8601 UTC text."""
    if pd.api.types.is_datetime64_any_dtype(values):
        ts = pd.to_datetime(values, utc=True)
    else:
        ts = pd.to_datetime(values.astype("int64"), unit="ms", utc=True)
    text = ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str.slice(0, 23) + "Z"
    return text.where(ts.notna(), "")


def _formula_safe(text: str) -> str:
    """`text` with a leading ``'`` when a spreadsheet would run it as a formula."""
    return "'" + text if text[:1] in FORMULA_TRIGGERS else text


def escape_formula_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells cannot run as spreadsheet formulas.

    Every text cell (and column name) that begins with ``=``, ``+``, ``-``, ``@``,
    a tab or a carriage return gets a leading ``'`` (OWASP's advice against CSV
    injection: ``=HYPERLINK(...)`` in a webhook's error text would otherwise run
    when the file is opened in a spreadsheet). A bare carriage return inside a
    text cell becomes a line feed, which the writer quotes (a lone CR is not quoted
    with "\n" line endings and would split the row in a spreadsheet). Only object,
    string and category columns are touched, and in them only `str` values:
    numbers, such as negative prices, stay numbers.
    """
    out = frame.copy()
    out.columns = [_formula_safe(c) if isinstance(c, str) else c for c in out.columns]
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype(object)
        elif not (
            pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col)
        ):
            continue
        hit = col.str.match(_FORMULA_START).fillna(False).astype(bool)
        cr = col.str.contains("\r", regex=False).fillna(False).astype(bool)
        if hit.any() or cr.any():
            col = col.astype(object).copy()
            col[hit] = "'" + col[hit].astype(str)
            col[cr] = col[cr].str.replace("\r\n", "\n").str.replace("\r", "\n")
            out.isetitem(i, col)
    return out


def _csv_text(frame: pd.DataFrame, header: bool) -> str:
    out = escape_formula_cells(frame)
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = _iso_series(out[col])
    return out.to_csv(
        index=False, header=header, lineterminator="\n", float_format=None
    )


def frame_to_csv_bytes(
    df: pd.DataFrame, header_lines: Sequence[str] | str = ()
) -> bytes:
    """A DataFrame as UTF-8 CSV bytes, with ``# ``-prefixed comment lines first.

    Datetime columns are written as ISO-8601 UTC (``2024-08-08T23:54:00.000Z``).
    Use `header_lines` for the parameters behind a table, e.g.
    ``frame_to_csv_bytes(result.table, ["params " + result.params.to_json()])``;
    `import_file` skips such leading comment lines.
    """
    head = _comment_lines(header_lines)
    return (head + _csv_text(df.reset_index(drop=True), header=True)).encode("utf-8")


def _comment_lines(header_lines: Sequence[str] | str) -> str:
    """``# ``-prefixed lines, each kept on one line (CR and LF become spaces: a
    line break would start a row that a spreadsheet may run as a formula)."""
    lines = [header_lines] if isinstance(header_lines, str) else list(header_lines)
    return "".join(
        "# " + line.replace("\r", " ").replace("\n", " ") + "\n" for line in lines
    )


class _Sink:
    """A text destination: a path (written atomically via a temp file) or a stream."""

    def __init__(self, out: str | os.PathLike[str] | IO[str] | IO[bytes]) -> None:
        self._path: Path | None = None
        self._tmp: Path | None = None
        if isinstance(out, str | os.PathLike):
            self._path = Path(out)
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.part")
            self._stream: IO[str] = open(self._tmp, "w", encoding="utf-8", newline="")
            self._binary = False
        else:
            self._stream = out  # type: ignore[assignment]
            self._binary = isinstance(out, io.BufferedIOBase | io.RawIOBase) or (
                "b" in getattr(out, "mode", "")
            )

    def write(self, text: str) -> None:
        if self._binary:
            self._stream.write(text.encode("utf-8"))  # type: ignore[arg-type]
        else:
            self._stream.write(text)

    def finish(self, ok: bool) -> None:
        if self._path is None or self._tmp is None:
            return
        self._stream.close()
        if ok:
            os.replace(self._tmp, self._path)
        else:
            self._tmp.unlink(missing_ok=True)


def _symbol_span(
    db_path: os.PathLike[str] | str, symbol: str
) -> tuple[int, int] | None:
    for stats in storage.db_stats(db_path).symbols:
        if stats.symbol == symbol and stats.first_ms is not None:
            return int(stats.first_ms), int(stats.last_ms) + 1
    return None


def export_bars(
    db_path: str | os.PathLike[str],
    symbol: str,
    interval_s: int,
    start_ms: int | None,
    end_ms: int | None,
    out: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    header_lines: Sequence[str] = (),
    slice_ms: int = EXPORT_SLICE_MS,
) -> ExportReport:
    """Write bars of one symbol to CSV, streaming one time slice at a time.

    Columns ``ts`` (ISO-8601 UTC bucket start), ``open, high, low, close, volume,
    quote_volume, trades, vwap``; one row per non-empty bucket whose start lies in
    ``[start_ms, end_ms)`` (None: the symbol's whole span). Each bucket is complete
    (its 1 s bars up to the bucket end are read). Bars come from the 1 s bars,
    or from stored coarser bars that divide `interval_s` where no 1 s bars reach.
    A path is written via a temporary file and renamed when complete.

    Raises
    ------
    ValueError
        On a bad symbol, interval or window.
    storage.StorageError
        When the read fails.
    """
    symbol = normalize_symbol(symbol)
    if (
        isinstance(interval_s, bool)
        or not isinstance(interval_s, int)
        or interval_s < 1
    ):
        raise ValueError(f"interval_s must be an integer >= 1, got {interval_s!r}")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ValueError(f"end_ms must be after start_ms, got {start_ms}..{end_ms}")
    width = interval_s * 1000
    span = _symbol_span(db_path, symbol)
    lo = start_ms if start_ms is not None else (span[0] if span else 0)
    hi = end_ms if end_ms is not None else (span[1] if span else 0)
    lo = -(-int(lo) // width) * width if start_ms is not None else lo // width * width
    step = max(width, slice_ms // width * width)
    sink = _Sink(out)
    rows = 0
    first: int | None = None
    last: int | None = None
    ok = False
    try:
        sink.write(_comment_lines(header_lines))
        sink.write(",".join(BAR_COLUMNS) + "\n")
        t = lo
        while t < hi:
            part = read_bars_any(db_path, symbol, interval_s, t, min(t + step, hi))
            t += step
            if len(part) == 0:
                continue
            part = part.loc[:, list(BAR_COLUMNS)]
            sink.write(_csv_text(part, header=False))
            ts_ms = part["ts"].dt.as_unit("ms").astype("int64")
            first = int(ts_ms.iloc[0]) if first is None else first
            last = int(ts_ms.iloc[-1])
            rows += len(part)
        ok = True
    finally:
        sink.finish(ok)
    return ExportReport(rows=rows, first_ts_ms=first, last_ts_ms=last, source="bars")


TICK_EXPORT_COLUMNS = ("ts", "symbol", "trade_id", "price", "qty", "is_buyer_maker")


def export_ticks(
    db_path: str | os.PathLike[str],
    symbol: str,
    start_ms: int | None,
    end_ms: int | None,
    out: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    slice_ms: int = EXPORT_TICK_SLICE_MS,
) -> ExportReport:
    """Write the ticks of one symbol in ``[start_ms, end_ms)`` to CSV, streaming.

    Columns ``ts`` (ISO-8601 UTC, ms), ``symbol, trade_id, price, qty,
    is_buyer_maker`` (lower-case true/false); the file re-imports as a generic tick
    CSV with the same trade ids.
    """
    symbol = normalize_symbol(symbol)
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ValueError(f"end_ms must be after start_ms, got {start_ms}..{end_ms}")
    span = _symbol_span(db_path, symbol)
    lo = int(start_ms) if start_ms is not None else (span[0] if span else 0)
    hi = int(end_ms) if end_ms is not None else (span[1] if span else 0)
    sink = _Sink(out)
    rows = 0
    first: int | None = None
    last: int | None = None
    ok = False
    try:
        sink.write(",".join(TICK_EXPORT_COLUMNS) + "\n")
        t = lo
        while t < hi:
            part = storage.read_ticks(db_path, symbol, t, min(t + slice_ms, hi))
            t += slice_ms
            if len(part) == 0:
                continue
            part = part.assign(symbol=symbol)
            part["is_buyer_maker"] = np.where(part["is_buyer_maker"], "true", "false")
            sink.write(_csv_text(part.loc[:, list(TICK_EXPORT_COLUMNS)], header=False))
            ts_ms = part["ts"].dt.as_unit("ms").astype("int64")
            first = int(ts_ms.iloc[0]) if first is None else first
            last = int(ts_ms.iloc[-1])
            rows += len(part)
        ok = True
    finally:
        sink.finish(ok)
    return ExportReport(rows=rows, first_ts_ms=first, last_ts_ms=last, source="ticks")


# ------------------------------------------------------------------------------- CLI


def parse_utc(text: str) -> int:
    """ISO-8601 text (no zone = UTC) or epoch s/ms/us/ns -> int ms UTC.

    Raises
    ------
    ValueError
        When the text is neither.
    """
    raw = text.strip()
    if _is_number(raw):
        value = float(raw)
        if value <= 0:
            raise ValueError(f"time must be after 1970, got {text!r}")
        return int(_epoch_to_ms(np.array([value]), _unit_of(value))[0])
    try:
        ts = pd.Timestamp(raw)
    except ValueError as exc:
        raise ValueError(
            f"time must be ISO-8601 (2024-08-08T23:54:00Z) or epoch, got {text!r}"
        ) from exc
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return (ts.tz_convert("UTC") - EPOCH) // pd.Timedelta(1, "ms")


def _dataset_name_from(path: Path) -> str:
    stem = path.name.split(".", 1)[0]
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:64]
    return name or "import"


def add_cli_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``import`` and ``export`` subcommands on an argparse subparsers object.

    ``import FILE ... [--dataset NAME] [--symbol SYM] [--db PATH] [--format F]``:
    datasets go to ``DIR(--db)/datasets/NAME.db``.
    ``export bars --symbol SYM --interval 1m [--dataset NAME] [--start ISO --end ISO]
    --db PATH --out FILE.csv`` (and ``export ticks`` without ``--interval``).
    """
    p = subparsers.add_parser(
        "import", help="import Binance public-data / tick / OHLCV files as a dataset"
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--dataset", default=None, help="dataset name (default: file name)")
    p.add_argument("--symbol", default=None, help="symbol for files without one")
    p.add_argument(
        "--db",
        default=str(storage.DEFAULT_DB_PATH),
        help="live database; datasets go to its folder's datasets/",
    )
    p.add_argument("--format", default=None, choices=FORMAT_KINDS, dest="fmt")
    p.add_argument("--interval", default=None, help="bar interval of an OHLCV file")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    p.set_defaults(func=cmd_import)

    e = subparsers.add_parser("export", help="export bars or ticks to CSV")
    e.add_argument("what", choices=("bars", "ticks"))
    e.add_argument("--symbol", required=True)
    e.add_argument("--interval", default="1m", help="bar interval, e.g. 1s, 1m, 5m")
    e.add_argument("--dataset", default=None, help="export from this dataset")
    e.add_argument("--start", default=None, help="ISO-8601 UTC (default: first)")
    e.add_argument(
        "--end", default=None, help="ISO-8601 UTC, exclusive (default: last)"
    )
    e.add_argument("--db", default=str(storage.DEFAULT_DB_PATH))
    e.add_argument("--out", type=Path, default=None, help="CSV file ('-' = stdout)")
    e.set_defaults(func=cmd_export)


def _progress_printer(stream: IO[str]) -> Callable[[ImportProgress], None]:
    started = time.monotonic()

    def show(p: ImportProgress) -> None:
        rate = p.rows_read / max(time.monotonic() - started, 1e-9)
        pct = f"{100 * p.fraction:5.1f}% " if p.total_bytes else ""
        stream.write(f"\r  {pct}{p.rows_read:,} rows  {rate:,.0f} rows/s")
        stream.flush()

    return show


def cmd_import(args: argparse.Namespace) -> int:
    """Handler of ``import``: one dataset, each file its own transaction."""
    base_dir = storage.datasets_base(args.db)
    interval_s = resampling.parse_interval(args.interval) if args.interval else None
    status = 0
    for file in args.files:
        dataset = args.dataset or _dataset_name_from(file)
        print(f"importing {file} into dataset {dataset!r}", file=sys.stderr)
        try:
            report = import_file(
                file,
                dataset=dataset,
                base_dir=base_dir,
                symbol=args.symbol,
                fmt=args.fmt,
                progress=_progress_printer(sys.stderr),
                chunk_rows=args.chunk_rows,
                interval_s=interval_s,
            )
        except (FileImportError, ValueError, storage.StorageError) as exc:
            print(f"\nimport failed: {exc}", file=sys.stderr)
            status = 1
            continue
        print("", file=sys.stderr)
        print(report.summary())
        print(f"  -> {storage.display_target(report.db_path)}")
    return status


def cmd_export(args: argparse.Namespace) -> int:
    """Handler of ``export``: bars or ticks of one symbol to a CSV file or stdout."""
    try:
        db = storage.dataset_target(args.db, args.dataset) if args.dataset else args.db
        if not storage.is_postgres_url(db):
            db = Path(db)
            if not db.exists():
                raise ValueError(f"db: no database at {db}")
        symbol = normalize_symbol(args.symbol)
        start = parse_utc(args.start) if args.start else None
        end = parse_utc(args.end) if args.end else None
        if args.what == "bars":
            interval_s = resampling.parse_interval(args.interval)
            name = export_filename("bars", [symbol], args.interval, start, end)
        else:
            interval_s = None
            name = export_filename("ticks", [symbol], None, start, end)
        out: Any = args.out if args.out is not None else Path(name)
        if str(out) == "-":
            out = sys.stdout
        if interval_s is not None:
            report = export_bars(db, symbol, interval_s, start, end, out)
        else:
            report = export_ticks(db, symbol, start, end, out)
    except (ValueError, storage.StorageError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    span = ""
    if report.first_ts_ms is not None:
        span = f" ({_iso(report.first_ts_ms)} .. {_iso(report.last_ts_ms)})"
    print(
        f"wrote {report.rows} rows{span} to {out if out is not sys.stdout else '-'}",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python datafiles.py import|export ...``)."""
    parser = argparse.ArgumentParser(
        prog="datafiles.py", description=__doc__.split("\n")[0]
    )
    add_cli_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
