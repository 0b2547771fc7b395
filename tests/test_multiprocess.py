"""One ingester and two dashboard processes on one database, on SQLite and PostgreSQL.

Real processes: a synthetic replay server (`replay.py serve`), the headless ingester
(`ingestion.py stream`, which runs the alert monitor while it holds the writer lease)
and two "dashboard" processes, each starting the ingestion service with the alert
monitor exactly as `app.py`'s ServiceRegistry does. Only the lease holder writes and
evaluates alerts; when it is killed, a dashboard takes over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import alerts
import storage
from analytics import PairParams

REPO = Path(__file__).resolve().parent.parent
SYMBOLS = ("BTCUSDT", "ETHUSDT")
COOLDOWN_S = 1.0

DASHBOARD_SCRIPT = """
import signal, sys, threading
sys.path.insert(0, {repo!r})
import alerts, ingestion
config = ingestion.IngestionConfig(
    symbols=("BTCUSDT", "ETHUSDT"), db_path={db!r}, base_url={url!r},
    lease_retry_s=0.5,
)
service = ingestion.IngestionService(config, tasks=[alerts.AlertMonitor({db!r}).run])
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
service.start()
while not done.wait(0.5):
    print(service.status().role, flush=True)
service.stop(timeout=10.0)
"""


def wait_for(check: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll `check` until it returns something truthy, or fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database setting under test: a SQLite file or a fresh PostgreSQL URL."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "market.db")


@pytest.fixture()
def feed() -> Iterator[str]:
    """A synthetic replay server in its own process; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "replay.py", "serve", "--synthetic", "--rate", "200"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "ws://127.0.0.1:" in line, line
        yield line.strip().rsplit(" ", 1)[-1]
    finally:
        proc.kill()
        proc.wait()


def stored_ids(target: str, symbol: str) -> list[int]:
    """Trade ids stored for `symbol`, ascending."""
    return storage.read_ticks(target, symbol, None, None)["trade_id"].tolist()


def test_one_writer_no_double_alerts_no_lost_ticks_across_processes(
    target: str, feed: str
) -> None:
    """With one ingester and two dashboards on one database only the lease holder
    writes and fires alerts; after it is killed a dashboard takes over, and every
    trade id is either stored once or inside a recorded gap."""
    with storage.Writer(target) as writer:
        rule = alerts.save_rule(
            writer,
            alerts.AlertRule.create(
                "abs(z) > 0.5",
                PairParams(interval="1s", window=5),
                cooldown_s=COOLDOWN_S,
            ),
        )
    ingester = subprocess.Popen(
        [
            sys.executable,
            "ingestion.py",
            "stream",
            "--no-rest",
            "--symbols",
            "btcusdt,ethusdt",
            "--db",
            target,
            "--url",
            feed,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dashboards: list[subprocess.Popen] = []
    try:
        holder = wait_for(
            lambda: (h := storage.read_lease(target)) and h.pid == ingester.pid and h,
            30,
            "the ingester to take the writer lease",
        )
        assert holder.pid == ingester.pid
        script = DASHBOARD_SCRIPT.format(repo=str(REPO), db=target, url=feed)
        dashboards = [
            subprocess.Popen(
                [sys.executable, "-c", script],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(2)
        ]
        for dash in dashboards:
            role = "pending"
            while role == "pending":  # until the lease has been tried
                role = dash.stdout.readline().strip()
            assert role == "read-only"
        wait_for(
            lambda: len(storage.list_alert_events(target, rule_id=rule.id)) >= 2,
            60,
            "the rule to fire twice under the ingester",
        )
        fired_before = len(storage.list_alert_events(target, rule_id=rule.id))
        ingester.send_signal(signal.SIGKILL)
        ingester.wait()
        new_holder = wait_for(
            lambda: (h := storage.read_lease(target)) and h.pid != ingester.pid and h,
            30,
            "a dashboard to take over the lease",
        )
        assert new_holder.pid in {d.pid for d in dashboards}
        wait_for(
            lambda: (
                len(storage.list_alert_events(target, rule_id=rule.id))
                >= fired_before + 2
            ),
            60,
            "the rule to fire again under the new holder",
        )
    finally:
        for proc in (ingester, *dashboards):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (ingester, *dashboards):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    events = storage.list_alert_events(target, rule_id=rule.id)
    fired = sorted(events["fired_ms"].tolist())
    # two monitors evaluating the same rule would store the same edge twice,
    # milliseconds apart; one monitor never fires within the cooldown.
    assert all(
        b - a >= COOLDOWN_S * 1000 for a, b in zip(fired, fired[1:], strict=False)
    ), fired
    gaps = storage.read_gaps(target)
    for symbol in SYMBOLS:
        ids = stored_ids(target, symbol)
        assert len(ids) == len(set(ids)) and len(ids) > 100
        in_gaps = {
            i
            for g in gaps[gaps["symbol"] == symbol].itertuples()
            for i in range(g.from_id, g.to_id + 1)
        }
        missing = set(range(ids[0], ids[-1] + 1)) - set(ids) - in_gaps
        assert not missing, f"{symbol}: {len(missing)} ids neither stored nor a gap"
