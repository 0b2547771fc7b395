"""Helpers shared by the benchmarks: timing, the row format, the CPU probe, RSS, table.

Row format (what every ``bench_*.run(quick) -> list[dict]`` returns)::

    {"key": stable id, "what": text, "unit": "ms" | "ticks/s" | "rows/s" | "MB" | ...,
     "median": float, "min": float, "max": float, "runs": int,
     "baseline_key": key or None, "ratio": median / baseline median or None,
     "target": optional text, "met": optional bool, "note": optional text}
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def timed_ms(fn: Callable[[], object], runs: int, *, warmup: int = 0) -> list[float]:
    """Wall time in ms of ``runs`` calls of `fn` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def row(
    key: str,
    what: str,
    unit: str,
    values: Sequence[float],
    baseline: dict | None = None,
    *,
    target: str | None = None,
    met: bool | None = None,
    note: str | None = None,
) -> dict:
    """One result row; ``ratio = median / baseline median`` when a baseline is given."""
    if not values:
        raise ValueError(f"values: need at least one measurement for {key}, got 0")
    median = float(statistics.median(values))
    out = {
        "key": key,
        "what": what,
        "unit": unit,
        "median": median,
        "min": float(min(values)),
        "max": float(max(values)),
        "runs": len(values),
        "baseline_key": None if baseline is None else baseline["key"],
        "ratio": None
        if baseline is None or not baseline["median"]
        else median / baseline["median"],
    }
    if target is not None:
        out["target"] = target
    if met is not None:
        out["met"] = bool(met)
    if note:
        out["note"] = note
    return out


def ratio_row(
    key: str, what: str, num: dict, den: dict, *, target=None, met=None, note=None
) -> dict:
    """A row holding only the ratio of two rows' medians (unit "x")."""
    r = num["median"] / den["median"] if den["median"] else float("nan")
    out = row(key, what, "x", [r], target=target, met=met, note=note)
    out["baseline_key"] = den["key"]
    out["ratio"] = r
    return out


def cpu_probe(repeats: int = 5) -> dict:
    """A fixed CPU workload timed ``repeats`` times: the machine's noise right now.

    Pure-Python integer loop (2 M iterations) plus a 300x300 numpy matmul and a sort
    of 1 M floats; the spread between min and max (and between the probe before and
    after the run) shows how much other load disturbed the figures.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((300, 300))
    v = rng.random(1_000_000)

    def work() -> None:
        total = 0
        for i in range(2_000_000):
            total += i & 7
        a @ a
        np.sort(v)

    values = timed_ms(work, repeats, warmup=1)
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": repeats,
        "load": os.getloadavg(),
    }


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, read from /proc/PID/status."""
    rss = hwm = float("nan")
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024.0
    return rss, hwm


def fmt_value(value: float | None, unit: str) -> str:
    """A table cell: thousands separators for big values, 3 significant digits else."""
    if value is None:
        return "-"
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if unit == "x" or abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def print_table(rows: Sequence[dict], *, keys: bool = False) -> None:
    """Print rows as one aligned table: what, median, min, max, unit, ratio, target."""
    header = ("what", "median", "min", "max", "unit", "ratio", "target", "met?")
    width = min(72, max([len(r["what"]) for r in rows] + [4]))
    lines = []
    for r in rows:
        ratio = r.get("ratio")
        met = r.get("met")
        lines.append(
            (
                r["what"][:width],
                fmt_value(r["median"], r["unit"]),
                fmt_value(r["min"], r["unit"]),
                fmt_value(r["max"], r["unit"]),
                r["unit"],
                "-" if ratio is None else f"{ratio:.3g}",
                r.get("target") or "",
                "" if met is None else ("yes" if met else "NO"),
            )
        )
    widths = [width] + [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(header)
        if i
    ]
    fmt = "  ".join(
        f"{{:<{w}}}" if i in (0, 4, 6, 7) else f"{{:>{w}}}"
        for i, w in enumerate(widths)
    )
    print(fmt.format(*header))
    print("  ".join("-" * w for w in widths))
    for r, line in zip(rows, lines, strict=True):
        print(fmt.format(*line))
        if keys:
            print(f"    [{r['key']}] {r.get('note') or ''}".rstrip())


def markdown_table(rows: Sequence[dict]) -> str:
    """Rows as a Markdown table (what, median, min, max, unit, ratio, target, met)."""
    out = [
        "| what | median | min | max | unit | ratio | target | met |",
        "|---|---:|---:|---:|---|---:|---|---|",
    ]
    for r in rows:
        ratio = r.get("ratio")
        met = r.get("met")
        cells = (
            r["what"].strip().replace("|", "/"),
            fmt_value(r["median"], r["unit"]),
            fmt_value(r["min"], r["unit"]),
            fmt_value(r["max"], r["unit"]),
            r["unit"],
            "-" if ratio is None else f"{ratio:.3g}",
            (r.get("target") or "").replace("|", "/"),
            "" if met is None else ("yes" if met else "**no**"),
        )
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
