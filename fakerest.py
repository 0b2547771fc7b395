"""A local HTTP server that answers like Binance USD-M Futures' public REST API.

Used by the tests (and usable by hand) so that the REST side (`rest.py`) runs without
the internet. It binds to 127.0.0.1 only. Data comes from trade lists (the recorded
Binance trades in ``../shared/data/binance/derived_csv`` or any given ticks); klines and
aggregate trades are derived from them the way Binance derives them, or klines are
given explicitly.

Endpoints and payload shapes (Binance USD-M "Market Data" documentation)::

    GET /fapi/v1/exchangeInfo     {"timezone", "serverTime", "rateLimits": [...],
                                   "exchangeFilters", "assets", "symbols": [{"symbol",
                                   "pair", "contractType", "status", ...}]}
    GET /fapi/v1/klines           [[openTime, "open", "high", "low", "close", "volume",
                                    closeTime, "quoteVolume", trades, "takerBuyBase",
                                    "takerBuyQuote", "0"], ...]
    GET /fapi/v1/trades           [{"id", "price", "qty", "quoteQty", "time",
                                    "isBuyerMaker"}, ...]  (the latest `limit`)
    GET /fapi/v1/historicalTrades same rows from ``fromId``; needs ``X-MBX-APIKEY``
    GET /fapi/v1/aggTrades        [{"a", "p", "q", "f", "l", "T", "m"}, ...]

Every answer carries ``X-MBX-USED-WEIGHT-1M``; going over the served REQUEST_WEIGHT
limit answers 429 like Binance. Faults can be switched on (`FakeBinanceRest.fail`):
429 with ``Retry-After`` (a number, or any header text such as ``inf`` or an HTTP
date), 418 (IP ban), 451 (restricted location), 403, 500; and an oversized answer
(`FakeBinanceRest.serve_huge`).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
KLINE_MS = 60_000
# Request weights as Binance documents them for USD-M (GET /fapi/v1/...).
ENDPOINT_WEIGHTS = {
    "/fapi/v1/exchangeInfo": 1,
    "/fapi/v1/trades": 5,
    "/fapi/v1/historicalTrades": 20,
    "/fapi/v1/aggTrades": 20,
}
AGG_ID_BASE = 2_000_000_000
MSG_451 = (
    "Service unavailable from a restricted location according to 'b. Eligibility' "
    "in https://www.binance.com/en/terms. Please contact customer service if you "
    "believe you received this message in error."
)


def klines_weight(limit: int) -> int:
    """Weight of GET /fapi/v1/klines by ``limit``: 1 / 2 / 5 / 10."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


@dataclass(frozen=True, slots=True)
class FakeTrade:
    """One market trade as Binance stores it (price and qty as exact decimal text)."""

    id: int
    price: str
    qty: str
    time: int
    is_buyer_maker: bool


@dataclass(frozen=True, slots=True)
class ServedRequest:
    """One request the server answered (for assertions)."""

    path: str
    params: dict[str, str]
    status: int
    t_monotonic: float
    api_key: str | None


@dataclass(slots=True)
class _Fault:
    status: int
    remaining: int | None  # None: forever
    retry_after_s: float | None
    path: str | None
    retry_after: str | None = None  # the header's text as given, e.g. "inf"
    body_bytes: int = 0  # status 200: an answer of this many bytes (spaces)
    declare_length: bool = True


def read_trades_csv(path: str | Path) -> list[FakeTrade]:
    """Trades from a Binance public-data USD-M ``trades`` CSV (header optional)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    out = []
    for row in csv.reader(io.StringIO(raw.decode("utf-8"))):
        if len(row) < 6 or not row[0].strip().isdigit():
            continue
        tid, price, qty, _quote, t_ms, maker = (c.strip() for c in row[:6])
        out.append(
            FakeTrade(int(tid), price, qty, int(t_ms), maker.lower() in ("true", "1"))
        )
    out.sort(key=lambda t: t.id)
    return out


def klines_from_trades(
    trades: Sequence[FakeTrade], interval_ms: int = KLINE_MS
) -> list[list]:
    """Binance kline rows built from trades, one per non-empty interval.

    Row: ``[openTime, open, high, low, close, volume, closeTime, quoteVolume, trades,
    takerBuyBaseVolume, takerBuyQuoteVolume, "0"]`` (decimals as text), open/close the
    prices of the lowest/highest trade id in the interval.
    """
    buckets: dict[int, list[FakeTrade]] = {}
    for t in sorted(trades, key=lambda t: t.id):
        buckets.setdefault(t.time - t.time % interval_ms, []).append(t)
    rows = []
    for start in sorted(buckets):
        group = buckets[start]
        prices = [Decimal(t.price) for t in group]
        qtys = [Decimal(t.qty) for t in group]
        taker_buy = [
            (p, q)
            for t, p, q in zip(group, prices, qtys, strict=True)
            if not t.is_buyer_maker
        ]
        rows.append(
            [
                start,
                group[0].price,
                str(max(prices)),
                str(min(prices)),
                group[-1].price,
                str(sum(qtys)),
                start + interval_ms - 1,
                str(sum(p * q for p, q in zip(prices, qtys, strict=True))),
                len(group),
                str(sum((q for _p, q in taker_buy), Decimal(0))),
                str(sum((p * q for p, q in taker_buy), Decimal(0))),
                "0",
            ]
        )
    return rows


def agg_trades_from_trades(trades: Sequence[FakeTrade]) -> list[dict]:
    """Aggregate trades: consecutive trades with the same time, price and side.

    Binance aggregates fills of one taker order at one price; consecutive ids with
    equal time, price and ``isBuyerMaker`` are the closest public proxy for that.
    """
    out: list[dict] = []
    for t in sorted(trades, key=lambda t: t.id):
        last = out[-1] if out else None
        if (
            last is not None
            and last["l"] == t.id - 1
            and last["T"] == t.time
            and last["p"] == t.price
            and last["m"] == t.is_buyer_maker
        ):
            last["q"] = str(Decimal(last["q"]) + Decimal(t.qty))
            last["l"] = t.id
            continue
        out.append(
            {
                "a": AGG_ID_BASE + len(out),
                "p": t.price,
                "q": t.qty,
                "f": t.id,
                "l": t.id,
                "T": t.time,
                "m": t.is_buyer_maker,
            }
        )
    return out


def symbol_entry(
    symbol: str, *, status: str = "TRADING", contract_type: str = "PERPETUAL"
) -> dict:
    """One ``exchangeInfo.symbols[]`` entry (the fields a client reads)."""
    quote = "USDT" if symbol.endswith("USDT") else symbol[-4:]
    base = symbol[: -len(quote)] if symbol.endswith(quote) else symbol
    return {
        "symbol": symbol,
        "pair": symbol.split("_")[0],
        "contractType": contract_type,
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": status,
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": quote,
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "underlyingType": "COIN",
        "filters": [],
        "orderTypes": ["LIMIT", "MARKET"],
        "timeInForce": ["GTC"],
    }


DEFAULT_EXTRA_SYMBOLS = (
    symbol_entry("BTCUSDT"),
    symbol_entry("ETHUSDT"),
    symbol_entry("SOLUSDT"),
    symbol_entry("BNBUSDT"),
    symbol_entry("XRPUSDT"),
    symbol_entry("BTCUSDT_260925", contract_type="CURRENT_QUARTER"),
    symbol_entry("LUNAUSDT", status="SETTLING"),
)


@dataclass
class _State:
    trades: dict[str, list[FakeTrade]]
    klines: dict[str, list[list]]
    aggs: dict[str, list[dict]]
    symbols: list[dict]
    weight_limit: int
    api_key: str | None
    faults: list[_Fault] = field(default_factory=list)
    requests: list[ServedRequest] = field(default_factory=list)
    used: list[tuple[float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeBinanceRest:
    """Binance USD-M public REST on 127.0.0.1 in a daemon thread.

    Parameters
    ----------
    trades : market trades per symbol (any order; served sorted by id).
    klines : 1 m kline rows per symbol; default: built from `trades`.
    symbols : ``exchangeInfo.symbols`` entries; default: a few perpetuals (BTC, ETH,
        SOL, BNB, XRP), a quarterly and a settling one, plus every traded symbol.
    weight_limit : REQUEST_WEIGHT per minute served in ``rateLimits`` and enforced.
    api_key : the key ``historicalTrades`` accepts (None: any non-empty key).
    port : 0 picks a free port.
    """

    def __init__(
        self,
        trades: Mapping[str, Sequence[FakeTrade]] | None = None,
        *,
        klines: Mapping[str, Sequence[Sequence]] | None = None,
        symbols: Sequence[Mapping] | None = None,
        weight_limit: int = 2400,
        api_key: str | None = None,
        port: int = 0,
    ) -> None:
        trades = {
            k.upper(): sorted(v, key=lambda t: t.id) for k, v in (trades or {}).items()
        }
        kl = {k: klines_from_trades(v) for k, v in trades.items()}
        for sym, rows in (klines or {}).items():
            kl[sym.upper()] = [list(r) for r in sorted(rows, key=lambda r: r[0])]
        if symbols is None:
            entries = [dict(e) for e in DEFAULT_EXTRA_SYMBOLS]
            names = {e["symbol"] for e in entries}
            entries += [symbol_entry(s) for s in sorted({*trades, *kl} - names)]
        else:
            entries = [dict(e) for e in symbols]
        self._state = _State(
            trades=trades,
            klines=kl,
            aggs={k: agg_trades_from_trades(v) for k, v in trades.items()},
            symbols=entries,
            weight_limit=int(weight_limit),
            api_key=api_key,
        )
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control

    def start(self) -> FakeBinanceRest:
        """Bind 127.0.0.1 and serve in a daemon thread; returns self."""
        state = self._state

        class Handler(_Handler):
            pass

        Handler.state = state
        self._server = ThreadingHTTPServer((HOST, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-binance-rest",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeBinanceRest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the REST base URL)."""
        if self._server is None:
            raise RuntimeError("url: the server is not started")
        return f"http://{HOST}:{self._server.server_address[1]}"

    def fail(
        self,
        status: int,
        *,
        times: int | None = 1,
        retry_after_s: float | None = None,
        path: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `times` requests (None: all) with an HTTP error.

        `path` limits the fault to one endpoint (e.g. ``/fapi/v1/klines``).
        `retry_after` sends that exact ``Retry-After`` text (``"inf"``, ``"nan"``,
        an HTTP date) instead of `retry_after_s`; a 418 then names no end time.
        """
        fault = _Fault(status, times, retry_after_s, path, retry_after)
        with self._state.lock:
            self._state.faults.append(fault)

    def serve_huge(
        self,
        n_bytes: int,
        *,
        path: str | None = None,
        times: int | None = 1,
        declare_length: bool = True,
    ) -> None:
        """Answer the next `times` requests with a 200 of `n_bytes` bytes, streamed
        in 1 MiB blocks (with a Content-Length, or close-delimited without one)."""
        fault = _Fault(200, times, None, path, None, n_bytes, declare_length)
        with self._state.lock:
            self._state.faults.append(fault)

    @property
    def requests(self) -> list[ServedRequest]:
        """Requests answered so far, in order (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    def requests_to(self, path: str) -> list[ServedRequest]:
        """Requests answered so far for one endpoint path."""
        return [r for r in self.requests if r.path == path]

    def klines(self, symbol: str) -> list[list]:
        """The kline rows served for `symbol` (a copy)."""
        return [list(r) for r in self._state.klines.get(symbol.upper(), [])]


class _Handler(BaseHTTPRequestHandler):
    state: _State
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # quiet: the tests read `requests`

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        key = self.headers.get("X-MBX-APIKEY")
        st = self.state
        now = time.monotonic()
        with st.lock:
            fault = self._take_fault(parts.path)
            weight = self._weight(parts.path, params)
            st.used = [(t, w) for t, w in st.used if now - t < 60.0]
            used = sum(w for _t, w in st.used)
            if fault is None and used + weight > st.weight_limit:
                fault = _Fault(
                    429, 1, 60 - (now - st.used[0][0]) if st.used else 1, None
                )
            if fault is None or fault.status == 429:
                st.used.append((now, weight))
                used += weight
        if fault is not None and fault.body_bytes:
            self._stream_huge(fault, used, now)
            return
        if fault is not None:
            status, body, headers = self._fault_answer(fault)
        else:
            try:
                status, body = 200, self._route(parts.path, params, key)
            except _ApiError as exc:
                status, body = exc.status, {"code": exc.code, "msg": exc.msg}
            headers = {}
        headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        with st.lock:
            st.requests.append(ServedRequest(parts.path, params, status, now, key))
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    # ---------------------------------------------------------------- helpers

    def _stream_huge(self, fault: _Fault, used: int, now: float) -> None:
        """A 200 of `fault.body_bytes` spaces; stops when the client hangs up."""
        st = self.state
        with st.lock:
            st.requests.append(
                ServedRequest(self.path.split("?")[0], {}, 200, now, None)
            )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-MBX-USED-WEIGHT-1M", str(used))
        if fault.declare_length:
            self.send_header("Content-Length", str(fault.body_bytes))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        block = b" " * (1 << 20)
        left = fault.body_bytes
        try:
            while left > 0:
                self.wfile.write(block[: min(left, len(block))])
                left -= len(block)
        except OSError:  # the client refused the answer and closed
            self.close_connection = True

    def _take_fault(self, path: str) -> _Fault | None:
        for fault in self.state.faults:
            if fault.path is not None and fault.path != path:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.state.faults.remove(fault)
            return fault
        return None

    @staticmethod
    def _weight(path: str, params: Mapping[str, str]) -> int:
        if path == "/fapi/v1/klines":
            return klines_weight(int(params.get("limit", 500) or 500))
        return ENDPOINT_WEIGHTS.get(path, 1)

    @staticmethod
    def _fault_answer(fault: _Fault) -> tuple[int, dict, dict[str, str]]:
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        elif fault.retry_after_s is not None:
            headers["Retry-After"] = str(max(0, round(fault.retry_after_s)))
        if fault.status == 429:
            msg = (
                "Too many requests; current limit of IP(127.0.0.1) is 2400 requests "
                "per minute. Please use the websocket for live updates to avoid "
                "polling the API."
            )
            return 429, {"code": -1003, "msg": msg}, headers
        if fault.status == 418 and fault.retry_after is not None:
            msg = (
                "Way too many requests; IP(127.0.0.1) banned. Please use the websocket."
            )
            return 418, {"code": -1003, "msg": msg}, headers
        if fault.status == 418:
            until = int(time.time() * 1000 + 1000 * (fault.retry_after_s or 120))
            msg = (
                f"Way too many requests; IP(127.0.0.1) banned until {until}. Please "
                "use the websocket for live updates to avoid bans."
            )
            return 418, {"code": -1003, "msg": msg}, headers
        if fault.status in (451, 403):
            return fault.status, {"code": 0, "msg": MSG_451}, headers
        return (
            fault.status,
            {"code": -1000, "msg": "An unknown error occurred."},
            headers,
        )

    def _symbol(self, params: Mapping[str, str]) -> str:
        sym = params.get("symbol", "")
        names = {e["symbol"] for e in self.state.symbols}
        if sym not in names:
            raise _ApiError(400, -1121, "Invalid symbol.")
        return sym

    @staticmethod
    def _limit(params: Mapping[str, str], default: int, maximum: int) -> int:
        try:
            limit = int(params.get("limit", default))
        except ValueError as exc:
            raise _ApiError(400, -1100, "Illegal characters found in limit.") from exc
        if not 1 <= limit <= maximum:
            raise _ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        return limit

    def _route(self, path: str, params: Mapping[str, str], key: str | None) -> object:
        st = self.state
        if path == "/fapi/v1/exchangeInfo":
            return {
                "timezone": "UTC",
                "serverTime": int(time.time() * 1000),
                "futuresType": "U_MARGINED",
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": st.weight_limit,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 1200,
                    },
                ],
                "exchangeFilters": [],
                "assets": [],
                "symbols": st.symbols,
            }
        if path == "/fapi/v1/klines":
            sym = self._symbol(params)
            if params.get("interval") != "1m":
                raise _ApiError(400, -1120, "Invalid interval.")
            limit = self._limit(params, 500, 1500)
            rows = st.klines.get(sym, [])
            return _window(rows, lambda r: r[0], params, limit)
        if path in ("/fapi/v1/trades", "/fapi/v1/historicalTrades"):
            sym = self._symbol(params)
            limit = self._limit(params, 500, 1000)
            trades = st.trades.get(sym, [])
            if path == "/fapi/v1/historicalTrades":
                if not key or (st.api_key is not None and key != st.api_key):
                    raise _ApiError(401, -2014, "API-key format invalid.")
                if "fromId" in params:
                    start = int(params["fromId"])
                    trades = [t for t in trades if t.id >= start][:limit]
                else:
                    trades = trades[-limit:]
            else:
                trades = trades[-limit:]
            return [
                {
                    "id": t.id,
                    "price": t.price,
                    "qty": t.qty,
                    "quoteQty": str(Decimal(t.price) * Decimal(t.qty)),
                    "time": t.time,
                    "isBuyerMaker": t.is_buyer_maker,
                }
                for t in trades
            ]
        if path == "/fapi/v1/aggTrades":
            sym = self._symbol(params)
            limit = self._limit(params, 500, 1000)
            aggs = st.aggs.get(sym, [])
            if "startTime" in params and "endTime" in params:
                if int(params["endTime"]) - int(params["startTime"]) >= 3_600_000:
                    raise _ApiError(
                        400, -1127, "More than 1 hours between startTime and endTime."
                    )
            if "fromId" in params:
                start = int(params["fromId"])
                aggs = [a for a in aggs if a["a"] >= start]
                if "startTime" not in params and "endTime" not in params:
                    return aggs[:limit]
            return _window(aggs, lambda a: a["T"], params, limit)
        raise _ApiError(404, -1000, f"unknown path {path}")


def _window(rows: list, time_of, params: Mapping[str, str], limit: int) -> list:
    """Rows in [startTime, endTime] (inclusive): the first `limit` from startTime,
    else the last `limit` up to endTime, else the latest `limit`."""
    lo = int(params["startTime"]) if "startTime" in params else None
    hi = int(params["endTime"]) if "endTime" in params else None
    sel = [
        r
        for r in rows
        if (lo is None or time_of(r) >= lo) and (hi is None or time_of(r) <= hi)
    ]
    return sel[:limit] if lo is not None else sel[-limit:]


class _ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def main(argv: Sequence[str] | None = None) -> int:
    """``python fakerest.py serve --csv FILE ... [--port N]``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="fakerest.py", description="Binance USD-M REST look-alike on 127.0.0.1"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve trades CSVs (Binance public-data layout)")
    p.add_argument("--csv", nargs="+", type=Path, required=True, help="SYMBOL-*.csv")
    p.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    trades = {f.name.split("-", 1)[0].upper(): read_trades_csv(f) for f in args.csv}
    with FakeBinanceRest(trades, port=args.port) as server:
        print(f"serving {', '.join(trades)} on {server.url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
