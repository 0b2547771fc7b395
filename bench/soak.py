"""Soak run: the synthetic feed at 2 000 ticks/s for N minutes, alerts enabled.

Starts the synthetic replay server (``replay.py``) on 127.0.0.1, the ingestion
service with the alert monitor as a service task and three alert rules, and every
``--sample-s`` seconds records the resident memory of this process (``VmRSS`` from
``/proc/self/status``), the ingestion counters and the time of one dashboard
refresh's work (read the 1 s bars of the last 15 minutes for both symbols, resample
to the view's timeframe, run the pair analytics without the slow tests). At the
end it checks what cannot be noise: every stored trade id per symbol is contiguous
except for recorded gap rows, no id is stored twice, and the service is live.

Usage::

    python bench/soak.py [--minutes 30] [--rate 2000] [--sample-s 10] [--db PATH]

Prints one table row per sample, then a summary; exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import alerts  # noqa: E402
import analytics  # noqa: E402
import resampling  # noqa: E402
import storage  # noqa: E402
from ingestion import IngestionConfig, IngestionService  # noqa: E402
from replay import start_replay_in_thread  # noqa: E402

SYMBOLS = ("BTCUSDT", "ETHUSDT")
REFRESH_WINDOW_MS = 15 * 60_000
RULES = ("abs(z) > 2", "BTCUSDT.price > 0", "corr < -0.9")


@dataclass(frozen=True, slots=True)
class SoakSample:
    """One sample of the soak run.

    Attributes
    ----------
    elapsed_s : seconds since the service started.
    rss_mb : resident memory of the process, MiB.
    stored : ticks committed by the service so far.
    ticks_per_s : receive rate over the service's last 10 s.
    queue : ticks received but not yet written.
    lag_p99_ms : receive minus event time, 99th percentile, ms.
    refresh_ms : one dashboard refresh's work (read, resample, analytics), ms.
    alert_events : alert events stored so far.
    reconnects : connections re-opened so far.
    gaps : gap rows recorded so far.
    state : service state.
    """

    elapsed_s: float
    rss_mb: float
    stored: int
    ticks_per_s: float
    queue: int
    lag_p99_ms: float | None
    refresh_ms: float
    alert_events: int
    reconnects: int
    gaps: int
    state: str


@dataclass(frozen=True, slots=True)
class SoakResult:
    """Samples plus the end-of-run checks.

    Attributes
    ----------
    samples : one `SoakSample` per sampling period.
    stored : ticks in the database at the end.
    missing : trade ids absent from the database and from every gap row.
    duplicates_stored : (symbol, trade_id) pairs stored more than once.
    gaps : gap rows recorded.
    final_state : service state just before it was stopped.
    received : market trades the service accepted.
    problems : human-readable failed checks (empty when all passed).
    last_error : the service's last error text (why it last reconnected).
    """

    samples: tuple[SoakSample, ...]
    stored: int
    missing: int
    duplicates_stored: int
    gaps: int
    final_state: str
    received: int
    problems: tuple[str, ...] = field(default=())
    last_error: str = ""


def rss_mb() -> float:
    """Resident set size of this process in MiB, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def refresh_work(db: Path, params: analytics.PairParams) -> float:
    """Milliseconds of one dashboard refresh: read, resample, analytics."""
    t0 = time.perf_counter()
    end = int(time.time() * 1000)
    start = end - REFRESH_WINDOW_MS
    interval_s = resampling.parse_interval(params.interval)
    bars = []
    for sym in (params.symbol_y, params.symbol_x):
        raw = storage.read_bars_1s(db, sym, start, end)
        bars.append(resampling.resample_bars(raw, interval_s))
    analytics.pair_analytics(bars[0], bars[1], params, with_tests=False)
    return (time.perf_counter() - t0) * 1000.0


def check_store(db: Path) -> tuple[int, int, int, int]:
    """(stored, missing ids, duplicate pairs, gap rows) read with plain sqlite3.

    Missing ids: for each symbol, ``max - min + 1 - count`` minus the ids covered
    by its gap rows inside that range.
    """
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        stats = conn.execute(
            "SELECT symbol, count(*), count(DISTINCT trade_id), min(trade_id), "
            "max(trade_id) FROM ticks GROUP BY symbol"
        ).fetchall()
        gap_rows = conn.execute("SELECT symbol, from_id, to_id FROM gaps").fetchall()
    stored = missing = dups = 0
    for sym, n, distinct, lo, hi in stats:
        stored += n
        dups += n - distinct
        covered = sum(
            min(b, hi) - max(a, lo) + 1
            for s, a, b in gap_rows
            if s == sym and b >= lo and a <= hi
        )
        missing += (hi - lo + 1) - distinct - covered
    return stored, missing, dups, len(gap_rows)


def run_soak(
    *,
    minutes: float,
    rate: float = 2000.0,
    sample_s: float = 10.0,
    db_path: Path,
    out: Callable[[str], None] = print,
) -> SoakResult:
    """Run the soak and return its samples and checks (see the module docstring)."""
    params = analytics.PairParams(interval="1s", window=60)
    with storage.Writer(db_path) as writer:
        for text in RULES:
            alerts.save_rule(
                writer, alerts.AlertRule.create(text, params, cooldown_s=5)
            )
    replay = start_replay_in_thread(synthetic=True, rate=rate, seed=11)
    monitor = alerts.AlertMonitor(db_path)
    config = IngestionConfig(symbols=SYMBOLS, db_path=db_path, base_url=replay.url)
    service = IngestionService(config, tasks=[monitor.run])
    samples: list[SoakSample] = []
    out(
        f"{'t (s)':>7} {'RSS MiB':>8} {'stored':>10} {'ticks/s':>8} {'queue':>6} "
        f"{'lag p99':>8} {'refresh ms':>10} {'alerts':>6} {'reconn':>6} "
        f"{'gaps':>4} state"
    )
    t0 = time.monotonic()
    end = t0 + minutes * 60.0
    service.start()
    try:
        while True:
            now = time.monotonic()
            if now >= end:
                break
            time.sleep(min(sample_s, end - now))
            st = service.status()
            ms = refresh_work(db_path, params)
            events = len(storage.list_alert_events(db_path, limit=100_000))
            s = SoakSample(
                elapsed_s=time.monotonic() - t0,
                rss_mb=rss_mb(),
                stored=st.stored_ticks,
                ticks_per_s=st.ticks_per_s,
                queue=st.queue_depth,
                lag_p99_ms=st.lag_p99_ms,
                refresh_ms=ms,
                alert_events=events,
                reconnects=st.reconnects,
                gaps=st.gaps,
                state=st.state,
            )
            samples.append(s)
            lag = "-" if s.lag_p99_ms is None else f"{s.lag_p99_ms:.0f}"
            out(
                f"{s.elapsed_s:7.0f} {s.rss_mb:8.1f} {s.stored:10d} "
                f"{s.ticks_per_s:8.0f} {s.queue:6d} {lag:>8} {s.refresh_ms:10.1f} "
                f"{s.alert_events:6d} {s.reconnects:6d} {s.gaps:4d} {s.state}"
            )
        final = service.status()
    finally:
        service.stop(timeout=10.0)
        replay.stop()
    after = service.status()
    stored, missing, dups, gaps = check_store(db_path)
    problems = []
    if missing:
        problems.append(f"{missing} trade ids neither stored nor in a gap row")
    if dups:
        problems.append(f"{dups} trades stored twice")
    if final.state != "live":
        problems.append(f"service state at the end was {final.state!r}, not live")
    if after.stored_ticks != after.total_ticks:
        problems.append(
            f"accepted {after.total_ticks} trades but stored {after.stored_ticks}"
        )
    return SoakResult(
        samples=tuple(samples),
        stored=stored,
        missing=missing,
        duplicates_stored=dups,
        gaps=gaps,
        final_state=final.state,
        received=after.total_ticks,
        problems=tuple(problems),
        last_error=final.last_error,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 0 when every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="ticks/s")
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--db", type=Path, default=None, help="default: a temp file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "soak.db"
        result = run_soak(
            minutes=args.minutes, rate=args.rate, sample_s=args.sample_s, db_path=db
        )
    rss = [s.rss_mb for s in result.samples]
    refresh = [s.refresh_ms for s in result.samples]
    if rss:
        print(
            f"\nRSS {rss[0]:.0f} -> {rss[-1]:.0f} MiB (max {max(rss):.0f}); "
            f"refresh {refresh[0]:.0f} -> {refresh[-1]:.0f} ms "
            f"(max {max(refresh):.0f})"
        )
    print(
        f"received {result.received}, stored {result.stored}, gaps {result.gaps}, "
        f"missing {result.missing}, stored twice {result.duplicates_stored}, "
        f"final state {result.final_state}"
        + (f", last error: {result.last_error}" if result.last_error else "")
    )
    for problem in result.problems:
        print("FAILED:", problem)
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
