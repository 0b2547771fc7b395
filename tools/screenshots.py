"""Regenerate the README's dashboard pictures (docs/*.png) from the Demo source.

Starts ``streamlit run app.py -- --source demo`` on a free loopback port with a fresh
demo database in a temporary directory, waits until the synthetic pair has produced
enough 1 s bars for the spread and z-score, and saves screenshots with Debian's
Chromium driven by Playwright (never a downloaded browser)::

    python tools/screenshots.py [--out docs] [--warmup 150]

The helpers here (free port, server start, health wait, browser launch) are also used
by ``tests/test_browser.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
INSTALL_HINT = "apt-get install -y --no-install-recommends chromium"
VIEWPORT = {"width": 1600, "height": 1000}
DOCS_VIEWPORT = {"width": 1600, "height": 1600}  # Streamlit scrolls inside the page


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_app(
    port: int, app_args: Sequence[str], log_path: Path, *, env: dict[str, str] | None
) -> subprocess.Popen[bytes]:
    """Start ``streamlit run app.py`` headless on ``port``, output to ``log_path``."""
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO_ROOT / "app.py"),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--",
        *app_args,
    ]
    full_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})}
    log = log_path.open("wb")
    return subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
        start_new_session=True,
    )


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll ``/_stcore/health`` until it answers ``ok``.

    Raises
    ------
    RuntimeError
        When the server exits or does not answer within ``timeout_s``.
    """
    url = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        time.sleep(0.25)
    raise RuntimeError(f"streamlit not healthy on {url} after {timeout_s:.0f} s")


def stop_app(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server process (and wait for it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def running_app(
    app_args: Sequence[str], log_path: Path, *, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Context manager: a healthy app server, yielding its base URL; stopped after."""
    port = free_port()
    proc = start_app(port, app_args, log_path, env=env)
    try:
        wait_healthy(port, proc, timeout_s=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_app(proc)


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium, headless, with the flags that keep it off the network."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
    )


def select_option(page: Any, label: str, option: str) -> None:
    """Choose ``option`` in the Streamlit selectbox labelled ``label``."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label).first
    box.locator("input").click()
    page.get_by_role("option", name=option, exact=True).click()


def open_tab(page: Any, name: str) -> None:
    """Click the main-area tab called ``name``."""
    page.get_by_role("tab", name=name, exact=True).click()


def wait_for_chart(page: Any, test_key: str, timeout_ms: int) -> None:
    """Wait until the plotly chart with Streamlit ``key`` shows in the page."""
    page.locator(f".st-key-{test_key} .js-plotly-plot").first.wait_for(
        state="visible", timeout=timeout_ms
    )


def take_screenshots(out_dir: Path, warmup_s: float) -> list[Path]:
    """Run the Demo, wait ``warmup_s`` for bars, save the dashboard's main views."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        log = Path(tmp) / "server.log"
        try:
            with running_app(["--source", "demo", "--db", str(db)], log) as url:
                with sync_playwright() as pw:
                    browser = launch_chromium(pw)
                    page = browser.new_page(viewport=DOCS_VIEWPORT)
                    page.goto(url)
                    wait_for_chart(page, "market_chart", 90_000)
                    time.sleep(warmup_s)
                    # freeze the charts: at 1 s bars they are redrawn every second
                    page.get_by_text("Pause chart updates").click()
                    time.sleep(3.0)
                    shots = (
                        ("Market", "market_chart", ("market.png",)),
                        ("Pair", "pair_chart", ("dashboard.png", "pair.png")),
                        ("Backtest", "equity_chart", ("backtest.png",)),
                    )
                    for tab, chart, names in shots:
                        open_tab(page, tab)
                        time.sleep(2.0)
                        wait_for_chart(page, chart, 60_000)
                        time.sleep(2.0)
                        for name in names:
                            page.screenshot(path=str(out_dir / name), full_page=True)
                            saved.append(out_dir / name)
                    browser.close()
        except Exception:
            print(log.read_text(errors="replace")[-5000:], file=sys.stderr)
            raise
    return saved


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "docs"))
    parser.add_argument(
        "--warmup",
        type=float,
        default=150.0,
        help="seconds of demo data to wait for (1 s bars; 2 windows of 60 = 120 s)",
    )
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"chromium not installed: {INSTALL_HINT}", file=sys.stderr)
        return 2
    for path in take_screenshots(Path(args.out), args.warmup):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
