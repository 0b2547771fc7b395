"""Alert rules: a small grammar, edge-triggered evaluation, persistence, notifiers.

A rule is one comparison ``METRIC OP NUMBER`` typed by the user, for example
``abs(z) >= 2.5`` or ``BTCUSDT.price > 90000``. It is read by a tokenizer and a
recursive-descent parser, never by ``eval``/``exec``; whatever does not fit the
grammar raises :class:`RuleError`, whose message says where and what was expected.

Evaluation is a pure state machine (:func:`step`): a rule fires when its condition
turns true, re-arms when it turns false, never fires twice within its cooldown (an
edge inside the cooldown is dropped, not delayed) and a metric that cannot be
computed neither fires nor re-arms. :class:`AlertMonitor` runs inside the ingestion
service's event loop (``IngestionService(tasks=[monitor.run])``), so rules are
evaluated once per second whether or not a browser is open; each firing is stored in
``alert_events`` before its webhook, if any, is called from a daemon thread (one
deadline per try, redirects never followed, one queue per endpoint: see
:func:`deliver_webhook`). :func:`add_cli_commands` adds ``ingestion.py alerts
add|list|history|delete|enable|disable`` for rules without a browser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import io
import json
import logging
import math
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

import analytics
import storage
from analytics import PairParams
from models import normalize_symbol
from pairdesk.view import window as view

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- grammar

MAX_RULE_CHARS = 200
DEFAULT_COOLDOWN_S = 60.0

PAIR_METRICS: tuple[str, ...] = (
    "z",
    "abs(z)",
    "spread",
    "beta",
    "corr",
    "adf_p",
    "eg_p",
    "half_life",
)
SYMBOL_FIELDS: tuple[str, ...] = ("price", "volume", "return")
OPERATORS: tuple[str, ...] = (">", ">=", "<", "<=")
#: What each metric means, for the rule editor's help text.
METRIC_HELP: dict[str, str] = {
    "z": "live z-score: the forming bar as if it closed at the newest trades",
    "abs(z)": "absolute live z-score",
    "spread": "live traded spread y - beta x - alpha (quote currency; log if log)",
    "beta": "hedge ratio of the latest closed bar",
    "corr": "rolling correlation of the latest closed bar (returns by default)",
    "adf_p": "ADF p-value of the in-sample spread (descriptive: too small when "
    "beta was fitted on the same data; prefer eg_p)",
    "eg_p": "Engle-Granger p-value, both directions combined (small: cointegrated;"
    " the test behind the Mean-reverting badge)",
    "half_life": "half-life in bars of the in-sample spread (infinite: no "
    "significant mean reversion)",
    "SYMBOL.price": "last trade price of SYMBOL",
    "SYMBOL.volume": "SYMBOL's base volume in the latest closed bar",
    "SYMBOL.return": "SYMBOL's return over the latest closed bar (0.01 = 1 %)",
}
VALID_METRICS_TEXT = (
    "z, abs(z), spread, beta, corr, adf_p, eg_p, half_life, "
    "SYMBOL.price, SYMBOL.volume, SYMBOL.return"
)
_OPERATORS_TEXT = "an operator (>, >=, <, <=)"

_SYMBOL_RE = re.compile(r"[A-Za-z0-9]{2,20}", re.ASCII)
# ASCII decimal: optional sign, digits with an optional fraction (or a bare
# fraction), optional exponent. No underscores, hex, nan or inf (float() takes them).
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

# Token kinds. WORD is a run of ASCII letters, digits, '_', '.', '+', '-'; the
# parser decides from context whether it is a metric name or a number.
_TOKEN_RE = re.compile(
    r"(?P<space>[ \t]+)"
    r"|(?P<op>>=|<=|==|!=|=>|=<|>|<|=)"
    r"|(?P<lparen>\()"
    r"|(?P<rparen>\))"
    r"|(?P<word>[A-Za-z0-9_.+\-]+)",
    re.ASCII,
)

Op = Literal[">", ">=", "<", "<="]


class RuleError(ValueError):
    """A rule (or a rule setting) the user typed is not valid.

    The message is meant to be shown as is. ``position`` is the 1-based character
    position of the offending token in the rule text, or None when the error is not
    about one position (too long, a bad webhook URL, a bad cooldown).
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position

    def pointer(self, text: str) -> str:
        """The rule text with a caret line under the offending position."""
        if self.position is None:
            return text
        return f"{text}\n{' ' * (self.position - 1)}^"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "op", "lparen", "rparen", "word", "char", "end"
    text: str
    pos: int  # 0-based offset into the rule text


@dataclass(frozen=True, slots=True)
class RuleExpr:
    """A parsed rule ``METRIC OP NUMBER``.

    Attributes
    ----------
    metric : one of ``PAIR_METRICS`` for a pair metric, or one of ``SYMBOL_FIELDS``
        (``"price"``, ``"volume"``, ``"return"``) for a symbol metric.
    symbol : upper-case symbol for a symbol metric, None for a pair metric.
    op : comparison operator, one of ``>``, ``>=``, ``<``, ``<=``.
    threshold : the finite number the metric is compared with, in the metric's unit
        (z in standard deviations, spread and price in quote currency, volume in
        base units, return as a fraction: 0.01 is 1 %).
    text : canonical text of the rule, e.g. ``"abs(z) >= 2.5"``.
    """

    metric: str
    symbol: str | None
    op: Op
    threshold: float
    text: str

    @property
    def key(self) -> str:
        """The metric's key in :func:`compute_metrics`' result (``BTCUSDT.price``)."""
        return self.metric if self.symbol is None else f"{self.symbol}.{self.metric}"

    def holds(self, value: float) -> bool:
        """Whether ``value OP threshold`` is true."""
        if self.op == ">":
            return value > self.threshold
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<":
            return value < self.threshold
        return value <= self.threshold


def _tokenize(text: str) -> list[_Token]:
    """Split rule text into tokens; a character outside the grammar is a 'char'."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            tokens.append(_Token("char", text[pos], pos))
            pos += 1
            continue
        kind = match.lastgroup or "char"
        if kind != "space":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _describe(token: _Token) -> str:
    return "end of rule" if token.kind == "end" else repr(token.text)


class _Parser:
    """Recursive descent over the token list: rule := metric op number END."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.index += 1
        return token

    @staticmethod
    def fail(token: _Token, what: str) -> RuleError:
        return RuleError(f"at position {token.pos + 1}: {what}", token.pos + 1)

    def rule(self) -> RuleExpr:
        metric, symbol = self.metric()
        op = self.operator()
        threshold, number_text = self.number()
        end = self.advance()
        if end.kind != "end":
            raise self.fail(end, f"expected end of rule, got {_describe(end)}")
        key = metric if symbol is None else f"{symbol}.{metric}"
        return RuleExpr(metric, symbol, op, threshold, f"{key} {op} {number_text}")

    def metric(self) -> tuple[str, str | None]:
        token = self.advance()
        valid = f"; valid metrics: {VALID_METRICS_TEXT}"
        if token.kind != "word":
            raise self.fail(token, f"expected a metric, got {_describe(token)}{valid}")
        name = token.text
        if self.peek().kind == "lparen":
            return self.function(token), None
        if "." in name:
            return self.symbol_metric(token)
        lowered = name.lower()
        if lowered in PAIR_METRICS:
            return lowered, None
        raise self.fail(token, f"unknown metric {name!r}{valid}")

    def function(self, name: _Token) -> str:
        valid = f"; valid metrics: {VALID_METRICS_TEXT}"
        if name.text.lower() != "abs":
            raise self.fail(name, f"unknown metric {name.text!r}{valid}")
        self.advance()  # "("
        inner = self.advance()
        if inner.kind != "word" or inner.text.lower() != "z":
            raise self.fail(inner, f"expected z inside abs( ), got {_describe(inner)}")
        close = self.advance()
        if close.kind != "rparen":
            raise self.fail(close, f"expected ')', got {_describe(close)}")
        return "abs(z)"

    def symbol_metric(self, token: _Token) -> tuple[str, str]:
        symbol, _, field = token.text.partition(".")
        if not _SYMBOL_RE.fullmatch(symbol):
            raise self.fail(
                token,
                f"symbol {symbol!r} must be 2-20 letters or digits (like BTCUSDT)",
            )
        if field.lower() not in SYMBOL_FIELDS:
            field_token = _Token("word", field, token.pos + len(symbol) + 1)
            raise self.fail(
                field_token,
                f"unknown symbol metric {field!r}; valid: "
                f"{symbol.upper()}.price, {symbol.upper()}.volume, "
                f"{symbol.upper()}.return",
            )
        return field.lower(), symbol.upper()

    def operator(self) -> Op:
        token = self.advance()
        if token.kind == "op" and token.text in OPERATORS:
            return token.text  # type: ignore[return-value]
        if token.kind == "op":
            raise self.fail(
                token,
                f"operator {token.text!r} is not supported; use one of >, >=, <, <=",
            )
        raise self.fail(token, f"expected {_OPERATORS_TEXT}, got {_describe(token)}")

    def number(self) -> tuple[float, str]:
        token = self.advance()
        if token.kind != "word" or not _NUMBER_RE.fullmatch(token.text):
            hint = ""
            if token.kind == "char" and not token.text.isascii():
                hint = " (only ASCII digits 0-9 are allowed)"
            elif token.text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
                hint = " (NaN and infinity are not allowed)"
            raise self.fail(
                token,
                f"expected a number like 2, -0.5 or 1e-3, got {_describe(token)}{hint}",
            )
        value = float(token.text)
        if not math.isfinite(value):
            raise self.fail(
                token, f"number {token.text!r} is too large (must be finite)"
            )
        return value, token.text


def parse_rule(text: str) -> RuleExpr:
    """Parse a rule ``METRIC OP NUMBER``.

    Grammar (ASCII only; spaces and tabs between tokens are ignored)::

        rule    := metric op number
        metric  := "z" | "abs" "(" "z" ")" | "spread" | "beta" | "corr"
                 | "adf_p" | "eg_p" | "half_life" | SYMBOL "." field
        field   := "price" | "volume" | "return"
        SYMBOL  := [A-Za-z0-9]{2,20}          (upper-cased)
        op      := ">" | ">=" | "<" | "<="
        number  := [+-]? (digits ("." digits)? | "." digits) ([eE] [+-]? digits)?

    Metric names and fields are case-insensitive. The number must be finite.

    Parameters
    ----------
    text : the rule as typed, at most ``MAX_RULE_CHARS`` (200) characters.

    Returns
    -------
    RuleExpr
        The parsed rule, with canonical ``text`` (e.g. ``"abs(z) >= 2.5"``).

    Raises
    ------
    RuleError
        A ``ValueError`` whose message gives the 1-based position of the offending
        token and what was expected there (listing the valid metrics where a metric
        was expected), e.g. ``at position 6: expected end of rule, got ';'``.
    """
    if not isinstance(text, str):
        raise RuleError(f"rule must be text, got {type(text).__name__}")
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(
            f"rule is {len(text)} characters long; the limit is {MAX_RULE_CHARS}"
        )
    return _Parser(text).rule()


# --------------------------------------------------------------------- rule settings

WEBHOOK_FORMATS: tuple[str, ...] = ("json", "slack", "discord", "telegram")
MAX_WEBHOOK_URL_CHARS = 2048


def validate_webhook(url: str | None, fmt: str = "json") -> str | None:
    """Check a webhook URL and format; return the URL stripped, or None for no webhook.

    Only ``http`` and ``https`` URLs with a host are accepted. For ``telegram`` the
    URL is the bot's ``sendMessage`` URL and must carry the chat in a ``chat_id``
    query parameter (``https://api.telegram.org/botTOKEN/sendMessage?chat_id=42``).

    Raises
    ------
    RuleError
        Naming the setting, the rule and the value received.
    """
    if fmt not in WEBHOOK_FORMATS:
        raise RuleError(
            f"webhook_format must be one of {', '.join(WEBHOOK_FORMATS)}, got {fmt!r}"
        )
    if url is None or not str(url).strip():
        return None
    url = str(url).strip()
    if len(url) > MAX_WEBHOOK_URL_CHARS:
        raise RuleError(
            f"webhook_url is {len(url)} characters long; "
            f"the limit is {MAX_WEBHOOK_URL_CHARS}"
        )
    if not url.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        raise RuleError(
            "webhook_url must be plain ASCII without spaces or control characters"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise RuleError(f"webhook_url is not a valid URL: {exc}") from None
    del port
    if parts.scheme.lower() not in ("http", "https"):
        raise RuleError(
            f"webhook_url must start with http:// or https://, got {url[:40]!r}"
        )
    if not parts.hostname:
        raise RuleError(f"webhook_url has no host: {url[:40]!r}")
    if fmt == "telegram" and not _telegram_chat_id(url):
        raise RuleError(
            "a telegram webhook_url must carry the chat as a query parameter, like "
            "https://api.telegram.org/bot<TOKEN>/sendMessage?chat_id=<CHAT>"
        )
    return url


def _telegram_chat_id(url: str) -> str | None:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    values = query.get("chat_id") or [""]
    return values[0].strip() or None


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A rule with everything needed to evaluate and notify it.

    Attributes
    ----------
    id : row id in ``alert_rules``; None before the rule is stored.
    expr : the parsed condition.
    params : the pair settings selected when the rule was created (pair, timeframe,
        window, hedge method and its settings); the metric is computed with them.
    cooldown_s : minimum seconds between two firings (>= 0, finite).
    enabled : disabled rules are not evaluated.
    webhook_url : optional http(s) URL POSTed on each firing.
    webhook_format : body shape: ``json``, ``slack``, ``discord`` or ``telegram``.
    created_ms : creation time, ms since the epoch UTC (0 when unknown).
    """

    id: int | None
    expr: RuleExpr
    params: PairParams
    cooldown_s: float = DEFAULT_COOLDOWN_S
    enabled: bool = True
    webhook_url: str | None = None
    webhook_format: str = "json"
    created_ms: int = 0

    def __post_init__(self) -> None:
        cooldown = self.cooldown_s
        if (
            isinstance(cooldown, bool)
            or not isinstance(cooldown, int | float)
            or not math.isfinite(cooldown)
            or cooldown < 0
        ):
            raise RuleError(
                f"cooldown_s must be a finite number of seconds >= 0, got {cooldown!r}"
            )
        url = validate_webhook(self.webhook_url, self.webhook_format)
        object.__setattr__(self, "webhook_url", url)

    @classmethod
    def create(
        cls,
        text: str,
        params: PairParams,
        *,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        enabled: bool = True,
        webhook_url: str | None = None,
        webhook_format: str = "json",
        created_ms: int = 0,
    ) -> AlertRule:
        """Parse ``text`` into an unsaved rule (``id=None``); RuleError if invalid."""
        return cls(
            None,
            parse_rule(text),
            params,
            cooldown_s,
            enabled,
            webhook_url,
            webhook_format,
            created_ms,
        )

    @property
    def pair(self) -> str:
        """``"BTCUSDT/ETHUSDT"``: the rule's pair (y/x)."""
        return f"{self.params.symbol_y}/{self.params.symbol_x}"


# ------------------------------------------------------------------ edge triggering

RuleStatus = Literal["armed", "firing", "cooling down", "waiting for data"]


@dataclass(frozen=True, slots=True)
class RuleState:
    """Evaluation state of one rule between two evaluations.

    Attributes
    ----------
    status : ``armed`` (condition false, a true edge fires), ``firing`` (condition
        true: fired, or its edge was dropped in the cooldown; it must turn false
        before it can fire again), ``cooling down`` (condition false but within the
        cooldown of the last firing) or ``waiting for data`` (metric unavailable).
    condition : last known truth of the condition; None before any value was seen.
        A missing value leaves it unchanged (it neither fires nor re-arms).
    last_fired_ms : time of the last firing, ms since the epoch UTC, or None.
    last_value : the latest metric value, None when it could not be computed.
    """

    status: RuleStatus = "armed"
    condition: bool | None = None
    last_fired_ms: int | None = None
    last_value: float | None = None


@dataclass(frozen=True, slots=True)
class StepResult:
    """Outcome of :func:`step`.

    Attributes
    ----------
    state : the new state.
    fired : True when the condition turned true outside the cooldown.
    dropped : True when the condition turned true inside the cooldown (not fired,
        and not delayed either).
    """

    state: RuleState
    fired: bool
    dropped: bool = False


def step(
    rule: AlertRule, state: RuleState, value: float | None, now_ms: int
) -> StepResult:
    """Advance one rule's edge-trigger state machine by one evaluation.

    Parameters
    ----------
    rule : the rule (its ``expr`` and ``cooldown_s`` are used).
    state : the state after the previous evaluation (``RuleState()`` initially,
        which counts as armed).
    value : the metric now; None or NaN when it cannot be computed.
    now_ms : evaluation time, ms since the epoch UTC.

    Returns
    -------
    StepResult
        ``fired`` is True exactly when the condition is true now, was not true at
        the last evaluation that had a value (false or never seen), and
        ``now_ms - last_fired_ms >= cooldown_s * 1000`` (or it never fired). A true
        edge inside the cooldown is dropped (``dropped=True``): the condition is
        recorded as true, so it must turn false before it can fire again. A missing
        value keeps ``condition`` and ``last_fired_ms`` unchanged.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return StepResult(
            RuleState("waiting for data", state.condition, state.last_fired_ms, None),
            fired=False,
        )
    value = float(value)
    condition = rule.expr.holds(value)
    cooldown_ms = rule.cooldown_s * 1000.0
    in_cooldown = (
        state.last_fired_ms is not None and now_ms - state.last_fired_ms < cooldown_ms
    )
    if condition:
        edge = state.condition is not True
        fired = edge and not in_cooldown
        last_fired = now_ms if fired else state.last_fired_ms
        new = RuleState("firing", True, last_fired, value)
        return StepResult(new, fired=fired, dropped=edge and in_cooldown)
    status: RuleStatus = "cooling down" if in_cooldown else "armed"
    return StepResult(RuleState(status, False, state.last_fired_ms, value), False)


# ---------------------------------------------------------------------- persistence


def save_rule(writer: storage.Writer, rule: AlertRule) -> AlertRule:
    """Store a new rule through the writer; return it with its ``id``.

    The canonical rule text and ``rule.params.to_json()`` are stored, so
    :func:`load_rules` rebuilds an equal rule (``created_ms`` comes from storage).
    """
    rule_id = writer.add_alert_rule(
        rule.expr.text,
        rule.params.to_json(),
        float(rule.cooldown_s),
        bool(rule.enabled),
        rule.webhook_url,
        rule.webhook_format,
    )
    return replace(rule, id=int(rule_id))


def rule_from_row(row: storage.AlertRuleRow) -> AlertRule:
    """Rebuild an `AlertRule` from a stored row; ValueError if it is invalid."""
    return AlertRule(
        id=int(row.id),
        expr=parse_rule(row.text),
        params=PairParams.from_json(row.params_json),
        cooldown_s=float(row.cooldown_s),
        enabled=bool(row.enabled),
        webhook_url=row.webhook_url,
        webhook_format=row.webhook_format or "json",
        created_ms=int(row.created_ms or 0),
    )


def load_rules(db_path: str | Path, *, enabled_only: bool = False) -> list[AlertRule]:
    """Read the stored rules, oldest first; a row that no longer parses is skipped.

    Returns an empty list when the database file does not exist yet.
    """
    if not storage.db_exists(db_path):
        return []
    rules: list[AlertRule] = []
    for row in storage.list_alert_rules(db_path):
        if enabled_only and not row.enabled:
            continue
        try:
            rules.append(rule_from_row(row))
        except ValueError as exc:
            log.warning("alert rule %s skipped: %s", row.id, exc)
    return rules


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One stored firing.

    Attributes
    ----------
    id : row id in ``alert_events`` (increasing).
    rule_id : the rule that fired.
    rule_text : the rule's text at the time it fired.
    fired_ms : firing time, ms since the epoch UTC.
    value : the metric value that made the condition true.
    snapshot : prices, beta, spread and z at the firing (parsed snapshot JSON).
    notify_status : webhook outcome (``sent``, ``failed``) or None when no webhook
        was called (yet).
    notify_detail : outcome detail (HTTP status, error, tries).
    """

    id: int
    rule_id: int
    rule_text: str | None
    fired_ms: int
    value: float | None
    snapshot: dict[str, Any]
    notify_status: str | None
    notify_detail: str | None


def _events_from_frame(frame: pd.DataFrame) -> list[AlertEvent]:
    events = []
    for row in frame.itertuples(index=False):
        try:
            snapshot = json.loads(row.snapshot_json) if row.snapshot_json else {}
        except ValueError:
            snapshot = {}
        value = None if pd.isna(row.value) else float(row.value)
        events.append(
            AlertEvent(
                id=int(row.id),
                rule_id=int(row.rule_id),
                rule_text=None if pd.isna(row.rule_text) else str(row.rule_text),
                fired_ms=int(row.fired_ms),
                value=value,
                snapshot=snapshot if isinstance(snapshot, dict) else {},
                notify_status=None
                if pd.isna(row.notify_status)
                else str(row.notify_status),
                notify_detail=None
                if pd.isna(row.notify_detail)
                else str(row.notify_detail),
            )
        )
    return events


def new_events_since(
    db_path: str | Path, last_id: int, *, limit: int = 1000
) -> list[AlertEvent]:
    """Events with ``id > last_id``, oldest first: what a session has not shown yet.

    A session keeps the largest id it has shown (start with ``latest_event_id``, so a
    new session does not replay old toasts) and toasts the events returned.
    """
    if not storage.db_exists(db_path):
        return []
    frame = storage.list_alert_events(db_path, limit=limit)
    if frame.empty:
        return []
    frame = frame[frame["id"] > int(last_id)].sort_values("id")
    return _events_from_frame(frame)


def latest_event_id(db_path: str | Path) -> int:
    """Largest stored event id, 0 when there is none."""
    if not storage.db_exists(db_path):
        return 0
    frame = storage.list_alert_events(db_path, limit=1)
    return 0 if frame.empty else int(frame["id"].max())


# -------------------------------------------------------------------------- metrics

# The view the metrics are computed over is the dashboard's (pairdesk.view): the
# auto lookback of closed bars, from 1 s bars or stored klines alike.
closed_end_ms = view.closed_end_ms


def lookback_s(params: PairParams) -> int:
    """Seconds of history the metrics read (the dashboard's auto lookback)."""
    return view.auto_lookback_s(params.interval_s, params.window)


@dataclass(slots=True)
class MetricsCache:
    """Per-closed-bar results reused between evaluations (mutable; one per monitor).

    ``pair`` maps ``params.to_json()`` to ``(closed_end_ms, PairAnalytics)``;
    ``symbol`` maps ``(symbol, interval_s)`` to ``(closed_end_ms, volume, return)``.
    An entry is recomputed only when a newer bar of its timeframe has closed, so
    ADF, Engle-Granger and half-life run once per closed bar. ``computations``
    counts pair analytics runs (for tests and the status line).
    """

    pair: dict[str, tuple[int, Any]] = field(default_factory=dict)
    symbol: dict[tuple[str, int], tuple[int, float | None, float | None]] = field(
        default_factory=dict
    )
    computations: int = 0

    def retain(self, params_keys: set[str], symbol_keys: set[tuple[str, int]]) -> None:
        """Forget entries no enabled rule uses any more."""
        for key in set(self.pair) - params_keys:
            del self.pair[key]
        for key in set(self.symbol) - symbol_keys:
            del self.symbol[key]


def _finite(value: Any) -> float | None:
    """Float of a number (infinite allowed), None for None/NaN/non-numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def symbol_bar_metrics(
    db_path: str | Path, symbol: str, interval_s: int, end_ms: int
) -> tuple[float | None, float | None]:
    """Volume and simple return of the closed bucket ``[end_ms - interval, end_ms)``.

    Returns
    -------
    (volume, return)
        ``volume`` in base units (0 for a bucket without trades); ``return`` is
        ``close / previous_close - 1`` as a fraction, the previous close being the
        last 1 s close in the bucket before (0 for a bucket without trades). Either is
        None when the data to compute it is missing (no bar in either bucket, or no
        previous close).
    """
    step = interval_s * 1000
    bars = storage.read_bars_1s(db_path, symbol, end_ms - 2 * step, end_ms)
    if bars.empty:
        return None, None
    ts_ms = bars["ts"].dt.as_unit("ms").astype("int64").to_numpy()
    inside = ts_ms >= end_ms - step
    volume = float(bars["volume"].to_numpy("float64")[inside].sum())
    closes = bars["close"].to_numpy("float64")
    if inside.all():
        return volume, None
    prev_close = float(closes[~inside][-1])
    close = float(closes[inside][-1]) if inside.any() else prev_close
    if not prev_close > 0:
        return volume, None
    return volume, close / prev_close - 1.0


def compute_metrics(
    db_path: str | Path,
    params: PairParams,
    now_ms: int,
    cache: MetricsCache,
    *,
    symbols: Iterable[str] = (),
) -> dict[str, float | None]:
    """Every rule metric for one pair setting, read from the database at ``now_ms``.

    Parameters
    ----------
    db_path : database to read (read-only connections; any thread).
    params : the rule's pair settings (pair, timeframe, window, hedge method...).
    now_ms : evaluation time, ms since the epoch UTC.
    cache : reused between calls; pair analytics and per-symbol bar metrics are
        recomputed only when a newer bar of ``params.interval`` has closed.
    symbols : extra symbols whose ``SYM.price/volume/return`` are wanted besides the
        pair's two.

    Returns
    -------
    dict
        Keys ``z``, ``abs(z)``, ``spread``, ``beta``, ``corr``, ``adf_p``, ``eg_p``,
        ``half_life`` and ``SYM.price``, ``SYM.volume``, ``SYM.return`` per symbol;
        a value is None when it cannot be computed (insufficient data).

    Notes
    -----
    The view is the dashboard's (auto lookback): closed bars over
    ``[end - lookback_s(params), end)`` with ``end = closed_end_ms(now_ms)``, read
    from 1 s bars and resampled, analysed by ``analytics.pair_analytics(...,
    with_tests=True)`` once per closed bar. ``z`` and ``spread`` are live: the
    forming bar as if it closed at the newest trade prices (``storage.last_tick``),
    by the bar-close definition (``analytics.live_values``: the hedge re-estimated
    with that bar in the window, z over the window's traded spreads). ``beta``
    and ``corr`` are the latest closed bar's; ``adf_p`` (ADF on the in-sample
    spread, descriptive), ``eg_p`` (Engle-Granger both ways, the badge's test) and
    ``half_life`` (in bars, of the in-sample spread) are the view's.
    ``SYM.price`` is the last trade price; ``SYM.volume`` and ``SYM.return`` are
    over the latest closed bar (:func:`symbol_bar_metrics`). Needs ``window`` bars
    for beta/z and 20 for the tests; below that the values are None. Run it in a
    worker thread: the tests take up to a second on long views (decision 11).
    """
    interval_s = params.interval_s
    end = closed_end_ms(now_ms, interval_s)
    sym_y, sym_x = params.symbol_y, params.symbol_x
    extra = [normalize_symbol(s) for s in symbols]
    all_symbols = list(dict.fromkeys([sym_y, sym_x, *extra]))
    out: dict[str, float | None] = dict.fromkeys(PAIR_METRICS)
    ticks = {sym: storage.last_tick(db_path, sym) for sym in all_symbols}
    for sym in all_symbols:
        tick = ticks[sym]
        out[f"{sym}.price"] = None if tick is None else float(tick.price)
        key = (sym, interval_s)
        entry = cache.symbol.get(key)
        if entry is None or entry[0] != end:
            entry = (end, *symbol_bar_metrics(db_path, sym, interval_s, end))
            cache.symbol[key] = entry
        out[f"{sym}.volume"], out[f"{sym}.return"] = entry[1], entry[2]

    params_key = params.to_json()
    cached = cache.pair.get(params_key)
    if cached is None or cached[0] != end:
        start = view.window_start_ms(end, interval_s, lookback_s(params))
        bars_y = view.read_window_bars(db_path, sym_y, interval_s, start, end)
        bars_x = view.read_window_bars(db_path, sym_x, interval_s, start, end)
        result = analytics.pair_analytics(bars_y, bars_x, params, with_tests=True)
        cached = (end, result)
        cache.pair[params_key] = cached
        cache.computations += 1
    tick_y, tick_x = ticks[sym_y], ticks[sym_x]
    if tick_y is not None and tick_x is not None:
        out.update(pair_values(cached[1], tick_y.price, tick_x.price))
    else:
        out.update(pair_values(cached[1], None, None))
    return out


def pair_values(
    result: analytics.PairAnalytics, price_y: float | None, price_x: float | None
) -> dict[str, float | None]:
    """Pair metrics from a PairAnalytics and the newest trade prices (None: no live)."""
    latest = result.latest
    z = spread = None
    if price_y is not None and price_x is not None:
        # the forming bar as if it closed now (the bar-close definition of z)
        live = analytics.live_values(result, price_y, price_x)
        if live is not None:
            z, spread = _finite(live.z), _finite(live.spread)
    adf, coint, half = result.adf, result.coint, result.half_life
    return {
        "z": z,
        "abs(z)": None if z is None else abs(z),
        "spread": spread,
        "beta": _finite(latest.beta),
        "corr": _finite(latest.corr),
        "adf_p": _finite(adf.pvalue) if adf is not None and adf.ok else None,
        "eg_p": _finite(coint.pvalue) if coint is not None and coint.ok else None,
        "half_life": _half_life_bars(half),
    }


def _half_life_bars(half: analytics.HalfLifeResult) -> float | None:
    """Half-life in bars; infinite when the fit shows no significant reversion."""
    if not half.ok:
        return None
    return math.inf if half.bars is None else _finite(half.bars)


# -------------------------------------------------------------------- notifications

WEBHOOK_TIMEOUT_S = 3.0
WEBHOOK_TRIES = 3
WEBHOOK_BACKOFF_S = 0.5  # waits 0.5 s, then 1 s, ... between tries
USER_AGENT = "pair-analytics-alerts/1"
WEBHOOK_QUEUE = 8  # deliveries per endpoint, in flight or waiting; more are dropped
WEBHOOK_MAX_THREADS = 16  # webhook HTTP threads at once, over all endpoints
WEBHOOK_GRACE_S = 0.5  # past its deadline, a try's thread is aborted and abandoned


def _json_number(value: float | None) -> float | None:
    """A value JSON can carry: None for missing, NaN or infinite."""
    return value if value is not None and math.isfinite(value) else None


def build_snapshot(
    rule: AlertRule, metrics: dict[str, float | None], value: float
) -> dict[str, Any]:
    """What the market looked like when a rule fired: prices, beta, spread, z."""
    p = rule.params
    return {
        "pair": rule.pair,
        "interval": p.interval,
        "metric": rule.expr.key,
        "value": _json_number(value),
        "symbol_y": p.symbol_y,
        "symbol_x": p.symbol_x,
        "price_y": _json_number(metrics.get(f"{p.symbol_y}.price")),
        "price_x": _json_number(metrics.get(f"{p.symbol_x}.price")),
        "beta": _json_number(metrics.get("beta")),
        "spread": _json_number(metrics.get("spread")),
        "z": _json_number(metrics.get("z")),
    }


def _iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}"


def alert_message(
    rule_text: str, fired_ms: int, value: float | None, snapshot: dict[str, Any]
) -> str:
    """One human line for chat webhooks and toasts."""
    when = _iso_utc(fired_ms).replace("T", " ")[:19]
    head = (
        f"Alert: {rule_text} fired ({snapshot.get('metric', '?')} = {_fmt(value)}) "
        f"on {snapshot.get('pair', '?')} {snapshot.get('interval', '')} at {when} UTC"
    )
    prices = (
        f"{snapshot.get('symbol_y', 'y')} {_fmt(snapshot.get('price_y'))}, "
        f"{snapshot.get('symbol_x', 'x')} {_fmt(snapshot.get('price_x'))}, "
        f"beta {_fmt(snapshot.get('beta'))}, spread {_fmt(snapshot.get('spread'))}, "
        f"z {_fmt(snapshot.get('z'))}"
    )
    return f"{head} | {prices}"


def webhook_body(
    rule: AlertRule,
    event_id: int,
    fired_ms: int,
    value: float | None,
    snapshot: dict[str, Any],
) -> dict[str, Any]:
    """The JSON body POSTed for one firing, shaped for ``rule.webhook_format``.

    ``json``: ``{"rule", "rule_id", "event_id", "value", "ts" (ISO-8601 UTC),
    "ts_ms", "pair", "snapshot"}``; ``slack``: ``{"text"}``; ``discord``:
    ``{"content"}`` (at most 2000 characters); ``telegram``: ``{"chat_id", "text"}``
    with the chat id from the URL's ``chat_id`` query parameter.
    """
    text = alert_message(rule.expr.text, fired_ms, value, snapshot)
    fmt = rule.webhook_format
    if fmt == "slack":
        return {"text": text}
    if fmt == "discord":
        return {"content": text[:2000]}
    if fmt == "telegram":
        chat = _telegram_chat_id(rule.webhook_url or "") or ""
        return {"chat_id": chat, "text": text}
    return {
        "rule": rule.expr.text,
        "rule_id": rule.id,
        "event_id": event_id,
        "value": _json_number(value),
        "ts": _iso_utc(fired_ms),
        "ts_ms": int(fired_ms),
        "pair": rule.pair,
        "snapshot": snapshot,
    }


@dataclass(frozen=True, slots=True)
class HttpReply:
    """The HTTP answer to one webhook POST.

    Attributes
    ----------
    status : the HTTP status code (also 3xx, 4xx and 5xx).
    location : the ``Location`` header (of a redirect), None when absent.
    """

    status: int
    location: str | None = None


class _DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read bounded by what is left of one deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """What ``http.client.HTTPResponse`` reads from: a deadline-bound file."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, *_args: Any, **_kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _Exchange:
    """One webhook POST under ONE deadline: connect, send, status line, headers
    and body together take at most ``timeout_s`` (a server dripping its answer a
    byte at a time is cut there, whatever the pace). Redirects are never followed.
    :meth:`abort` (from another thread) shuts the socket so a blocked read ends.
    """

    def __init__(self, url: str, data: bytes, timeout_s: float) -> None:
        self.url = url
        self.data = data
        self.deadline = time.monotonic() + timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._aborted = False

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self._aborted:
            raise TimeoutError("timed out")
        return left

    def _response(self, sock: Any, **kwargs: Any) -> http.client.HTTPResponse:
        """The answer, read through a file bound by the deadline."""
        return http.client.HTTPResponse(_DeadlineSocket(sock, self.deadline), **kwargs)

    def run(self) -> HttpReply:
        """POST once (blocking); TimeoutError past the deadline, OSError etc."""
        parts = urllib.parse.urlsplit(self.url)
        https = parts.scheme.lower() == "https"
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("webhook_url must be an http(s) URL with a host")
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        port = parts.port or (443 if https else 80)
        conn = kind(parts.hostname, port, timeout=self._left())
        conn.response_class = self._response  # type: ignore[assignment]
        with self._lock:
            self._conn = conn
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Connection": "close",
        }
        try:
            conn.timeout = self._left()
            conn.connect()
            conn.sock.settimeout(self._left())
            conn.request("POST", target, body=self.data, headers=headers)
            response = conn.getresponse()
            reply = HttpReply(int(response.status), response.getheader("Location"))
            with contextlib.suppress(OSError, http.client.HTTPException):
                response.read(65536)  # the answer is known; the body is a courtesy
            return reply
        finally:
            conn.close()

    def abort(self) -> None:
        """Give up: make a read blocked in :meth:`run` return now (any thread)."""
        with self._lock:
            self._aborted = True
            sock = None if self._conn is None else self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def post_json(url: str, body: dict[str, Any], timeout_s: float) -> HttpReply:
    """POST ``body`` as JSON once, within ONE deadline of ``timeout_s`` seconds.

    The deadline covers connecting, sending, the status line, the headers and the
    body (not each socket read). A redirect is returned, never followed.

    Raises
    ------
    TimeoutError
        When the exchange was not over by the deadline.
    OSError, http.client.HTTPException
        When no HTTP answer came (refused, reset, malformed answer).
    """
    data = json.dumps(body, allow_nan=False).encode("utf-8")
    return _Exchange(url, data, timeout_s).run()


def endpoint_of(url: str) -> tuple[str, str]:
    """``(key, label)`` of a webhook's endpoint: the key is scheme, host, port and
    path (no query); the label, for messages, is only ``host:port`` (the path of a
    chat webhook holds its token)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = 0
    host = parts.hostname or "?"
    return f"{scheme}://{host}:{port}{parts.path}", f"{host}:{port}"


class WebhookLimiter:
    """Per-endpoint queues and a bound on HTTP threads, for one event loop.

    Each endpoint (:func:`endpoint_of`) gets one request at a time; at most
    ``queue`` deliveries per endpoint are admitted (in flight or waiting) and
    :func:`deliver_webhook` drops, with a record, what comes beyond that. Requests
    run in daemon threads (process exit never waits for them), at most
    ``threads``' value at once over all endpoints; a thread still blocked past its
    deadline (e.g. in DNS) keeps its slot until it ends.

    Parameters
    ----------
    queue : deliveries admitted per endpoint (>= 1).
    threads : the semaphore bounding HTTP threads (shared across a monitor's
        restarts); None makes one of ``WEBHOOK_MAX_THREADS``.
    """

    def __init__(
        self, queue: int = WEBHOOK_QUEUE, threads: threading.Semaphore | None = None
    ) -> None:
        self.queue = queue
        self._threads = threads or threading.BoundedSemaphore(WEBHOOK_MAX_THREADS)
        self._pending: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def enter(self, key: str) -> bool:
        """Admit one delivery to endpoint ``key``; False when its queue is full."""
        count = self._pending.get(key, 0)
        if count >= self.queue:
            return False
        self._pending[key] = count + 1
        self._locks.setdefault(key, asyncio.Lock())
        return True

    def leave(self, key: str) -> None:
        """A delivery admitted by :meth:`enter` is over."""
        count = self._pending.get(key, 0) - 1
        if count > 0:
            self._pending[key] = count
        else:
            self._pending.pop(key, None)
            self._locks.pop(key, None)

    async def post(
        self, key: str, url: str, data: bytes, timeout_s: float
    ) -> HttpReply:
        """One POST to an admitted endpoint, after its previous one, in a thread."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            while not self._threads.acquire(blocking=False):
                await asyncio.sleep(0.05)
            return await _post_in_thread(url, data, timeout_s, self._threads)


async def _post_in_thread(
    url: str, data: bytes, timeout_s: float, threads: threading.Semaphore
) -> HttpReply:
    """Run one :class:`_Exchange` in a daemon thread holding a ``threads`` slot.

    The caller waits at most ``timeout_s + WEBHOOK_GRACE_S``; past that, or when
    cancelled, the exchange is aborted and the thread abandoned (it releases its
    slot when it ends).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[tuple[Any, BaseException | None]] = loop.create_future()
    exchange = _Exchange(url, data, timeout_s)

    def settle(result: tuple[Any, BaseException | None]) -> None:
        if not future.done():
            future.set_result(result)

    def work() -> None:
        try:
            result: tuple[Any, BaseException | None] = (exchange.run(), None)
        except BaseException as exc:  # handed to the loop, raised there
            result = (None, exc)
        finally:
            threads.release()
        with contextlib.suppress(RuntimeError):  # loop closed: nobody waits
            loop.call_soon_threadsafe(settle, result)

    host = urllib.parse.urlsplit(url).hostname or "?"
    try:
        threading.Thread(
            target=work, name=f"alerts-webhook-{host}", daemon=True
        ).start()
    except RuntimeError as exc:
        threads.release()
        raise OSError(f"cannot start a webhook thread: {exc}") from None
    try:
        reply, error = await asyncio.wait_for(
            asyncio.shield(future), timeout_s + WEBHOOK_GRACE_S
        )
    except BaseException:  # timed out or cancelled: cut the exchange
        exchange.abort()
        raise
    if error is not None:
        raise error
    return reply


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    """How a webhook call went.

    Attributes
    ----------
    status : ``sent`` (a 2xx answer), ``failed`` (an error answer, a redirect, no
        answer by the deadline) or ``dropped`` (not tried: the endpoint's queue was
        full).
    tries : attempts made (0 when dropped).
    detail : what happened, e.g. ``"HTTP 200"``, ``"HTTP 500 after 3 tries"``,
        ``"no answer within 3 s after 3 tries"``, ``"redirect (HTTP 302) to
        https://example.com not followed (not retried)"``, ``"endpoint busy: 8
        deliveries to example.com:443 already queued"``.
    """

    status: Literal["sent", "failed", "dropped"]
    tries: int
    detail: str


def _retryable(code: int) -> bool:
    return code >= 500 or code in (408, 429)


def _redirect_text(code: int, location: str | None) -> str:
    """``redirect (HTTP 302) to https://host not followed``: only scheme and host
    of the target (its path or query may hold a token)."""
    parts = urllib.parse.urlsplit((location or "").strip())
    host = (parts.hostname or "")[:100].encode("ascii", "backslashreplace").decode()
    scheme = "".join(c for c in parts.scheme.lower()[:20] if c.isalnum() or c in "+.-")
    where = f"{scheme}://{host}" if host else "another path"
    return f"redirect (HTTP {code}) to {where} not followed"


def _error_text(exc: BaseException, timeout_s: float) -> str:
    """What went wrong with one try, at most 200 characters (an error may quote
    what the server sent)."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) or "timed out" in reason:
        return f"no answer within {timeout_s:g} s"
    return reason if len(reason) <= 200 else reason[:197] + "..."


async def deliver_webhook(
    url: str,
    body: dict[str, Any],
    *,
    tries: int = WEBHOOK_TRIES,
    timeout_s: float = WEBHOOK_TIMEOUT_S,
    backoff_s: float = WEBHOOK_BACKOFF_S,
    limiter: WebhookLimiter | None = None,
) -> WebhookOutcome:
    """POST a webhook from a daemon thread, retrying with exponential backoff.

    Each try has ONE deadline of ``timeout_s`` for the whole exchange (see
    :func:`post_json`); a network error, no answer by the deadline, HTTP 5xx, 408
    or 429 is retried after ``backoff_s * 2**(try - 1)`` seconds; other answers are
    final, a redirect included (never followed: its target could be any scheme or
    host). Time spent waiting behind the endpoint's previous delivery is not
    counted. With ``limiter`` (a monitor's), a delivery to an endpoint that has
    ``limiter.queue`` deliveries already is dropped at once (status ``dropped``).
    The event loop is never blocked.
    """
    limiter = WebhookLimiter() if limiter is None else limiter
    key, label = endpoint_of(url)
    if not limiter.enter(key):
        detail = f"endpoint busy: {limiter.queue} deliveries to {label} already queued"
        log.warning("webhook dropped: %s", detail)
        return WebhookOutcome("dropped", 0, detail)
    try:
        data = json.dumps(body, allow_nan=False).encode("utf-8")
        return await _deliver(limiter, key, url, data, tries, timeout_s, backoff_s)
    finally:
        limiter.leave(key)


async def _deliver(
    limiter: WebhookLimiter,
    key: str,
    url: str,
    data: bytes,
    tries: int,
    timeout_s: float,
    backoff_s: float,
) -> WebhookOutcome:
    """The tries of :func:`deliver_webhook` for an admitted delivery."""
    detail = "not tried"
    for attempt in range(1, tries + 1):
        try:
            reply = await limiter.post(key, url, data, timeout_s)
        except (TimeoutError, OSError, ValueError, http.client.HTTPException) as exc:
            detail = _error_text(exc, timeout_s)
        else:
            code = reply.status
            if 200 <= code < 300:
                where = "" if attempt == 1 else f" on try {attempt}"
                return WebhookOutcome("sent", attempt, f"HTTP {code}{where}")
            detail = f"HTTP {code}"
            if 300 <= code < 400 and reply.location:
                detail = _redirect_text(code, reply.location)
            if not _retryable(code):
                return WebhookOutcome("failed", attempt, f"{detail} (not retried)")
        # %r: an error text from the network (CR/LF, escapes) stays on one line
        log.warning("webhook try %d/%d failed: %r", attempt, tries, detail)
        if attempt < tries:
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    suffix = "try" if tries == 1 else "tries"
    return WebhookOutcome("failed", tries, f"{detail} after {tries} {suffix}")


# -------------------------------------------------------------------------- monitor


@dataclass(frozen=True, slots=True)
class FiredAlert:
    """One firing produced by :meth:`AlertMonitor.evaluate_once`.

    Attributes
    ----------
    rule : the rule that fired.
    fired_ms : evaluation time it fired at, ms since the epoch UTC.
    value : the metric value.
    snapshot : prices, beta, spread, z at that time (see :func:`build_snapshot`).
    event_id : row id in ``alert_events`` once stored, None while storing failed
        (it is retried on the next evaluation, and notified only once stored).
    """

    rule: AlertRule
    fired_ms: int
    value: float
    snapshot: dict[str, Any]
    event_id: int | None = None


MAX_PENDING_EVENTS = 1000  # firings kept in memory while the database is unwritable


class AlertMonitor:
    """Evaluates every enabled rule once per second and stores and notifies firings.

    Run it inside the ingestion service, which starts it only while this process
    holds the writer lease (so two dashboards never fire one rule twice)::

        monitor = AlertMonitor()
        service = IngestionService(config, tasks=[monitor.run])

    Each second it reloads the enabled rules (a cheap read), computes the metrics of
    each distinct ``PairParams`` in a worker thread (:func:`compute_metrics`; the
    ADF/Engle-Granger part only when a bar closed), steps each rule
    (:func:`step`), stores each firing in ``alert_events`` and only then starts its
    webhook as a separate task (:func:`deliver_webhook`): each endpoint has its own
    queue (one request at a time, at most ``webhook_queue`` deliveries, the rest
    dropped with a record), each try one deadline, and the HTTP calls run in daemon
    threads (at most ``webhook_max_threads``), so a slow, dripping or dead webhook
    delays neither ingestion, nor other endpoints, nor a shutdown. The outcome is
    recorded on the event (``sent``/``failed``/``dropped`` with a detail; ``none``
    without a webhook).

    Events are written through a second connection owned by one dedicated thread
    (``storage.Writer`` with a longer busy timeout): the service does not expose its
    writer, and a lock wait must never happen on the receive loop (decision 11).

    Parameters
    ----------
    db_path : database to watch; None takes ``service.config.db_path`` in :meth:`run`.
    period_s : seconds between evaluations.
    clock : returns the time in ms since the epoch UTC (injectable for tests).
    webhook_tries, webhook_timeout_s, webhook_backoff_s : see :func:`deliver_webhook`.
    webhook_queue : deliveries per endpoint in flight or waiting; more are dropped.
    webhook_max_threads : webhook HTTP threads at once over all endpoints.
    busy_timeout_ms : lock wait of the event writer connection (in its own thread).
    """

    def __init__(
        self,
        db_path: str | Path | None = None,
        *,
        period_s: float = 1.0,
        clock: Callable[[], int] = storage.now_ms,
        webhook_tries: int = WEBHOOK_TRIES,
        webhook_timeout_s: float = WEBHOOK_TIMEOUT_S,
        webhook_backoff_s: float = WEBHOOK_BACKOFF_S,
        webhook_queue: int = WEBHOOK_QUEUE,
        webhook_max_threads: int = WEBHOOK_MAX_THREADS,
        busy_timeout_ms: int = 2_000,
    ) -> None:
        if not (isinstance(period_s, int | float) and 0 < period_s < math.inf):
            raise ValueError(f"period_s must be a number > 0, got {period_s!r}")
        for name, count in (
            ("webhook_tries", webhook_tries),
            ("webhook_queue", webhook_queue),
            ("webhook_max_threads", webhook_max_threads),
        ):
            if isinstance(count, bool) or not (isinstance(count, int) and count >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {count!r}")
        self.db_path = None if db_path is None else storage.as_target(db_path)
        self.period_s = float(period_s)
        self._clock = clock
        self._tries = webhook_tries
        self._timeout_s = float(webhook_timeout_s)
        self._backoff_s = float(webhook_backoff_s)
        self._webhook_queue = webhook_queue
        self._webhook_threads = threading.BoundedSemaphore(webhook_max_threads)
        self._limiter: WebhookLimiter | None = None
        self._busy_timeout_ms = busy_timeout_ms
        self._cache = MetricsCache()
        self._states: dict[int, RuleState] = {}
        self._states_view: dict[int, RuleState] = {}
        self._restored: dict[int, int | None] = {}
        self._pending: list[FiredAlert] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._compute_pool: ThreadPoolExecutor | None = None
        self._db_pool: ThreadPoolExecutor | None = None
        self._writer: storage.Writer | None = None
        self._gather_lock = threading.Lock()
        self.evaluations = 0
        self.last_error: str | None = None
        self.last_metrics: dict[str, dict[str, float | None]] = {}

    # ------------------------------------------------------------------ public

    def rule_states(self) -> dict[int, RuleState]:
        """Current state per enabled rule id (a copy; safe from any thread)."""
        return dict(self._states_view)

    @property
    def cache(self) -> MetricsCache:
        """The closed-bar cache (``computations`` counts pair analytics runs)."""
        return self._cache

    async def run(self, service: Any = None) -> None:
        """Evaluate every ``period_s`` until cancelled (an ``IngestionService`` task).

        ``service`` supplies ``config.db_path`` when the monitor has no ``db_path``.
        Errors of one evaluation are logged and kept in ``last_error``; the loop goes
        on. On cancellation the webhook tasks still running are cancelled (their
        events keep the status ``pending``, their HTTP threads are aborted and
        abandoned: daemon threads, never waited for) and the threads are released.
        """
        if self.db_path is None:
            if service is None:
                raise ValueError("db_path: give a db_path or a service with a config")
            self.db_path = storage.as_target(service.config.db_path)
        loop = asyncio.get_running_loop()
        try:
            while True:
                began = loop.time()
                try:
                    await self.evaluate_once()
                except Exception as exc:  # keep monitoring whatever one pass did
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("alert evaluation failed")
                await asyncio.sleep(max(0.0, self.period_s - (loop.time() - began)))
        finally:
            await self.aclose()

    async def evaluate_once(self, now_ms: int | None = None) -> list[FiredAlert]:
        """Evaluate every enabled rule once; store, then notify, what fired.

        Returns the firings of this pass (stored ones carry their ``event_id``).
        """
        self._require_db()
        now = int(self._clock() if now_ms is None else now_ms)
        loop = asyncio.get_running_loop()
        rules, metrics = await loop.run_in_executor(
            self._pool("compute"), self._gather, now
        )
        fired: list[FiredAlert] = []
        seen: set[int] = set()
        for rule in rules:
            if rule.id is None:  # loaded rules always have ids
                continue
            seen.add(rule.id)
            state = self._states.get(rule.id)
            if state is None:
                state = RuleState(last_fired_ms=self._restored.get(rule.id))
            values = metrics.get(rule.params.to_json(), {})
            value = values.get(rule.expr.key)
            result = step(rule, state, value, now)
            self._states[rule.id] = result.state
            if result.fired and value is not None:
                snapshot = build_snapshot(rule, values, value)
                fired.append(FiredAlert(rule, now, float(value), snapshot))
        for rule_id in set(self._states) - seen:
            del self._states[rule_id]
            self._restored.pop(rule_id, None)  # reloaded if it comes back
        self._states_view = dict(self._states)
        self.evaluations += 1
        self._pending.extend(fired)
        if len(self._pending) > MAX_PENDING_EVENTS:
            dropped = len(self._pending) - MAX_PENDING_EVENTS
            del self._pending[:dropped]
            log.error("%d unstored alert events dropped (database unwritable)", dropped)
        stored = await self._store_pending(loop)
        by_key = {(f.rule.id, f.fired_ms): f for f in stored}
        return [by_key.get((f.rule.id, f.fired_ms), f) for f in fired]

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until the webhook tasks started so far have finished (for tests)."""
        tasks = set(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def aclose(self) -> None:
        """Cancel webhook tasks, close the event writer, release the threads.

        Never waits for a webhook: its task is cancelled, its exchange aborted.
        """
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._db_pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(
                    self._db_pool, self._close_writer
                )
        self._limiter = None  # bound to this loop; a restart makes a new one
        for name in ("_compute_pool", "_db_pool"):
            pool = getattr(self, name)
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
                setattr(self, name, None)

    # ------------------------------------------------------------------ threads

    def _require_db(self) -> Path:
        """The database path, or ValueError when neither given nor taken from run()."""
        if self.db_path is None:
            raise ValueError("db_path: the monitor has no database (give db_path)")
        return self.db_path

    def _pool(self, kind: str) -> ThreadPoolExecutor:
        """The executor of one kind, created on first use."""
        name = f"_{kind}_pool"
        pool = getattr(self, name)
        if pool is None:
            pool = ThreadPoolExecutor(1, thread_name_prefix=f"alerts-{kind}")
            setattr(self, name, pool)
        return pool

    def _gather(
        self, now_ms: int
    ) -> tuple[list[AlertRule], dict[str, dict[str, float | None]]]:
        """Worker thread: load the enabled rules and compute their metrics."""
        with self._gather_lock:  # a cancelled run's thread may still be finishing
            return self._gather_locked(now_ms)

    def _gather_locked(
        self, now_ms: int
    ) -> tuple[list[AlertRule], dict[str, dict[str, float | None]]]:
        """Body of :meth:`_gather`, under its lock."""
        db_path = self._require_db()
        rules = load_rules(db_path, enabled_only=True)
        for rule in rules:
            if rule.id is not None and rule.id not in self._restored:
                self._restored[rule.id] = _last_fired_ms(db_path, rule.id)
        groups: dict[str, tuple[PairParams, set[str]]] = {}
        for rule in rules:
            params, symbols = groups.setdefault(
                rule.params.to_json(), (rule.params, set())
            )
            if rule.expr.symbol is not None:
                symbols.add(rule.expr.symbol)
        metrics: dict[str, dict[str, float | None]] = {}
        symbol_keys: set[tuple[str, int]] = set()
        for key, (params, symbols) in groups.items():
            try:
                metrics[key] = compute_metrics(
                    db_path, params, now_ms, self._cache, symbols=sorted(symbols)
                )
            except Exception as exc:  # one bad pair must not stop the others
                self.last_error = (
                    f"metrics for {params.symbol_y}/{params.symbol_x}: {exc}"
                )
                log.exception("alert metrics failed for %s", key)
                metrics[key] = {}
            for sym in {params.symbol_y, params.symbol_x, *symbols}:
                symbol_keys.add((sym, params.interval_s))
        self._cache.retain(set(groups), symbol_keys)
        self.last_metrics = metrics
        return rules, metrics

    def _writer_conn(self) -> storage.Writer:
        """DB thread: the event writer connection, opened on first use."""
        if self._writer is None:
            self._writer = storage.Writer(
                self._require_db(), busy_timeout_ms=self._busy_timeout_ms
            )
        return self._writer

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _store(self, alert: FiredAlert) -> tuple[int, bool]:
        """DB thread: insert one event (and mark it 'none' when it has no webhook).

        Returns the event id and whether this call stored it. A firing already
        stored (its store ran on in this thread after the run was cancelled, and
        the restarted run retried it) keeps its one row and is not notified again.
        """
        writer = self._writer_conn()
        snapshot_json = json.dumps(alert.snapshot, allow_nan=False, sort_keys=True)
        event_id, new = writer.add_alert_event_once(
            int(alert.rule.id or 0),
            alert.fired_ms,
            _json_number(alert.value),
            snapshot_json,
        )
        if new and not alert.rule.webhook_url:
            writer.update_alert_event_notification(event_id, "none", "no webhook")
        return event_id, new

    def _record(self, event_id: int, outcome: WebhookOutcome) -> None:
        """DB thread: record a webhook outcome on its event."""
        self._writer_conn().update_alert_event_notification(
            event_id, outcome.status, outcome.detail
        )

    # ------------------------------------------------------------------ loop side

    async def _store_pending(self, loop: asyncio.AbstractEventLoop) -> list[FiredAlert]:
        """Store the pending firings in order; notify each once it is stored."""
        stored: list[FiredAlert] = []
        while self._pending:
            alert = self._pending[0]
            try:
                event_id, new = await loop.run_in_executor(
                    self._pool("db"), self._store, alert
                )
            except storage.StorageError as exc:
                self.last_error = f"storing alert event failed: {exc}"
                log.warning("%s (kept, retried next second)", self.last_error)
                break
            self._pending.pop(0)
            done = replace(alert, event_id=event_id)
            stored.append(done)
            if not new:
                log.info(
                    "alert %s at %d was already stored", alert.rule.id, alert.fired_ms
                )
                continue
            log.info(
                "alert %s fired: %s = %s",
                alert.rule.id,
                alert.rule.expr.key,
                alert.value,
            )
            if alert.rule.webhook_url:
                task = asyncio.create_task(
                    self._notify(done), name=f"alert-webhook-{event_id}"
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return stored

    def _webhook_limiter(self) -> WebhookLimiter:
        """Loop side: this run's per-endpoint queues (threads bounded across runs)."""
        if self._limiter is None:
            self._limiter = WebhookLimiter(self._webhook_queue, self._webhook_threads)
        return self._limiter

    async def _notify(self, alert: FiredAlert) -> None:
        """Call the rule's webhook and record the outcome on the event."""
        rule, event_id = alert.rule, int(alert.event_id or 0)
        body = webhook_body(rule, event_id, alert.fired_ms, alert.value, alert.snapshot)
        outcome = await deliver_webhook(
            rule.webhook_url or "",
            body,
            tries=self._tries,
            timeout_s=self._timeout_s,
            backoff_s=self._backoff_s,
            limiter=self._webhook_limiter(),
        )
        loop = asyncio.get_running_loop()
        for attempt in range(5):
            try:
                await loop.run_in_executor(
                    self._pool("db"), self._record, event_id, outcome
                )
                return
            except storage.StorageError as exc:
                log.warning(
                    "recording webhook outcome failed (%d/5): %s", attempt + 1, exc
                )
                await asyncio.sleep(0.5)


def _last_fired_ms(db_path: str | Path, rule_id: int) -> int | None:
    """Newest stored firing of a rule (restores its cooldown after a restart)."""
    frame = storage.list_alert_events(db_path, rule_id=rule_id, limit=1)
    return None if frame.empty else int(frame["fired_ms"].iloc[0])


# ------------------------------------------------------------------------------ CLI

HISTORY_SNAPSHOT_COLUMNS: tuple[str, ...] = (
    "pair",
    "interval",
    "price_y",
    "price_x",
    "beta",
    "spread",
    "z",
)
HISTORY_LIMIT = 100_000  # events in one history export (the dashboard's download)


def _snapshot_dict(text: Any) -> dict[str, Any]:
    """A stored snapshot JSON as a dict ({} when missing or not an object)."""
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def history_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Alert events (``storage.list_alert_events``) flattened for a table or CSV.

    Columns ``id, fired`` (UTC datetime), ``rule_id, rule, value, pair, interval,
    price_y, price_x, beta, spread, z, notification, detail`` (the dashboard's
    alert history download).
    """
    snaps = [_snapshot_dict(text) for text in events["snapshot_json"]]
    fired_ms = events["fired_ms"].to_numpy(dtype="int64")
    out = pd.DataFrame(
        {
            "id": events["id"].to_numpy(),
            "fired": pd.to_datetime(fired_ms, unit="ms", utc=True),
            "rule_id": events["rule_id"].to_numpy(),
            "rule": events["rule_text"].to_numpy(),
            "value": events["value"].to_numpy(),
        }
    )
    for col in HISTORY_SNAPSHOT_COLUMNS:
        out[col] = [snap.get(col) for snap in snaps]
    out["notification"] = events["notify_status"].to_numpy()
    out["detail"] = events["notify_detail"].to_numpy()
    return out


def rule_summary(rule: AlertRule) -> str:
    """``abs(z) >= 2.5 on BTCUSDT/ETHUSDT 1m, window 60``: what a rule watches."""
    p = rule.params
    return f"{rule.expr.text} on {rule.pair} {p.interval}, window {p.window}"


def _webhook_label(rule: AlertRule) -> str:
    """``slack hooks.slack.com``: a webhook's format and host (never its token)."""
    if not rule.webhook_url:
        return "-"
    host = urllib.parse.urlsplit(rule.webhook_url).hostname or "?"
    return f"{rule.webhook_format} {host}"


def _cli_db(setting: str, *, must_exist: bool) -> Path | str:
    """The ``--db`` setting as a storage target; ValueError for a missing file."""
    target = storage.as_target(setting)
    if must_exist and not storage.db_exists(target):
        raise ValueError(f"db: no database at {target}")
    return target


def _cli_fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _cli_add(args: argparse.Namespace) -> int:
    """``alerts add RULE``: validate like the dashboard's rule editor, then store."""
    try:
        params = PairParams(
            symbol_y=args.y, symbol_x=args.x, interval=args.interval, window=args.window
        )
        rule = AlertRule.create(
            args.rule,
            params,
            cooldown_s=args.cooldown,
            webhook_url=args.webhook,
            webhook_format=args.webhook_format,
            created_ms=storage.now_ms(),
        )
        db = _cli_db(args.db, must_exist=False)
    except RuleError as exc:
        pointer = "" if exc.position is None else "\n" + exc.pointer(args.rule)
        return _cli_fail(f"{exc}{pointer}".replace("\n", "\n  "))
    except ValueError as exc:
        return _cli_fail(str(exc))
    try:
        with storage.Writer(db) as writer:
            saved = save_rule(writer, rule)
    except storage.StorageError as exc:
        return _cli_fail(f"could not save the rule: {exc}", 1)
    print(f"Rule #{saved.id} added: {rule_summary(saved)}")
    return 0


def _cli_list(args: argparse.Namespace) -> int:
    """``alerts list``: the stored rules, as the dashboard lists them."""
    try:
        rules = load_rules(_cli_db(args.db, must_exist=True))
    except (ValueError, storage.StorageError) as exc:
        return _cli_fail(str(exc))
    if not rules:
        print("no alert rules")
        return 0
    print("id\tstate\trule\tpair\tinterval\twindow\tcooldown_s\twebhook")
    for r in rules:
        state = "enabled" if r.enabled else "disabled"
        print(
            f"{r.id}\t{state}\t{r.expr.text}\t{r.pair}\t{r.params.interval}\t"
            f"{r.params.window}\t{r.cooldown_s:g}\t{_webhook_label(r)}"
        )
    return 0


def _cli_history(args: argparse.Namespace) -> int:
    """``alerts history``: the event history as CSV (formula-like cells escaped)."""
    import datafiles  # the CSV writer shared with every other export

    try:
        db = _cli_db(args.db, must_exist=True)
        events = storage.list_alert_events(db, limit=HISTORY_LIMIT)
    except (ValueError, storage.StorageError) as exc:
        return _cli_fail(str(exc))
    data = datafiles.frame_to_csv_bytes(history_frame(events))
    if args.out is None or str(args.out) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(data)
    except OSError as exc:
        return _cli_fail(f"out: cannot write {args.out}: {exc}", 1)
    print(f"wrote {len(events)} alert events to {args.out}", file=sys.stderr)
    return 0


def _cli_change(args: argparse.Namespace) -> int:
    """``alerts delete|enable|disable ID``: one stored rule, by id."""
    action = args.alerts_command
    try:
        db = _cli_db(args.db, must_exist=True)
        with storage.Writer(db) as writer:
            if action == "delete":
                if not writer.delete_alert_rule(args.id):
                    raise ValueError(f"rule_id: no alert rule with id {args.id!r}")
            else:
                writer.set_alert_rule_enabled(args.id, action == "enable")
    except ValueError as exc:
        return _cli_fail(str(exc))
    except storage.StorageError as exc:
        return _cli_fail(f"could not change rule #{args.id}: {exc}", 1)
    print(f"Rule #{args.id} {action}d.")
    return 0


def _add_rule_arguments(add: argparse.ArgumentParser) -> None:
    """The arguments of ``alerts add``: the rule and its settings."""
    defaults = PairParams()
    add.add_argument("rule", metavar="RULE", help="METRIC OP NUMBER")
    add.add_argument("--webhook", default=None, metavar="URL", help="http(s) URL")
    add.add_argument(
        "--webhook-format",
        default="json",
        metavar="FORMAT",
        help="json (default), slack, discord or telegram",
    )
    add.add_argument(
        "--cooldown",
        type=float,
        default=DEFAULT_COOLDOWN_S,
        metavar="SECONDS",
        help=f"least time between two firings (default {DEFAULT_COOLDOWN_S:g})",
    )
    for leg in ("y", "x"):
        add.add_argument(
            f"--{leg}",
            default=getattr(defaults, f"symbol_{leg}"),
            metavar="SYMBOL",
            help=f"the pair's {leg} leg (default {getattr(defaults, f'symbol_{leg}')})",
        )
    add.add_argument(
        "--interval", default=defaults.interval, help="bar interval (default 1m)"
    )
    add.add_argument(
        "--window",
        type=int,
        default=defaults.window,
        metavar="BARS",
        help=f"rolling window in bars (default {defaults.window})",
    )


def add_cli_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``alerts add|list|history|delete|enable|disable`` on a CLI.

    ``alerts add RULE [--webhook URL] [--webhook-format F] [--cooldown S] [--y SYM
    --x SYM] [--interval 1m] [--window N] --db DB`` validates exactly as the
    dashboard's rule editor (:meth:`AlertRule.create`) and stores through the same
    ``storage.Writer``; a refused rule or an unknown id exits 2 with the reason on
    stderr. ``--db`` is a SQLite path, ``sqlite:///PATH`` or ``postgresql://...``.
    """
    p = subparsers.add_parser(
        "alerts", help="alert rules and their history, without a browser"
    )
    sub = p.add_subparsers(dest="alerts_command", required=True)
    db_help = "SQLite file, sqlite:///PATH or postgresql://USER@HOST:PORT/DB"

    def command(
        name: str, help_text: str, func: Callable[..., int]
    ) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text)
        c.add_argument("--db", default=str(storage.DEFAULT_DB_PATH), help=db_help)
        c.set_defaults(func=func)
        return c

    _add_rule_arguments(command("add", "add a rule, e.g. 'abs(z) >= 2.5'", _cli_add))
    command("list", "list the rules", _cli_list)
    history = command("history", "alert events as CSV", _cli_history)
    history.add_argument("--out", type=Path, default=None, help="CSV ('-': stdout)")
    for name in ("delete", "enable", "disable"):
        command(name, f"{name} a rule", _cli_change).add_argument("id", type=int)
