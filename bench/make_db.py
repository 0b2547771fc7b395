"""Build the refresh benchmark's databases once into ``bench/cache/`` and reuse them.

Each database holds two symbols (BTCUSDT, ETHUSDT) of synthetic trades from the same
model as `replay.SyntheticPair`, generated vectorised so that days of ticks take
seconds instead of hours:

- ``x`` (ETH-like) is a Gaussian random walk, ``0.35 USDT / sqrt(s)``;
- the spread ``s`` is an Ornstein-Uhlenbeck process with a 30 s half-life and a
  stationary standard deviation of 15 USDT, ``y = beta x + s`` (BTC-like), both
  sampled every ``STEP_S`` seconds (exact AR(1) discretisation);
- trades are Poisson per symbol with bursts at eight times the rate lasting about two
  seconds every half minute (as the live synthetic feed); prices are the mid plus or
  minus one tick (maker / taker), rounded to 0.1 / 0.01; quantities are exponential,
  rounded to the 0.001 lot.

The ticks go through ``storage.Writer.write_tick_columns`` (the same dedupe, ``ticks``
insert and ``bars_1s`` upsert as live ingestion) in batches of about an hour.

A database is reused when its ``.json`` marker (written after a complete build) says
it was built with the same spec. ``python bench/make_db.py [1h 24h 7d] [--quick]``
builds (or reports) them.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

CACHE = REPO / "bench" / "cache"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
# Fixed end so that rebuilt databases are identical (2024-08-09 00:00:00 UTC).
END_MS = 1_723_161_600_000
STEP_S = 0.1  # latent price model step
CHUNK_S = 3_600  # ticks written per hour of data
BURST_GAP_S = 30.0
BURST_LEN_S = 2.0
BURST_X = 8.0
# (symbol, start price, tick size, lot, mean qty): as replay.SYNTHETIC_SPECS
SPECS = (
    ("BTCUSDT", 64_000.0, 0.1, 0.001, 0.05),
    ("ETHUSDT", 3_400.0, 0.01, 0.001, 0.8),
)


@dataclass(frozen=True, slots=True)
class DbSpec:
    """What a benchmark database holds.

    Attributes
    ----------
    name : file stem in ``bench/cache`` (``h1``, ``h24``, ``d7``, ``h24_q`` ...).
    hours : history length; the number of 1 s bars per symbol is ``3600 hours``.
    rate : mean trades per second per symbol (bursts included).
    seed : random seed.
    """

    name: str
    hours: float
    rate: float
    seed: int = 7


# Realistic rate: ~40 trades/s per symbol (24 h = 6.9 M ticks over two symbols).
FULL_RATE = 40.0
# 7 days at 40/s is 48 M ticks (~7 GB, tens of minutes to write on this machine);
# it is built at a lower rate but with the same number of 1 s bars, which is what a
# refresh reads (the dashboard never reads ticks for its bar window).
D7_RATE = 4.0
QUICK_RATE = 4.0

SPECS_BY_NAME: dict[str, DbSpec] = {
    "1h": DbSpec("h1", 1.0, FULL_RATE),
    "24h": DbSpec("h24", 24.0, FULL_RATE),
    "7d": DbSpec("d7", 168.0, D7_RATE),
    "24h-quick": DbSpec("h24_q", 24.0, QUICK_RATE),
}


@dataclass(frozen=True, slots=True)
class DbInfo:
    """A built database: its spec, path, tick count and how it was obtained."""

    spec: DbSpec
    path: Path
    ticks: int
    bars_1s: int
    file_mb: float
    build_s: float
    reused: bool

    def describe(self) -> str:
        """One line: name, history, rate, ticks, bars, size, built or reused."""
        how = "reused" if self.reused else f"built in {self.build_s:.0f} s"
        return (
            f"{self.spec.name}: {self.spec.hours:g} h, {self.spec.rate:g} trades/s "
            f"per symbol, {self.ticks:,} ticks, {self.bars_1s:,} 1 s bars, "
            f"{self.file_mb:,.0f} MB ({how})"
        )


def _marker(spec: DbSpec) -> Path:
    """The JSON marker written after a complete build."""
    return CACHE / f"{spec.name}.json"


def _cached(spec: DbSpec) -> DbInfo | None:
    """The cached database of `spec` if its marker matches, else None."""
    marker = _marker(spec)
    path = CACHE / f"{spec.name}.db"
    if not (marker.is_file() and path.is_file()):
        return None
    try:
        meta = json.loads(marker.read_text())
    except ValueError:
        return None
    if meta.get("spec") != asdict(spec):
        return None
    return DbInfo(
        spec,
        path,
        int(meta["ticks"]),
        int(meta["bars_1s"]),
        path.stat().st_size / 1e6,
        float(meta["build_s"]),
        True,
    )


def _burst_mask(rng: np.random.Generator, n_steps: int) -> np.ndarray:
    """Per step: inside a burst (start rate 1/30 s, exponential length of 2 s)."""
    n_bursts = rng.poisson(n_steps * STEP_S / BURST_GAP_S)
    starts = rng.integers(0, n_steps, n_bursts)
    lengths = np.maximum(1, (rng.exponential(BURST_LEN_S, n_bursts) / STEP_S)).astype(
        np.int64
    )
    delta = np.zeros(n_steps + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, np.minimum(starts + lengths, n_steps), -1)
    return np.cumsum(delta[:-1]) > 0


def _ou(rng: np.random.Generator, n: int, s0: float) -> np.ndarray:
    """OU spread sampled every STEP_S: AR(1) with a 30 s half-life, sd 15."""
    from scipy.signal import lfilter

    theta = math.log(2.0) / 30.0
    a = math.exp(-theta * STEP_S)
    sd = 15.0 * math.sqrt(1.0 - a * a)
    e = rng.normal(0.0, sd, n)
    out, _ = lfilter([1.0], [1.0, -a], e, zi=[a * s0])
    return out


def _chunk(
    rng: np.random.Generator, t0_ms: int, seconds: int, rate: float, state: dict
) -> list[tuple]:
    """One chunk of ticks per symbol: (symbol, ids, ts, price, qty, maker)."""
    n_steps = int(round(seconds / STEP_S))
    burst = _burst_mask(rng, n_steps)
    x = state["x"] + np.cumsum(rng.normal(0.0, 0.35 * math.sqrt(STEP_S), n_steps))
    s = _ou(rng, n_steps, state["s"])
    state["x"], state["s"] = float(x[-1]), float(s[-1])
    beta = SPECS[0][1] / SPECS[1][1]
    mids = (beta * x + s, x)
    # mean rate including bursts: base * (1 + (BURST_X - 1) * burst share)
    share = BURST_LEN_S / (BURST_GAP_S + BURST_LEN_S)
    base = rate / (1.0 + (BURST_X - 1.0) * share)
    lam = base * STEP_S * np.where(burst, BURST_X, 1.0)
    out = []
    for (symbol, _p0, tick, lot, mean_qty), mid in zip(SPECS, mids, strict=True):
        counts = rng.poisson(lam)
        step_of = np.repeat(np.arange(n_steps), counts)
        n = step_of.size
        offset = rng.random(n) * STEP_S * 1000.0
        ts = t0_ms + (step_of * STEP_S * 1000.0 + offset).astype(np.int64)
        ts.sort()
        maker = rng.random(n) < 0.5
        px = mid[step_of] + np.where(maker, -tick, tick)
        px = np.maximum(tick, np.round(px / tick) * tick)
        lots = np.maximum(1, np.round(rng.exponential(mean_qty, n) / lot))
        qty = np.round(lots * lot, 3)
        ids = state["next_id"][symbol] + np.arange(1, n + 1, dtype=np.int64)
        state["next_id"][symbol] += n
        out.append((symbol, ids, ts, px, qty, maker))
    return out


def build(spec: DbSpec, *, force: bool = False, log=print) -> DbInfo:
    """Return the database of `spec`, building it into ``bench/cache`` if needed."""
    import storage

    if not force:
        cached = _cached(spec)
        if cached is not None:
            return cached
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{spec.name}.db"
    _marker(spec).unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rng = np.random.default_rng(spec.seed)
    total_s = int(round(spec.hours * 3600))
    start_ms = END_MS - total_s * 1000
    state = {
        "x": SPECS[1][1],
        "s": 0.0,
        "next_id": {s: 1_000_000_000 * (i + 1) for i, s in enumerate(SYMBOLS)},
    }
    began = time.perf_counter()
    ticks = 0
    with storage.Writer(path) as writer:
        for k, t in enumerate(range(0, total_s, CHUNK_S)):
            seconds = min(CHUNK_S, total_s - t)
            for cols in _chunk(rng, start_ms + t * 1000, seconds, spec.rate, state):
                ticks += writer.write_tick_columns(*cols).inserted
            if k % 12 == 11:
                log(
                    f"  {spec.name}: {t / 3600 + 1:.0f}/{spec.hours:g} h, "
                    f"{ticks:,} ticks, {time.perf_counter() - began:.0f} s"
                )
        writer._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    build_s = time.perf_counter() - began
    stats = storage.db_stats(path)
    bars = sum(s.bars_1s for s in stats.symbols)
    storage.close_readers()
    meta = {"spec": asdict(spec), "ticks": ticks, "bars_1s": bars, "build_s": build_s}
    _marker(spec).write_text(json.dumps(meta))
    return DbInfo(spec, path, ticks, bars, path.stat().st_size / 1e6, build_s, False)


def databases(quick: bool, *, log=print) -> dict[str, DbInfo]:
    """The refresh databases: 1h, 24h and 7d.

    In quick mode the 24 h database is one built at ``QUICK_RATE`` trades/s per
    symbol (the same 86 400 1 s bars per symbol, a tenth of the ticks, so that the
    baseline reading every tick takes seconds, not half a minute), and the 7 d one
    is used only if already cached.
    """
    out = {"1h": build(SPECS_BY_NAME["1h"], log=log)}
    if quick:
        out["24h"] = build(SPECS_BY_NAME["24h-quick"], log=log)
        d7 = _cached(SPECS_BY_NAME["7d"])
        if d7 is not None:
            out["7d"] = d7
    else:
        out["24h"] = build(SPECS_BY_NAME["24h"], log=log)
        out["7d"] = build(SPECS_BY_NAME["7d"], log=log)
    return out


def main(argv: list[str]) -> None:
    """Build the named databases (default: all of the mode) and describe them."""
    names = [a for a in argv if not a.startswith("-")]
    if names:
        for name in names:
            print(build(SPECS_BY_NAME[name], force="--force" in argv).describe())
    else:
        for info in databases("--quick" in argv).values():
            print(info.describe())


if __name__ == "__main__":
    main(sys.argv[1:])
