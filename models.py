"""Plain value types that cross module boundaries (no I/O, no third-party imports).

`Tick` is produced by `ingestion.parse_frame` (and the importers) and consumed by
`storage`; it lives here so that `storage` does not import the WebSocket client.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import NamedTuple

SYMBOL_PATTERN = re.compile(r"^[A-Za-z0-9]{2,20}$")

# Columns of a bar DataFrame (docs/architecture.md, Contracts): `ts` is the tz-aware
# UTC bucket start; empty buckets produce no row.
BAR_COLUMNS: tuple[str, ...] = (
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trades",
    "vwap",
)


def now_ms() -> int:
    """Wall-clock time in integer milliseconds since the epoch, UTC."""
    return time.time_ns() // 1_000_000


def interval_label(interval_s: int) -> str:
    """``60`` -> ``"1m"``, ``5`` -> ``"5s"``, ``7200`` -> ``"2h"``."""
    for unit, size in (("h", 3600), ("m", 60)):
        if interval_s % size == 0:
            return f"{interval_s // size}{unit}"
    return f"{interval_s}s"


class Tick(NamedTuple):
    """One market trade, exchange wire format already stripped.

    A named tuple rather than a frozen dataclass: one is built per trade on the
    receive loop, and a tuple is built in a third of the time (0.8 vs 2.0 us here),
    with the same immutability and field access.

    Attributes
    ----------
    symbol : upper-case instrument name, e.g. ``"BTCUSDT"``.
    trade_id : exchange trade id (``t``), strictly increasing per symbol.
    ts_ms : trade time (``T``), integer milliseconds since the epoch, UTC.
    price : trade price in quote currency (USDT), > 0.
    qty : trade quantity in base units, > 0.
    is_buyer_maker : True when the buyer was the maker (the aggressor sold).
    """

    symbol: str
    trade_id: int
    ts_ms: int
    price: float
    qty: float
    is_buyer_maker: bool


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of trade ids that never reached us (ids ``from_id..to_id`` inclusive)."""

    symbol: str
    from_id: int
    to_id: int
    detected_ms: int


def normalize_symbol(text: str) -> str:
    """Validate a symbol against ``^[A-Za-z0-9]{2,20}$`` and return it upper-cased.

    Raises
    ------
    ValueError
        When the text is not 2-20 ASCII letters or digits.
    """
    if not isinstance(text, str) or not SYMBOL_PATTERN.fullmatch(text.strip()):
        raise ValueError(
            f"symbol must be 2-20 letters or digits (like BTCUSDT), got {text!r}"
        )
    return text.strip().upper()


def parse_symbols(text: str) -> list[str]:
    """Parse a comma/space separated symbol list, validated, upper-cased, de-duplicated.

    Raises
    ------
    ValueError
        Naming the first invalid symbol, or when the list is empty.
    """
    parts = [p for p in re.split(r"[,\s]+", text or "") if p]
    if not parts:
        raise ValueError("symbols: give at least one symbol, like BTCUSDT,ETHUSDT")
    seen: list[str] = []
    for part in parts:
        sym = normalize_symbol(part)
        if sym not in seen:
            seen.append(sym)
    return seen
