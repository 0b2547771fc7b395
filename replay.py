"""A local WebSocket server that speaks Binance USD-M Futures' stream protocol.

It serves recorded data (NDJSON of raw frames, plain or gzipped; Binance public-data
``trades`` CSVs) or a synthetic cointegrated pair on 127.0.0.1, so that the ingestion
spine runs and is tested without internet, and so that the dashboard has a Demo source.

Routes, as Binance serves them (an optional route prefix ``/public`` is accepted; the
``/market`` prefix acks subscriptions to ``@trade`` and then stays silent, exactly like
the real exchange after its 2026 host split)::

    /stream?streams=btcusdt@trade/ethusdt@trade   combined {"stream":..,"data":..}
    /ws/btcusdt@trade                              raw payloads
    {"method":"SUBSCRIBE","params":[...],"id":1}   -> {"result":null,"id":1}
    {"method":"LIST_SUBSCRIPTIONS","id":2}         -> {"result":[...],"id":2}

Frames are pre-serialised and written to the transport in bulk (one ``write`` per
batch), so that the feed is not the bottleneck of a loopback benchmark.

CLI::

    python replay.py serve [--host 127.0.0.1] [--port 0] [--speed 1.0] [--loop]
                           (--file FILE ... | --synthetic [--rate 40] [--seed N])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gzip
import heapq
import io
import json
import logging
import math
import random
import signal
import struct
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

log = logging.getLogger("replay")

DEFAULT_HOST = "127.0.0.1"
SILENT_ROUTES = ("/market", "/private")  # routes that ack @trade and send nothing
KNOWN_ROUTES = ("", "/public", *SILENT_ROUTES)
BATCH_FRAMES = 512  # frames joined into one transport write
SYNTHETIC_STEP_S = 0.02
# Synthetic pair: (symbol, start price, tick size, lot size, mean qty)
SYNTHETIC_SPECS = (
    ("BTCUSDT", 64_000.0, 0.1, 0.001, 0.05),
    ("ETHUSDT", 3_400.0, 0.01, 0.001, 0.8),
)
# Plausible levels of other perpetuals (start price, tick, lot, mean qty), late
# 2024; any other symbol starts at SYNTHETIC_DEFAULT (100 USDT, tick 0.01).
SYNTHETIC_LEVELS: dict[str, tuple[float, float, float, float]] = {
    "BTCUSDT": (64_000.0, 0.1, 0.001, 0.05),
    "ETHUSDT": (3_400.0, 0.01, 0.001, 0.8),
    "SOLUSDT": (150.0, 0.01, 0.01, 20.0),
    "BNBUSDT": (580.0, 0.01, 0.01, 4.0),
    "XRPUSDT": (0.55, 0.0001, 0.1, 4_000.0),
    "DOGEUSDT": (0.12, 0.00001, 1.0, 20_000.0),
    "ADAUSDT": (0.40, 0.0001, 1.0, 5_000.0),
    "AVAXUSDT": (28.0, 0.001, 1.0, 60.0),
    "LINKUSDT": (12.0, 0.001, 0.01, 150.0),
    "LTCUSDT": (70.0, 0.01, 0.001, 25.0),
}
SYNTHETIC_DEFAULT = (100.0, 0.01, 0.001, 20.0)
SYNTHETIC_OWN_SIGMA = 0.75e-4  # per sqrt(s), relative: a third symbol's own moves


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """One frame to send.

    Attributes
    ----------
    t_ms : pacing time, ms since the epoch (event time ``E``, else trade time ``T``).
    stream : lower-case stream name, e.g. ``"btcusdt@trade"``.
    payload : the ``data`` JSON text exactly as it goes on the wire.
    """

    t_ms: int
    stream: str
    payload: str


# --------------------------------------------------------------------------- inputs


def _open_text(path: Path) -> io.TextIOBase:
    """Open a plain or gzip text file (detected by its magic bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_ndjson(path: Path) -> Iterator[ReplayEvent]:
    """Yield events from an NDJSON file of raw Binance frames, plain or gzipped.

    A line may start with a receive timestamp (``<digits> {...}`` as hftbacktest's
    collector writes, or ``<float>: {...}`` as cryptofeed's); it is dropped. Lines that
    are neither a combined-stream envelope nor an event payload (a REST snapshot, a
    URL header) are skipped. Payload text is re-serialised compactly with key order and
    string values unchanged, so prices and quantities are sent exactly as recorded.
    """
    last_t = 0
    with _open_text(path) as fh:
        for line in fh:
            brace = line.find("{")
            if brace < 0:
                continue
            try:
                obj = json.loads(line[brace:])
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if "stream" in obj and isinstance(obj.get("data"), dict):
                stream, data = str(obj["stream"]), obj["data"]
            elif isinstance(obj.get("e"), str) and isinstance(obj.get("s"), str):
                data = obj
                stream = f"{obj['s'].lower()}@{obj['e']}"
            else:
                continue
            t = data.get("E", data.get("T"))
            t_ms = t if isinstance(t, int) and not isinstance(t, bool) else last_t
            last_t = t_ms
            payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
            yield ReplayEvent(t_ms, stream.lower(), payload)


def read_trades_csv(path: Path, symbol: str | None = None) -> Iterator[ReplayEvent]:
    """Yield ``@trade`` events from a Binance public-data USD-M ``trades`` CSV.

    Columns ``id,price,qty,quote_qty,time,is_buyer_maker``, with or without a header;
    the symbol is the file name's token before the first ``-`` unless given. Times in
    microseconds (16 digits, as newer spot dumps use) are converted to milliseconds.
    """
    sym = (symbol or path.name.split("-", 1)[0]).upper()
    stream = f"{sym.lower()}@trade"
    with _open_text(path) as fh:
        for row in csv.reader(fh):
            if len(row) < 6 or not row[0].strip().isdigit():
                continue  # header or blank line
            tid, price, qty, _quote, t_text, maker = (c.strip() for c in row[:6])
            t_ms = int(t_text)
            if t_ms >= 10**14:
                t_ms //= 1000
            m = "true" if maker.lower() in ("true", "1") else "false"
            payload = (
                f'{{"e":"trade","E":{t_ms},"T":{t_ms},"s":"{sym}","t":{int(tid)},'
                f'"p":"{price}","q":"{qty}","X":"MARKET","m":{m}}}'
            )
            yield ReplayEvent(t_ms, stream, payload)


def read_file(path: Path) -> Iterator[ReplayEvent]:
    """Yield events from one input file, choosing the reader by its extension."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return read_trades_csv(path)
    return read_ndjson(path)


def merge_files(paths: Sequence[Path]) -> Iterator[ReplayEvent]:
    """Merge several files' events by pacing time (stable for equal times)."""
    if len(paths) == 1:
        return read_file(paths[0])
    return heapq.merge(*(read_file(p) for p in paths), key=lambda ev: ev.t_ms)


def _shift_trade(ev: ReplayEvent, id_shift: dict[str, int], t_shift: int) -> str | None:
    """Return a trade payload with shifted ids and times (loop passes), else None."""
    try:
        data = json.loads(ev.payload)
    except ValueError:
        return None
    if data.get("e") != "trade":
        return None
    data["t"] = data["t"] + id_shift.get(ev.stream, 0)
    data["T"] = data["T"] + t_shift
    if "E" in data:
        data["E"] = data["E"] + t_shift
    return json.dumps(data, separators=(",", ":"))


def file_events(paths: Sequence[Path], *, loop: bool = False) -> Iterator[ReplayEvent]:
    """Events of ``paths`` merged by time; with ``loop``, repeat forever.

    Pass ``k >= 1`` of a loop re-sends only the trades, with ids shifted by ``k`` times
    each stream's id span and times by ``k`` times the recording span plus one second,
    so a client keeps deduplicating correctly and sees fresh, increasing trade ids.
    """
    first_t: int | None = None
    last_t = 0
    id_lo: dict[str, int] = {}
    id_hi: dict[str, int] = {}
    for ev in merge_files(paths):
        if first_t is None:
            first_t = ev.t_ms
        last_t = max(last_t, ev.t_ms)
        if ev.stream.endswith("@trade"):
            tid = _trade_id(ev.payload)
            if tid is not None:
                id_lo[ev.stream] = min(id_lo.get(ev.stream, tid), tid)
                id_hi[ev.stream] = max(id_hi.get(ev.stream, tid), tid)
        yield ev
    if not loop or first_t is None or not id_hi:
        return
    span_t = last_t - first_t + 1000
    span_id = {s: id_hi[s] - id_lo[s] + 1 for s in id_hi}
    k = 1
    while True:
        shifts = {s: k * n for s, n in span_id.items()}
        for ev in merge_files(paths):
            if not ev.stream.endswith("@trade"):
                continue
            payload = _shift_trade(ev, shifts, k * span_t)
            if payload is not None:
                yield ReplayEvent(ev.t_ms + k * span_t, ev.stream, payload)
        k += 1


def _trade_id(payload: str) -> int | None:
    """Cheaply extract ``"t":N`` from a trade payload."""
    pos = payload.find('"t":')
    if pos < 0:
        return None
    end = pos + 4
    while end < len(payload) and payload[end].isdigit():
        end += 1
    text = payload[pos + 4 : end]
    return int(text) if text else None


# ------------------------------------------------------------------------ synthetic


@dataclass(slots=True)
class _SymbolState:
    symbol: str
    tick: float
    lot: float
    mean_qty: float
    next_id: int
    next_arrival: float = 0.0


class SyntheticPair:
    """A realistic cointegrated BTC-like / ETH-like pair, generated in real time.

    ``x`` (ETH-like) follows a Gaussian random walk; ``y = beta * x + s`` (BTC-like)
    where the spread ``s`` is an Ornstein-Uhlenbeck process
    ``ds = -theta * s dt + sigma dW`` with a 30 s half-life and a stationary standard
    deviation of about 15 USDT, so the spread's z-score crosses +-2 within minutes at
    1 s bars. Trades arrive as a Poisson process per symbol (``rate`` trades/s in total)
    with bursts at eight times the rate lasting about two seconds every half minute.
    Each symbol trades at its own level (``SYNTHETIC_LEVELS``: SOLUSDT near 150,
    XRPUSDT near 0.55, ...; ``SYNTHETIC_DEFAULT``, 100 USDT, for others): the first
    symbol follows the BTC-like path, the second the ETH-like one, and any further
    symbol the ETH-like path times its own log random walk, each scaled to its level.
    Prices are rounded to each symbol's tick size and quantities to the lot
    size 0.001. Trade ids start at ``now_ms * 100`` so they keep increasing across
    restarts; trade time ``T`` is the wall clock.
    """

    def __init__(
        self,
        symbols: Sequence[str] | None = None,
        *,
        rate: float = 40.0,
        seed: int | None = None,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate: must be > 0 trades/s, got {rate!r}")
        names = [s.upper() for s in (symbols or [s[0] for s in SYNTHETIC_SPECS])]
        if not names:
            raise ValueError("symbols: give at least one symbol")
        self._rng = random.Random(seed)
        self.rate = float(rate)
        base_id = int(time.time() * 1000) * 100
        self._states: list[_SymbolState] = []
        # each symbol trades at its own level: the model's BTC-like (first) or
        # ETH-like (others) path, scaled by the symbol's level over the model's
        self._scale: list[float] = []
        for i, name in enumerate(names):
            level, tick, lot, mean_qty = SYNTHETIC_LEVELS.get(name, SYNTHETIC_DEFAULT)
            model = SYNTHETIC_SPECS[min(i, len(SYNTHETIC_SPECS) - 1)][1]
            self._scale.append(level / model)
            self._states.append(
                _SymbolState(name, tick, lot, mean_qty, base_id + i * 10**9)
            )
        # symbols after the pair: the ETH-like path times their own log random
        # walk (return correlation about 0.8 with it, not cointegrated)
        self._w = [0.0] * len(names)
        self._x = SYNTHETIC_SPECS[1][1]
        self._beta = SYNTHETIC_SPECS[0][1] / SYNTHETIC_SPECS[1][1]
        self._s = 0.0
        self._theta = math.log(2.0) / 30.0
        self._sigma_s = 15.0 * math.sqrt(2.0 * self._theta)
        self._sigma_x = 0.35
        self._burst_until = 0.0
        self._now = 0.0

    def _mid(self, i: int) -> float:
        if i == 0:
            return self._scale[0] * (self._beta * self._x + self._s)
        return self._scale[i] * self._x * math.exp(self._w[i])

    def step(self, now_s: float) -> list[ReplayEvent]:
        """Advance the model to wall time ``now_s``; return the trades it produced."""
        rng = self._rng
        if self._now == 0.0:
            self._now = now_s
            for st in self._states:
                st.next_arrival = now_s + rng.expovariate(self._rate_each(now_s))
            return []
        dt = max(0.0, now_s - self._now)
        self._now = now_s
        self._x += self._sigma_x * math.sqrt(dt) * rng.gauss(0.0, 1.0)
        self._s += -self._theta * self._s * dt + self._sigma_s * math.sqrt(
            dt
        ) * rng.gauss(0.0, 1.0)
        for i in range(2, len(self._w)):
            self._w[i] += SYNTHETIC_OWN_SIGMA * math.sqrt(dt) * rng.gauss(0.0, 1.0)
        if now_s >= self._burst_until and rng.random() < dt / 30.0:
            self._burst_until = now_s + rng.expovariate(0.5)
        out: list[ReplayEvent] = []
        for i, st in enumerate(self._states):
            mid = self._mid(i)
            while st.next_arrival <= now_s:
                out.append(self._trade(st, mid, st.next_arrival))
                st.next_arrival += rng.expovariate(self._rate_each(st.next_arrival))
        out.sort(key=lambda ev: ev.t_ms)
        return out

    def _rate_each(self, t: float) -> float:
        burst = 8.0 if t < self._burst_until else 1.0
        return self.rate * burst / len(self._states)

    def _trade(self, st: _SymbolState, mid: float, t: float) -> ReplayEvent:
        rng = self._rng
        maker = rng.random() < 0.5
        px = mid - st.tick if maker else mid + st.tick
        decimals = max(0, round(-math.log10(st.tick)))
        price = f"{max(st.tick, round(px / st.tick) * st.tick):.{decimals}f}"
        lots = max(1, round(rng.expovariate(1.0 / st.mean_qty) / st.lot))
        qty = f"{lots * st.lot:.3f}"
        t_ms = int(t * 1000)
        st.next_id += 1
        payload = (
            f'{{"e":"trade","E":{t_ms + rng.randint(0, 2)},"T":{t_ms},'
            f'"s":"{st.symbol}","t":{st.next_id},"p":"{price}","q":"{qty}",'
            f'"X":"MARKET","m":{"true" if maker else "false"}}}'
        )
        return ReplayEvent(t_ms, f"{st.symbol.lower()}@trade", payload)


# --------------------------------------------------------------------------- server


def encode_text_frame(text: str) -> bytes:
    """Return one unmasked, final WebSocket text frame (server to client)."""
    data = text.encode("utf-8")
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + data
    return struct.pack("!BBQ", 0x81, 127, n) + data


@dataclass(slots=True, eq=False)
class _Client:
    ws: ServerConnection
    combined: bool
    silent: bool
    streams: set[str] = field(default_factory=set)
    frames_sent: int = 0

    def frame(self, ev: ReplayEvent) -> bytes | None:
        if ev.stream not in self.streams:
            return None
        if self.silent and ev.stream.endswith("@trade"):
            return None
        if self.combined:
            return encode_text_frame(f'{{"stream":"{ev.stream}","data":{ev.payload}}}')
        return encode_text_frame(ev.payload)

    async def write(self, frames: list[bytes]) -> bool:
        """Write frames in one transport call and wait for drain; False once closed."""
        if self.ws.state is not State.OPEN:
            return False
        self.ws.transport.write(b"".join(frames))
        self.frames_sent += len(frames)
        await self.ws.drain()
        return self.ws.state is State.OPEN


class ReplayServer:
    """An asyncio WebSocket server speaking Binance's stream protocol.

    Parameters
    ----------
    files : recorded inputs (NDJSON raw frames, plain or gzipped, or trades CSVs),
        merged by time and replayed from the start to each connection.
    synthetic : generate a cointegrated pair in real time instead, broadcast to every
        connection (trade ids keep increasing across reconnects).
    symbols : synthetic symbol names (default BTCUSDT, ETHUSDT).
    speed : time scaling for files (2.0 = twice as fast, 0 = as fast as possible).
    loop : for files, replay forever with shifted ids and times.
    rate : synthetic trades per second in total (bursts go above it).
    seed : synthetic random seed.
    ping_interval_s : server keepalive pings (None disables).

    Use ``await start()``, ``url``, ``await stop()``, or ``async with``.
    """

    def __init__(
        self,
        *,
        files: Sequence[str | Path] = (),
        synthetic: bool = False,
        symbols: Sequence[str] | None = None,
        speed: float = 1.0,
        loop: bool = False,
        rate: float = 40.0,
        seed: int | None = None,
        host: str = DEFAULT_HOST,
        port: int = 0,
        ping_interval_s: float | None = 20.0,
    ) -> None:
        self.files = tuple(Path(f) for f in files)
        if synthetic == bool(self.files):
            raise ValueError("source: give either files or synthetic=True, not both")
        for f in self.files:
            if not f.is_file():
                raise ValueError(f"files: no such file {str(f)!r}")
        if not (speed >= 0 and math.isfinite(speed)):
            raise ValueError(f"speed: must be a finite number >= 0, got {speed!r}")
        self.synthetic = synthetic
        self.speed = float(speed)
        self.loop = loop
        self.host = host
        self.port = port
        self.ping_interval_s = ping_interval_s
        self._generator = (
            SyntheticPair(symbols, rate=rate, seed=seed) if synthetic else None
        )
        self._clients: set[_Client] = set()
        self._server: Server | None = None
        self._synth_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``ws://HOST:PORT`` (the base URL for a client; append ``/stream?...``)."""
        if self._server is None:
            raise RuntimeError("url: the server is not started")
        sock = next(iter(self._server.sockets))
        host, port = sock.getsockname()[:2]
        return f"ws://{host}:{port}"

    @property
    def connections(self) -> int:
        """Number of connected clients."""
        return len(self._clients)

    async def start(self) -> ReplayServer:
        """Bind and start serving; returns self."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            compression=None,
            ping_interval=self.ping_interval_s,
            max_size=1 << 20,
        )
        if self._generator is not None:
            self._synth_task = asyncio.create_task(self._synthetic_loop())
        return self

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._synth_task is not None:
            self._synth_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._synth_task
        if self._server is not None:
            self._server.close(close_connections=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def __aenter__(self) -> ReplayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        await asyncio.Future()

    # ------------------------------------------------------------------ per client

    async def _handle(self, ws: ServerConnection) -> None:
        parts = urlsplit(ws.request.path if ws.request else "/")
        path = parts.path.rstrip("/")
        route = ""
        for prefix in ("/public", "/market", "/private"):
            if path.startswith(prefix + "/") or path == prefix:
                route, path = prefix, path[len(prefix) :]
                break
        if path == "/stream":
            combined = True
            wanted = parse_qs(parts.query).get("streams", [""])[0]
            streams = [s for s in wanted.split("/") if s]
        elif path == "/ws" or path.startswith("/ws/"):
            combined = False
            streams = [s for s in path[3:].split("/") if s]
        else:
            await ws.close(1008, f"unknown path {parts.path}")
            return
        client = _Client(ws, combined, route in SILENT_ROUTES)
        client.streams.update(s.lower() for s in streams)
        self._clients.add(client)
        sender = None
        if not self.synthetic:
            sender = asyncio.create_task(self._send_files(client))
        try:
            async for message in ws:
                reply = self._answer(client, message)
                if reply is not None:
                    await ws.send(reply)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await sender

    @staticmethod
    def _answer(client: _Client, message: str | bytes) -> str | None:
        """Answer a SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS request."""
        try:
            req = json.loads(message)
            method, req_id = req["method"], req.get("id")
        except (ValueError, TypeError, KeyError):
            return json.dumps(
                {"error": {"code": 2, "msg": "Invalid request"}, "id": None}
            )
        params = req.get("params") or []
        if method == "SUBSCRIBE":
            client.streams.update(str(p).lower() for p in params)
            return json.dumps({"result": None, "id": req_id}, separators=(",", ":"))
        if method == "UNSUBSCRIBE":
            client.streams.difference_update(str(p).lower() for p in params)
            return json.dumps({"result": None, "id": req_id}, separators=(",", ":"))
        if method == "LIST_SUBSCRIPTIONS":
            return json.dumps(
                {"result": sorted(client.streams), "id": req_id}, separators=(",", ":")
            )
        return json.dumps(
            {"error": {"code": 1, "msg": f"Unknown method {method}"}, "id": req_id}
        )

    async def _send_files(self, client: _Client) -> None:
        """Replay the files to one client from the start, paced by ``speed``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        t0: int | None = None
        batch: list[bytes] = []
        skipped = 0
        for ev in file_events(self.files, loop=self.loop):
            if t0 is None:
                t0 = ev.t_ms
            if self.speed > 0:
                due = (ev.t_ms - t0) / 1000.0 / self.speed
                wait = due - (loop.time() - start)
                if wait > 0.002:
                    if batch:
                        if not await client.write(batch):
                            return
                        batch = []
                    await asyncio.sleep(wait)
            skipped += 1
            if skipped % 1024 == 0:
                await asyncio.sleep(0)  # keep serving requests while filtering
            frame = client.frame(ev)
            if frame is None:
                continue
            batch.append(frame)
            if len(batch) >= BATCH_FRAMES:
                if not await client.write(batch):
                    return
                batch = []
        if batch:
            await client.write(batch)

    async def _synthetic_loop(self) -> None:
        """Generate synthetic trades in real time and broadcast them."""
        assert self._generator is not None  # noqa: S101 - internal invariant
        while True:
            events = self._generator.step(time.time())
            if events and self._clients:
                for client in list(self._clients):
                    frames = [f for f in map(client.frame, events) if f is not None]
                    if frames:
                        try:
                            await client.write(frames)
                        except (ConnectionClosed, ConnectionError):
                            self._clients.discard(client)
            await asyncio.sleep(SYNTHETIC_STEP_S)


# ------------------------------------------------------------------ in-thread runner


@dataclass(frozen=True, slots=True)
class RunningReplay:
    """A replay server running in a daemon thread: ``url`` and ``stop()``."""

    url: str
    _stop: threading.Event
    _thread: threading.Thread

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server and join its thread."""
        self._stop.set()
        self._thread.join(timeout)


def start_replay_in_thread(
    *,
    synthetic: bool = True,
    files: Sequence[str | Path] | None = None,
    symbols: Sequence[str] | None = None,
    speed: float = 1.0,
    loop: bool = False,
    host: str = DEFAULT_HOST,
    port: int = 0,
    seed: int | None = None,
    rate: float = 40.0,
    ping_interval_s: float | None = 20.0,
) -> RunningReplay:
    """Start a :class:`ReplayServer` in a daemon thread with its own event loop.

    With ``files`` given, the files are replayed (``synthetic`` is ignored).

    Returns
    -------
    RunningReplay
        ``url`` (``ws://127.0.0.1:PORT``) once listening; ``stop()`` to end it.

    Raises
    ------
    ValueError
        For bad arguments (missing file, negative speed), raised in the caller.
    """
    server = ReplayServer(
        files=files or (),
        synthetic=not files and synthetic,
        symbols=symbols,
        speed=speed,
        loop=loop,
        rate=rate,
        seed=seed,
        host=host,
        port=port,
        ping_interval_s=ping_interval_s,
    )
    ready = threading.Event()
    stop = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        try:
            await server.start()
            box["url"] = server.url
        except Exception as exc:  # reported to the caller below
            box["error"] = exc
            ready.set()
            return
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.stop()

    thread = threading.Thread(
        target=asyncio.run, args=(main(),), name="replay-server", daemon=True
    )
    thread.start()
    ready.wait(10.0)
    if "error" in box:
        raise RuntimeError(f"replay server start failed: {box['error']}")
    if "url" not in box:
        raise RuntimeError("replay server start failed: not listening after 10 s")
    return RunningReplay(str(box["url"]), stop, thread)


# ------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="replay.py", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve Binance's stream protocol on loopback")
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--speed", type=float, default=1.0, help="0 = as fast as possible")
    p.add_argument("--loop", action="store_true", help="replay the files forever")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", nargs="+", type=Path, help="NDJSON(.gz) or trades CSV")
    src.add_argument("--synthetic", action="store_true", help="cointegrated pair")
    p.add_argument(
        "--symbols", default=None, help="synthetic symbols, e.g. BTCUSDT,ETHUSDT"
    )
    p.add_argument("--rate", type=float, default=40.0, help="synthetic trades/s")
    p.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    symbols = args.symbols.split(",") if args.symbols else None
    try:
        server = ReplayServer(
            files=args.file or (),
            synthetic=args.synthetic,
            symbols=symbols,
            speed=args.speed,
            loop=args.loop,
            rate=args.rate,
            seed=args.seed,
            host=args.host,
            port=args.port,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        await server.start()
        print(f"replay server listening on {server.url}", flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await server.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
