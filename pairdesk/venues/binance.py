"""Binance USD-M Futures: the trade stream's URL and its frames into ``models.Tick``.

Trade ids are an integer sequence per symbol (a jump is a gap, checked by the
ingester). Frames are parsed by a pure function of (raw frame, receive time): a
``Tick``, a filtered non-market trade, an ignored message or a malformed frame with
its reason. ``ingestion`` re-exports these names.

A real frame of the combined stream::

    {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161247541,"T":1723161247540,
     "s":"BTCUSDT","t":5175418210,"p":"61080.60","q":"0.002","X":"MARKET","m":true}}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from models import Tick, normalize_symbol

DEFAULT_BASE_URL = "wss://fstream.binance.com/public"
# Plausible trade and event times: USD-M futures started in September 2019, and a
# time more than a day after the receive time (or past 2100, e.g. microseconds
# sent as milliseconds) is a lie, not a trade.
MIN_TRADE_MS = 1_546_300_800_000  # 2019-01-01T00:00:00Z
MAX_TRADE_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
MAX_AHEAD_MS = 86_400_000  # one day after the receive time

MAX_TRADE_ID = 2**63 - 1  # SQLite INTEGER: a larger id could never be stored
# Prices and quantities must stay below this, so that price * qty and the sums of
# a bar (volume, quote volume, VWAP) stay finite: 1e308 would store inf.
MAX_VALUE = 1e100
_SYMBOL_RE = re.compile(r"[A-Za-z0-9]{2,20}")  # used with fullmatch: no "\n"
_SYMBOLS: dict[str, str] = {}  # wire symbol -> validated upper-case symbol (cache)
# The C scanner behind json.loads, called directly on the hot path (json.loads adds
# about a microsecond of Python wrappers per frame); errors still go via json.loads.
_SCAN = json.JSONDecoder().scan_once

Kind = Literal["trade", "filtered", "ignored", "malformed"]

# -------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one raw frame turned out to be.

    Attributes
    ----------
    kind : ``"trade"`` (a MARKET trade, ``tick`` set), ``"filtered"`` (a trade that is
        not market data, e.g. ``INSURANCE_FUND``; ``symbol`` and ``trade_id`` set so
        that it still advances the last seen id), ``"ignored"`` (acks, other events)
        or ``"malformed"`` (``reason`` says why).
    tick : the trade, for ``kind == "trade"``.
    reason : why a frame was filtered, ignored or rejected; empty for trades.
    event_ms : event time ``E`` in ms since the epoch (lag metrics only), or None.
    symbol : upper-case symbol of a trade or filtered trade, else None.
    trade_id : trade id ``t`` of a trade or filtered trade, else None.
    """

    kind: Kind
    tick: Tick | None = None
    reason: str = ""
    event_ms: int | None = None
    symbol: str | None = None
    trade_id: int | None = None


_Parsed = tuple  # (kind, tick, reason, event_ms, symbol, trade_id)


def _malformed(reason: str) -> _Parsed:
    return ("malformed", None, reason, None, None, None)


def _ignored(reason: str) -> _Parsed:
    return ("ignored", None, reason, None, None, None)


def _positive_number(value: object, name: str) -> float | str:
    """Return ``value`` as a finite float > 0, or a rejection reason string."""
    kind = type(value)
    if kind is str or kind is float or kind is int:
        try:
            number = float(value)  # type: ignore[arg-type]
        except ValueError:
            return f"field {name!r} is not numeric: {value!r}"
        if 0.0 < number < MAX_VALUE:
            return number
        if number >= MAX_VALUE and number < math.inf:
            return f"field {name!r} is {value!r}: 1e100 or more would overflow sums"
        return f"field {name!r} must be a finite number > 0, got {value!r}"
    return f"field {name!r} must be a decimal string, got {kind.__name__}"


def parse_frame(raw: str | bytes, recv_ms: int) -> ParseResult:
    """Parse one Binance USD-M WebSocket frame (combined envelope or raw payload).

    A real ``@trade`` frame (2024-08-08, BTCUSDT)::

        {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256323,
         "T":1723161256322,"s":"BTCUSDT","t":5266583935,"p":"61800.30","q":"0.006",
         "X":"MARKET","m":false}}

    Keys: ``e`` event type, ``E`` event time (ms), ``T`` trade time (ms), ``s`` symbol,
    ``t`` trade id, ``p`` price and ``q`` quantity (decimal strings), ``X`` trade type
    (``MARKET``, ``INSURANCE_FUND``, ``ADL``, ``NA``), ``m`` buyer is maker. Unknown
    keys (``st`` since 2026) are ignored.

    Parameters
    ----------
    raw : the frame text (or UTF-8 bytes) exactly as received.
    recv_ms : local receive time, ms since the epoch; kept for the caller's lag metric
        ``recv_ms - E`` (the tick carries trade time ``T``).

    Returns
    -------
    ParseResult
        ``trade`` with a `Tick` for MARKET trades; ``filtered`` for other trade types
        (with symbol and trade id, so gap detection still sees the id); ``ignored`` for
        subscription acks ``{"result":null,"id":1}``, request errors and other events
        (``bookTicker``, ``depthUpdate``, ``markPriceUpdate``...); ``malformed`` with
        the reason for bad JSON, invalid UTF-8, a missing field, a wrong type (a bool
        where an int is due), a non-numeric, non-positive or huge (``MAX_VALUE``,
        1e100, or more) price or quantity, a
        trade id of 2^63 - 1 or more (it could not be stored), JSON nested too
        deeply, or a trade or event time outside ``[MIN_TRADE_MS, MAX_TRADE_MS)``
        (2019-01-01 to 2100-01-01) or more than ``MAX_AHEAD_MS`` (one day) after
        ``recv_ms`` (this check is skipped when ``recv_ms <= 0``, for offline
        parsing).
        Never raises for any input.
    """
    return ParseResult(*_parse(raw, recv_ms))


def _decode_json(raw: str | bytes) -> object:
    """``json.loads`` with a fast path: the C scanner, no Python wrappers.

    Errors (and anything unusual, like leading whitespace) go through
    ``json.loads`` so that the message is the standard one.
    """
    if type(raw) is str:
        try:
            obj, end = _SCAN(raw, 0)
        except (StopIteration, ValueError):
            return json.loads(raw)  # raises the standard error
        if end == len(raw):
            return obj
    return json.loads(raw)


def _latest_ms(recv_ms: int) -> int:
    """Upper bound (exclusive) of a plausible trade time received at ``recv_ms``."""
    if type(recv_ms) is int and recv_ms > 0:
        return min(MAX_TRADE_MS, recv_ms + MAX_AHEAD_MS + 1)
    return MAX_TRADE_MS


def _parse(raw: str | bytes, recv_ms: int = 0) -> _Parsed:
    """`parse_frame` as a plain tuple (the receive loop's hot path)."""
    try:
        obj = _decode_json(raw)
    except UnicodeDecodeError:
        return _malformed("invalid UTF-8")
    except RecursionError:
        return _malformed("bad JSON: nested too deeply")
    except ValueError as exc:
        return _malformed(f"bad JSON: {exc}")
    except TypeError:
        return _malformed(f"frame is {type(raw).__name__}, not text")
    if type(obj) is not dict:
        return _malformed(f"frame is a JSON {type(obj).__name__}, not an object")
    data = obj.get("data")
    stream = obj.get("stream")
    if stream is not None and data is not None:
        if type(data) is not dict:
            return _malformed("field 'data' is not a JSON object")
    else:
        data = obj
    event = data.get("e")
    if event != "trade":
        if event is not None:
            return _ignored(f"event {event}")
        if "id" in data and ("result" in data or "error" in data):
            return _ignored(f"response to request {data['id']}")
        if type(stream) is str and stream.endswith("@trade"):
            return _malformed("missing field 'e'")
        return _ignored("unknown message")
    try:
        sym = data["s"]
        tid = data["t"]
        trade_ms = data["T"]
        event_ms = data["E"]
        p = data["p"]
        q = data["q"]
        trade_type = data["X"]
        maker = data["m"]
    except KeyError as exc:
        return _malformed(f"missing field {exc.args[0]!r}")
    symbol = _SYMBOLS.get(sym) if type(sym) is str else None
    if (
        symbol is None
        or type(tid) is not int
        or type(trade_ms) is not int
        or type(event_ms) is not int
        or type(trade_type) is not str
        or type(maker) is not bool
        or type(p) is not str
        or type(q) is not str
        or not 0 <= tid < MAX_TRADE_ID
        or not MIN_TRADE_MS <= trade_ms < MAX_TRADE_MS
        or not MIN_TRADE_MS <= event_ms < MAX_TRADE_MS
        or (recv_ms > 0 and max(trade_ms, event_ms) > recv_ms + MAX_AHEAD_MS)
    ):
        return _parse_slow(data, recv_ms)
    try:
        price = float(p)
        qty = float(q)
    except ValueError:
        return _parse_slow(data, recv_ms)
    if not (0.0 < price < MAX_VALUE and 0.0 < qty < MAX_VALUE):
        return _parse_slow(data, recv_ms)
    if trade_type != "MARKET":
        reason = f"non-market trade X={trade_type}"
        return ("filtered", None, reason, event_ms, symbol, tid)
    return (
        "trade",
        Tick(symbol, tid, trade_ms, price, qty, maker),
        "",
        event_ms,
        symbol,
        tid,
    )


def _time_reason(name: str, value: int, latest_ms: int) -> str | None:
    """Why a trade or event time is implausible, or None when it is fine."""
    if MIN_TRADE_MS <= value < latest_ms:
        return None
    if value >= MAX_TRADE_MS:
        hint = " (microseconds or nanoseconds instead of milliseconds?)"
        return (
            f"field {name!r} must be a time in ms between 2019-01-01 and 2100-01-01, "
            f"got {value}{hint if value >= 10**14 else ''}"
        )
    if value < MIN_TRADE_MS:
        return (
            f"field {name!r} must be a time in ms between 2019-01-01 and 2100-01-01, "
            f"got {value} ({_iso(value) if value > 0 else 'before 1970'})"
        )
    return (
        f"field {name!r} is {_iso(value)}, more than "
        f"{MAX_AHEAD_MS // 3_600_000} h after the receive time"
    )


def _parse_slow(data: dict, recv_ms: int = 0) -> _Parsed:
    """Trade payload checked field by field: the exact rejection reason, or the trade.

    Reached for the first trade of each symbol and for anything unusual (numbers
    sent as JSON numbers, bad values); the fast path covers Binance's usual frames.
    """
    sym, tid, trade_ms = data["s"], data["t"], data["T"]
    event_ms, trade_type, maker = data["E"], data["X"], data["m"]
    if type(sym) is not str or not _SYMBOL_RE.fullmatch(sym):
        return _malformed(f"field 's' must be a symbol, got {sym!r}")
    symbol = sym.upper()
    if len(_SYMBOLS) < 10_000:
        _SYMBOLS[sym] = symbol
    if type(tid) is not int or tid < 0:
        return _malformed(f"field 't' must be an integer >= 0, got {tid!r}")
    if tid >= MAX_TRADE_ID:
        return _malformed(f"field 't' must be an integer below 2^63 - 1, got {tid}")
    if type(trade_ms) is not int or trade_ms <= 0:
        return _malformed(f"field 'T' must be an integer > 0, got {trade_ms!r}")
    if type(event_ms) is not int or event_ms <= 0:
        return _malformed(f"field 'E' must be an integer > 0, got {event_ms!r}")
    latest = _latest_ms(recv_ms)
    for name, value in (("T", trade_ms), ("E", event_ms)):
        reason = _time_reason(name, value, latest)
        if reason is not None:
            return _malformed(reason)
    if type(trade_type) is not str:
        return _malformed(f"field 'X' must be a string, got {trade_type!r}")
    if type(maker) is not bool:
        return _malformed(f"field 'm' must be true or false, got {maker!r}")
    price = _positive_number(data["p"], "p")
    if type(price) is str:
        return _malformed(price)
    qty = _positive_number(data["q"], "q")
    if type(qty) is str:
        return _malformed(qty)
    if trade_type != "MARKET":
        reason = f"non-market trade X={trade_type}"
        return ("filtered", None, reason, event_ms, symbol, tid)
    tick = Tick(symbol, tid, trade_ms, price, qty, maker)  # type: ignore[arg-type]
    return ("trade", tick, "", event_ms, symbol, tid)


def stream_url(base_url: str, symbols: Sequence[str]) -> str:
    """Combined-stream URL: ``base_url + "/stream?streams=" + "/".join(s@trade)``.

    Plain concatenation, never ``urljoin`` (which would drop a route like ``/public``).

    Raises
    ------
    ValueError
        When a symbol is invalid or the list is empty.
    """
    if not symbols:
        raise ValueError("symbols: give at least one symbol, like BTCUSDT")
    names = [normalize_symbol(s).lower() for s in symbols]
    return (
        base_url.rstrip("/")
        + "/stream?streams="
        + "/".join(f"{s}@trade" for s in names)
    )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")
