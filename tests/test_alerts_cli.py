"""``python ingestion.py alerts ...``: alert rules and history without a browser.

Every command runs as a real process on a real database (a SQLite file in
tmp_path; PostgreSQL when the throw-away cluster of ``pg_fixture`` can start).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import alerts
import storage
from alerts import AlertRule, RuleError
from analytics import PairParams

REPO = Path(__file__).resolve().parent.parent
SLACK = "https://hooks.slack.com/services/T000/B000/SECRETTOKEN"


def run_alerts(*args: str, text: bool = True) -> subprocess.CompletedProcess:
    """``python ingestion.py alerts ARGS`` in the repository, bounded in time."""
    return subprocess.run(
        [sys.executable, str(REPO / "ingestion.py"), "alerts", *args],
        cwd=REPO,
        capture_output=True,
        text=text,
        timeout=60,
    )


def test_cli_add_stores_a_rule_the_dashboard_lists(db_path):
    """A rule added by the CLI is read back by ``alerts.load_rules`` (the dashboard's
    rules list) with every setting, and ``alerts list`` shows it without the
    webhook's token."""
    added = run_alerts(
        "add",
        "ABS(Z) >= 2.5",
        "--db",
        str(db_path),
        "--webhook",
        SLACK,
        "--webhook-format",
        "slack",
        "--cooldown",
        "30",
        "--y",
        "solusdt",
        "--x",
        "ETHUSDT",
        "--interval",
        "5m",
        "--window",
        "30",
    )
    assert added.returncode == 0, added.stderr
    assert (
        added.stdout
        == "Rule #1 added: abs(z) >= 2.5 on SOLUSDT/ETHUSDT 5m, window 30\n"
    )
    (rule,) = alerts.load_rules(db_path)
    params = PairParams(symbol_y="SOLUSDT", interval="5m", window=30)
    assert rule.expr == alerts.parse_rule("abs(z) >= 2.5") and rule.params == params
    assert (rule.cooldown_s, rule.webhook_url, rule.webhook_format) == (
        30.0,
        SLACK,
        "slack",
    )
    assert rule.enabled and rule.created_ms > 0
    listed = run_alerts("list", "--db", str(db_path))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "id\tstate\trule\tpair\tinterval\twindow\tcooldown_s\twebhook",
        "1\tenabled\tabs(z) >= 2.5\tSOLUSDT/ETHUSDT\t5m\t30\t30\tslack hooks.slack.com",
    ]


def _library_message(text: str, **settings) -> str:
    """The message the rule editor shows for these settings (AlertRule.create)."""
    symbols = {k: settings.pop(k) for k in ("symbol_y", "interval") if k in settings}
    with pytest.raises((RuleError, ValueError)) as caught:
        AlertRule.create(text, PairParams(**symbols), **settings)
    return str(caught.value)


REFUSED = [
    # CLI arguments, library settings, the message both give
    (
        ["z > 2; drop table"],
        {},
        r"^at position 6: expected end of rule, got ';'$",
    ),
    (
        ["__import__('os').system('x')"],
        {},
        r"^at position 1: unknown metric '__import__'; valid metrics: z, abs\(z\)",
    ),
    (
        ["z > 2", "--webhook", "ftp://example.com/x"],
        {"webhook_url": "ftp://example.com/x"},
        r"^webhook_url must start with http:// or https://, got 'ftp://example.com/x'$",
    ),
    (
        ["z > 2", "--webhook-format", "xml"],
        {"webhook_format": "xml"},
        r"^webhook_format must be one of json, slack, discord, telegram, got 'xml'$",
    ),
    (
        ["z > 2", "--cooldown", "nan"],
        {"cooldown_s": float("nan")},
        r"^cooldown_s must be a finite number of seconds >= 0, got nan$",
    ),
    (
        ["z > 2", "--y", "btc/usdt"],
        {"symbol_y": "btc/usdt"},
        r"^symbol_y: symbol must be 2-20 letters or digits",
    ),
    (["z > 2", "--interval", "7q"], {"interval": "7q"}, r"^interval: "),
]


@pytest.mark.parametrize(("cli_args", "settings", "message"), REFUSED)
def test_cli_add_refuses_like_the_rule_editor(db_path, cli_args, settings, message):
    """A refused rule exits 2 with the rule editor's own message on stderr (and a
    caret under the offending position) and stores nothing."""
    expected = _library_message(cli_args[0], **settings)
    assert re.search(message, expected)
    done = run_alerts("add", *cli_args, "--db", str(db_path))
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"error: {expected}"
    if expected.startswith("at position 6"):
        assert lines[1:] == ["  z > 2; drop table", "       ^"]
    assert alerts.load_rules(db_path) == []


def test_cli_enable_disable_delete_and_unknown_ids(db_path):
    """enable/disable/delete change what the monitor loads; an unknown id exits 2
    with a message."""
    with storage.Writer(db_path) as writer:
        for text in ("z > 2", "BTCUSDT.price > 90000"):
            alerts.save_rule(writer, AlertRule.create(text, PairParams()))
    db = str(db_path)
    steps = [
        (("disable", "1"), "Rule #1 disabled.\n", [2]),
        (("enable", "1"), "Rule #1 enabled.\n", [1, 2]),
        (("delete", "2"), "Rule #2 deleted.\n", [1]),
    ]
    for args, out, enabled in steps:
        done = run_alerts(*args, "--db", db)
        assert (done.returncode, done.stdout) == (0, out), done.stderr
        assert [r.id for r in alerts.load_rules(db_path, enabled_only=True)] == enabled
    for action in ("delete", "disable"):
        done = run_alerts(action, "2", "--db", db)
        assert done.returncode == 2
        assert done.stderr == "error: rule_id: no alert rule with id 2\n"
    assert [r.id for r in alerts.load_rules(db_path)] == [1]


def test_cli_on_a_missing_database_exits_2_and_creates_nothing(tmp_path):
    """list (a read) and enable (a write) on a missing file exit 2 saying so and
    do not create it."""
    missing = tmp_path / "none.db"
    for args in (("list",), ("enable", "1")):
        done = run_alerts(*args, "--db", str(missing))
        assert done.returncode == 2
        assert done.stderr == f"error: db: no database at {missing}\n"
    assert not missing.exists()


HOSTILE = ['=HYPERLINK("http://x")', "+1+1", "-1+2", "@SUM(A1)", "\tx", "\rx"]


def _seed_events(db_path: Path) -> int:
    """One rule and one event per hostile notify detail (value -2.5, negative)."""
    with storage.Writer(db_path) as writer:
        rule = alerts.save_rule(writer, AlertRule.create("z < -2", PairParams()))
        snapshot = json.dumps({"pair": "BTCUSDT/ETHUSDT", "interval": "1m", "z": -2.5})
        for i, detail in enumerate(HOSTILE):
            event = writer.add_alert_event(
                rule.id, 1_700_000_000_000 + i, -2.5, snapshot
            )
            writer.update_alert_event_notification(event, "failed", detail)
    return int(rule.id)


def test_cli_history_writes_csv_with_formula_cells_escaped(db_path, tmp_path):
    """``alerts history --out`` writes every event with text cells starting with
    = + - @ tab or CR prefixed by a quote, numbers untouched; without --out, to
    stdout."""
    rule_id = _seed_events(db_path)
    out = tmp_path / "hist" / "alerts.csv"
    done = run_alerts("history", "--db", str(db_path), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"wrote {len(HOSTILE)} alert events to {out}\n"
    with out.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "id",
        "fired",
        "rule_id",
        "rule",
        "value",
        "pair",
        "interval",
        "price_y",
        "price_x",
        "beta",
        "spread",
        "z",
        "notification",
        "detail",
    ]
    # a bare CR is written as a quoted line feed, so the row stays whole
    hostile = [*HOSTILE[:-1], "\nx"]
    assert sorted(r["detail"] for r in rows) == sorted("'" + d for d in hostile)
    assert {(r["rule_id"], r["rule"], r["value"], r["z"]) for r in rows} == {
        (str(rule_id), "z < -2", "-2.5", "-2.5")
    }
    assert rows[-1]["fired"] == "2023-11-14T22:13:20.000Z"
    stdout = run_alerts("history", "--db", str(db_path), text=False)
    assert stdout.returncode == 0 and stdout.stdout == out.read_bytes()


def test_cli_alerts_on_postgresql(pg_url):
    """add, list, disable and history work on a postgresql:// URL, and the rule is
    what ``alerts.load_rules`` reads there."""
    added = run_alerts("add", "eg_p < 0.05", "--db", pg_url, "--cooldown", "5")
    assert added.returncode == 0, added.stderr
    (rule,) = alerts.load_rules(pg_url)
    assert (rule.expr.text, rule.cooldown_s, rule.enabled) == ("eg_p < 0.05", 5.0, True)
    listed = run_alerts("list", "--db", pg_url)
    assert listed.stdout.splitlines()[1].startswith(f"{rule.id}\tenabled\teg_p < 0.05")
    assert run_alerts("disable", str(rule.id), "--db", pg_url).returncode == 0
    assert alerts.load_rules(pg_url, enabled_only=True) == []
    history = run_alerts("history", "--db", pg_url)
    assert history.returncode == 0 and history.stdout.startswith("id,fired,rule_id,")
    unknown = run_alerts("delete", "999", "--db", pg_url)
    assert (unknown.returncode, unknown.stderr) == (
        2,
        "error: rule_id: no alert rule with id 999\n",
    )
