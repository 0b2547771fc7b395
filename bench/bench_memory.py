"""Benchmark: resident memory of the headless ingester and of the dashboard's work.

Ingester: a feed process sending the recorded BTC/ETH trades looped with fresh ids,
pre-framed, as fast as the reader takes them (the ingest benchmark's feed; ``replay.py
--speed 0 --loop`` re-encodes each trade and tops out near 11 500 ticks/s here), and
``python ingestion.py stream`` into a fresh database in another process. VmRSS /
VmHWM of the ingester are read from ``/proc/PID/status`` every half second and
reported at several tick counts, to show that memory is flat in the ticks ingested.
Full: 5 000 000 ticks; quick: 200 000 (or 20 s).

Dashboard: in this process, app.py's refresh functions (bar close at 1s with a tick
refresh after each; a 1m close every 60 and a 5m close every 300 of them) stepped
through the last hour of the 24 h database, back to back: full = an hour of live
refreshes compressed into a few minutes (3 600 1 s closes, capped by a time budget),
quick = 10 s of them. RSS is sampled through the loop.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from _common import print_table, ratio_row, row, rss_mb  # noqa: E402

RECORDING = (
    REPO.parent
    / "shared/data/binance/derived"
    / "usdm_trade_frames_btcusdt_ethusdt_20240808T2354_20240809T0000.jsonl.gz"
)
LIMIT_MB = 400.0
FLAT = 1.10  # end RSS / RSS at a fifth of the run


def _points(
    samples: list[tuple[float, float]], k: int = 5
) -> list[tuple[float, float]]:
    """`k` samples spread evenly over the run (x, rss)."""
    if len(samples) <= k:
        return samples
    idx = [round(i * (len(samples) - 1) / (k - 1)) for i in range(k)]
    return [samples[i] for i in idx]


def _memory_rows(
    prefix: str, what: str, samples: list[tuple[float, float]], hwm: float, x_fmt
) -> list[dict]:
    """End RSS (target), peak, and end / early RSS (flatness) rows."""
    pts = _points(samples)
    shown = ", ".join(f"{x_fmt(x)}: {r:.0f} MB" for x, r in pts)
    end = row(
        f"{prefix}.rss",
        f"{what}: RSS at the end",
        "MB",
        [samples[-1][1]],
        target=f"<= {LIMIT_MB:.0f} MB",
        met=samples[-1][1] <= LIMIT_MB and hwm <= LIMIT_MB,
        note=f"RSS over the run: {shown}",
    )
    peak = row(f"{prefix}.hwm", f"{what}: peak RSS (VmHWM)", "MB", [hwm])
    early = samples[len(samples) // 5]
    first = row(f"{prefix}.rss_early", "early", "MB", [early[1]])
    flat = ratio_row(
        f"{prefix}.growth",
        f"{what}: RSS end / RSS at {x_fmt(early[0])}",
        end,
        first,
        target=f"<= {FLAT:.2f} (flat)",
    )
    flat["met"] = flat["median"] <= FLAT
    flat["baseline_key"] = None
    return [end, peak, flat]


def _feed_main(port_q) -> None:
    """Feed process: the looped recording, pre-framed, to each connection forever."""
    import asyncio

    from bench_ingest import iter_chunks
    from websockets.asyncio.server import serve

    async def handler(ws) -> None:
        try:
            for chunk in iter_chunks(None):
                ws.transport.write(chunk)
                await ws.drain()
        except (ConnectionError, OSError):  # the ingester was stopped
            return

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", 0, compression=None, ping_interval=None
        ) as server:
            port_q.put(next(iter(server.sockets)).getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


def ingester(n_ticks: int, timeout_s: float) -> list[dict]:
    """RSS of ``ingestion.py stream`` while it ingests `n_ticks` from a fast feed."""
    import multiprocessing as mp

    py = sys.executable
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    ctx = mp.get_context("spawn")
    port_q = ctx.Queue()
    feed = ctx.Process(target=_feed_main, args=(port_q,), daemon=True)
    feed.start()
    ing = None
    try:
        url = f"ws://127.0.0.1:{port_q.get(timeout=60)}"
        with tempfile.TemporaryDirectory(prefix="bench_memory-") as tmp:
            ing = subprocess.Popen(
                [
                    py,
                    "ingestion.py",
                    "stream",
                    "--no-rest",
                    "--symbols",
                    "btcusdt,ethusdt",
                    "--db",
                    str(Path(tmp) / "mem.db"),
                    "--url",
                    url,
                    "--status-every",
                    "0.5",
                ],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            stored = [0]

            def reader() -> None:
                for text in ing.stdout:
                    hit = re.search(r"stored=(\d+)", text)
                    if hit:
                        stored[0] = int(hit.group(1))

            threading.Thread(target=reader, daemon=True).start()
            samples: list[tuple[float, float]] = []
            hwm = 0.0
            began = time.monotonic()
            while stored[0] < n_ticks:
                if ing.poll() is not None:
                    raise RuntimeError(f"ingester exited with {ing.returncode}")
                if time.monotonic() - began > timeout_s:
                    break
                rss, hwm = rss_mb(ing.pid)
                samples.append((float(stored[0]), rss))
                time.sleep(0.5)
            elapsed = time.monotonic() - began
            rss, hwm = rss_mb(ing.pid)
            samples.append((float(stored[0]), rss))
            ing.terminate()
            ing.wait(15)
    finally:
        if ing is not None and ing.poll() is None:
            ing.kill()
        feed.terminate()
        feed.join(10)
    done = int(samples[-1][0])
    samples = [s for s in samples if s[0] > 0] or samples
    rows = _memory_rows(
        "memory.ingester",
        f"ingester (ingestion.py stream) after {done:,} ticks",
        samples,
        hwm,
        lambda x: f"{x / 1e6:.2f} M",
    )
    rate = done / elapsed if elapsed > 0 else 0.0
    rows[0]["note"] += (
        f"; {done:,} ticks in {elapsed:.0f} s ({rate:,.0f}/s) from the recording "
        "looped with fresh ids, pre-framed, in its own process (replay.py --speed 0 "
        "re-encodes each trade's JSON and sends only ~11 500 ticks/s here: 5 M would "
        "take 7 min)"
    )
    if done < n_ticks:
        rows[0]["note"] += f"; STOPPED by the time limit before {n_ticks:,}"
    return rows


def dashboard(budget_s: float, closes_1s: int, *, quick: bool = False) -> list[dict]:
    """RSS of this process while running the dashboard's refreshes on the 24 h db."""
    from bench_refresh import (
        _quiet,
        bar_close_refresh,
        clear_app_caches,
        tick_refresh,
        window_for,
    )
    from make_db import databases

    import app
    import storage

    _quiet()
    info = databases(quick, log=lambda m: print(m, file=sys.stderr))["24h"]
    db = info.path
    clear_app_caches()
    rss0, _ = rss_mb()
    samples: list[tuple[float, float]] = []
    began = time.monotonic()
    done = 0
    for k in range(closes_1s, 0, -1):
        start, end, params = window_for(db, 1, k)
        bar_close_refresh(str(db), 1, start, end, params)
        tick_refresh(str(db), 1, start, end, params)
        done += 1
        for interval_s in (60, 300):
            if done % interval_s == 0:
                n = max(1, k // interval_s)
                s2, e2, p2 = window_for(db, interval_s, n)
                bar_close_refresh(str(db), interval_s, s2, e2, p2)
        if done % 20 == 0 or k == 1:
            samples.append((time.monotonic() - began, rss_mb()[0]))
        if time.monotonic() - began > budget_s:
            break
    elapsed = time.monotonic() - began
    _, hwm = rss_mb()
    storage.close_readers()
    del app
    rows = _memory_rows(
        "memory.dashboard",
        f"dashboard refresh work, {done:,} 1 s bar closes on the 24 h db",
        samples,
        hwm,
        lambda x: f"{x:.0f} s",
    )
    rows[0]["note"] += (
        f"; {done:,} of {closes_1s:,} 1 s closes (+ tick refreshes, 1m / 5m closes) "
        f"back to back in {elapsed:.0f} s; RSS after imports {rss0:.0f} MB; "
        f"{info.describe()}"
    )
    return rows


def run(quick: bool = False) -> list[dict]:
    """Ingester and dashboard memory rows."""
    if quick:
        rows = ingester(200_000, 20.0)
        rows += dashboard(10.0, 3_600, quick=True)
    else:
        rows = ingester(5_000_000, 330.0)
        rows += dashboard(200.0, 3_600)  # the whole hour: about 160 s here
    return rows


if __name__ == "__main__":
    print_table(run(quick="--quick" in sys.argv), keys=True)
