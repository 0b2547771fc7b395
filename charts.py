"""Plotly figure builders for the dashboard: DataFrames in, ``go.Figure`` out.

Pure functions with no Streamlit import and no I/O, so each figure can be built and
checked in a test without a running app. Every builder takes already-computed data
(bars in the ``models.BAR_COLUMNS`` layout, the per-bar pair table of
``analytics.pair_analytics``, a backtest's equity path) and only arranges it.

Also here: small HTML builders for the source / signal / regime badges, because they
are presentation only and ``app.py`` stays a top-to-bottom script.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

UP_COLOR = "#26a69a"
DOWN_COLOR = "#ef5350"
Y_COLOR = "#4c9be8"
X_COLOR = "#f5a623"
SPREAD_COLOR = "#c792ea"
BAND_COLOR = "rgba(199, 146, 234, 0.35)"
ENTRY_COLOR = "#ef5350"
EXIT_COLOR = "#9e9e9e"
STOP_COLOR = "#ff9800"
CORR_COLOR = "#80cbc4"
ALERT_COLOR = "#ffd54f"
HISTORY_COLOR = "#90a4ae"
HISTORY_LABEL = "exchange history | live"

SOURCE_COLORS: dict[str, str] = {
    "LIVE": "#2e7d32",
    "DEMO": "#f9a825",
    "FILE": "#1565c0",
}
SIGNAL_COLORS: dict[str, str] = {
    "BUY SPREAD": "#2e7d32",
    "SELL SPREAD": "#c62828",
    "EXIT": "#6d4c41",
    "HOLD": "#1565c0",
    "NEUTRAL": "#546e7a",
}
REGIME_COLOR = "#37474f"

# Chart heights in pixels (one place to tune the layout).
MARKET_ROW_PX = 260
PAIR_HEIGHT_PX = 900


def _axis(i: int) -> str:
    """Plotly axis suffix of row ``i`` (0-based): "", "2", "3", ..."""
    return "" if i == 0 else str(i + 1)


def epoch_ms(ts: Sequence | pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Timestamps as float milliseconds since the epoch (UTC), NaN for NaT.

    Plotly date axes read numbers as epoch milliseconds; sending numbers instead of
    datetime objects makes a figure's JSON about 20 times cheaper to build.
    """
    values = pd.Series(ts)
    if values.empty:
        return np.empty(0, dtype=float)
    if not pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    if getattr(values.dt, "tz", None) is None:
        values = values.dt.tz_localize("UTC")
    out = values.dt.as_unit("ms").astype("int64").to_numpy(dtype=float)
    out[values.isna().to_numpy()] = np.nan
    return out


def _num(values: Any) -> np.ndarray:
    """A numeric column as a float array (None/strings become NaN)."""
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)


def _stacked_layout(
    heights: Sequence[float],
    titles: Sequence[str],
    *,
    height_px: int,
    spacing: float = 0.03,
) -> dict[str, Any]:
    """Layout of rows stacked top to bottom, sharing one date x axis.

    Every row's x axis matches the first one (zoom and pan move all rows); only the
    bottom row shows tick labels. ``heights`` are relative row heights.
    """
    n = len(heights)
    usable = 1.0 - spacing * (n - 1)
    total = float(sum(heights))
    layout: dict[str, Any] = {
        "height": height_px,
        "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
        "hovermode": "x unified",
        "showlegend": True,
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0.0},
        "uirevision": "keep",  # zoom and pan survive a refresh
        "annotations": [],
    }
    top = 1.0
    for i, (h, title) in enumerate(zip(heights, titles, strict=True)):
        size = usable * h / total
        bottom = max(top - size, 0.0)
        ax = _axis(i)
        layout[f"xaxis{ax}"] = {
            "type": "date",
            "anchor": f"y{ax}",
            "showticklabels": i == n - 1,
            "rangeslider": {"visible": False},
            **({"matches": "x"} if i else {}),
        }
        layout[f"yaxis{ax}"] = {"domain": [bottom, top], "anchor": f"x{ax}"}
        if title:
            layout["annotations"].append(
                {
                    "text": title,
                    "xref": "paper",
                    "yref": "paper",
                    "x": 0.0,
                    "y": top,
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "showarrow": False,
                    "font": {"size": 12},
                }
            )
        top = bottom - spacing
    return layout


def _figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    """A figure from trace and layout dicts, skipping plotly's property validation.

    Validation costs 100-300 ms per figure here on every refresh; the builders emit
    only documented properties, and the tests validate every figure type once.
    """
    return go.Figure(data=data, layout=layout, _validate=False)


def _history_end_inside(x: np.ndarray, end_ms: float | None) -> bool:
    """True when ``end_ms`` falls inside the bars ``[x[0], x[-1] + bar]``."""
    if end_ms is None or len(x) == 0 or not np.isfinite(end_ms):
        return False
    bar_ms = float(np.median(np.diff(x))) if len(x) > 1 else 0.0
    return bool(x[0] < end_ms <= x[-1] + bar_ms)


def _history_marks(
    end_ms: float, rows: Sequence[int], label_row: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A dotted vertical line at ``end_ms`` across ``rows`` and its label, placed
    at the top of ``label_row`` (rows 0-based)."""
    shapes = [
        {
            "type": "line",
            "xref": f"x{_axis(row)}",
            "x0": end_ms,
            "x1": end_ms,
            "yref": f"y{_axis(row)} domain",
            "y0": 0.0,
            "y1": 1.0,
            "line": {"color": HISTORY_COLOR, "width": 1.5, "dash": "dot"},
        }
        for row in rows
    ]
    label = {
        "text": HISTORY_LABEL,
        "xref": f"x{_axis(label_row)}",
        "yref": f"y{_axis(label_row)} domain",
        "x": end_ms,
        "y": 1.0,
        "xanchor": "center",
        "yanchor": "top",
        "showarrow": False,
        "font": {"size": 11, "color": HISTORY_COLOR},
        "bgcolor": "rgba(0, 0, 0, 0.35)",
    }
    return shapes, label


def market_figure(
    bars_by_symbol: Mapping[str, pd.DataFrame],
    *,
    history_end_ms: int | Mapping[str, int | None] | None = None,
) -> go.Figure:
    """Candlesticks with volume bars for each symbol, all on one shared time axis.

    Parameters
    ----------
    bars_by_symbol : mapping of symbol to a bar DataFrame (``models.BAR_COLUMNS``:
        ``ts`` UTC bucket start, ``open, high, low, close, volume`` ...). Empty
        frames still get their rows so the layout does not jump as data arrives.
    history_end_ms : where exchange history (REST klines) ends and live data
        begins, ms UTC: one time for every symbol or one per symbol. Drawn as a
        dotted vertical line labelled ``exchange history | live`` on the symbol's
        rows when it falls inside its bars; None draws nothing.

    Returns
    -------
    go.Figure
        Two rows per symbol (price 3/4, volume 1/4), x axes linked so zoom and pan
        move every row together.

    Raises
    ------
    ValueError
        When ``bars_by_symbol`` is empty.
    """
    if not bars_by_symbol:
        raise ValueError("bars_by_symbol: need at least one symbol, got none")
    symbols = list(bars_by_symbol)
    heights: list[float] = []
    titles: list[str] = []
    for sym in symbols:
        heights += [3.0, 1.0]
        titles += [sym, ""]
    layout = _stacked_layout(
        heights, titles, height_px=MARKET_ROW_PX * len(symbols) + 40, spacing=0.045
    )
    layout["showlegend"] = False
    data: list[dict[str, Any]] = []
    for i, sym in enumerate(symbols):
        bars = bars_by_symbol[sym]
        x = epoch_ms(bars["ts"])
        price_ax, vol_ax = _axis(2 * i), _axis(2 * i + 1)
        opens, closes = _num(bars["open"]), _num(bars["close"])
        data.append(
            {
                "type": "candlestick",
                "name": sym,
                "x": x,
                "open": opens,
                "high": _num(bars["high"]),
                "low": _num(bars["low"]),
                "close": closes,
                "increasing": {"line": {"color": UP_COLOR}},
                "decreasing": {"line": {"color": DOWN_COLOR}},
                "xaxis": f"x{price_ax}",
                "yaxis": f"y{price_ax}",
            }
        )
        data.append(
            {
                "type": "bar",
                "name": f"{sym} volume",
                "x": x,
                "y": _num(bars["volume"]),
                "marker": {"color": np.where(closes >= opens, UP_COLOR, DOWN_COLOR)},
                "xaxis": f"x{vol_ax}",
                "yaxis": f"y{vol_ax}",
            }
        )
        layout[f"yaxis{price_ax}"]["title"] = {"text": "price"}
        layout[f"yaxis{vol_ax}"]["title"] = {"text": "vol"}
        end = (
            history_end_ms.get(sym)
            if isinstance(history_end_ms, Mapping)
            else history_end_ms
        )
        if _history_end_inside(x, end):
            shapes, label = _history_marks(float(end), (2 * i, 2 * i + 1), 2 * i)
            layout.setdefault("shapes", []).extend(shapes)
            layout["annotations"].append(label)
    return _figure(data, layout)


def _signal_changes(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Rows of the pair table where the position changes, grouped by the new state."""
    if "position" not in table or table.empty:
        return {}
    pos = pd.to_numeric(table["position"], errors="coerce").fillna(0.0)
    prev = pos.shift(1).fillna(0.0)
    changed = pos.ne(prev)
    return {
        "long spread": table[changed & (pos > 0)],
        "short spread": table[changed & (pos < 0)],
        "flat": table[changed & (pos == 0)],
    }


def _line(
    x: np.ndarray, y: Any, name: str, row: int, *, color: str, **extra: Any
) -> dict[str, Any]:
    """A line trace on row ``row`` (0-based)."""
    line = {"color": color, "width": extra.pop("width", 1.5)}
    if "dash" in extra:
        line["dash"] = extra.pop("dash")
    return {
        "type": "scatter",
        "mode": "lines",
        "name": name,
        "x": x,
        "y": _num(y),
        "line": line,
        "xaxis": f"x{_axis(row)}",
        "yaxis": f"y{_axis(row)}",
        **extra,
    }


def _hline(row: int, level: float, color: str) -> dict[str, Any]:
    """A dashed horizontal line across row ``row`` at ``level``."""
    ax = _axis(row)
    return {
        "type": "line",
        "xref": f"x{ax} domain",
        "x0": 0.0,
        "x1": 1.0,
        "yref": f"y{ax}",
        "y0": level,
        "y1": level,
        "line": {"color": color, "width": 1, "dash": "dash"},
    }


def pair_figure(
    table: pd.DataFrame,
    *,
    symbol_y: str,
    symbol_x: str,
    z_entry: float,
    z_exit: float,
    z_stop: float | None = None,
    band_k: float = 2.0,
    corr_label: str = "rolling corr (log returns)",
    alert_events: pd.DataFrame | None = None,
    history_end_ms: int | None = None,
) -> go.Figure:
    """Five linked panels for a pair: prices, hedge ratio, spread, z-score, correlation.

    Parameters
    ----------
    table : the per-bar pair table of ``analytics.pair_analytics`` with columns
        ``ts, y, x, beta, spread, spread_mean, spread_std, z, corr`` and optionally
        ``position`` (+1 long spread, -1 short, 0 flat).
    symbol_y, symbol_x : leg names for the legend.
    z_entry, z_exit, z_stop : z-score thresholds drawn as horizontal lines at
        ``±z_entry``, ``±z_exit`` and ``±z_stop`` (stop omitted when None).
    band_k : spread bands drawn at ``spread_mean ± band_k · spread_std``.
    corr_label : title of the correlation row (returns or price levels).
    alert_events : optional firings of alert rules on this pair, with columns
        ``fired_ms`` (ms UTC), ``z`` (the live z at the firing, may be NaN) and
        ``label`` (hover text). Each firing inside the table's time range is drawn as
        a star on the z-score row: at its own z, or, when that is missing, at the z
        of the last bar starting at or before the firing.
    history_end_ms : where exchange history (REST klines) ends and live data
        begins, ms UTC; drawn as a dotted vertical line across all rows, labelled
        ``exchange history | live``, when it falls inside the table's bars.

    Returns
    -------
    go.Figure
        Rows, all on one shared time axis:

        1. both prices normalised to the first bar of the table,
           ``100 · p_t / p_0`` (the window's start);
        2. the hedge ratio ``beta_t`` (no look-ahead: estimated from data up to t);
        3. the spread ``s_t = y_t - (alpha_t + beta_t x_t)`` with its rolling mean
           and ``mean ± k·σ`` bands;
        4. the z-score ``z_t = (s_t - mean_t) / σ_t`` with entry / exit / stop lines
           and markers where the position changes;
        5. the rolling correlation.
    """
    layout = _stacked_layout(
        [0.24, 0.14, 0.22, 0.24, 0.16],
        [
            "prices normalised to window start (=100)",
            "hedge ratio β traded (no look-ahead) ± 2 se",
            f"spread with mean ± {band_k:g}σ",
            "z-score",
            corr_label,
        ],
        height_px=PAIR_HEIGHT_PX,
        spacing=0.04,
    )
    x = epoch_ms(table["ts"])
    data: list[dict[str, Any]] = []
    for col, sym, color in (("y", symbol_y, Y_COLOR), ("x", symbol_x, X_COLOR)):
        series = _num(table[col])
        finite = series[np.isfinite(series)]
        base = float(finite[0]) if finite.size and finite[0] != 0 else float("nan")
        data.append(_line(x, 100.0 * series / base, sym, 0, color=color))
    if "beta_se" in table:
        beta, se = _num(table["beta"]), _num(table["beta_se"])
        data += _band(x, beta, 2 * se, ("β + 2 se", "β - 2 se"), 1)
    data.append(_line(x, table["beta"], "β", 1, color=Y_COLOR))
    mean = _num(table["spread_mean"])
    std = _num(table["spread_std"])
    data += _band(x, mean, band_k * std, (f"+{band_k:g}σ", f"-{band_k:g}σ"), 2)
    data.append(_line(x, mean, "mean", 2, color=EXIT_COLOR, width=1, dash="dot"))
    data.append(_line(x, table["spread"], "spread", 2, color=SPREAD_COLOR))
    for col, name in (("band_lower", "buy band"), ("band_upper", "sell band")):
        if col in table and np.isfinite(_num(table[col])).any():
            data.append(
                _line(x, table[col], name, 2, color=ENTRY_COLOR, width=1, dash="dash")
            )
    data.append(_line(x, table["z"], "z", 3, color=SPREAD_COLOR))
    levels: list[tuple[float, str]] = [
        (z_entry, ENTRY_COLOR),
        (-z_entry, ENTRY_COLOR),
        (z_exit, EXIT_COLOR),
    ]
    if z_exit != 0:
        levels.append((-z_exit, EXIT_COLOR))
    if z_stop is not None:
        levels += [(z_stop, STOP_COLOR), (-z_stop, STOP_COLOR)]
    layout["shapes"] = [_hline(3, level, color) for level, color in levels]
    markers = {
        "long spread": ("triangle-up", UP_COLOR),
        "short spread": ("triangle-down", DOWN_COLOR),
        "flat": ("circle", EXIT_COLOR),
    }
    for name, rows in _signal_changes(table).items():
        if rows.empty:
            continue
        symbol, color = markers[name]
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": name,
                "x": epoch_ms(rows["ts"]),
                "y": _num(rows["z"]),
                "marker": {"symbol": symbol, "size": 10, "color": color},
                "xaxis": "x4",
                "yaxis": "y4",
            }
        )
    markers_trace = _alert_trace(x, _num(table["z"]), alert_events)
    if markers_trace is not None:
        data.append(markers_trace)
    data.append(_line(x, table["corr"], "corr", 4, color=CORR_COLOR))
    layout["yaxis5"]["range"] = [-1.05, 1.05]
    if _history_end_inside(x, history_end_ms):
        shapes, label = _history_marks(float(history_end_ms), range(5), 0)
        layout["shapes"] += shapes
        layout["annotations"].append(label)
    return _figure(data, layout)


def _band(
    x: np.ndarray, mid: np.ndarray, half: np.ndarray, names: tuple[str, str], row: int
) -> list[dict[str, Any]]:
    """Upper and lower lines at ``mid +- half`` on a row, the space between shaded."""
    upper = _line(x, mid + half, names[0], row, color=BAND_COLOR, width=1)
    lower = _line(
        x,
        mid - half,
        names[1],
        row,
        color=BAND_COLOR,
        width=1,
        fill="tonexty",
        fillcolor="rgba(199, 146, 234, 0.08)",
    )
    return [upper, lower]


def _alert_trace(
    x: np.ndarray, z: np.ndarray, events: pd.DataFrame | None
) -> dict[str, Any] | None:
    """Star markers on the z row for alert firings inside ``[x[0], x[-1] + bar)``."""
    if events is None or len(events) == 0 or len(x) == 0:
        return None
    fired = _num(events["fired_ms"])
    bar_ms = float(np.median(np.diff(x))) if len(x) > 1 else 0.0
    inside = (fired >= x[0]) & (fired < x[-1] + max(bar_ms, 1.0))
    if not inside.any():
        return None
    fired = fired[inside]
    own = _num(events["z"])[inside] if "z" in events else np.full(len(fired), np.nan)
    idx = np.clip(np.searchsorted(x, fired, side="right") - 1, 0, len(x) - 1)
    y = np.where(np.isfinite(own), own, z[idx])
    labels = (
        [str(v) for v in events["label"].to_numpy()[inside]]
        if "label" in events
        else ["alert fired"] * len(fired)
    )
    return {
        "type": "scatter",
        "mode": "markers",
        "name": "alert fired",
        "x": fired,
        "y": y,
        "text": labels,
        "hovertemplate": "%{text}<extra></extra>",
        "marker": {
            "symbol": "star",
            "size": 14,
            "color": ALERT_COLOR,
            "line": {"color": "#000000", "width": 1},
        },
        "xaxis": "x4",
        "yaxis": "y4",
    }


def correlation_heatmap(corr: pd.DataFrame, *, title: str) -> go.Figure:
    """Heatmap of a square correlation matrix, annotated with each value.

    Parameters
    ----------
    corr : square DataFrame of correlations in [-1, 1], symbols as index and columns
        (e.g. ``log_returns.corr()``).
    title : figure title naming what was correlated and at which interval.
    """
    z = corr.to_numpy(dtype=float)
    text = [[f"{v:.2f}" if np.isfinite(v) else "" for v in row] for row in z]
    data = [
        {
            "type": "heatmap",
            "z": z,
            "x": [str(c) for c in corr.columns],
            "y": [str(i) for i in corr.index],
            "zmin": -1.0,
            "zmax": 1.0,
            "colorscale": "RdBu",
            "reversescale": True,
            "text": text,
            "texttemplate": "%{text}",
            "hovertemplate": "%{y} / %{x}: %{z:.3f}<extra></extra>",
        }
    ]
    layout = {
        "title": {"text": title},
        "height": 140 + 60 * max(len(corr), 2),
        "margin": {"l": 10, "r": 10, "t": 50, "b": 10},
        "yaxis": {"autorange": "reversed"},
    }
    return _figure(data, layout)


def drawdown_from_equity(equity: pd.Series) -> pd.Series:
    """Drawdown path ``dd_t = equity_t - max_{s<=t} equity_s`` (<= 0, equity units)."""
    values = pd.to_numeric(equity, errors="coerce")
    return values - values.cummax()


def equity_figure(
    ts: Sequence | pd.Series,
    equity: pd.Series,
    *,
    drawdown: pd.Series | None = None,
    unit: str = "USDT",
) -> go.Figure:
    """Equity curve over a drawdown panel, on one shared time axis.

    Parameters
    ----------
    ts : bar timestamps, same length as ``equity``.
    equity : cumulative P&L (net of costs) per bar.
    drawdown : drawdown per bar (<= 0); computed from ``equity`` when None as
        ``equity_t - running max``.
    unit : unit label of the y axes.
    """
    equity = pd.Series(_num(equity))
    if drawdown is None:
        drawdown = drawdown_from_equity(equity)
    layout = _stacked_layout(
        [0.65, 0.35],
        [f"equity ({unit}, net of costs)", f"drawdown ({unit})"],
        height_px=480,
        spacing=0.06,
    )
    x = epoch_ms(ts)
    data = [
        _line(x, equity, "equity", 0, color=Y_COLOR),
        _line(
            x,
            drawdown,
            "drawdown",
            1,
            color=DOWN_COLOR,
            fill="tozeroy",
            fillcolor="rgba(239, 83, 80, 0.25)",
        ),
    ]
    return _figure(data, layout)


def badge_html(text: str, color: str, *, size_rem: float = 1.0) -> str:
    """An inline colored pill with white bold text (HTML-escaped)."""
    return (
        f'<span style="background:{color};color:#fff;font-weight:700;'
        f"padding:0.15rem 0.6rem;border-radius:0.5rem;font-size:{size_rem}rem;"
        f'letter-spacing:0.05em;margin-right:0.4rem">{html.escape(text)}</span>'
    )


def source_badge_html(source: str) -> str:
    """The big LIVE / DEMO / FILE badge shown at the top of every page."""
    label = source.upper()
    return badge_html(label, SOURCE_COLORS.get(label, "#455a64"), size_rem=1.4)


def signal_badge_html(signal: str) -> str:
    """Badge for BUY SPREAD / SELL SPREAD / EXIT / HOLD / NEUTRAL."""
    return badge_html(signal, SIGNAL_COLORS.get(signal.upper(), "#546e7a"))


def regime_badge_html(label: str) -> str:
    """Badge for the market regime label of ``analytics.regime``."""
    return badge_html(label, REGIME_COLOR)


def stability_figure(
    ts: Sequence | pd.Series, pvalues: Sequence[float], window: int
) -> go.Figure:
    """Rolling Engle-Granger p-value (both directions) with the 5 % line.

    Parameters
    ----------
    ts : the end bar of each tested window.
    pvalues : its two-way Engle-Granger p-value (``analytics.rolling_cointegration``).
    window : bars per test, for the title.
    """
    layout = _stacked_layout(
        [1.0],
        [f"Engle-Granger p-value over the last {window} bars (both ways; < 0.05 red)"],
        height_px=260,
        spacing=0.0,
    )
    x = epoch_ms(ts)
    data = [_line(x, _num(pvalues), "EG p", 0, color=SPREAD_COLOR)]
    data[0]["mode"] = "lines+markers"
    layout["shapes"] = [_hline(0, 0.05, STOP_COLOR)]
    layout["yaxis"]["range"] = [0, 1.02]
    return _figure(data, layout)
