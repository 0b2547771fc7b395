"""Run every benchmark, print one table: ``python bench/run.py [--quick] [--json F]``.

Each benchmark module (``bench/bench_NAME.py``, ``run(quick) -> list[dict]``) runs in
its own subprocess, so that memory and state do not leak from one to the next; its
rows come back through a JSON temp file. BLAS is pinned to one thread
(``OPENBLAS_NUM_THREADS=1`` and friends, set before anything imports numpy, and
inherited by every subprocess). A fixed CPU probe runs before and after: the spread
between the two shows how noisy the machine was during the run.

Options: ``--quick`` (under two minutes on 2 cores: fewer and shorter runs),
``--json FILE`` (machine info, probes and rows with stable keys),
``--only NAME,...`` (a subset of: ingest, refresh, analytics, scanner, unitroot,
storage, import, memory, pg). ``pg`` (PostgreSQL against SQLite) reports nothing,
and says why, where PostgreSQL is not installed.
"""

from __future__ import annotations

import os

for _var in (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _p in (REPO, BENCH):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from _common import cpu_probe, markdown_table, print_table  # noqa: E402

MODULES = (
    "ingest",
    "refresh",
    "analytics",
    "scanner",
    "unitroot",
    "storage",
    "import",
    "memory",
    "pg",
)
TIMEOUT_S = {"quick": 150.0, "full": 600.0}

# Targets from the issue, for rows whose module does not state them itself:
# (key pattern, target text, predicate on the row).
TARGETS: list[tuple[str, str, Callable[[dict], bool]]] = [
    (r"^import\.trades_csv$", ">= 150 000 rows/s", lambda r: r["median"] >= 150_000),
    (
        r"^import\.trades_csv\.peak_rss\.",
        "<= 400 MB",
        lambda r: r["max"] <= 400.0,
    ),
    (
        r"^analytics\..*(5000|5_000|5k)\b(?!.*(share|part))",
        "<= 50 ms",
        lambda r: r["unit"] == "ms" and r["median"] <= 50.0,
    ),
]


def machine_info() -> dict:
    """CPU count and model, load, memory, versions (numpy imported after pinning)."""
    import numpy as np
    import pandas as pd

    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gb": mem_gb,
        "load_avg": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "blas_threads": os.environ["OPENBLAS_NUM_THREADS"],
    }


def _adapt_unitroot(rows: list[dict], quick: bool) -> list[dict]:
    """bench_unitroot's rows (test, n, ours_ms, statsmodels_ms, ...) to the format."""
    from bench_unitroot import _repeats

    out: list[dict] = []
    for r in rows:
        name, n = r["test"], r["n"]
        key = f"unitroot.{name}.{n}"
        base = None
        if r.get("statsmodels_ms") is not None:
            base = {
                "key": f"{key}.statsmodels",
                "what": f"BASELINE statsmodels {name}, {n:,} points",
                "unit": "ms",
                "median": r["statsmodels_ms"],
                "min": r["statsmodels_ms"],
                "max": r["statsmodels_ms"],
                "runs": _repeats(n, True, quick),
                "baseline_key": None,
                "ratio": None,
                "note": "bench_unitroot reports medians only (min = max = median)",
            }
        ours = {
            "key": key,
            "what": f"unitroot {name}, {n:,} points",
            "unit": "ms",
            "median": r["ours_ms"],
            "min": r["ours_ms"],
            "max": r["ours_ms"],
            "runs": _repeats(n, False, quick),
            "baseline_key": None if base is None else base["key"],
            "ratio": None if base is None else r["ours_ms"] / base["median"],
            "note": "bench_unitroot reports medians only (min = max = median)",
        }
        if r.get("stat_rel_diff") is not None:
            same = r["stat_rel_diff"] <= 1e-6 and r.get("lag_equal") in (True, None)
            ours["target"] = "= statsmodels"
            ours["met"] = bool(same)
            ours["note"] = (
                f"statistic rel. diff {r['stat_rel_diff']:.1e}, same lag: "
                f"{r.get('lag_equal')}; " + ours["note"]
            )
        if base is not None:
            out.append(base)
        out.append(ours)
    return out


def _normalise(rows: list[dict]) -> list[dict]:
    """Fill optional fields, and the issue's targets where a module gave none."""
    out = []
    for r in rows:
        r = dict(r)
        r.setdefault("baseline_key", None)
        r.setdefault("ratio", None)
        r.setdefault("runs", 1)
        for field in ("median", "min", "max"):
            r.setdefault(field, float("nan"))
        if "target" not in r:
            for pattern, text, ok in TARGETS:
                if re.search(pattern, r["key"]):
                    r["target"] = text
                    r["met"] = bool(ok(r))
                    break
        out.append(r)
    return out


def child(name: str, quick: bool, out: Path) -> None:
    """Subprocess side: import bench_NAME, run it, write its rows as JSON."""
    import importlib

    mod = importlib.import_module(f"bench_{name}")
    rows = mod.run(quick)
    if name == "unitroot" and rows and "key" not in rows[0]:
        rows = _adapt_unitroot(rows, quick)
    out.write_text(json.dumps(rows))


def run_module(name: str, quick: bool) -> tuple[list[dict], float, str | None]:
    """Run one module in a subprocess: (rows, seconds, error or None)."""
    with tempfile.TemporaryDirectory(prefix=f"bench_{name}-") as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name]
        cmd += ["--out", str(out)] + (["--quick"] if quick else [])
        began = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S["quick" if quick else "full"],
            )
        except subprocess.TimeoutExpired:
            return [], time.perf_counter() - began, "timed out"
        elapsed = time.perf_counter() - began
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return [], elapsed, f"exit {proc.returncode}: " + " | ".join(tail)
        return _normalise(json.loads(out.read_text())), elapsed, None


def _probe_text(p: dict) -> str:
    """One line for a CPU probe."""
    load = ", ".join(f"{x:.2f}" for x in p["load"])
    return (
        f"median {p['median']:.0f} ms (min {p['min']:.0f}, max {p['max']:.0f}, "
        f"{p['runs']} runs), load average {load}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the modules, print the table, write --json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under two minutes")
    parser.add_argument("--json", type=Path, default=None, help="write figures here")
    parser.add_argument("--only", default=None, help="comma-separated module names")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--keys", action="store_true", help="print keys and notes")
    parser.add_argument(
        "--markdown", type=Path, default=None, help="also write the table as Markdown"
    )
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.quick, args.out)
        return 0
    names = MODULES
    if args.only:
        names = tuple(n.strip() for n in args.only.split(",") if n.strip())
        bad = [n for n in names if n not in MODULES]
        if bad:
            parser.error(f"--only: unknown {bad}; choose from {', '.join(MODULES)}")
    mode = "quick" if args.quick else "full"
    began = time.perf_counter()
    info = machine_info()
    print(
        f"PairDesk benchmarks ({mode}); BLAS pinned to 1 thread "
        "(OPENBLAS_NUM_THREADS=1, set before numpy is imported)"
    )
    print(
        f"machine: {info['nproc']} CPUs, {info['cpu_model']}, "
        f"{info['mem_gb']:.1f} GB RAM; {info['platform']}"
    )
    print(
        f"versions: Python {info['python']}, numpy {info['numpy']}, "
        f"pandas {info['pandas']}, SQLite {info['sqlite']}"
    )
    before = cpu_probe()
    print(f"CPU probe before: {_probe_text(before)}")
    all_rows: list[dict] = []
    modules: dict[str, dict] = {}
    for name in names:
        print(f"  running {name} ...", end="", flush=True)
        rows, elapsed, error = run_module(name, args.quick)
        modules[name] = {"seconds": elapsed, "error": error, "rows": len(rows)}
        print(f" {elapsed:.0f} s" + (f"  ERROR {error}" if error else ""), flush=True)
        all_rows += rows
    after = cpu_probe()
    total = time.perf_counter() - began
    print(f"CPU probe after:  {_probe_text(after)}")
    drift = after["median"] / before["median"]
    print(f"probe after / before: {drift:.2f} (the machine's noise during the run)")
    print()
    if all_rows:
        print_table(all_rows, keys=args.keys)
    missed = [r for r in all_rows if r.get("met") is False]
    met = [r for r in all_rows if r.get("met") is True]
    print()
    print(
        f"targets: {len(met)} met, {len(missed)} missed; total {total:.0f} s ({mode})"
    )
    for r in missed:
        print(f"  MISSED {r['key']}: {r['median']:.4g} {r['unit']} vs {r['target']}")
    if args.markdown:
        args.markdown.write_text(markdown_table(all_rows) + "\n")
        print(f"wrote {args.markdown}")
    if args.json:
        doc = {
            "mode": mode,
            "machine": info,
            "cpu_probe": {"before": before, "after": after, "after_over_before": drift},
            "modules": modules,
            "seconds": total,
            "rows": {r["key"]: r for r in all_rows},
        }
        args.json.write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {args.json}")
    return 1 if any(m["error"] for m in modules.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
