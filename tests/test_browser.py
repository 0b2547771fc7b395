"""End-to-end: the Demo dashboard in Debian's headless Chromium, driven by Playwright.

Starts ``streamlit run app.py -- --source demo --db TMP/demo.db`` on a free loopback
port (the synthetic replay server runs in-process on 127.0.0.1, so nothing leaves the
machine), waits for live data in the charts, switches timeframe and hedge method, and
checks that no Streamlit exception box appears. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="chromium not installed: apt-get install -y --no-install-recommends "
        "chromium",
    ),
]


def _tools():
    """Import tools/screenshots.py (server and browser helpers) by path."""
    spec = importlib.util.spec_from_file_location(
        "pairdesk_screenshots", REPO_ROOT / "tools" / "screenshots.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _no_exception(page) -> None:
    """Fail with the exception text when Streamlit shows an exception box."""
    boxes = page.locator('[data-testid="stException"]')
    if boxes.count():
        pytest.fail(f"Streamlit exception on the page: {boxes.first.inner_text()}")


def test_demo_dashboard_runs_in_chromium(tmp_path: Path) -> None:
    """The Demo shows live candles, survives timeframe and method changes, no errors."""
    sync_api = pytest.importorskip("playwright.sync_api")
    tools = _tools()
    ARTIFACTS.mkdir(exist_ok=True)
    log = tmp_path / "server.log"
    db = tmp_path / "demo.db"
    try:
        with (
            tools.running_app(["--source", "demo", "--db", str(db)], log) as url,
            sync_api.sync_playwright() as pw,
        ):
            browser = tools.launch_chromium(pw)
            try:
                page = browser.new_page(viewport=tools.VIEWPORT)
                page.goto(url)
                page.get_by_text("DEMO", exact=True).first.wait_for(timeout=60_000)
                tools.wait_for_chart(page, "market_chart", 90_000)
                _no_exception(page)
                # candles arrive live: the bar count in the caption grows
                caption = page.get_by_text("candles of closed bars").first
                first = caption.inner_text()
                time.sleep(3.0)
                assert caption.inner_text() != first
                tools.select_option(page, "Timeframe", "custom")
                page.get_by_label("Custom timeframe (N s/m/h)").fill("5s")
                page.keyboard.press("Enter")
                tools.wait_for_chart(page, "market_chart", 30_000)
                tools.select_option(page, "Hedge method", "Kalman")
                page.get_by_text("Kalman δ").first.wait_for(timeout=30_000)
                tools.open_tab(page, "Pair")
                # a fresh Demo at 5s may not have the tests' 20 bars yet: the
                # caption then says what they need
                tests_caption = re.compile(
                    "ADF / Engle-Granger last ran|ADF and Engle-Granger need at least"
                )
                page.get_by_text(tests_caption).first.wait_for(timeout=30_000)
                time.sleep(2.0)
                _no_exception(page)
                shot = ARTIFACTS / "browser_demo.png"
                page.screenshot(path=str(shot), full_page=True)
                _no_exception(page)
                # paused charts stay mounted (zoom and pan survive) while live
                # numbers keep refreshing
                page.get_by_text("Pause chart updates").click()
                tools.open_tab(page, "Market")
                time.sleep(3.0)  # let the tab switch rerun settle
                tools.wait_for_chart(page, "market_chart", 30_000)
                plot = ".st-key-market_chart .js-plotly-plot"
                page.wait_for_function(f"() => document.querySelector('{plot}')")
                page.evaluate(f"() => {{ document.querySelector('{plot}').mark = 1 }}")
                time.sleep(4.0)
                kept = page.evaluate(f"() => document.querySelector('{plot}').mark")
                assert kept == 1, "the paused market chart was redrawn"
                _no_exception(page)
                for tab in ("Scanner", "Stats", "Table", "Backtest", "Alerts", "Data"):
                    tools.open_tab(page, tab)
                    time.sleep(2.0)
                    _no_exception(page)
                    shot = ARTIFACTS / f"browser_{tab.lower()}.png"
                    page.screenshot(path=str(shot), full_page=True)
                # the Data tab (open last) offers the upload and the downloads
                page.get_by_text("Downloads (CSV)").first.wait_for(timeout=30_000)
                _no_exception(page)
            finally:
                browser.close()
    except BaseException:
        print(log.read_text(errors="replace")[-8000:])
        raise
