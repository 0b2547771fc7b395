"""Tests of the dashboard: figure builders, start-up settings, and the app via AppTest.

The AppTest cases run ``app.py`` against a real SQLite file under ``tmp_path`` filled
through ``storage.Writer`` with a synthetic cointegrated pair, with ingestion switched
off (``PAIRDESK_INGEST=0``), so nothing connects anywhere. One case runs the same on a
throw-away PostgreSQL cluster (tests/pg_fixture.py; skipped with the install command
when the server binaries or psycopg are missing).
"""

from __future__ import annotations

import base64
import json
import math
import re
import socket
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


def test_parse_config_keeps_a_postgresql_url_a_str_and_demo_in_a_schema() -> None:
    """A postgresql:// setting stays the str given (never a Path); Demo gets schema
    'demo' of the same database, other query parameters kept; datasets are schemas
    of the live database."""
    import app
    import storage
    import storage_pg

    url = "postgresql://desk:s3cret@db.example:5433/market"
    cfg = app.parse_config(["--db", url], {})
    assert type(cfg.db_path) is str and cfg.db_path == url
    assert cfg.demo_db_path == url + "?schema=demo"
    live, demo = map(storage_pg.parse_target, (cfg.db_path, cfg.demo_db_path))
    assert (live.dbname, live.schema) == ("market", "public")
    assert (demo.dbname, demo.schema) == ("market", "demo")
    # a live schema named demo: Demo takes another; other parameters stay
    cfg = app.parse_config([], {"PAIRDESK_DB": url + "?schema=demo&sslmode=require"})
    assert cfg.demo_db_path == url + "?sslmode=require&schema=demo_source"
    # --source demo: the URL is the Demo database, Live keeps its default
    cfg = app.parse_config(["--source", "demo", "--db", url], {})
    assert (cfg.db_path, cfg.demo_db_path) == (Path("data/market.db"), url)
    cfg = app.parse_config(["--db", url], {})
    assert app._datasets_base(cfg) == url
    target = app._source_db("file:aug8", cfg)
    assert target == storage.dataset_target(url, "aug8")
    assert storage_pg.parse_target(target).schema == "ds_aug8"
    assert app.db_exists(url)


def test_parse_config_reads_sqlite_urls_as_files() -> None:
    """sqlite:///rel is a relative file and sqlite:////abs an absolute one (the rule
    storage applies), with demo.db beside the live file."""
    import app
    import storage

    cfg = app.parse_config(["--db", "sqlite:///data/x.db"], {})
    assert (cfg.db_path, cfg.demo_db_path) == (Path("data/x.db"), Path("data/demo.db"))
    cfg = app.parse_config(["--db", "sqlite:////srv/pd/x.db"], {})
    assert (cfg.db_path, cfg.demo_db_path) == (
        Path("/srv/pd/x.db"),
        Path("/srv/pd/demo.db"),
    )
    assert storage.datasets_base("sqlite:////srv/pd/x.db") == cfg.db_path.parent
    cfg = app.parse_config(["--db", "/srv/pd/demo.db"], {})
    assert cfg.demo_db_path == Path("/srv/pd/demo-source.db")
    assert not app.db_exists(Path("/nonexistent/x.db"))


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
    """An AppTest of app.py on `db` with ingestion and REST off (nothing connects
    anywhere) unless `env` switches them on."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("PAIRDESK_DB", str(db))
    monkeypatch.setenv("PAIRDESK_INGEST", "0")
    monkeypatch.setenv("PAIRDESK_REST", "0")  # never the real REST host
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
    for tab in ("Alerts", "Data"):
        at.session_state["main_tab"] = tab
        at.run()
        assert not at.exception, (tab, at.exception)
        assert not at.error, (tab, [e.value for e in at.error])
    assert "No datasets yet" in " ".join(i.value for i in at.info)
    at.session_state["main_tab"] = "Pair"
    at.run()
    captions = " ".join(c.value for c in at.caption)
    assert "ADF and Engle-Granger need at least 20 bars of the pair; the view " in (
        captions
    )
    assert "on 0 observations" not in captions


def test_rule_on_a_symbol_not_streamed_is_stored_with_a_warning(
    monkeypatch, filled_db: Path
) -> None:
    """A rule on a symbol outside the streamed ones is added, and the sidebar says
    it cannot fire until that symbol is streamed."""
    import storage

    at = _app(monkeypatch, filled_db)
    at.session_state["main_tab"] = "Alerts"
    at.run()
    at.text_input(key="rule_text").input("XRPUSDT.price > 1").run()
    at.button(key="btn_rule_add").click().run()
    assert not at.exception, at.exception
    assert [r.text for r in storage.list_alert_rules(filled_db)] == [
        "XRPUSDT.price > 1"
    ]
    warning = " ".join(w.value for w in at.sidebar.warning)
    assert "XRPUSDT is not streamed: the rule cannot fire until XRPUSDT is" in warning


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
    assert _metric(at, "β traded (latest)") != "-"
    assert _metric(at, "EG p (both ways)") != "-"


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
        shown = (_metric(at, "β traded (latest)"), _metric(at, "z (latest bar)"))
        assert shown == (
            app.fmt_num(expected.latest.beta),
            app.fmt_num(expected.latest.z, 3),
        ), name
        assert _metric(at, "EG p (both ways)") == app.fmt_num(
            expected.coint.pvalue, 3
        ), name
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


# ------------------------------------------------------------- alerts and data tabs


def test_pair_figure_marks_alert_firings_on_the_z_row() -> None:
    """Firings inside the table's span become stars on the z row, at their own z
    or, without one, at the z of the bar they fell in; firings outside are left out."""
    table = _pair_table()
    t0 = int(charts.epoch_ms(table["ts"])[0])
    events = pd.DataFrame(
        {
            "fired_ms": [t0 + 5 * 60_000 + 30_000, t0 + 12 * 60_000, t0 - 60_000],
            "z": [2.7, np.nan, 1.0],
            "label": ["a", "b", "outside"],
        }
    )
    fig = charts.pair_figure(
        table,
        symbol_y="A",
        symbol_x="B",
        z_entry=2.0,
        z_exit=0.0,
        alert_events=events,
    )
    stars = next(t for t in fig.data if t.name == "alert fired")
    assert list(stars.x) == [t0 + 330_000, t0 + 720_000]
    assert list(stars.y) == pytest.approx([2.7, table["z"].iloc[12]])
    assert list(stars.text) == ["a", "b"]
    assert (stars.xaxis, stars.yaxis) == ("x4", "y4")
    go.Figure(fig.to_dict())  # valid plotly
    plain = charts.pair_figure(table, symbol_y="A", symbol_x="B", z_entry=2, z_exit=0)
    assert "alert fired" not in {t.name for t in plain.data}


def test_csv_helpers_carry_params_and_iso_times() -> None:
    """The pair CSV starts with '# PARAMS_JSON'; events flatten their snapshots."""
    import analytics
    import app

    params = analytics.PairParams(window=30)
    table = _pair_table(5)
    lines = app.pair_table_csv(table, params).decode().splitlines()
    assert lines[0] == "# " + params.to_json()
    assert analytics.PairParams.from_json(lines[0][2:]) == params
    assert lines[1].startswith("ts,y,x,beta")
    assert lines[2].startswith("2024-08-09T00:00:00.000Z,")
    name = app.pair_export_name("pair", params, table["ts"])
    assert name == (
        "pair_BTCUSDT-ETHUSDT_1m_rolling-ols-w30_20240809T000000Z_20240809T000400Z.csv"
    )
    events = pd.DataFrame(
        {
            "id": [7],
            "rule_id": [3],
            "rule_text": ["z > 2"],
            "fired_ms": [1_723_161_600_000],
            "value": [2.5],
            "snapshot_json": ['{"pair": "BTCUSDT/ETHUSDT", "z": 2.5, "beta": 20.0}'],
            "notify_status": ["none"],
            "notify_detail": ["no webhook"],
        }
    )
    text = app.events_csv(events).decode().splitlines()
    assert text[0] == (
        "id,fired,rule_id,rule,value,pair,interval,price_y,price_x,beta,spread,z,"
        "notification,detail"
    )
    assert text[1] == (
        "7,2024-08-09T00:00:00.000Z,3,z > 2,2.5,BTCUSDT/ETHUSDT,,,,20.0,,2.5,none,"
        "no webhook"
    )
    assert app.events_export_name(events) == (
        "alerts_20240809T000000Z_20240809T000000Z.csv"
    )


def _sidebar_errors(at) -> str:
    return " ".join(e.value for e in at.sidebar.error)


def test_rule_editor_validates_adds_toggles_and_deletes(
    monkeypatch, filled_db: Path
) -> None:
    """The sidebar refuses a bad rule with its message and caret, stores a good one
    with the current pair settings, and toggles and deletes it."""
    import analytics
    import storage

    at = _app(monkeypatch, filled_db)
    at.session_state["main_tab"] = "Alerts"
    at.run()
    assert not at.exception, at.exception
    at.text_input(key="rule_text").input("z >> 2").run()
    assert _sidebar_errors(at) == (
        "at position 4: expected a number like 2, -0.5 or 1e-3, got '>'"
    )
    assert [c.value for c in at.sidebar.code] == ["z >> 2\n   ^"]
    assert at.button(key="btn_rule_add").disabled
    at.text_input(key="rule_text").input("foo > 1").run()
    assert _sidebar_errors(at) == (
        "at position 1: unknown metric 'foo'; valid metrics: z, abs(z), spread, "
        "beta, corr, adf_p, eg_p, half_life, SYMBOL.price, SYMBOL.volume, "
        "SYMBOL.return"
    )
    at.text_input(key="rule_text").input("abs(z) >= 2.5").run()
    assert not _sidebar_errors(at)
    at.text_input(key="rule_webhook").input("ftp://example.com/hook").run()
    assert _sidebar_errors(at) == (
        "webhook_url must start with http:// or https://, got 'ftp://example.com/hook'"
    )
    assert at.button(key="btn_rule_add").disabled
    at.text_input(key="rule_webhook").input("").run()
    at.number_input(key="rule_cooldown").set_value(30.0).run()
    at.button(key="btn_rule_add").click().run()
    assert not at.exception, at.exception
    rows = storage.list_alert_rules(filled_db)
    assert [(r.text, r.cooldown_s, r.enabled) for r in rows] == [
        ("abs(z) >= 2.5", 30.0, True)
    ]
    assert analytics.PairParams.from_json(rows[0].params_json) == analytics.PairParams()
    assert at.session_state["rule_text"] == ""
    rule_id = rows[0].id
    assert f"Rule #{rule_id} added" in " ".join(s.value for s in at.sidebar.success)
    table = at.dataframe[0].value
    assert list(table["rule"]) == ["abs(z) >= 2.5"]
    assert list(table["state"]) == ["state known to the ingesting process"]
    at.toggle(key=f"rule_on_{rule_id}").set_value(False).run()
    assert storage.list_alert_rules(filled_db)[0].enabled is False
    assert list(at.dataframe[0].value["state"]) == ["disabled"]
    at.toggle(key=f"rule_on_{rule_id}").set_value(True).run()
    assert storage.list_alert_rules(filled_db)[0].enabled is True
    at.button(key=f"rule_del_{rule_id}").click().run()
    assert not at.exception, at.exception
    assert storage.list_alert_rules(filled_db) == []


def _typed_array(value) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array {"dtype", "bdata"} (base64)."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
    return np.asarray(value)


def _add_event(db: Path, rule_id: int, fired_ms: int, z: float) -> int:
    """Store one firing of `rule_id` as the monitor would."""
    import storage

    snapshot = {"pair": "BTCUSDT/ETHUSDT", "metric": "abs(z)", "value": abs(z)}
    snapshot.update({"symbol_y": "BTCUSDT", "symbol_x": "ETHUSDT", "z": z})
    with storage.Writer(db) as writer:
        event_id = writer.add_alert_event(
            rule_id, fired_ms, abs(z), json.dumps(snapshot)
        )
        writer.update_alert_event_notification(event_id, "none", "no webhook")
    return event_id


def test_alert_events_show_as_toasts_in_the_tab_and_on_the_chart(
    monkeypatch, filled_db: Path
) -> None:
    """A stored firing is toasted once, listed (and filtered) in the Alerts tab and
    marked on the Pair tab's z-score chart."""
    import storage

    at = _app(monkeypatch, filled_db)
    at.session_state["main_tab"] = "Alerts"
    at.run()
    at.text_input(key="rule_text").input("abs(z) > 1").run()
    at.button(key="btn_rule_add").click().run()
    at.text_input(key="rule_text").input("BTCUSDT.price > 1").run()
    at.button(key="btn_rule_add").click().run()
    z_rule, price_rule = (r.id for r in storage.list_alert_rules(filled_db))
    assert "No alert events for this filter." in [i.value for i in at.info]
    fired = int(pd.Timestamp.now(tz="UTC").value // 1_000_000) - 30 * 60_000
    first = _add_event(filled_db, z_rule, fired, -1.7)
    at.run()
    assert not at.exception, at.exception
    toasts = [t.value for t in at.toast]
    assert len(toasts) == 1 and toasts[0].startswith("Alert: abs(z) > 1 fired")
    events = at.dataframe[1].value
    assert list(events["id"]) == [first]
    assert list(events["z"]) == [-1.7]
    at.run()
    assert not at.toast  # shown once per session
    _add_event(filled_db, price_rule, fired + 1000, 0.5)
    at.run()
    assert len(at.dataframe[1].value) == 2
    at.selectbox(key="ev_rule").select(f"#{z_rule} abs(z) > 1 (BTCUSDT/ETHUSDT)").run()
    assert list(at.dataframe[1].value["rule_id"]) == [z_rule]
    labels = [b.label for b in at.get("download_button")]
    assert "Download alert history (CSV)" in labels
    at.session_state["main_tab"] = "Pair"
    at.run()
    assert not at.exception, at.exception
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    stars = [t for t in spec["data"] if t.get("name") == "alert fired"]
    assert len(stars) == 1  # both rules are on this pair: one trace, two stars
    xs, ys = _typed_array(stars[0]["x"]), _typed_array(stars[0]["y"])
    assert sorted(xs) == [fired, fired + 1000]
    assert -1.7 in list(ys)


@pytest.mark.slow
def test_monitor_in_the_service_fires_without_a_browser_refresh(
    monkeypatch, filled_db: Path
) -> None:
    """With ingestion on (an unreachable loopback exchange) the service's alert
    monitor fires a rule added in the sidebar and the Alerts tab shows its state."""
    import socket
    import time

    import streamlit as st

    import storage

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    at = _app(
        monkeypatch,
        filled_db,
        PAIRDESK_INGEST="1",
        PAIRDESK_BASE_URL=f"ws://127.0.0.1:{port}/public",
    )
    at.session_state["main_tab"] = "Alerts"
    try:
        at.run()
        at.text_input(key="rule_text").input("BTCUSDT.price > 1").run()
        at.button(key="btn_rule_add").click().run()
        deadline = time.monotonic() + 30
        while storage.list_alert_events(filled_db).empty:
            assert time.monotonic() < deadline, "the monitor never fired"
            time.sleep(0.5)  # no rerun: the monitor runs in the service thread
        events = storage.list_alert_events(filled_db)
        assert list(events["rule_text"]) == ["BTCUSDT.price > 1"]
        assert list(events["notify_status"]) == ["none"]
        at.run()
        assert not at.exception, at.exception
        states = at.dataframe[0].value
        assert list(states["state"]) == ["firing"]
        assert float(states["value"].iloc[0]) > 1
    finally:
        st.cache_resource.clear()


def _upload(at, path_or_name, content: bytes | None = None, *, dataset: str):
    """Put a file into the Data tab's uploader, name the dataset, click Import."""
    if content is None:
        name, content = Path(path_or_name).name, Path(path_or_name).read_bytes()
    else:
        name = path_or_name
    at.file_uploader(key="upload_file").set_value((name, content, "text/csv")).run()
    at.text_input(key="upload_name").input(dataset).run()
    at.button(key="btn_import").click().run()
    assert not at.exception, at.exception
    return at


def test_imported_dataset_is_a_file_source_and_pair_tab_matches_analytics(
    monkeypatch, tmp_path: Path, shared_data: Path
) -> None:
    """Recorded Binance trades uploaded in the Data tab become 'File: aug8' and the
    Pair tab's beta and z equal analytics on the same bars."""
    import analytics
    import app
    import storage

    folder = shared_data / "derived_csv"
    at = _app(monkeypatch, tmp_path / "market.db")
    at.session_state["main_tab"] = "Data"
    at.session_state["timeframe"] = "1s"
    at.session_state["window"] = 30
    at.run()
    _upload(at, folder / "BTCUSDT-trades-2024-08-08-span.csv", dataset="aug8")
    successes = " ".join(s.value for s in at.success)
    assert "BTCUSDT-trades-2024-08-08-span.csv (trades) -> dataset 'aug8'" in successes
    _upload(at, folder / "ETHUSDT-trades-2024-08-08-span.csv", dataset="aug8")
    assert "ETHUSDT-trades-2024-08-08-span.csv (trades)" in " ".join(
        s.value for s in at.success
    )
    assert "File: aug8" in at.sidebar.radio(key="source").options
    listed = at.dataframe[0].value
    assert list(listed["dataset"]) == ["aug8"]
    assert list(listed["symbols"]) == ["BTCUSDT, ETHUSDT"]
    at.sidebar.radio(key="source").set_value("File: aug8").run()
    at.session_state["main_tab"] = "Pair"
    at.run()
    assert not at.exception, at.exception
    assert "FILE" in " ".join(m.value for m in at.markdown)
    db = storage.dataset_db_path(tmp_path, "aug8")
    params = analytics.PairParams(interval="1s", window=30)
    expected = _expected(db, 1, params)
    assert expected.latest.beta is not None
    assert _metric(at, "β traded (latest)") == app.fmt_num(expected.latest.beta)
    assert _metric(at, "z (latest bar)") == app.fmt_num(expected.latest.z, 3)
    for tab in ("Alerts", "Data", "Backtest"):
        at.session_state["main_tab"] = tab
        at.run()
        assert not at.exception, (tab, at.exception)
        assert not at.error, (tab, [e.value for e in at.error])


def test_bad_upload_shows_error_and_keeps_existing_dataset(
    monkeypatch, dataset_dir: Path
) -> None:
    """A bad file and an oversized file are refused with their message; the dataset
    of that name is unchanged and no new dataset appears."""
    import storage

    db = storage.dataset_db_path(dataset_dir, "synth")
    before = storage.db_stats(db).symbols
    at = _app(monkeypatch, dataset_dir / "market.db", PAIRDESK_MAX_UPLOAD_ROWS="5")
    at.session_state["main_tab"] = "Data"
    at.run()
    bad = b"timestamp,symbol,price,qty\n1723161600000,BTCUSDT,abc,1\n"
    _upload(at, "bad.csv", bad, dataset="synth")
    assert [e.value for e in at.error] == [
        "bad.csv, row 2, column 'price', value 'abc': not a number"
    ]
    rows = "".join(
        f"{1723161600000 + i * 1000},BTCUSDT,{100 + i},1\n" for i in range(10)
    )
    _upload(
        at, "big.csv", b"timestamp,symbol,price,qty\n" + rows.encode(), dataset="big"
    )
    assert [e.value for e in at.error] == [
        "big.csv: more than 5 rows; nothing was imported. Import large files with "
        "the command line, which streams any size: python ingestion.py import FILE "
        "--dataset big"
    ]
    assert storage.list_datasets(dataset_dir) == ["synth"]
    assert storage.db_stats(db).symbols == before
    assert at.sidebar.radio(key="source").options == ["Live", "Demo", "File: synth"]


def test_dataset_rename_and_delete_follow_the_source(
    monkeypatch, dataset_dir: Path
) -> None:
    """Renaming the shown dataset keeps it selected; delete asks first, then falls
    back to Live."""
    import storage

    at = _app(monkeypatch, dataset_dir / "market.db")
    at.session_state["source"] = "File: synth"
    at.session_state["main_tab"] = "Data"
    at.run()
    at.text_input(key="ds_new_name").input("bad name!").run()
    at.button(key="btn_ds_rename").click().run()
    assert [e.value for e in at.error] == [
        "Rename refused: new: a dataset name is 1-64 letters, digits, '_' or '-', "
        "got 'bad name!'"
    ]
    at.text_input(key="ds_new_name").input("aug").run()
    at.button(key="btn_ds_rename").click().run()
    assert not at.exception, at.exception
    assert storage.list_datasets(dataset_dir) == ["aug"]
    assert at.session_state["source"] == "File: aug"
    at.button(key="btn_ds_delete").click().run()
    assert "This cannot be undone" in " ".join(w.value for w in at.warning)
    at.button(key="btn_ds_delete_no").click().run()
    assert storage.list_datasets(dataset_dir) == ["aug"]
    at.button(key="btn_ds_delete").click().run()
    at.button(key="btn_ds_delete_yes").click().run()
    assert not at.exception, at.exception
    assert storage.list_datasets(dataset_dir) == []
    assert at.session_state["source"] == "Live"
    assert "Dataset 'aug' deleted." in [s.value for s in at.success]


def test_bar_only_dataset_is_read_through_stored_bars(
    monkeypatch, tmp_path: Path
) -> None:
    """A dataset holding only 1 m bars (klines) feeds the Pair tab, and the alert
    preview evaluates a rule on it."""
    import analytics
    import app
    import storage

    db = storage.dataset_db_path(tmp_path, "klines")
    y = _bars(300, start_ms=DATASET_END_MS - 300 * 60_000, seed=3)
    x = y.copy()
    rng = np.random.default_rng(5)
    for col in ("open", "high", "low", "close", "vwap"):
        x[col] = y[col] / 20.0
    x["close"] = x["close"] + rng.normal(0.0, 0.05, len(x))
    x["high"] = np.maximum(x["high"], x["close"])
    x["low"] = np.minimum(x["low"], x["close"])
    with storage.Writer(db) as writer:
        writer.write_bars("BTCUSDT", 60, y)
        writer.write_bars("ETHUSDT", 60, x)
    with storage.Writer(tmp_path / "market.db") as writer:
        writer.add_alert_rule(
            "BTCUSDT.price > 1",
            analytics.PairParams().to_json(),
            60.0,
            True,
            None,
            "json",
        )
    at = _app(monkeypatch, tmp_path / "market.db")
    at.session_state["source"] = "File: klines"
    at.session_state["main_tab"] = "Pair"
    at.run()
    assert not at.exception, at.exception
    params = analytics.PairParams()
    start = DATASET_END_MS - 3 * 3600 * 1000
    legs = [
        storage.read_bars(db, s, 60, start, DATASET_END_MS)
        for s in ("BTCUSDT", "ETHUSDT")
    ]
    expected = analytics.pair_analytics(legs[0], legs[1], params)
    assert _metric(at, "β traded (latest)") == app.fmt_num(expected.latest.beta)
    assert _metric(at, "BTCUSDT last") == app.fmt_num(y["close"].iloc[-1], 8)
    assert not at.warning
    at.selectbox(key="timeframe").select("1s").run()
    assert [w.value for w in at.warning] == [
        "Dataset 'klines' holds 1m bars of BTCUSDT: choose a timeframe that is a "
        "multiple of 1m."
    ]
    at.selectbox(key="timeframe").select("1m").run()
    at.session_state["main_tab"] = "Alerts"
    at.run()
    assert not at.exception, at.exception
    preview = at.dataframe[0].value
    assert list(preview["would fire"]) == ["TRUE now"]
    assert float(preview["value"].iloc[0]) == pytest.approx(y["close"].iloc[-1])


# ------------------------------------------------------ REST: history, symbol check

DAY_MS = 86_400_000
MINUTE_MS = 60_000
HISTORY_LABEL = "exchange history | live"


def _closed_port() -> int:
    """A loopback port nobody listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tiled_klines(shared: Path, name: str, t0: int, n: int) -> list[list]:
    """n consecutive 1 m klines from t0, cycling the recording's full minutes."""
    from fakerest import klines_from_trades, read_trades_csv

    trades = read_trades_csv(shared / "derived_csv" / name)
    base = klines_from_trades(trades)[1:-1]  # drop the partial first/last minutes
    rows = []
    for j in range(n):
        row = list(base[j % len(base)])
        row[0] = t0 + j * MINUTE_MS
        row[6] = row[0] + MINUTE_MS - 1
        rows.append(row)
    return rows


@pytest.fixture()
def rest_server(shared_data: Path):
    """A fake Binance REST server on 127.0.0.1 serving the last 24 h of 1 m klines
    of BTCUSDT and ETHUSDT (tiled from the recorded trades) plus a few minutes on."""
    import time

    from fakerest import FakeBinanceRest

    now = int(time.time() * 1000)
    start = now - now % MINUTE_MS - DAY_MS
    n = DAY_MS // MINUTE_MS + 10
    klines = {
        "BTCUSDT": _tiled_klines(
            shared_data, "BTCUSDT-trades-2024-07-18-span.csv", start, n
        ),
        "ETHUSDT": _tiled_klines(
            shared_data, "ETHUSDT-trades-2024-07-18-span.csv", start, n
        ),
    }
    with FakeBinanceRest(klines=klines) as server:
        server.served_klines = klines
        yield server


def _live_rest_app(monkeypatch, db: Path, rest_url: str, *args: str, **env: str):
    """Live with ingestion on: `--rest-url` and `--base-url` (an unreachable loopback
    stream) on the command line, as `streamlit run app.py -- ...` passes them."""
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "app.py",
            "--rest-url",
            rest_url,
            "--base-url",
            f"ws://127.0.0.1:{_closed_port()}/public",
            *args,
        ],
    )
    return _app(monkeypatch, db, PAIRDESK_INGEST="1", PAIRDESK_REST="1", **env)


def _kline_bars(rows: list[list], start_ms: int, end_ms: int) -> pd.DataFrame:
    """Bars of the served kline rows with open time in [start, end), by hand."""
    sel = [r for r in rows if start_ms <= r[0] < end_ms]
    volume = np.array([float(r[5]) for r in sel])
    quote = np.array([float(r[7]) for r in sel])
    return pd.DataFrame(
        {
            "ts": pd.to_datetime([r[0] for r in sel], unit="ms", utc=True).as_unit(
                "ms"
            ),
            "open": [float(r[1]) for r in sel],
            "high": [float(r[2]) for r in sel],
            "low": [float(r[3]) for r in sel],
            "close": [float(r[4]) for r in sel],
            "volume": volume,
            "quote_volume": quote,
            "trades": [int(r[8]) for r in sel],
            "vwap": quote / volume,
        }
    )


def test_parse_config_reads_rest_settings() -> None:
    """--rest-url/--no-rest and PAIRDESK_REST_URL/PAIRDESK_REST set REST, which runs
    for Live with ingestion only, never for Demo or a dataset."""
    import app

    cfg = app.parse_config(["--rest-url", "http://127.0.0.1:9/"], {})
    assert (cfg.rest_url, cfg.rest) == ("http://127.0.0.1:9", True)
    assert app.AppConfig().rest_url == "https://fapi.binance.com"
    assert app.parse_config(["--no-rest"], {}).rest is False
    env = {"PAIRDESK_REST_URL": "http://127.0.0.1:8", "PAIRDESK_REST": "0"}
    from_env = app.parse_config([], env)
    assert (from_env.rest_url, from_env.rest) == ("http://127.0.0.1:8", False)
    assert app.parse_config(["--rest-url", "http://h:1"], env).rest_url == "http://h:1"
    with pytest.raises(
        ValueError, match="rest_url must be an http:// or https:// URL, got 'ftp://x'"
    ):
        app.parse_config(["--rest-url", "ftp://x"], {})
    assert app.rest_enabled(cfg, "live")
    assert not app.rest_enabled(cfg, "demo")
    assert not app.rest_enabled(cfg, "file:synth")
    assert not app.rest_enabled(app.AppConfig(ingest=False), "live")
    assert not app.rest_enabled(app.AppConfig(rest=False), "live")


def test_rest_status_line_is_compact_and_plain() -> None:
    """The REST status line names state, history per symbol, gap fills and weight."""
    import app
    import rest

    end = 1_721_347_200_000  # 2024-07-19 00:00 UTC
    status = rest.RestStatus(
        state="running",
        rest_url="http://127.0.0.1:1",
        message="",
        symbol_check=None,
        warm_starts=(
            rest.WarmStart("BTCUSDT", end - DAY_MS, end, 1440, 1440, 1, end),
            rest.WarmStart("SOLUSDT", end - DAY_MS, end, 0, 0, 0, None),
        ),
        gap_fills=(
            rest.GapFill("BTCUSDT", 5, 9, end, "trades"),
            rest.GapFill("BTCUSDT", 20, 29, end, "pending"),
        ),
        weight_used_1m=11,
        weight_limit=2400,
        banned_until_ms=None,
        requests=3,
    )
    line = app.rest_status_line(status, ["BTCUSDT", "ETHUSDT"])
    assert line == (
        "REST running · history BTCUSDT +1,440 to 00:00 1m klines · "
        "gap fills 1 (1 pending) · weight 11/2400 per min"
    )


def test_history_end_is_marked_on_market_and_pair_figures() -> None:
    """A history end inside the bars draws a labelled vertical line on every row;
    one outside the bars draws nothing."""
    bars = _bars(30)
    t0 = int(bars["ts"].iloc[0].value // 1_000_000)
    inside = t0 + 10 * MINUTE_MS
    fig = charts.market_figure(
        {"BTCUSDT": bars, "ETHUSDT": _bars(30, seed=2)},
        history_end_ms={"BTCUSDT": inside, "ETHUSDT": None},
    )
    lines = [s for s in fig.layout.shapes if s.x0 == s.x1]
    assert [(s.x0, s.xref) for s in lines] == [(inside, "x"), (inside, "x2")]
    labels = [a for a in fig.layout.annotations if a.text == HISTORY_LABEL]
    assert [(a.x, a.xref) for a in labels] == [(inside, "x")]
    both = charts.market_figure({"A": bars, "B": bars}, history_end_ms=inside)
    assert len([a for a in both.layout.annotations if a.text == HISTORY_LABEL]) == 2
    table = _pair_table()
    pair = charts.pair_figure(
        table, symbol_y="A", symbol_x="B", z_entry=2, z_exit=0, history_end_ms=inside
    )
    vlines = [s for s in pair.layout.shapes if s.x0 == s.x1]
    assert sorted(s.xref for s in vlines) == ["x", "x2", "x3", "x4", "x5"]
    assert [a.text for a in pair.layout.annotations].count(HISTORY_LABEL) == 1
    go.Figure(pair.to_dict())  # valid plotly
    go.Figure(fig.to_dict())
    before = t0 - MINUTE_MS
    outside = charts.pair_figure(
        table, symbol_y="A", symbol_x="B", z_entry=2, z_exit=0, history_end_ms=before
    )
    assert HISTORY_LABEL not in [a.text for a in outside.layout.annotations]


def test_mistyped_symbol_is_refused_with_a_suggestion_and_old_symbols_stay(
    monkeypatch, tmp_path: Path, rest_server
) -> None:
    """On Live a symbol exchangeInfo does not list is refused with a close match,
    the previous symbols keep streaming, and the picker offers the perpetuals."""
    import streamlit as st

    at = _live_rest_app(monkeypatch, tmp_path / "market.db", rest_server.url)
    try:
        at.run()
        assert not at.exception, at.exception
        assert not at.sidebar.error, [e.value for e in at.sidebar.error]
        at.text_input(key="symbols_text").input("BTCUSDT, ETHUSTD").run()
        assert not at.exception, at.exception
        errors = " ".join(e.value for e in at.sidebar.error)
        assert (
            "Symbol check refused: ETHUSTD: not a USD-M futures symbol on Binance; "
            "did you mean ETHUSDT?" in errors
        )
        assert "Still using BTCUSDT, ETHUSDT" in errors
        assert at.session_state["symbols"] == ["BTCUSDT", "ETHUSDT"]
        status_line = " ".join(m.value for m in at.markdown)
        assert ": BTCUSDT, ETHUSDT" in status_line
        picker = at.multiselect(key="symbol_picker")
        assert picker.options == [
            "BNBUSDT",
            "BTCUSDT",
            "ETHUSDT",
            "SOLUSDT",
            "XRPUSDT",
        ]  # the quarterly and the settling contract are not offered
        assert picker.value == ["BTCUSDT", "ETHUSDT"]
        picker.select("SOLUSDT").run()
        assert not at.exception, at.exception
        assert at.session_state["symbols"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        assert at.text_input(key="symbols_text").value == "BTCUSDT,ETHUSDT,SOLUSDT"
        assert not at.sidebar.error, [e.value for e in at.sidebar.error]
        # exchangeInfo is read once: the check and the sync share the cached answer
        assert len(rest_server.requests_to("/fapi/v1/exchangeInfo")) == 1
    finally:
        st.cache_resource.clear()


def test_start_up_symbols_are_checked_too(
    monkeypatch, tmp_path: Path, rest_server
) -> None:
    """A mistyped start-up symbol is reported with its suggestion at the first run."""
    import streamlit as st

    at = _live_rest_app(
        monkeypatch,
        tmp_path / "market.db",
        rest_server.url,
        "--symbols",
        "btcusdt,solusdtt",
    )
    try:
        at.run()
        assert not at.exception, at.exception
        errors = " ".join(e.value for e in at.sidebar.error)
        assert errors == (
            "Symbol check refused: SOLUSDTT: not a USD-M futures symbol on Binance; "
            "did you mean SOLUSDT? Correct the symbols above."
        )
    finally:
        st.cache_resource.clear()


def test_symbol_check_is_skipped_with_a_note_when_rest_is_unreachable(
    monkeypatch, tmp_path: Path
) -> None:
    """With REST unreachable the check is skipped with a visible note and the new
    symbols are accepted; the status line says REST is unavailable."""
    import time

    import streamlit as st

    port = _closed_port()
    at = _live_rest_app(monkeypatch, tmp_path / "market.db", f"http://127.0.0.1:{port}")
    try:
        at.run()
        assert not at.exception, at.exception
        at.text_input(key="symbols_text").input("BTCUSDT, SOLUSDT").run()
        assert not at.exception, at.exception
        notes = " ".join(i.value for i in at.sidebar.info)
        assert (
            f"Symbol check skipped (REST unavailable: cannot reach "
            f"http://127.0.0.1:{port}" in notes
        )
        assert "streaming the symbols unchecked" in notes
        assert not at.sidebar.error, [e.value for e in at.sidebar.error]
        assert at.session_state["symbols"] == ["BTCUSDT", "SOLUSDT"]
        deadline = time.monotonic() + 20
        captions = ""
        while "REST unavailable · " not in captions and time.monotonic() < deadline:
            time.sleep(0.5)
            at.run()
            captions = " ".join(c.value for c in at.caption)
        assert "REST unavailable · " in captions
        assert "cannot reach" in captions
    finally:
        st.cache_resource.clear()


def test_warm_start_makes_1m_statistics_show_before_any_live_tick(
    monkeypatch, tmp_path: Path, rest_server
) -> None:
    """Klines served by REST fill the last day, so the 1m Pair tab shows statistics
    equal to analytics on the served klines with no tick stored, and both charts
    mark where exchange history ends."""
    import time

    import streamlit as st

    import analytics
    import app
    import storage

    db = tmp_path / "market.db"
    at = _live_rest_app(monkeypatch, db, rest_server.url)
    at.session_state["main_tab"] = "Pair"
    try:
        at.run()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert not at.exception, at.exception
            if any(
                m.label == "β traded (latest)" and m.value != "-" for m in at.metric
            ):
                break
            time.sleep(0.5)
            at.run()
        served = rest_server.served_klines
        for _attempt in range(3):  # a minute may close between the run and here
            before = app.closed_end_ms(app.now_ms(), 60)
            at.run()
            end = app.closed_end_ms(app.now_ms(), 60)
            if end == before:
                break
        assert not at.exception, at.exception
        start = app.window_start_ms(end, 60, 3 * 3600)  # auto: 3 windows of 60
        params = analytics.PairParams()
        expected = analytics.pair_analytics(
            _kline_bars(served["BTCUSDT"], start, end),
            _kline_bars(served["ETHUSDT"], start, end),
            params,
        )
        assert expected.n_bars == 180 and expected.latest.z is not None
        assert _metric(at, "β traded (latest)") == app.fmt_num(expected.latest.beta)
        assert _metric(at, "z (latest bar)") == app.fmt_num(expected.latest.z, 3)
        assert _metric(at, "ADF p / lags") == app._p_lags(expected.adf)
        assert _metric(at, "EG p (both ways)") == app.fmt_num(expected.coint.pvalue, 3)
        assert storage.last_tick(db, "BTCUSDT") is None  # no live tick at all
        assert storage.last_tick(db, "ETHUSDT") is None
        captions = " ".join(c.value for c in at.caption)
        assert "REST running · history BTCUSDT +1,440 to " in captions
        pair = json.loads(at.get("plotly_chart")[0].proto.spec)
        texts = [a.get("text") for a in pair["layout"]["annotations"]]
        assert HISTORY_LABEL in texts
        at.session_state["main_tab"] = "Market"
        at.run()
        assert not at.exception, at.exception
        market = json.loads(at.get("plotly_chart")[0].proto.spec)
        labels = [
            a for a in market["layout"]["annotations"] if a.get("text") == HISTORY_LABEL
        ]
        assert len(labels) == 2  # one per symbol
        # no request went further back than a day
        first = min(
            int(r.params["startTime"])
            for r in rest_server.requests_to("/fapi/v1/klines")
        )
        assert first >= end - DAY_MS - MINUTE_MS
    finally:
        st.cache_resource.clear()


def test_demo_never_calls_rest(monkeypatch, tmp_path: Path, rest_server) -> None:
    """Demo with a REST URL configured sends no request, not even a symbol check."""
    import streamlit as st

    at = _app(
        monkeypatch,
        tmp_path / "demo.db",
        source="demo",
        PAIRDESK_INGEST="1",
        PAIRDESK_REST="1",
        PAIRDESK_REST_URL=rest_server.url,
    )
    try:
        at.run()
        assert not at.exception, at.exception
        at.text_input(key="symbols_text").input("BTCUSDT, SOLUSDT").run()
        assert not at.exception, at.exception
        assert at.session_state["symbols"] == ["BTCUSDT", "SOLUSDT"]
        at.session_state["main_tab"] = "Market"
        at.run()
        assert not at.exception, at.exception
        assert not any(c.value.startswith("REST ") for c in at.caption)
        assert rest_server.requests == []
    finally:
        st.cache_resource.clear()


# ------------------------------------------------------------ AppTest on PostgreSQL


@pytest.fixture()
def pg_filled(pg_url: str) -> str:
    """`filled_db`'s pair (4 h ending now) in a fresh PostgreSQL database, and
    `dataset_dir`'s dataset 'synth' (8 h ending at midnight) in its schema there."""
    import storage

    end_ms = (int(pd.Timestamp.now(tz="UTC").value // 1_000_000) // 1000) * 1000
    dataset = _synthetic_ticks(DATASET_END_MS, minutes=480, step_ms=4000, seed=11)
    seeds = (
        (pg_url, _synthetic_ticks(end_ms, minutes=240)),
        (storage.dataset_target(pg_url, "synth"), dataset),
    )
    for target, ticks in seeds:
        writer = storage.Writer(target)
        try:
            writer.write_batch(ticks)
        finally:
            writer.close()
    return pg_url


def test_app_on_postgresql_shows_the_pair_and_a_dataset_as_file_source(
    monkeypatch, pg_filled: str
) -> None:
    """With a postgresql:// setting every tab renders from the server: the seeded
    last prices and statistics; the dataset schema is listed in the Data tab and,
    chosen as 'File: synth', the Pair tab equals analytics on its bars; Demo is a
    schema of its own, empty here. The URL's password is never shown."""
    import analytics
    import app
    import storage

    url = pg_filled
    # the throw-away cluster trusts local users: a password is accepted, unused
    at = _app(monkeypatch, url.replace("@", ":hunter2@", 1)).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    masked = url.replace("@", ":***@", 1)
    status = " ".join(m.value for m in at.markdown)
    assert "LIVE" in status and masked in status
    assert "Rules in " + masked in [c.value for c in at.caption]
    shown = [e.value for e in (*at.markdown, *at.caption, *at.info, *at.warning)]
    assert not [text for text in shown if "hunter2" in text]
    for sym in ("BTCUSDT", "ETHUSDT"):
        last = storage.last_tick(url, sym).price
        assert _metric(at, f"{sym} last") == app.fmt_num(last, 8)
    assert _metric(at, "live z") != "-"
    assert _metric(at, "db size") not in ("-", "0 B")
    for name in app.TAB_NAMES:
        at.session_state["main_tab"] = name
        at.run()
        assert not at.exception, (name, at.exception)
        assert not at.error, (name, [e.value for e in at.error])
        if name not in ("Alerts", "Data"):
            waiting = [i.value for i in at.info if "waiting for" in i.value]
            assert not waiting, (name, waiting)
    listed = at.dataframe[0].value  # the Data tab, shown last
    assert list(listed["dataset"]) == ["synth"]
    assert list(listed["symbols"]) == ["BTCUSDT, ETHUSDT"]
    assert list(listed["ticks"]) == [2 * 480 * 60 // 4]  # a trade per 4 s each
    at.session_state["main_tab"] = "Pair"
    at.run()
    assert _metric(at, "β traded (latest)") != "-"
    assert _metric(at, "EG p (both ways)") != "-"

    assert "File: synth" in at.sidebar.radio(key="source").options
    at.sidebar.radio(key="source").set_value("File: synth").run()
    assert not at.exception, at.exception
    assert "FILE" in " ".join(m.value for m in at.markdown)
    target = storage.dataset_target(url, "synth")
    expected = _expected(target, 60, analytics.PairParams())
    assert expected.latest.z is not None
    assert _metric(at, "β traded (latest)") == app.fmt_num(expected.latest.beta)
    assert _metric(at, "z (latest bar)") == app.fmt_num(expected.latest.z, 3)
    assert _metric(at, "EG p (both ways)") == app.fmt_num(expected.coint.pvalue, 3)
    for tab in ("Alerts", "Data", "Backtest"):
        at.session_state["main_tab"] = tab
        at.run()
        assert not at.exception, (tab, at.exception)
        assert not at.error, (tab, [e.value for e in at.error])

    at.sidebar.radio(key="source").set_value("Demo").run()
    assert not at.exception, at.exception
    status = " ".join(m.value for m in at.markdown)
    assert "DEMO" in status and f"{masked}?schema=demo" in status
    assert _metric(at, "BTCUSDT last") == "-"  # none of the live data


def test_app_on_an_unreachable_postgresql_says_where_it_looked(monkeypatch) -> None:
    """A PostgreSQL URL nobody listens on gives one plain error naming host and port
    (no traceback), and hides the password."""
    with socket.socket() as probe:  # a loopback port with no server behind it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://desk:s3cret@127.0.0.1:{port}/market"
    at = _app(monkeypatch, url).run()  # type: ignore[arg-type]
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert f"cannot reach PostgreSQL at 127.0.0.1:{port}" in errors[0]
    assert "s3cret" not in errors[0]


def test_database_lost_mid_session_shows_one_plain_error_then_recovers(
    monkeypatch, pg_cluster, pg_filled: str
) -> None:
    """The server loses the database after the start-up probe passed (its
    connections killed, as in a restart): the page says so in plain words, with
    no traceback; when the database is back the page renders again."""
    import psycopg

    import app
    import storage

    at = _app(monkeypatch, pg_filled).run()
    assert not at.exception and not at.error, at.exception
    name = pg_filled.rsplit("/", 1)[1]
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        # the start-up probe (one size query) runs first on every rerun: let it
        # pass, as it did just before the loss, so that the panels meet it
        with monkeypatch.context() as m:
            m.setattr(storage, "db_bytes", lambda target: 0)
            at.run()
        assert not at.exception, at.exception
        errors = [e.value for e in at.error]
        assert errors and all(e.startswith(app.DB_FAILED) for e in errors), errors
        assert name in " ".join(errors)
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert "LIVE" in " ".join(m.value for m in at.markdown)


def test_upload_into_postgresql_becomes_a_file_source_with_the_same_numbers(
    monkeypatch, pg_url: str, shared_data: Path
) -> None:
    """Recorded Binance trades uploaded on a PostgreSQL live database land in the
    schema dataset 'aug8', which the sidebar offers and the Pair tab analyses as
    analytics does on the same bars."""
    import analytics
    import app
    import storage

    folder = shared_data / "derived_csv"
    at = _app(monkeypatch, pg_url)  # type: ignore[arg-type]
    at.session_state["main_tab"] = "Data"
    at.session_state["timeframe"] = "1s"
    at.session_state["window"] = 30
    at.run()
    for sym in ("BTCUSDT", "ETHUSDT"):
        _upload(at, folder / f"{sym}-trades-2024-08-08-span.csv", dataset="aug8")
        assert f"{sym}-trades-2024-08-08-span.csv (trades) -> dataset 'aug8'" in (
            " ".join(s.value for s in at.success)
        )
    assert storage.list_datasets(pg_url) == ["aug8"]
    assert "File: aug8" in at.sidebar.radio(key="source").options
    at.sidebar.radio(key="source").set_value("File: aug8").run()
    at.session_state["main_tab"] = "Pair"
    at.run()
    assert not at.exception, at.exception
    db = storage.dataset_target(pg_url, "aug8")
    expected = _expected(db, 1, analytics.PairParams(interval="1s", window=30))
    assert expected.latest.beta is not None
    assert _metric(at, "β traded (latest)") == app.fmt_num(expected.latest.beta)
    assert _metric(at, "z (latest bar)") == app.fmt_num(expected.latest.z, 3)
