"""Webhook delivery under hostile endpoints (issue 18, items 3-5).

Every server here is a real socket on 127.0.0.1: one that drips its answer one byte
at a time, one that answers 200, one that answers with a redirect, and bare
listeners that only count connections.
"""

from __future__ import annotations

import asyncio
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import alerts
import storage
from alerts import AlertRule
from analytics import PairParams
from models import Tick

REPO = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000


# ----------------------------------------------------------------------- servers


class DripServer:
    """Accepts connections, reads the request, then sends an endless status line
    (``HTTP/1.1 200 OOOO...``) one byte every ``interval_s`` for at most
    ``lifetime_s`` per connection; records when each client hung up."""

    def __init__(self, interval_s: float, lifetime_s: float) -> None:
        self.interval_s = interval_s
        self.lifetime_s = lifetime_s
        self.paths: list[str] = []
        self.hung_up_after: list[float] = []  # seconds from accept to client EOF
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        began = time.monotonic()
        with conn:
            head = conn.recv(65536)
            self.paths.append(head.split(b" ", 2)[1].decode() if head else "")
            payload = b"HTTP/1.1 200 " + b"O" * 60000
            for byte in payload:
                if self._stop.is_set() or time.monotonic() - began > self.lifetime_s:
                    return
                ready, _, _ = select.select([conn], [], [], self.interval_s)
                try:
                    if ready and not conn.recv(65536):
                        self.hung_up_after.append(time.monotonic() - began)
                        return
                    conn.sendall(bytes([byte]))
                except OSError:
                    self.hung_up_after.append(time.monotonic() - began)
                    return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


class HttpServer:
    """Answers every POST with ``answer(path) -> (code, headers)``; records
    ``(path, method, monotonic arrival time)`` of each request."""

    def __init__(self, answer=lambda path: (200, {})) -> None:
        self.requests: list[tuple[str, str, float]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                outer.requests.append((self.path, self.command, time.monotonic()))
                code, headers = answer(self.path)
                self.send_response(code)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET = _handle  # noqa: N815 - http.server's naming

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        ).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Listener:
    """A bare TCP listener counting the connections it accepts (an 'ftp' server)."""

    def __init__(self) -> None:
        self.accepted = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


@pytest.fixture()
def drip():
    """A server dripping one byte every 0.3 s, for at most 8 s per connection."""
    server = DripServer(interval_s=0.3, lifetime_s=8.0)
    yield server
    server.close()


@pytest.fixture()
def ok_server():
    """A server answering 200 to every POST."""
    server = HttpServer()
    yield server
    server.close()


def _seed(db_path: Path, rules: list[AlertRule]) -> list[AlertRule]:
    """Store one live tick per symbol and the rules; return the stored rules."""
    ticks = [
        Tick("BTCUSDT", 1, T0 + 100, 70000.0, 1.0, False),
        Tick("ETHUSDT", 1, T0 + 200, 3500.0, 1.0, False),
    ]
    with storage.Writer(db_path) as writer:
        writer.write_batch(ticks)
        return [alerts.save_rule(writer, rule) for rule in rules]


def _price_rule(url: str) -> AlertRule:
    return AlertRule.create("BTCUSDT.price > 1", PairParams(), webhook_url=url)


def _events(db_path: Path) -> dict[int, tuple[str, str]]:
    frame = storage.list_alert_events(db_path)
    return {
        int(r.rule_id): (r.notify_status, r.notify_detail) for r in frame.itertuples()
    }


# ------------------------------------------------------------- item 3: deadline


@pytest.mark.timeout(30)
def test_dripping_webhook_is_cut_at_one_deadline_for_the_whole_exchange(drip):
    """A webhook dripping its status line faster than any per-read timeout is
    abandoned at the one deadline of the exchange and its connection is closed."""
    began = time.monotonic()
    outcome = asyncio.run(
        alerts.deliver_webhook(drip.url("/drip"), {"a": 1}, tries=1, timeout_s=1.0)
    )
    elapsed = time.monotonic() - began
    assert outcome == alerts.WebhookOutcome(
        "failed", 1, "no answer within 1 s after 1 try"
    )
    assert elapsed < 1.6
    deadline = time.monotonic() + 2
    while not drip.hung_up_after and time.monotonic() < deadline:
        time.sleep(0.05)
    assert drip.hung_up_after and drip.hung_up_after[0] < 1.8  # not read on


def _stream_cli(db_path: Path, url: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "ingestion.py"),
            "stream",
            "--no-rest",
            "--symbols",
            "btcusdt,ethusdt",
            "--db",
            str(db_path),
            "--url",
            url,
            "--status-every",
            "60",
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("stop_by", ["duration", "sigterm"])
def test_stream_cli_stops_on_time_while_a_webhook_drips(db_path, stop_by):
    """``ingestion.py stream`` exits within seconds of --duration or SIGTERM while
    its rule's webhook is still dripping its status line."""
    import replay

    server = DripServer(interval_s=0.3, lifetime_s=40.0)
    feed = replay.start_replay_in_thread(synthetic=True, seed=11, rate=40.0)
    with storage.Writer(db_path) as writer:
        alerts.save_rule(writer, _price_rule(server.url("/drip")))
    extra = ("--duration", "4") if stop_by == "duration" else ()
    began = time.monotonic()
    proc = _stream_cli(db_path, feed.url, *extra)
    try:
        while not server.paths and time.monotonic() - began < 20:
            time.sleep(0.1)
        assert server.paths == ["/drip"], "the rule's webhook was never called"
        if stop_by == "sigterm":
            proc.send_signal(signal.SIGTERM)
        stop_at = began + 4 if stop_by == "duration" else time.monotonic()
        try:
            out, err = proc.communicate(timeout=max(stop_at - time.monotonic(), 0) + 8)
        except subprocess.TimeoutExpired:
            pytest.fail("stream kept running while the webhook dripped")
        exited_after = time.monotonic() - stop_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        feed.stop()
        server.close()
    assert proc.returncode == 0, err
    assert "stopped: " in out
    assert exited_after < 8


# ---------------------------------------------------------- item 4: isolation


@pytest.mark.timeout(30)
def test_hung_webhooks_do_not_delay_a_healthy_one(db_path, drip, ok_server):
    """Five dripping webhooks firing together do not delay a sixth, healthy one;
    each outcome recorded is what happened to that call."""
    hung = [_price_rule(drip.url(f"/hung{i}")) for i in range(5)]
    stored = _seed(db_path, [*hung, _price_rule(ok_server.url("/ok"))])
    monitor = alerts.AlertMonitor(db_path, webhook_tries=1, webhook_timeout_s=1.0)
    peak_threads = 0

    async def scenario() -> float:
        nonlocal peak_threads
        await monitor.evaluate_once(T0 + 1000)
        fired_at = time.monotonic()
        while not ok_server.requests and time.monotonic() - fired_at < 3:
            peak_threads = max(peak_threads, _webhook_threads())
            await asyncio.sleep(0.02)
        await monitor.drain(10)
        await monitor.aclose()
        return fired_at

    fired_at = asyncio.run(scenario())
    assert [path for path, _, _ in ok_server.requests] == ["/ok"]
    assert ok_server.requests[0][2] - fired_at < 0.5
    events = _events(db_path)
    assert events[stored[-1].id] == ("sent", "HTTP 200")
    for rule in stored[:-1]:
        assert events[rule.id] == ("failed", "no answer within 1 s after 1 try")
    assert sorted(drip.paths) == [f"/hung{i}" for i in range(5)]
    assert 0 < peak_threads <= alerts.WEBHOOK_MAX_THREADS


def _webhook_threads() -> int:
    return sum(t.name.startswith("alerts-webhook") for t in threading.enumerate())


@pytest.mark.timeout(30)
def test_webhook_threads_are_bounded_over_all_endpoints(db_path, drip):
    """With webhook_max_threads=2, three hung endpoints never run more than two
    HTTP threads: the third call starts when one of the first two ends."""
    stored = _seed(db_path, [_price_rule(drip.url(f"/hung{i}")) for i in range(3)])
    monitor = alerts.AlertMonitor(
        db_path, webhook_tries=1, webhook_timeout_s=0.5, webhook_max_threads=2
    )
    seen: list[tuple[int, int]] = []  # (threads, connections) every 10 ms

    async def scenario() -> None:
        await monitor.evaluate_once(T0 + 1000)
        for _ in range(30):  # 0.3 s: before the first two calls' deadline
            seen.append((_webhook_threads(), len(drip.paths)))
            await asyncio.sleep(0.01)
        await monitor.drain(10)
        await monitor.aclose()

    asyncio.run(scenario())
    assert max(seen) == (2, 2)
    assert sorted(drip.paths) == ["/hung0", "/hung1", "/hung2"]
    events = _events(db_path)
    assert {events[r.id] for r in stored} == {
        ("failed", "no answer within 0.5 s after 1 try")
    }


@pytest.mark.timeout(30)
def test_busy_endpoint_drops_deliveries_with_a_record(db_path, drip, ok_server):
    """Past its queue bound a hung endpoint's new deliveries are dropped and
    recorded as such, without blocking a healthy endpoint."""
    hung_url = drip.url("/hung")
    rules = [_price_rule(hung_url) for _ in range(4)]
    stored = _seed(db_path, [*rules, _price_rule(ok_server.url("/ok"))])
    monitor = alerts.AlertMonitor(
        db_path, webhook_tries=1, webhook_timeout_s=0.5, webhook_queue=2
    )

    async def scenario() -> None:
        await monitor.evaluate_once(T0 + 1000)
        await monitor.drain(10)
        await monitor.aclose()

    asyncio.run(scenario())
    events = _events(db_path)
    outcomes = [events[rule.id] for rule in stored[:4]]
    busy = (
        "dropped",
        f"endpoint busy: 2 deliveries to 127.0.0.1:{drip.port} already queued",
    )
    assert (
        outcomes == [("failed", "no answer within 0.5 s after 1 try")] * 2 + [busy] * 2
    )
    assert drip.paths == ["/hung", "/hung"]  # one at a time, dropped never sent
    assert events[stored[4].id] == ("sent", "HTTP 200")


# ----------------------------------------------------------- item 5: redirects


@pytest.mark.timeout(30)
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(code):
    """A redirect to ftp:// or to another http URL is recorded as a failure naming
    the target host, and nothing reaches the redirect target."""
    ftp = Listener()
    target = HttpServer()
    locations = {
        "/to-ftp": f"ftp://127.0.0.1:{ftp.port}/pub/x",
        "/to-http": target.url("/elsewhere?token=SECRET"),
    }
    hook = HttpServer(lambda path: (code, {"Location": locations[path]}))

    async def scenario() -> list[alerts.WebhookOutcome]:
        return [
            await alerts.deliver_webhook(hook.url(path), {"a": 1}, timeout_s=1.0)
            for path in locations
        ]

    try:
        to_ftp, to_http = asyncio.run(scenario())
        time.sleep(0.2)  # a follow-up request would have arrived by now
    finally:
        for server in (hook, target, ftp):
            server.close()
    assert to_ftp == alerts.WebhookOutcome(
        "failed",
        1,
        f"redirect (HTTP {code}) to ftp://127.0.0.1 not followed (not retried)",
    )
    assert to_http == alerts.WebhookOutcome(
        "failed",
        1,
        f"redirect (HTTP {code}) to http://127.0.0.1 not followed (not retried)",
    )
    assert [(p, m) for p, m, _ in hook.requests] == [
        ("/to-ftp", "POST"),
        ("/to-http", "POST"),
    ]
    assert target.requests == [] and ftp.accepted == 0


def test_redirect_outcome_is_recorded_on_the_event(db_path):
    """A rule whose webhook answers 302 records 'failed' with the redirect detail."""
    target = HttpServer()
    hook = HttpServer(lambda path: (302, {"Location": target.url("/x")}))
    try:
        (rule,) = _seed(db_path, [_price_rule(hook.url("/hook"))])
        monitor = alerts.AlertMonitor(db_path, webhook_timeout_s=1.0)

        async def scenario() -> None:
            await monitor.evaluate_once(T0 + 1000)
            await monitor.drain(5)
            await monitor.aclose()

        asyncio.run(scenario())
    finally:
        hook.close()
        target.close()
    assert _events(db_path)[rule.id] == (
        "failed",
        "redirect (HTTP 302) to http://127.0.0.1 not followed (not retried)",
    )
    assert target.requests == []
