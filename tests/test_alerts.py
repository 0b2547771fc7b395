"""Tests for alerts.py: grammar, edge triggering, persistence, monitor, webhooks."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

import alerts
import storage
from alerts import AlertRule, RuleError, RuleExpr, RuleState, parse_rule, step
from analytics import PairParams
from models import Tick

VALID = (
    "valid metrics: z, abs(z), spread, beta, corr, adf_p, eg_p, half_life, "
    "SYMBOL.price, SYMBOL.volume, SYMBOL.return"
)

# ------------------------------------------------------------------------- grammar

ACCEPTED = [
    # text, metric, symbol, op, threshold, canonical text
    ("z > 2", "z", None, ">", 2.0, "z > 2"),
    ("abs(z) >= 2.5", "abs(z)", None, ">=", 2.5, "abs(z) >= 2.5"),
    ("spread < -5", "spread", None, "<", -5.0, "spread < -5"),
    ("corr < 0.5", "corr", None, "<", 0.5, "corr < 0.5"),
    ("adf_p < 0.05", "adf_p", None, "<", 0.05, "adf_p < 0.05"),
    ("eg_p<=0.1", "eg_p", None, "<=", 0.1, "eg_p <= 0.1"),
    ("beta > 0.04", "beta", None, ">", 0.04, "beta > 0.04"),
    ("half_life < 30", "half_life", None, "<", 30.0, "half_life < 30"),
    (
        "BTCUSDT.price > 90000",
        "price",
        "BTCUSDT",
        ">",
        90000.0,
        "BTCUSDT.price > 90000",
    ),
    (
        "ethusdt.volume >= 1e3",
        "volume",
        "ETHUSDT",
        ">=",
        1000.0,
        "ETHUSDT.volume >= 1e3",
    ),
    (
        "1000PEPEUSDT.return <= -1.5E-3",
        "return",
        "1000PEPEUSDT",
        "<=",
        -0.0015,
        "1000PEPEUSDT.return <= -1.5E-3",
    ),
    ("  ABS ( Z )\t>  +.5  ", "abs(z)", None, ">", 0.5, "abs(z) > +.5"),
    ("spread<-5", "spread", None, "<", -5.0, "spread < -5"),
    ("Z>=-0", "z", None, ">=", 0.0, "z >= -0"),
    ("z > 1e-400", "z", None, ">", 0.0, "z > 1e-400"),
]


@pytest.mark.parametrize(
    ("text", "metric", "symbol", "op", "threshold", "canon"), ACCEPTED
)
def test_parse_rule_accepts(text, metric, symbol, op, threshold, canon):
    """Each accepted rule parses to the expected metric, symbol, operator and number."""
    expr = parse_rule(text)
    assert expr == RuleExpr(metric, symbol, op, threshold, canon)
    assert parse_rule(expr.text) == expr


REFUSED = [
    # text, exact message
    (
        "__import__('os').system('x')",
        "at position 1: unknown metric '__import__'; " + VALID,
    ),
    ("z > 2; drop table", "at position 6: expected end of rule, got ';'"),
    ("z > 1e309", "at position 5: number '1e309' is too large (must be finite)"),
    ("nan", "at position 1: unknown metric 'nan'; " + VALID),
    (
        "z > nan",
        "at position 5: expected a number like 2, -0.5 or 1e-3, got 'nan' "
        "(NaN and infinity are not allowed)",
    ),
    (
        "z > -inf",
        "at position 5: expected a number like 2, -0.5 or 1e-3, got '-inf' "
        "(NaN and infinity are not allowed)",
    ),
    (
        "z > \uff12",
        "at position 5: expected a number like 2, -0.5 or 1e-3, got '\uff12' "
        "(only ASCII digits 0-9 are allowed)",
    ),
    (
        "z > \u0662",  # ARABIC-INDIC DIGIT TWO: float() would accept it
        "at position 5: expected a number like 2, -0.5 or 1e-3, got '\u0662' "
        "(only ASCII digits 0-9 are allowed)",
    ),
    ("z > 1_000", "at position 5: expected a number like 2, -0.5 or 1e-3, got '1_000'"),
    ("z > 0x10", "at position 5: expected a number like 2, -0.5 or 1e-3, got '0x10'"),
    ("z > 2abc", "at position 5: expected a number like 2, -0.5 or 1e-3, got '2abc'"),
    ("z > 1.", "at position 5: expected a number like 2, -0.5 or 1e-3, got '1.'"),
    ("z >", "at position 4: expected a number like 2, -0.5 or 1e-3, got end of rule"),
    ("", "at position 1: expected a metric, got end of rule; " + VALID),
    ("> 2", "at position 1: expected a metric, got '>'; " + VALID),
    ("zz > 2", "at position 1: unknown metric 'zz'; " + VALID),
    ("z", "at position 2: expected an operator (>, >=, <, <=), got end of rule"),
    ("z 2", "at position 3: expected an operator (>, >=, <, <=), got '2'"),
    ("z ; 2", "at position 3: expected an operator (>, >=, <, <=), got ';'"),
    ("z = 2", "at position 3: operator '=' is not supported; use one of >, >=, <, <="),
    (
        "z == 2",
        "at position 3: operator '==' is not supported; use one of >, >=, <, <=",
    ),
    (
        "z != 2",
        "at position 3: operator '!=' is not supported; use one of >, >=, <, <=",
    ),
    ("z > 2 > 3", "at position 7: expected end of rule, got '>'"),
    ("z > 2 or 1", "at position 7: expected end of rule, got 'or'"),
    ("z > 2\n", "at position 6: expected end of rule, got '\\n'"),
    ("abs(spread) > 1", "at position 5: expected z inside abs( ), got 'spread'"),
    ("abs(z > 1", "at position 7: expected ')', got '>'"),
    ("exec('x') > 1", "at position 1: unknown metric 'exec'; " + VALID),
    (
        "z.__class__ > 1",
        "at position 1: symbol 'z' must be 2-20 letters or digits (like BTCUSDT)",
    ),
    (
        "BTCUSDT.__class__ > 1",
        "at position 9: unknown symbol metric '__class__'; valid: BTCUSDT.price, "
        "BTCUSDT.volume, BTCUSDT.return",
    ),
    (
        "A" * 21 + ".price > 1",
        f"at position 1: symbol '{'A' * 21}' must be 2-20 letters or digits "
        "(like BTCUSDT)",
    ),
    (
        "BTC_USDT.price > 1",
        "at position 1: symbol 'BTC_USDT' must be 2-20 letters or "
        "digits (like BTCUSDT)",
    ),
    ("z > 2 -- comment", "at position 7: expected end of rule, got '--'"),
    ("{z} > 2", "at position 1: expected a metric, got '{'; " + VALID),
    (
        "z\u200b > 2",
        "at position 2: expected an operator (>, >=, <, <=), got '\\u200b'",
    ),
    ("z" + " " * 198 + ">2", "rule is 201 characters long; the limit is 200"),
]


@pytest.mark.parametrize(("text", "message"), REFUSED)
def test_parse_rule_refuses_with_exact_message(text, message):
    """Each refused rule raises RuleError with the exact message and position."""
    with pytest.raises(RuleError, match=f"^{re.escape(message)}$") as info:
        parse_rule(text)
    assert isinstance(info.value, ValueError)


def test_rule_error_pointer_marks_the_position():
    """RuleError.pointer draws a caret under the offending character."""
    with pytest.raises(RuleError, match="position 6") as info:
        parse_rule("z > 2; drop table")
    assert info.value.position == 6
    assert info.value.pointer("z > 2; drop table") == "z > 2; drop table\n     ^"


def test_parse_rule_refuses_non_text():
    """A non-string rule is refused with a RuleError naming the type."""
    with pytest.raises(RuleError, match="^rule must be text, got int$"):
        parse_rule(2)  # type: ignore[arg-type]


def test_parser_never_evaluates(monkeypatch):
    """Parsing works with eval and exec removed from builtins (they are never used)."""
    import builtins

    def forbidden(*_args, **_kwargs):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert parse_rule("abs(z) > 1").metric == "abs(z)"
    with pytest.raises(RuleError):
        parse_rule("__import__('os').system('x')")


# ------------------------------------------------------------------ rule settings


def test_alert_rule_validates_webhook_and_cooldown():
    """AlertRule accepts http(s) webhooks and refuses bad schemes, hosts, cooldowns."""
    params = PairParams()
    rule = AlertRule.create(
        "z > 2", params, webhook_url=" https://hooks.example.com/x?a=1 "
    )
    assert rule.webhook_url == "https://hooks.example.com/x?a=1"
    assert rule.id is None and rule.cooldown_s == 60 and rule.enabled
    assert AlertRule.create("z > 2", params, webhook_url="").webhook_url is None
    cases = [
        ({"webhook_url": "file:///etc/passwd"}, "must start with http:// or https://"),
        ({"webhook_url": "javascript:alert(1)"}, "must start with http:// or https://"),
        ({"webhook_url": "ftp://example.com/"}, "must start with http:// or https://"),
        ({"webhook_url": "http:///nohost"}, "webhook_url has no host"),
        ({"webhook_url": "http://exa mple.com/"}, "without spaces or control"),
        ({"webhook_url": "http://example.com:99999/"}, "not a valid URL"),
        ({"webhook_format": "xml"}, "webhook_format must be one of json, slack, "),
        (
            {
                "webhook_url": "https://api.telegram.org/botT/sendMessage",
                "webhook_format": "telegram",
            },
            "must carry the chat as a query parameter",
        ),
        ({"cooldown_s": -1}, r"cooldown_s must be a finite number of seconds >= 0"),
        ({"cooldown_s": float("nan")}, r"cooldown_s must be a finite number"),
    ]
    for kwargs, message in cases:
        with pytest.raises(RuleError, match=message):
            AlertRule.create("z > 2", params, **kwargs)
    telegram = AlertRule.create(
        "z > 2",
        params,
        webhook_url="https://api.telegram.org/botT/sendMessage?chat_id=-100123",
        webhook_format="telegram",
    )
    assert alerts._telegram_chat_id(telegram.webhook_url) == "-100123"


# ------------------------------------------------------------------ edge triggering


def _run(rule: AlertRule, series, *, start_ms: int = 0, dt_ms: int = 1000):
    """Step a rule over (value) series one second apart; return fired flags, states."""
    state = RuleState()
    fired, states = [], []
    for i, value in enumerate(series):
        result = step(rule, state, value, start_ms + i * dt_ms)
        state = result.state
        fired.append(result.fired)
        states.append(state)
    return fired, states


def _rule(text: str = "z > 2", cooldown_s: float = 0.0) -> AlertRule:
    return AlertRule.create(text, PairParams(), cooldown_s=cooldown_s)


def test_step_fires_on_rising_edge_and_rearms_on_false():
    """A rule fires once per false-to-true edge and re-arms when it turns false."""
    fired, states = _run(_rule(), [0.0, 2.5, 3.0, 2.1, 1.0, 2.2, 2.0, 2.01])
    assert fired == [False, True, False, False, False, True, False, True]
    assert [s.status for s in states] == [
        "armed",
        "firing",
        "firing",
        "firing",
        "armed",
        "firing",
        "armed",
        "firing",
    ]


def test_step_fires_when_true_at_first_value():
    """A new rule whose condition is already true fires at its first evaluation."""
    fired, _ = _run(_rule(), [3.0, 3.0])
    assert fired == [True, False]


def test_step_boundary_uses_the_operator_exactly():
    """Equality fires for >= and <= but not for > and <."""
    for text, expect in [
        ("z > 2", False),
        ("z >= 2", True),
        ("z < 2", False),
        ("z <= 2", True),
    ]:
        fired, _ = _run(_rule(text), [2.0])
        assert fired == [expect], text


def test_step_cooldown_drops_edges_instead_of_delaying_them():
    """An edge inside the cooldown is dropped, and the rule must turn false to fire."""
    rule = _rule(cooldown_s=5)
    # t=0 fire; t=1 false; t=2 true (inside 5 s: dropped); stays true through t=7
    # (no delayed firing at t=5); t=8 false; t=9 true again (outside): fires.
    series = [3, 0, 3, 3, 3, 3, 3, 3, 0, 3]
    fired, states = _run(rule, series)
    assert fired == [True, False, False, False, False, False, False, False, False, True]
    assert states[1].status == "cooling down"
    assert states[2].status == "firing"
    assert states[8].status == "armed"
    assert states[9].last_fired_ms == 9000


def test_step_reports_dropped_edges():
    """StepResult.dropped is True exactly for an edge swallowed by the cooldown."""
    rule = _rule(cooldown_s=10)
    s0 = step(rule, RuleState(), 3.0, 0)
    s1 = step(rule, s0.state, 0.0, 1000)
    s2 = step(rule, s1.state, 3.0, 2000)
    assert (s0.fired, s0.dropped) == (True, False)
    assert (s2.fired, s2.dropped) == (False, True)


def test_step_cooldown_ends_exactly_at_cooldown():
    """A new edge exactly cooldown_s after the last firing fires."""
    rule = _rule(cooldown_s=2)
    fired, _ = _run(rule, [3, 0, 3])  # t = 0, 1000, 2000 ms
    assert fired == [True, False, True]


def test_step_insufficient_data_neither_fires_nor_rearms():
    """None or NaN values leave the condition as it was: no firing, no re-arming."""
    nan = float("nan")
    fired, states = _run(_rule(), [3.0, None, 3.0, nan, 0.0, None, 3.0])
    # true, (no data), true: no new edge; NaN; false re-arms; no data; true fires.
    assert fired == [True, False, False, False, False, False, True]
    assert states[1].status == "waiting for data"
    assert states[1].condition is True and states[1].last_value is None
    assert states[3].status == "waiting for data"
    assert states[5].condition is False


def test_step_no_data_at_start_then_true_fires():
    """A rule waiting for data from the start fires at its first true value."""
    fired, states = _run(_rule(), [None, None, 2.5])
    assert fired == [False, False, True]
    assert states[0] == RuleState("waiting for data", None, None, None)


def test_step_is_pure():
    """step returns new frozen states and never mutates its input state."""
    state = RuleState()
    result = step(_rule(), state, 3.0, 1000)
    assert state == RuleState()
    assert result.state is not state
    with pytest.raises(AttributeError):
        result.state.status = "armed"  # type: ignore[misc]


# ---------------------------------------------------------------------- helpers

T0 = 1_700_000_000_000  # a whole second, ms UTC


def _ticks(symbol: str, prices, *, start_ms: int = T0, first_id: int = 1):
    """One tick per second at +100 ms of each bucket, qty 1 + i/10."""
    return [
        Tick(
            symbol,
            first_id + i,
            start_ms + i * 1000 + 100,
            float(p),
            1.0 + i / 10,
            False,
        )
        for i, p in enumerate(prices)
    ]


def _pair_prices(n: int, seed: int = 7):
    """A cointegrated pair: x a random walk around 3000, y = 20 x + AR(1) noise."""
    rng = np.random.default_rng(seed)
    x = 3000 + np.cumsum(rng.normal(0, 2.0, n))
    s = np.zeros(n)
    for i in range(1, n):
        s[i] = 0.6 * s[i - 1] + rng.normal(0, 5.0)
    return np.round(20 * x + 1000 + s, 1), np.round(x, 2)


def _seed_db(db_path, n: int = 60, *, live=(None, None)):
    """n closed 1 s bars per symbol from T0, plus optional live ticks in bucket n."""
    y, x = _pair_prices(n)
    ticks = _ticks("BTCUSDT", y) + _ticks("ETHUSDT", x, first_id=10_000)
    ly, lx = live
    if ly is not None:
        ticks.append(Tick("BTCUSDT", n + 1, T0 + n * 1000 + 200, ly, 0.5, True))
    if lx is not None:
        ticks.append(Tick("ETHUSDT", 10_000 + n, T0 + n * 1000 + 300, lx, 0.5, True))
    with storage.Writer(db_path) as writer:
        writer.write_batch(ticks)
    return y, x


# ------------------------------------------------------------------ persistence


def test_rules_survive_a_restart(db_path):
    """A rule saved through one Writer is loaded unchanged after a new Writer opens."""
    params = PairParams(interval="1s", window=5, hedge_method="kalman")
    with storage.Writer(db_path) as writer:
        saved = alerts.save_rule(
            writer,
            AlertRule.create(
                "abs(z) >= 2.5",
                params,
                cooldown_s=30,
                webhook_url="https://hooks.slack.com/services/T/B/X",
                webhook_format="slack",
            ),
        )
        off = alerts.save_rule(
            writer, AlertRule.create("BTCUSDT.price > 1", PairParams(), enabled=False)
        )
    with storage.Writer(db_path) as writer:  # "restart": a new connection
        rules = alerts.load_rules(db_path)
        assert [r.id for r in rules] == [saved.id, off.id]
        assert rules[0].expr == saved.expr and rules[0].params == params
        assert rules[0].cooldown_s == 30 and rules[0].webhook_format == "slack"
        assert rules[0].webhook_url == "https://hooks.slack.com/services/T/B/X"
        assert rules[0].created_ms > 0
        assert [r.id for r in alerts.load_rules(db_path, enabled_only=True)] == [
            saved.id
        ]
        writer.set_alert_rule_enabled(off.id, True)
        writer.delete_alert_rule(saved.id)
    assert [r.id for r in alerts.load_rules(db_path, enabled_only=True)] == [off.id]


def test_load_rules_of_missing_database_is_empty(tmp_path):
    """Loading rules or events from a database that does not exist returns nothing."""
    missing = tmp_path / "none.db"
    assert alerts.load_rules(missing) == []
    assert alerts.new_events_since(missing, 0) == []
    assert alerts.latest_event_id(missing) == 0
    assert not missing.exists()


# ---------------------------------------------------------------------- metrics


def test_compute_metrics_matches_independent_reference(db_path):
    """z, spread, beta, corr, ADF/EG p-values and half-life match numpy/statsmodels."""
    from statsmodels.tsa.stattools import adfuller, coint

    n, w = 60, 10
    y, x = _seed_db(db_path, n, live=(61234.5, 3012.34))
    params = PairParams(interval="1s", window=w)
    now = T0 + n * 1000 + 600  # bucket n is forming; bars 0..n-1 are closed
    got = alerts.compute_metrics(db_path, params, now, alerts.MetricsCache())

    # the forming bar as the next closed bar: rolling OLS (numpy lstsq) over the
    # last w - 1 closed bars and the live prices, z (ddof=1) over their spreads
    ys, xs = np.append(y, 61234.5), np.append(x, 3012.34)

    def fit(i):
        a = np.column_stack([xs[i - w + 1 : i + 1], np.ones(w)])
        return np.linalg.lstsq(a, ys[i - w + 1 : i + 1], rcond=None)[0]

    spreads = []
    for i in range(n - w + 1, n + 1):
        beta_i, alpha_i = fit(i)
        spreads.append(ys[i] - beta_i * xs[i] - alpha_i)
    live_spread = spreads[-1]
    z = (live_spread - np.mean(spreads)) / np.std(spreads, ddof=1)
    assert got["beta"] == pytest.approx(fit(n - 1)[0], rel=1e-9)
    assert got["spread"] == pytest.approx(live_spread, rel=1e-9, abs=1e-6)
    assert got["z"] == pytest.approx(z, rel=1e-9)
    assert got["abs(z)"] == pytest.approx(abs(z), rel=1e-9)
    # correlation of log returns over the last window (pandas)
    ret = pd.DataFrame({"y": np.log(y), "x": np.log(x)}).diff()
    corr = ret["y"].rolling(w).corr(ret["x"]).iloc[-1]
    assert got["corr"] == pytest.approx(corr, rel=1e-9)
    # ADF on the in-sample OLS spread, Engle-Granger (statsmodels 0.15, lags by AIC)
    b_is, a_is = np.linalg.lstsq(np.column_stack([x, np.ones(n)]), y, rcond=None)[0]
    in_spread = y - b_is * x - a_is
    adf = adfuller(in_spread, regression="c", autolag="AIC", result_object=True)
    assert got["adf_p"] == pytest.approx(adf.pvalue, rel=1e-6)
    # Engle-Granger both ways, combined as min(1, 2 min(p(y~x), p(x~y)))
    eg_both = min(1.0, 2 * min(coint(y, x)[1], coint(x, y)[1]))
    assert got["eg_p"] == pytest.approx(eg_both, rel=1e-6)
    # half-life: OLS of ds_t on s_{t-1} with a constant, -ln 2 / ln(1 + b)
    ds = np.diff(in_spread)
    b = np.linalg.lstsq(
        np.column_stack([in_spread[:-1], np.ones(n - 1)]), ds, rcond=None
    )[0][0]
    assert got["half_life"] == pytest.approx(-np.log(2) / np.log1p(b), rel=1e-9)
    # symbol metrics: last trade price, volume and return of the last closed bar
    assert got["BTCUSDT.price"] == 61234.5 and got["ETHUSDT.price"] == 3012.34
    assert got["BTCUSDT.volume"] == pytest.approx(1.0 + (n - 1) / 10)
    assert got["BTCUSDT.return"] == pytest.approx(y[-1] / y[-2] - 1, rel=1e-12)
    assert got["ETHUSDT.return"] == pytest.approx(x[-1] / x[-2] - 1, rel=1e-12)


def test_compute_metrics_runs_pair_analytics_once_per_closed_bar(db_path):
    """The heavy analytics are cached per closed bar and rerun only when one closes."""
    n = 40
    _seed_db(db_path, n)
    params = PairParams(interval="1s", window=5)
    cache = alerts.MetricsCache()
    base = T0 + n * 1000 + 600
    first = alerts.compute_metrics(db_path, params, base, cache)
    again = alerts.compute_metrics(db_path, params, base + 300, cache)
    assert cache.computations == 1 and first == again
    alerts.compute_metrics(db_path, params, base + 1000, cache)  # bar n closed
    assert cache.computations == 2
    other = PairParams(interval="1s", window=6)
    alerts.compute_metrics(db_path, other, base + 1000, cache)
    assert cache.computations == 3 and len(cache.pair) == 2
    cache.retain({other.to_json()}, set())
    assert list(cache.pair) == [other.to_json()] and cache.symbol == {}


def test_compute_metrics_insufficient_data_is_none(db_path):
    """With fewer bars than the window the pair metrics are None, prices still known."""
    _seed_db(db_path, 3)
    params = PairParams(interval="1s", window=5)
    got = alerts.compute_metrics(db_path, params, T0 + 3600, alerts.MetricsCache())
    for key in ("z", "abs(z)", "spread", "beta", "corr", "adf_p", "eg_p"):
        assert got[key] is None, key
    assert got["BTCUSDT.price"] is not None
    empty = alerts.compute_metrics(
        db_path, PairParams("SOLUSDT", "XRPUSDT", "1s", 5), T0, alerts.MetricsCache()
    )
    assert set(empty.values()) == {None}


def test_symbol_metrics_over_the_rules_timeframe(db_path):
    """SYMBOL.volume/return cover the latest closed bar of the timeframe."""
    # 1 m buckets: bucket A [T0, T0+60s) closes at 100, bucket B closes at 103.
    minute = 60_000
    start = T0 - T0 % minute
    ticks = [
        Tick("SOLUSDT", 1, start + 5_000, 99.0, 1.0, False),
        Tick("SOLUSDT", 2, start + 50_000, 100.0, 2.0, False),
        Tick("SOLUSDT", 3, start + minute + 1_000, 101.0, 0.5, False),
        Tick("SOLUSDT", 4, start + minute + 59_000, 103.0, 0.25, False),
    ]
    with storage.Writer(db_path) as writer:
        writer.write_batch(ticks)
    params = PairParams("BTCUSDT", "ETHUSDT", "1m", 5)
    now = start + 2 * minute + 600  # bucket B closed
    got = alerts.compute_metrics(
        db_path, params, now, alerts.MetricsCache(), symbols=["solusdt"]
    )
    assert got["SOLUSDT.price"] == 103.0
    assert got["SOLUSDT.volume"] == pytest.approx(0.75)
    assert got["SOLUSDT.return"] == pytest.approx(103.0 / 100.0 - 1)
    later = alerts.compute_metrics(  # bucket C (no trades) closed: flat and quiet
        db_path, params, now + minute, alerts.MetricsCache(), symbols=["SOLUSDT"]
    )
    assert later["SOLUSDT.volume"] == 0.0 and later["SOLUSDT.return"] == 0.0
    first = alerts.compute_metrics(  # only bucket A closed: no previous close
        db_path,
        params,
        start + minute + 600,
        alerts.MetricsCache(),
        symbols=["SOLUSDT"],
    )
    assert first["SOLUSDT.volume"] == pytest.approx(3.0)
    assert first["SOLUSDT.return"] is None


# ---------------------------------------------------------------------- monitor


def test_monitor_stores_event_before_notifying_and_respects_restart_cooldown(db_path):
    """A firing is stored with its snapshot; after a restart the cooldown holds."""
    n = 30
    _seed_db(db_path, n, live=(70000.0, None))
    params = PairParams(interval="1s", window=5)
    with storage.Writer(db_path) as writer:
        rule = alerts.save_rule(
            writer, AlertRule.create("BTCUSDT.price > 65000", params, cooldown_s=600)
        )
    now = T0 + n * 1000 + 600
    last_seen = alerts.latest_event_id(db_path)

    async def scenario(monitor, times):
        out = []
        for t in times:
            out.append(await monitor.evaluate_once(t))
        await monitor.aclose()
        return out

    first = alerts.AlertMonitor(db_path)
    passes = asyncio.run(scenario(first, [now, now + 1000]))
    assert [len(p) for p in passes] == [1, 0]
    fired = passes[0][0]
    assert fired.event_id is not None and fired.value == 70000.0
    events = alerts.new_events_since(db_path, last_seen)
    assert [e.id for e in events] == [fired.event_id]
    event = events[0]
    assert event.rule_id == rule.id and event.fired_ms == now
    assert event.rule_text == "BTCUSDT.price > 65000"
    assert event.notify_status == "none" and event.value == 70000.0
    assert event.snapshot["price_y"] == 70000.0
    assert set(event.snapshot) >= {"price_y", "price_x", "beta", "spread", "z"}
    assert alerts.new_events_since(db_path, event.id) == []
    # restart: a new monitor sees the condition true, but within the cooldown
    second = alerts.AlertMonitor(db_path)
    passes = asyncio.run(scenario(second, [now + 5000]))
    assert passes == [[]]
    assert second.rule_states()[rule.id].status == "firing"
    third = alerts.AlertMonitor(db_path)  # after the cooldown: fires again
    passes = asyncio.run(scenario(third, [now + 601_000]))
    assert len(passes[0]) == 1
    assert len(alerts.new_events_since(db_path, 0)) == 2


def test_monitor_restarted_during_a_store_keeps_one_event_and_no_second_webhook(
    db_path, hooks, monkeypatch
):
    """The service cancels the monitor (lease lost, stop) while a firing's insert
    runs in the DB thread, and later restarts the same monitor: the firing, still
    pending in the monitor, is found stored, so one event and no second webhook
    (seen on PostgreSQL in the one-ingester-two-dashboards test)."""
    n = 10
    _seed_db(db_path, n, live=(70000.0, None))
    with storage.Writer(db_path) as writer:
        rule = alerts.save_rule(
            writer,
            AlertRule.create(
                "BTCUSDT.price > 1",
                PairParams(),
                cooldown_s=600,
                webhook_url=hooks.url("/ok"),
            ),
        )
    now = T0 + n * 1000 + 600
    monitor = alerts.AlertMonitor(db_path, period_s=0.05, clock=lambda: now)
    real_store = monitor._store
    entered = threading.Event()

    def slow_store(alert):
        entered.set()
        time.sleep(0.3)  # the insert outlives the run that started it
        return real_store(alert)

    monkeypatch.setattr(monitor, "_store", slow_store)

    async def scenario():
        first = asyncio.create_task(monitor.run())
        while not entered.is_set():
            await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        entered.clear()
        second = asyncio.create_task(monitor.run())  # the same monitor, restarted
        while not entered.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.6)
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)

    asyncio.run(scenario())
    events = storage.list_alert_events(db_path, rule_id=rule.id)
    assert events["fired_ms"].tolist() == [now]
    assert hooks.bodies("/ok") == []  # its run was cancelled before notifying
    assert events["notify_status"].tolist() == ["pending"]


def test_monitor_skips_disabled_rules_and_waits_for_data(db_path):
    """Disabled rules are not evaluated; a metric without data leaves a rule waiting."""
    _seed_db(db_path, 3)
    params = PairParams(interval="1s", window=5)
    with storage.Writer(db_path) as writer:
        off = alerts.save_rule(
            writer, AlertRule.create("BTCUSDT.price > 0", params, enabled=False)
        )
        wait = alerts.save_rule(writer, AlertRule.create("z > -100", params))

    async def scenario():
        monitor = alerts.AlertMonitor(db_path)
        try:
            fired = await monitor.evaluate_once(T0 + 10_000)
        finally:
            await monitor.aclose()
        return fired, monitor.rule_states()

    fired, states = asyncio.run(scenario())
    assert fired == [] and off.id not in states
    assert states[wait.id].status == "waiting for data"


# --------------------------------------------------------------------- webhooks


class _HookServer:
    """A local HTTP server on 127.0.0.1: /ok answers 200, /fail 500, /gone 404,
    /hang never answers (until released); every request is recorded."""

    def __init__(self, on_hang=None) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.release = threading.Event()
        self.on_hang = on_hang
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                outer.requests.append((self.path, body))
                if self.path.startswith("/hang"):
                    if outer.on_hang is not None:
                        outer.on_hang()
                    outer.release.wait(30)
                    return
                code = {"/ok": 200, "/fail": 500, "/gone": 404}.get(
                    self.path.split("?")[0], 200
                )
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def bodies(self, path: str) -> list[dict]:
        return [body for p, body in self.requests if p.split("?")[0] == path]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def hooks():
    """A running local webhook server, shut down after the test."""
    server = _HookServer()
    yield server
    server.close()


def test_deliver_webhook_outcomes(hooks):
    """2xx is sent once; 500 is retried to the limit; 404 is final; a hang times out."""

    async def scenario():
        fast = {"timeout_s": 0.5, "backoff_s": 0.01}
        return (
            await alerts.deliver_webhook(hooks.url("/ok"), {"a": 1}, **fast),
            await alerts.deliver_webhook(hooks.url("/fail"), {"b": 2}, **fast),
            await alerts.deliver_webhook(hooks.url("/gone"), {"c": 3}, **fast),
            await alerts.deliver_webhook(hooks.url("/hang"), {"d": 4}, tries=2, **fast),
        )

    ok, fail, gone, hang = asyncio.run(scenario())
    assert ok == alerts.WebhookOutcome("sent", 1, "HTTP 200")
    assert fail == alerts.WebhookOutcome("failed", 3, "HTTP 500 after 3 tries")
    assert gone == alerts.WebhookOutcome("failed", 1, "HTTP 404 (not retried)")
    assert hang == alerts.WebhookOutcome(
        "failed", 2, "no answer within 0.5 s after 2 tries"
    )
    assert hooks.bodies("/ok") == [{"a": 1}]
    assert hooks.bodies("/fail") == [{"b": 2}] * 3
    assert len(hooks.bodies("/gone")) == 1 and len(hooks.bodies("/hang")) == 2


def test_deliver_webhook_connection_refused():
    """A webhook with nothing listening fails after its tries with the error."""
    import socket

    with socket.socket() as sock:  # a free port that then has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = asyncio.run(
        alerts.deliver_webhook(
            f"http://127.0.0.1:{port}/x", {}, tries=2, timeout_s=0.5, backoff_s=0.01
        )
    )
    assert outcome.status == "failed" and outcome.tries == 2
    assert "refused" in outcome.detail.lower()


def test_webhook_bodies_per_format():
    """json, slack, discord and telegram bodies carry the documented keys."""
    params = PairParams(interval="1s", window=5)
    snapshot = {
        "pair": "BTCUSDT/ETHUSDT",
        "interval": "1s",
        "metric": "abs(z)",
        "symbol_y": "BTCUSDT",
        "symbol_x": "ETHUSDT",
        "price_y": 64000.5,
        "price_x": 3400.25,
        "beta": 18.8,
        "spread": 12.5,
        "z": -2.4,
    }
    fired = T0 + 1234
    rule = replace(AlertRule.create("abs(z) > 2", params), id=7)
    body = alerts.webhook_body(rule, 42, fired, 2.4, snapshot)
    assert body == {
        "rule": "abs(z) > 2",
        "rule_id": 7,
        "event_id": 42,
        "value": 2.4,
        "ts": "2023-11-14T22:13:21.234+00:00",
        "ts_ms": fired,
        "pair": "BTCUSDT/ETHUSDT",
        "snapshot": snapshot,
    }
    text = (
        "Alert: abs(z) > 2 fired (abs(z) = 2.4) on BTCUSDT/ETHUSDT 1s at "
        "2023-11-14 22:13:21 UTC | BTCUSDT 64000.5, ETHUSDT 3400.25, beta 18.8, "
        "spread 12.5, z -2.4"
    )
    slack = replace(rule, webhook_url="https://h.example/s", webhook_format="slack")
    assert alerts.webhook_body(slack, 42, fired, 2.4, snapshot) == {"text": text}
    discord = replace(slack, webhook_format="discord")
    assert alerts.webhook_body(discord, 42, fired, 2.4, snapshot) == {"content": text}
    telegram = replace(
        rule,
        webhook_url="https://api.telegram.org/botX/sendMessage?chat_id=-1001",
        webhook_format="telegram",
    )
    assert alerts.webhook_body(telegram, 42, fired, 2.4, snapshot) == {
        "chat_id": "-1001",
        "text": text,
    }


# ------------------------------------------------------------ loopback integration


def _stored_ticks(db_path) -> int:
    return sum(s.ticks for s in storage.db_stats(db_path).symbols)


def _wait_for(predicate, timeout_s: float, what: str):
    """Poll predicate every 0.2 s until it returns a truthy value, else fail."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_monitor_in_ingestion_service_over_loopback(db_path):
    """Replay + IngestionService(tasks=[monitor.run]) fires abs(z) > 1, stores it,
    POSTs JSON to a local webhook, and records a 500 and a hung webhook as failed
    while ticks keep being stored."""
    import ingestion
    import replay

    ticks_at_hang: list[int] = []
    hooks = _HookServer(on_hang=lambda: ticks_at_hang.append(_stored_ticks(db_path)))
    feed = replay.start_replay_in_thread(synthetic=True, seed=11, rate=40.0)
    params = PairParams(interval="1s", window=5)
    with storage.Writer(db_path) as writer:
        ok, fail, hang = (
            alerts.save_rule(
                writer,
                AlertRule.create(
                    "abs(z) > 1", params, cooldown_s=600, webhook_url=hooks.url(path)
                ),
            )
            for path in ("/ok", "/fail", "/hang")
        )
    monitor = alerts.AlertMonitor(webhook_timeout_s=1.0, webhook_backoff_s=0.2)
    config = ingestion.IngestionConfig(
        symbols=("BTCUSDT", "ETHUSDT"), db_path=db_path, base_url=feed.url
    )
    service = ingestion.IngestionService(config, tasks=[monitor.run])
    service.start()
    try:

        def events():
            frame = storage.list_alert_events(db_path)
            return {int(r.rule_id): r for r in frame.itertuples()}

        _wait_for(lambda: len(events()) == 3, 60, "three rules to fire")
        sent = _wait_for(
            lambda: events()[ok.id].notify_status == "sent" and events(),
            20,
            "the good webhook",
        )
        # the good webhook was answered while the hung one was still waiting
        assert sent[hang.id].notify_status == "pending"
        done = _wait_for(
            lambda: events()[hang.id].notify_status != "pending" and events(),
            30,
            "the hung webhook to give up",
        )
        ticks_after_hang = _stored_ticks(db_path)
    finally:
        service.stop()
        feed.stop()
        hooks.close()
    assert service.status().state == "stopped"
    fired = done[ok.id]
    assert abs(fired.value) > 1 and fired.notify_detail == "HTTP 200"
    snapshot = json.loads(fired.snapshot_json)
    assert snapshot["pair"] == "BTCUSDT/ETHUSDT" and abs(snapshot["z"]) > 1
    assert snapshot["price_y"] > 0 and snapshot["price_x"] > 0
    (body,) = hooks.bodies("/ok")
    assert set(body) == {
        "rule",
        "rule_id",
        "event_id",
        "value",
        "ts",
        "ts_ms",
        "pair",
        "snapshot",
    }
    assert body["rule"] == "abs(z) > 1" and body["event_id"] == int(fired.id)
    assert body["value"] == pytest.approx(fired.value)
    assert done[fail.id].notify_status == "failed"
    assert done[fail.id].notify_detail == "HTTP 500 after 3 tries"
    assert len(hooks.bodies("/fail")) == 3
    assert done[hang.id].notify_status == "failed"
    assert done[hang.id].notify_detail == "no answer within 1 s after 3 tries"
    assert len(hooks.bodies("/hang")) == 3
    assert ticks_after_hang > ticks_at_hang[0]  # ingestion went on during the hang


def test_alerts_import_no_streamlit():
    """alerts, ingestion and replay import without Streamlit (fresh process)."""
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, alerts, ingestion, replay; sys.exit('streamlit' in sys.modules)"
    root = Path(alerts.__file__).resolve().parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, timeout=120)
    assert result.returncode == 0


def test_monitor_keeps_unstored_firing_and_retries(db_path, monkeypatch):
    """A firing whose insert hits a locked database is kept and stored next pass."""
    n = 10
    _seed_db(db_path, n, live=(70000.0, None))
    with storage.Writer(db_path) as writer:
        alerts.save_rule(writer, AlertRule.create("BTCUSDT.price > 1", PairParams()))
    monitor = alerts.AlertMonitor(db_path)
    real_store = monitor._store
    calls = []

    def flaky_store(alert):
        calls.append(alert.fired_ms)
        if len(calls) == 1:
            raise storage.DatabaseLockedError("add_alert_event failed: locked")
        return real_store(alert)

    monkeypatch.setattr(monitor, "_store", flaky_store)
    now = T0 + n * 1000 + 600

    async def scenario():
        try:
            first = await monitor.evaluate_once(now)
            assert alerts.new_events_since(db_path, 0) == []  # not notified either
            second = await monitor.evaluate_once(now + 1000)
        finally:
            await monitor.aclose()
        return first, second

    first, second = asyncio.run(scenario())
    assert len(first) == 1 and first[0].event_id is None
    assert second == []  # no new firing: the condition stayed true
    assert "locked" in (monitor.last_error or "")
    (event,) = alerts.new_events_since(db_path, 0)
    assert event.fired_ms == now and calls == [now, now]
