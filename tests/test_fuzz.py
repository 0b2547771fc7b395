"""Hypothesis fuzzing of the three parsers that read untrusted input.

- ``ingestion.parse_frame`` (WebSocket frames): never raises; a refused frame is
  ``malformed`` with a reason, an accepted one is a valid `Tick`.
- ``alerts.parse_rule`` (rules typed by a user): raises only `alerts.RuleError`,
  always with a message.
- ``datafiles.import_file`` (uploaded CSV bytes): raises only
  `datafiles.FileImportError`, whose message names the file.

The number of inputs per test is fixed by ``max_examples`` (see EXAMPLES); the
README quotes the totals.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import alerts
import datafiles
import storage
from ingestion import MAX_TRADE_MS, MIN_TRADE_MS, parse_frame

# Inputs per test; FUZZ_SCALE=10 in the environment runs ten times as many.
SCALE = max(1, int(os.environ.get("FUZZ_SCALE", "1")))
EXAMPLES = {
    name: n * SCALE
    for name, n in {
        "frames_raw": 1000,
        "frames_json": 600,
        "frames_trade": 1000,
        "rules_text": 1500,
        "rules_tokens": 800,
        "csv_bytes": 300,
        "csv_shaped": 300,
    }.items()
}
FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same inputs in CI every time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RECV_MS = 1_723_161_256_400
GOOD = {
    "e": "trade",
    "E": 1723161256323,
    "T": 1723161256322,
    "s": "BTCUSDT",
    "t": 5266583935,
    "p": "61800.30",
    "q": "0.006",
    "X": "MARKET",
    "m": False,
}


def fuzz(name: str) -> settings:
    """The shared settings with this test's number of inputs."""
    return settings(FUZZ, max_examples=EXAMPLES[name])


SYMBOL = re.compile(r"[A-Z0-9]{2,20}")

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = (
    json_values
    | st.sampled_from(
        [
            "NaN",
            "Infinity",
            "-0",
            "1e400",
            "0x10",
            " 1",
            "1_000",
            "١٢٣",
            "BTCUSDT\n",
            "btc/usdt",
            "a'; drop table ticks; --",
            "../../etc/passwd",
            "MARKET",
            "INSURANCE_FUND",
            2**63 - 1,
            2**63,
            -1,
            0,
            MAX_TRADE_MS,
            MIN_TRADE_MS - 1,
            True,
        ]
    )
    | st.decimals(allow_nan=True, allow_infinity=True).map(str)
)


def check_frame(raw: str | bytes, recv_ms: int) -> None:
    """parse_frame's contract for one input."""
    r = parse_frame(raw, recv_ms)
    assert r.kind in ("trade", "filtered", "ignored", "malformed")
    if r.kind == "malformed":
        assert r.reason and r.tick is None
    if r.kind == "trade":
        t = r.tick
        assert t is not None and SYMBOL.fullmatch(t.symbol)
        assert type(t.trade_id) is int and 0 <= t.trade_id < 2**63 - 1
        assert MIN_TRADE_MS <= t.ts_ms < MAX_TRADE_MS
        assert 0 < t.price < math.inf and 0 < t.qty < math.inf
        assert type(t.is_buyer_maker) is bool
        if recv_ms > 0:
            assert t.ts_ms <= recv_ms + 86_400_000


# ------------------------------------------------------------------ frames


@fuzz("frames_raw")
@given(
    raw=st.binary(max_size=200) | st.text(max_size=200),
    recv_ms=st.integers(min_value=-(2**63), max_value=2**63),
)
def test_parse_frame_never_raises_on_arbitrary_bytes_or_text(raw, recv_ms):
    """Any bytes or text: a ParseResult, a reason whenever refused."""
    check_frame(raw, recv_ms)


@fuzz("frames_json")
@given(value=json_values, envelope=st.booleans())
def test_parse_frame_never_raises_on_arbitrary_json(value, envelope):
    """Any JSON document, bare or in a stream envelope: never an exception."""
    doc = {"stream": "btcusdt@trade", "data": value} if envelope else value
    check_frame(json.dumps(doc), RECV_MS)


@fuzz("frames_trade")
@given(
    changes=st.dictionaries(st.sampled_from(sorted(GOOD)), field_values, max_size=4),
    dropped=st.sets(st.sampled_from(sorted(GOOD)), max_size=2),
    envelope=st.booleans(),
    as_bytes=st.booleans(),
)
def test_parse_frame_never_raises_on_trade_shaped_lies(
    changes, dropped, envelope, as_bytes
):
    """Trade payloads with fields replaced or missing: a valid Tick or a reason."""
    data = {k: v for k, v in {**GOOD, **changes}.items() if k not in dropped}
    doc = {"stream": "btcusdt@trade", "data": data} if envelope else data
    text = json.dumps(doc)
    check_frame(text.encode() if as_bytes else text, RECV_MS)


def test_parse_frame_refuses_deep_nesting_and_unstorable_ids():
    """Two inputs fuzzing found: deep nesting and ids past SQLite's INTEGER range."""
    deep = parse_frame("[" * 100_000, RECV_MS)
    assert (deep.kind, deep.reason) == ("malformed", "bad JSON: nested too deeply")
    huge = parse_frame(json.dumps({**GOOD, "t": 2**63}), RECV_MS)
    assert huge.kind == "malformed"
    assert huge.reason == f"field 't' must be an integer below 2^63 - 1, got {2**63}"
    newline = parse_frame(json.dumps({**GOOD, "s": "BTCUSDT\n"}), RECV_MS)
    assert newline.kind == "malformed"
    assert newline.reason == "field 's' must be a symbol, got 'BTCUSDT\\n'"


# ------------------------------------------------------------------- rules

RULE_TOKENS = [
    "z", "abs(z)", "abs", "(", ")", "spread", "beta", "corr", "adf_p", "eg_p",
    "half_life", "BTCUSDT.price", "ethusdt.volume", "X.return", "btc/usdt.price",
    ">", ">=", "<", "<=", "==", "=", "!", "2", "-2.5", "1e308", "1e309", "nan",
    "inf", ".5", "5.", "__import__('os')", ";", "and", "or", "Z", "ABS(Z)", "\t",
    "٣", "\x00", "'", '"',
]  # fmt: skip


def check_rule(text: str) -> None:
    try:
        rule = alerts.parse_rule(text)
    except alerts.RuleError as exc:
        assert str(exc).strip(), "a RuleError without a message"
        return
    assert rule.text and math.isfinite(rule.threshold)


@fuzz("rules_text")
@given(text=st.text(max_size=250))
def test_parse_rule_raises_only_rule_error_on_arbitrary_text(text):
    """Any text: a rule, or a RuleError with a message."""
    check_rule(text)


@fuzz("rules_tokens")
@given(tokens=st.lists(st.sampled_from(RULE_TOKENS), max_size=8), sep=st.text(" \t"))
def test_parse_rule_raises_only_rule_error_on_token_soup(tokens, sep):
    """Rule-like token sequences: a rule, or a RuleError with a message."""
    check_rule((sep or " ").join(tokens))


# --------------------------------------------------------------------- CSV

CSV_NAMES = [
    "BTCUSDT-trades-2024-01-01.csv",
    "ETHUSDT-aggTrades-2024-01-01.csv",
    "BTCUSDT-1m-2024-01-01.csv",
    "prices.csv",
    "x.ndjson",
]
HEADERS = [
    "id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "open_time",
    "open", "high", "low", "close", "volume", "close_time", "timestamp", "ts",
    "symbol", "trade_id", "agg_trade_id", "first_trade_id", "last_trade_id",
    "transact_time", "date", "size", "side", "",
]  # fmt: skip
CELLS = st.sampled_from(
    [
        "1", "2", "100.5", "-3", "0", "1e400", "nan", "NaN", "inf", "", " ",
        "true", "false", "True", "1704067200000", "1704067200000000",
        "1704067200", "99999999999999999999", "2024-01-01T00:00:00Z",
        "2024-13-45", "BTCUSDT", "btc/usdt", "a'; drop table ticks; --", '"',
        '"a,b"', "١٢٣", "\x00",
    ]
) | st.text(max_size=6)  # fmt: skip


@st.composite
def shaped_csv(draw) -> bytes:
    """A CSV that looks like one of the supported formats, with lying cells."""
    ncol = draw(st.integers(1, 8))
    header = draw(st.lists(st.sampled_from(HEADERS), min_size=ncol, max_size=ncol))
    rows = draw(st.lists(st.lists(CELLS, min_size=ncol, max_size=ncol + 1), max_size=6))
    lines = ([",".join(header)] if draw(st.booleans()) else []) + [
        ",".join(r) for r in rows
    ]
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return end.join(lines).encode("utf-8", "surrogatepass") + end.encode()


def check_import(content: bytes, name: str, symbol: str | None) -> None:
    """import_file on one file: a report, or FileImportError naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(content)
        try:
            datafiles.import_file(
                path, dataset="fuzz", base_dir=tmp, symbol=symbol, chunk_rows=3
            )
        except datafiles.FileImportError as exc:
            assert str(exc).startswith(name), str(exc)
            return
        db = storage.dataset_db_path(tmp, "fuzz")
        assert db.exists()


@fuzz("csv_bytes")
@given(
    content=st.binary(max_size=300),
    name=st.sampled_from(CSV_NAMES),
    symbol=st.sampled_from([None, "BTCUSDT"]),
)
def test_import_raises_only_file_import_error_on_arbitrary_bytes(content, name, symbol):
    """Arbitrary small files: imported, or a FileImportError that names the file."""
    check_import(content, name, symbol)


@fuzz("csv_shaped")
@given(
    content=shaped_csv(),
    name=st.sampled_from(CSV_NAMES),
    symbol=st.sampled_from([None, "BTCUSDT"]),
)
def test_import_raises_only_file_import_error_on_format_shaped_csv(
    content, name, symbol
):
    """CSV that looks like a supported format but lies: imported or refused by name."""
    check_import(content, name, symbol)


@pytest.mark.parametrize(
    "content",
    [
        b"id,price,qty,quote_qty,time,is_buyer_maker\n1,-5,1,1,1704067200000,true\n",
        b"id,price,qty,quote_qty,time,is_buyer_maker\n1,5,1,1,99999999999999999,true\n",
        b"\xff\xfe\x00\x01garbage",
    ],
)
def test_refused_files_say_row_column_and_value(content):
    """Representative refusals name the file and, for a bad cell, row and column."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "BTCUSDT-trades-2024-01-01.csv"
        path.write_bytes(content)
        with pytest.raises(datafiles.FileImportError, match=r"^BTCUSDT-trades") as e:
            datafiles.import_file(path, dataset="fuzz", base_dir=tmp)
    if b"1704067200000" in content or b"9999" in content:
        assert e.value.row == 2 and e.value.column is not None
