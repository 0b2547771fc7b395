"""Tests of the dashboard: figure builders, start-up settings, and the app via AppTest.

The AppTest cases run ``app.py`` against a real SQLite file under ``tmp_path`` filled
through ``storage.Writer`` with a synthetic cointegrated pair, with ingestion switched
off (``PAIRDESK_INGEST=0``), so nothing connects anywhere.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import charts

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_PATH = REPO_ROOT / "app.py"


# ----------------------------------------------------------------------------- helpers


def _bars(n: int, *, start_ms: int = 1_723_161_600_000, seed: int = 1) -> pd.DataFrame:
    """Random-walk 1 m bars in the BAR_COLUMNS layout."""
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.normal(0.0, 0.5, n))
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) + 0.2
    low = np.minimum(open_, close) - 0.2
    volume = rng.uniform(1.0, 5.0, n)
    ts = pd.to_datetime(start_ms + 60_000 * np.arange(n), unit="ms", utc=True)
    return pd.DataFrame(
        {
            "ts": ts.as_unit("ms"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "quote_volume": volume * close,
            "trades": rng.integers(1, 50, n),
            "vwap": close,
        }
    )


def _pair_table(n: int = 50) -> pd.DataFrame:
    """A pair table shaped like analytics.pair_analytics's, with two position flips."""
    bars = _bars(n)
    z = np.sin(np.linspace(0, 6, n)) * 3
    position = np.zeros(n)
    position[10:20] = -1
    position[30:40] = 1
    return pd.DataFrame(
        {
            "ts": bars["ts"],
            "y": bars["close"] * 2,
            "x": bars["close"],
            "beta": np.full(n, 2.0),
            "alpha": np.zeros(n),
            "spread": z,
            "spread_mean": np.zeros(n),
            "spread_std": np.ones(n),
            "z": z,
            "corr": np.full(n, 0.5),
            "position": position,
        }
    )


# ------------------------------------------------------------------------- charts.py


def test_market_figure_has_candles_and_volume_per_symbol_on_shared_axis() -> None:
    """Each symbol gets a candlestick row and a volume row, all x axes linked."""
    fig = charts.market_figure({"BTCUSDT": _bars(30), "ETHUSDT": _bars(30, seed=2)})
    kinds = [type(t).__name__ for t in fig.data]
    assert kinds == ["Candlestick", "Bar", "Candlestick", "Bar"]
    assert list(fig.data[0].close) == pytest.approx(list(_bars(30)["close"]))
    matches = {fig.layout[f"xaxis{i}"].matches for i in (2, 3, 4)}
    assert matches == {"x"}
    assert fig.layout.xaxis.type == "date"
    # times travel as epoch milliseconds (cheap JSON), exactly the bar starts
    expected_ms = _bars(30)["ts"].astype("int64").to_numpy()
    assert np.array_equal(np.asarray(fig.data[0].x, dtype="int64"), expected_ms)


def test_market_figure_rejects_no_symbols() -> None:
    """An empty mapping is a caller mistake named in the message."""
    with pytest.raises(ValueError, match="bars_by_symbol: need at least one symbol"):
        charts.market_figure({})


def test_pair_figure_normalises_prices_and_marks_position_changes() -> None:
    """Prices start at 100 and a marker sits on every bar where the position changes."""
    table = _pair_table()
    fig = charts.pair_figure(
        table, symbol_y="BTCUSDT", symbol_x="ETHUSDT", z_entry=2.0, z_exit=0.5
    )
    by_name = {t.name: t for t in fig.data}
    assert by_name["BTCUSDT"].y[0] == pytest.approx(100.0)
    assert by_name["ETHUSDT"].y[-1] == pytest.approx(
        100.0 * table["x"].iloc[-1] / table["x"].iloc[0]
    )
    # position: 0 ->-1 at 10, -1->0 at 20, 0->1 at 30, 1->0 at 40 (hand-counted)
    assert len(by_name["short spread"].x) == 1
    assert len(by_name["long spread"].x) == 1
    assert len(by_name["flat"].x) == 2
    hlines = sorted(s.y0 for s in fig.layout.shapes)
    assert hlines == [-2.0, -0.5, 0.5, 2.0]


def test_pair_figure_draws_stop_lines_and_bands() -> None:
    """With a stop, ±stop lines are drawn; bands sit at mean ± k·std."""
    table = _pair_table()
    fig = charts.pair_figure(
        table,
        symbol_y="A",
        symbol_x="B",
        z_entry=2.0,
        z_exit=0.0,
        z_stop=3.0,
        band_k=1.5,
    )
    hlines = sorted(s.y0 for s in fig.layout.shapes)
    assert hlines == [-3.0, -2.0, 0.0, 2.0, 3.0]
    upper = next(t for t in fig.data if t.name == "+1.5σ")
    assert np.allclose(upper.y, 1.5)


def test_correlation_heatmap_shows_matrix_values() -> None:
    """The heatmap carries the matrix values and fixes the color range to [-1, 1]."""
    corr = pd.DataFrame(
        [[1.0, 0.6], [0.6, 1.0]], index=["BTC", "ETH"], columns=["BTC", "ETH"]
    )
    fig = charts.correlation_heatmap(corr, title="t")
    heat = fig.data[0]
    assert np.allclose(np.asarray(heat.z), corr.to_numpy())
    assert (heat.zmin, heat.zmax) == (-1.0, 1.0)


def test_drawdown_from_equity_matches_running_max() -> None:
    """Drawdown is equity minus its running maximum (hand-computed case)."""
    equity = pd.Series([0.0, 10.0, 4.0, 12.0, 9.0])
    dd = charts.drawdown_from_equity(equity)
    assert list(dd) == [0.0, 0.0, -6.0, 0.0, -3.0]
    fig = charts.equity_figure(list(range(5)), equity)
    assert isinstance(fig, go.Figure)
    assert list(fig.data[1].y) == [0.0, 0.0, -6.0, 0.0, -3.0]


def test_badges_escape_text_and_color_by_source() -> None:
    """Badges are HTML-escaped and the DEMO badge gets the demo color."""
    assert charts.SOURCE_COLORS["DEMO"] in charts.source_badge_html("demo")
    assert "&lt;b&gt;" in charts.signal_badge_html("<b>")
    assert charts.SIGNAL_COLORS["BUY SPREAD"] in charts.signal_badge_html("BUY SPREAD")


def test_every_figure_passes_plotly_validation() -> None:
    """Figures built without validation are still valid plotly figures."""
    table = _pair_table()
    corr = pd.DataFrame([[1.0, 0.6], [0.6, 1.0]], index=["A", "B"], columns=["A", "B"])
    figures = [
        charts.market_figure({"A": _bars(20), "B": _bars(20).iloc[0:0]}),
        charts.pair_figure(
            table, symbol_y="A", symbol_x="B", z_entry=2, z_exit=0, z_stop=3
        ),
        charts.correlation_heatmap(corr, title="t"),
        charts.equity_figure(table["ts"], pd.Series(np.linspace(0, 1, len(table)))),
    ]
    for fig in figures:
        validated = go.Figure(fig.to_dict())  # raises on any invalid property
        assert len(validated.data) == len(fig.data)


def test_epoch_ms_handles_naive_aware_and_missing_times() -> None:
    """Naive times count as UTC, NaT becomes NaN, numbers pass through."""
    aware = pd.Series(pd.to_datetime([0, 1500], unit="ms", utc=True))
    naive = pd.Series(pd.to_datetime([0, None], unit="ms"))
    assert list(charts.epoch_ms(aware)) == [0.0, 1500.0]
    out = charts.epoch_ms(naive)
    assert out[0] == 0.0 and np.isnan(out[1])
    assert list(charts.epoch_ms([5, 6])) == [5.0, 6.0]


def test_charts_module_does_not_import_streamlit() -> None:
    """charts.py stays presentation-only: importing it pulls in no Streamlit code."""
    source = (REPO_ROOT / "charts.py").read_text()
    assert "import streamlit" not in source
    assert not math.isnan(charts.PAIR_HEIGHT_PX)
    assert "charts" in sys.modules


# ------------------------------------------------------------------- start-up config


def test_parse_config_prefers_arguments_over_environment() -> None:
    """Arguments after -- win over PAIRDESK_* variables, which win over defaults."""
    import app

    env = {
        "PAIRDESK_SOURCE": "demo",
        "PAIRDESK_DB": "/tmp/x.db",
        "PAIRDESK_SYMBOLS": "solusdt, bnbusdt",
        "PAIRDESK_INGEST": "0",
    }
    cfg = app.parse_config(["--source", "live", "--symbols", "btcusdt,ethusdt"], env)
    assert cfg == app.AppConfig(
        source="live",
        db_path=Path("/tmp/x.db"),
        demo_db_path=Path("/tmp/demo.db"),
        symbols=("BTCUSDT", "ETHUSDT"),
        base_url=None,
        ingest=False,
    )
    demo = app.parse_config(["--db", "/tmp/d/demo.db"], env)
    assert (demo.source, demo.db_path, demo.demo_db_path) == (
        "demo",
        Path("data/market.db"),
        Path("/tmp/d/demo.db"),
    )
    default = app.parse_config(["tests/test_app.py", "-q"], {})
    assert default == app.AppConfig()
    assert app.parse_config([], env).symbols == ("SOLUSDT", "BNBUSDT")


def test_parse_config_rejects_bad_source_and_symbol() -> None:
    """A bad source or symbol is a ValueError naming the setting and the value."""
    import app

    with pytest.raises(ValueError, match="source must be one of live, demo, got 'x'"):
        app.parse_config([], {"PAIRDESK_SOURCE": "x"})
    with pytest.raises(ValueError, match="symbol must be 2-20 letters or digits"):
        app.parse_config(["--symbols", "BTC-USDT"], {})


def test_streamlit_command_splits_streamlit_options_from_app_arguments() -> None:
    """`python app.py --server.port 8502 --source demo` re-runs under streamlit run."""
    import app

    cmd = app.streamlit_command(
        ["--server.port", "8502", "--source", "demo", "--theme.base=light"],
        Path("/x/app.py"),
    )
    assert cmd[1:] == [
        "-m",
        "streamlit",
        "run",
        "/x/app.py",
        "--server.port",
        "8502",
        "--theme.base=light",
        "--",
        "--source",
        "demo",
    ]
    assert app.streamlit_command([], Path("/x/app.py"))[-1] == "/x/app.py"


def test_window_helpers_align_to_bar_boundaries() -> None:
    """Closed-bar end and window start fall on bar boundaries (hand-computed)."""
    import app

    # 12:34:56.700 with 500 ms grace -> newest closed 1 m bar ends at 12:34:00
    clock = 1_723_161_296_700  # 2024-08-08T23:54:56.700Z
    assert app.closed_end_ms(clock, 60) == 1_723_161_240_000
    assert app.closed_end_ms(clock, 1) == 1_723_161_296_000
    assert app.window_start_ms(1_723_161_240_000, 60, 3600) == 1_723_157_640_000
    assert app.effective_lookback_s("auto (3 windows)", 60, 60) == 3 * 3600
    assert app.effective_lookback_s("auto (3 windows)", 1, 60) == 15 * 60
    assert app.effective_lookback_s("1h", 300, 60) == 3600


def test_waiting_text_and_friendly_message() -> None:
    """Insufficient-data messages become 'waiting for N more 1m bars' lines."""
    import app

    expected = "waiting for 42 more 1m bars (have 78, need 120)"
    assert app.waiting_text(78, 120, 60) == expected
    text = app.friendly_message("adf: insufficient data: have 10, need 30", 1)
    assert text == "waiting for 20 more 1s bars for adf (have 10, need 30)"
    assert app.friendly_message("something else", 60) == "something else"


# ----------------------------------------------------------------------- AppTest


def _synthetic_ticks(
    end_ms: int, minutes: int, *, step_ms: int = 2000, seed: int = 7
) -> list:
    """A cointegrated pair: x a random walk, y = 20·x + an AR(1) spread."""
    from models import Tick

    rng = np.random.default_rng(seed)
    n = minutes * 60_000 // step_ms
    ts = end_ms - step_ms * np.arange(n, 0, -1)
    x = 3000.0 + np.cumsum(rng.normal(0.0, 0.8, n))
    s = np.zeros(n)
    for i in range(1, n):
        s[i] = 0.97 * s[i - 1] + rng.normal(0.0, 4.0)
    y = 20.0 * x + s
    ticks = []
    for i in range(n):
        qty_y, qty_x = rng.uniform(0.001, 0.5), rng.uniform(0.01, 5.0)
        t_ms = int(ts[i])
        ticks.append(Tick("BTCUSDT", 1000 + i, t_ms, round(y[i], 1), qty_y, False))
        ticks.append(Tick("ETHUSDT", 5000 + i, t_ms + 7, round(x[i], 2), qty_x, True))
    return ticks


@pytest.fixture()
def filled_db(tmp_path: Path) -> Path:
    """A database with 4 h of a synthetic BTC/ETH pair ending now (1 trade/2 s each)."""
    import storage

    path = tmp_path / "market.db"
    end_ms = (int(pd.Timestamp.now(tz="UTC").value // 1_000_000) // 1000) * 1000
    writer = storage.Writer(path)
    try:
        writer.write_batch(_synthetic_ticks(end_ms, minutes=240))
    finally:
        writer.close()
    return path


def _app(monkeypatch: pytest.MonkeyPatch, db: Path, **env: str):
    """An AppTest of app.py on `db` with ingestion off (nothing connects anywhere)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("PAIRDESK_DB", str(db))
    monkeypatch.setenv("PAIRDESK_INGEST", "0")
    monkeypatch.setenv("PAIRDESK_SOURCE", env.pop("source", "live"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return AppTest.from_file(str(APP_PATH), default_timeout=30)


def _metric(at, label: str) -> str:
    """The displayed value of the metric card labelled `label`."""
    for metric in at.metric:
        if metric.label == label:
            return metric.value
    raise AssertionError(f"no metric {label!r} in {[m.label for m in at.metric]}")


def test_app_starts_on_empty_database(monkeypatch, tmp_path: Path) -> None:
    """On a database that does not exist yet the app says what it waits for."""
    at = _app(monkeypatch, tmp_path / "empty.db").run()
    assert not at.exception
    texts = " ".join(i.value for i in at.info)
    assert "waiting for" in texts
    assert "LIVE" in " ".join(m.value for m in at.markdown)


def test_app_starts_on_filled_database(monkeypatch, filled_db: Path) -> None:
    """On 4 h of data every tab renders without an exception or a waiting box."""
    import app

    at = _app(monkeypatch, filled_db).run()
    assert not at.exception, at.exception
    assert not at.error
    assert _metric(at, "BTCUSDT last") != "-"
    assert _metric(at, "live z") != "-"
    assert [t.label for t in at.tabs] == list(app.TAB_NAMES)
    for name in app.TAB_NAMES:
        at.session_state["main_tab"] = name
        at.run()
        assert not at.exception, (name, at.exception)
        assert not at.error, name
        if name not in ("Alerts", "Data"):
            waiting = [i.value for i in at.info if "waiting for" in i.value]
            assert not waiting, (name, waiting)
    at.session_state["main_tab"] = "Pair"
    at.run()
    assert _metric(at, "β (latest)") != "-"
    assert _metric(at, "EG p") != "-"


DATASET_END_MS = 1_723_161_600_000  # 2024-08-09T00:00:00Z


@pytest.fixture()
def dataset_dir(tmp_path: Path) -> Path:
    """A data folder holding one dataset, datasets/synth.db: 8 h ending at midnight."""
    import storage

    writer = storage.Writer(storage.dataset_db_path(tmp_path, "synth"))
    try:
        ticks = _synthetic_ticks(DATASET_END_MS, minutes=480, step_ms=4000, seed=11)
        writer.write_batch(ticks)
    finally:
        writer.close()
    return tmp_path


def _expected(db: Path, interval_s: int, params):
    """Independent recomputation: read 1 s bars of the window, resample, analyse."""
    import analytics
    import resampling
    import storage

    step = interval_s * 1000
    last = max(storage.last_tick(db, s).ts_ms for s in ("BTCUSDT", "ETHUSDT"))
    end = (last // step + 1) * step
    lookback_ms = max(3 * params.window * interval_s, 15 * 60) * 1000
    start = (end - lookback_ms) // step * step
    legs = []
    for sym in (params.symbol_y, params.symbol_x):
        raw = storage.read_bars_1s(db, sym, start, end)
        if interval_s > 1:
            raw = resampling.resample_bars(raw, interval_s)
        legs.append(raw)
    return analytics.pair_analytics(legs[0], legs[1], params, with_tests=True)


def test_displayed_statistics_follow_method_timeframe_and_window(
    monkeypatch, dataset_dir: Path
) -> None:
    """Beta and z on screen equal analytics.pair_analytics after each change."""
    import analytics
    import app
    import storage

    db = storage.dataset_db_path(dataset_dir, "synth")
    at = _app(monkeypatch, dataset_dir / "market.db")
    at.session_state["source"] = "File: synth"
    at.session_state["main_tab"] = "Pair"
    at.run()
    assert not at.exception, at.exception
    assert "FILE" in " ".join(m.value for m in at.markdown)
    base = analytics.PairParams()
    cases = [
        ("initial", 60, base),
        ("kalman", 60, analytics.PairParams(hedge_method="kalman")),
        ("window", 60, analytics.PairParams(hedge_method="kalman", window=30)),
        (
            "timeframe",
            300,
            analytics.PairParams(hedge_method="kalman", window=30, interval="5m"),
        ),
    ]
    seen = set()
    for name, interval_s, params in cases:
        if name == "kalman":
            at.selectbox(key="hedge_method").select("Kalman").run()
        elif name == "window":
            at.number_input(key="window").set_value(30).run()
        elif name == "timeframe":
            at.selectbox(key="timeframe").select("5m").run()
        assert not at.exception, (name, at.exception)
        expected = _expected(db, interval_s, params)
        assert expected.latest.z is not None, name
        shown = (_metric(at, "β (latest)"), _metric(at, "z (latest bar)"))
        assert shown == (
            app.fmt_num(expected.latest.beta),
            app.fmt_num(expected.latest.z, 3),
        ), name
        assert _metric(at, "EG p") == app.fmt_num(expected.eg.pvalue, 3), name
        seen.add(shown)
    assert len(seen) == len(cases)  # every change moved the statistics


def test_bad_symbol_shows_error_and_keeps_previous_symbols(
    monkeypatch, tmp_path: Path
) -> None:
    """A bad symbol is reported and ingestion keeps streaming the previous symbols."""
    import streamlit as st

    db = tmp_path / "demo.db"
    at = _app(monkeypatch, db, source="demo", PAIRDESK_INGEST="1")
    try:
        at.run()
        assert not at.exception, at.exception
        assert "DEMO" in " ".join(m.value for m in at.markdown)
        at.text_input(key="symbols_text").input("BTCUSDT, ETH-USDT").run()
        assert not at.exception, at.exception
        errors = " ".join(e.value for e in at.sidebar.error)
        assert "symbol must be 2-20 letters or digits" in errors
        assert "'ETH-USDT'" in errors
        assert "Still using BTCUSDT, ETHUSDT" in errors
        assert at.session_state["symbols"] == ["BTCUSDT", "ETHUSDT"]
        status_line = " ".join(m.value for m in at.markdown)
        assert "BTCUSDT, ETHUSDT" in status_line
        assert at.selectbox(key="pair_y").options == ["BTCUSDT", "ETHUSDT"]
    finally:
        st.cache_resource.clear()  # stops the ingestion service and the replay


def test_window_bars_update_equals_full_read_with_late_trades(tmp_path: Path) -> None:
    """Extending the window incrementally gives the bars a full read gives."""
    import app
    import storage
    from models import Tick

    db = tmp_path / "m.db"
    t0 = 1_723_161_600_000  # 2024-08-09T00:00:00Z
    writer = storage.Writer(db)
    try:
        first = [
            Tick("BTCUSDT", 100 + i, t0 + 7_000 * i, 100.0 + i, 1.0, False)
            for i in range(60)
        ]  # 7 min of trades, one every 7 s
        writer.write_batch(first)
        store = app.WindowBars(db, "BTCUSDT", 60)
        before = store.get(t0, t0 + 6 * 60_000)
        assert len(before) == 6
        # a late trade into minute 5 (already closed) and trades in minutes 7-9
        late = [Tick("BTCUSDT", 90, t0 + 5 * 60_000 + 1, 50.0, 2.0, True)]
        more = [
            Tick("BTCUSDT", 200 + i, t0 + 420_000 + 9_000 * i, 120.0 - i, 1.0, False)
            for i in range(20)
        ]
        writer.write_batch(late + more)
    finally:
        writer.close()
    for start, end in ((t0 + 60_000, t0 + 9 * 60_000), (t0 + 60_000, t0 + 10 * 60_000)):
        got = store.get(start, end)
        full = app.read_window_bars(db, "BTCUSDT", 60, start, end)
        pd.testing.assert_frame_equal(got, full)
    assert got["low"].min() == 50.0  # the late trade landed in its closed bar


def test_live_connection_error_is_shown_and_demo_is_one_click_away(
    monkeypatch, tmp_path: Path
) -> None:
    """An unreachable Live URL shows the error in words and Switch to Demo works."""
    import socket
    import time

    import streamlit as st

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    at = _app(
        monkeypatch,
        tmp_path / "market.db",
        PAIRDESK_INGEST="1",
        PAIRDESK_BASE_URL=f"ws://127.0.0.1:{port}/public",
    )
    try:
        at.run()
        deadline = time.monotonic() + 20
        while not at.error and time.monotonic() < deadline:
            time.sleep(0.5)
            at.run()
        assert not at.exception, at.exception
        assert at.error, "no connection error shown"
        assert at.error[0].value.startswith("Cannot reach the exchange: ")
        at.button(key="btn_switch_demo").click().run()
        assert not at.exception, at.exception
        assert at.session_state["source"] == "Demo"
        assert "DEMO" in " ".join(m.value for m in at.markdown)
        assert str(tmp_path / "demo.db") in " ".join(m.value for m in at.markdown)
    finally:
        st.cache_resource.clear()


def test_bad_custom_timeframe_keeps_previous_interval(monkeypatch, filled_db) -> None:
    """A custom timeframe that does not parse is reported; the last good one stays."""
    at = _app(monkeypatch, filled_db).run()
    at.selectbox(key="timeframe").select("custom").run()
    at.text_input(key="custom_tf").input("2m").run()
    assert at.session_state["interval_s"] == 120
    at.text_input(key="custom_tf").input("5 fortnights").run()
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.sidebar.error)
    assert "interval must look like 1s, 15s, 1m, 5m or 2h" in errors
    assert "Still using 2m" in errors
    assert at.session_state["interval_s"] == 120


def test_clear_data_asks_for_confirmation(monkeypatch, filled_db: Path) -> None:
    """Clear data deletes nothing until confirmed, then empties the market tables."""
    import storage

    at = _app(monkeypatch, filled_db).run()
    at.button(key="btn_clear").click().run()
    assert "This cannot be undone" in " ".join(w.value for w in at.sidebar.warning)
    assert storage.last_tick(filled_db, "BTCUSDT") is not None
    at.button(key="btn_clear_no").click().run()
    assert not at.sidebar.warning
    assert storage.last_tick(filled_db, "BTCUSDT") is not None
    at.button(key="btn_clear").click().run()
    at.button(key="btn_clear_yes").click().run()
    assert not at.exception, at.exception
    assert storage.last_tick(filled_db, "BTCUSDT") is None
    assert storage.read_bars_1s(filled_db, "ETHUSDT", None, None).empty
    assert "waiting for" in " ".join(i.value for i in at.info)


def test_tests_every_bars_caps_the_share_of_time_spent_in_adf() -> None:
    """Tests rerun every bar while cheap, else every k bars with k·bar ≥ 5·cost."""
    import app

    assert app.tests_every_bars(0.0, 1) == 1
    assert app.tests_every_bars(0.05, 1) == 1  # 50 ms per 1 s bar: 5 %
    assert app.tests_every_bars(3.0, 1) == 15  # 3 s runs: every 15 s at most
    assert app.tests_every_bars(3.0, 60) == 1


def test_read_only_when_another_process_holds_the_writer_lease(
    monkeypatch, tmp_path: Path
) -> None:
    """With the lease held elsewhere the status says who ingests, read-only."""
    import os
    import socket
    import time

    import streamlit as st

    import storage

    db = tmp_path / "demo.db"
    holder = storage.LeaseOwner(os.getppid(), socket.gethostname(), 1)
    writer = storage.Writer(db)
    try:
        assert writer.acquire_lease(holder).acquired
        at = _app(monkeypatch, db, source="demo", PAIRDESK_INGEST="1")
        try:
            at.run()
            deadline = time.monotonic() + 10
            line = ""
            while "read-only" not in line and time.monotonic() < deadline:
                time.sleep(0.5)
                writer.heartbeat(holder)
                at.run()
                line = " ".join(m.value for m in at.markdown)
            assert not at.exception, at.exception
            assert f"read-only: ingestion by pid {os.getppid()}" in line
            assert socket.gethostname() in line
        finally:
            st.cache_resource.clear()
    finally:
        writer.close()


def test_run_adf_now_recomputes_the_tests(monkeypatch, filled_db: Path) -> None:
    """The ADF button reruns the tests and the page says when they last ran."""
    at = _app(monkeypatch, filled_db)
    at.session_state["main_tab"] = "Pair"
    at.run()
    before = next(c.value for c in at.caption if "last ran" in c.value)
    at.button(key="btn_adf").click().run()
    assert not at.exception, at.exception
    after = next(c.value for c in at.caption if "last ran" in c.value)
    assert "observations (regression 'c'" in after
    nobs = re.compile(r"on (\d+) observations")
    assert nobs.search(before).group(1) == nobs.search(after).group(1)  # same window
