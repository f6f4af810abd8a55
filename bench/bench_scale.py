#!/usr/bin/env python3
"""Does ingest scale? Ingest synthetic nsys exports of growing size and print one row per size.

For each size (kernels; default 0.5M, 5M and 25M, roughly 0.1, 1 and 5 GB of export) it writes a synthetic
export with ``traceforge synth``, then runs ``traceforge ingest`` in its own process under
``/usr/bin/time -v`` (wall time and peak RSS of the whole process), and the same file through the peers of
``bench/baselines.py``: ``nsys stats`` (gpukernsum, kernexectrace, gpumemtimesum) and DuckDB's
sqlite_scanner (without baselines.py: ``nsys stats --report gpukernsum`` only). Generated files are
deleted after each size unless ``--keep``.

Targets (2 cores, 24 GiB): time linear in size (the ``s/GB`` column flat), peak RSS <= 1.5 GB at 5 GB of
export, no quadratic step.

Usage: ``python bench/bench_scale.py [--sizes 500000,5000000,25000000] [--workdir /tmp/tf-bench-scale]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
#: Bytes of export per kernel, rounded up from what synth writes (runtime rows dominate): the disk check.
BYTES_PER_KERNEL = 170
TIME = "/usr/bin/time"


def timed(cmd: list[str], timeout: float, env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Run ``cmd`` under ``/usr/bin/time -v``; wall seconds, peak RSS (bytes), return code, stderr tail."""
    full = [TIME, "-v", *cmd] if os.path.exists(TIME) else cmd
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {
            "ok": False,
            "wall_s": time.perf_counter() - t0,
            "rss": None,
            "note": f"timeout {timeout:.0f}s",
        }
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    e = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    if e:
        parts = [float(x) for x in e.group(1).split(":")]
        wall = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    ok = proc.returncode == 0
    note = "" if ok else (proc.stderr.strip().splitlines() or ["?"])[0][:100]
    return {"ok": ok, "wall_s": wall, "rss": int(m.group(1)) * 1024 if m else None, "note": note}


def load_baselines() -> Optional[Any]:
    """``bench/baselines.py`` (another engineer's) when it exists."""
    path = Path(__file__).with_name("baselines.py")
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("baselines", path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baselines"] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def run_baseline(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """Time one baseline function in this process (its own RSS is not separable here)."""
    t0 = time.perf_counter()
    try:
        result = fn(*args)
    except Exception as exc:  # a baseline that cannot run is reported, not fatal
        return {"ok": False, "wall_s": time.perf_counter() - t0, "note": f"{type(exc).__name__}: {exc}"[:100]}
    wall = time.perf_counter() - t0
    # baselines.Measurement: wall_s, peak_rss_bytes, rc, output
    wall = float(getattr(result, "wall_s", wall))
    rss = getattr(result, "peak_rss_bytes", None)
    if getattr(result, "rc", 0) != 0:
        tail = (getattr(result, "output", "") or "").strip().splitlines() or ["failed"]
        return {"ok": False, "wall_s": wall, "rss": rss, "note": tail[-1][:100]}
    return {"ok": True, "wall_s": wall, "rss": rss}


def fmt(v: Optional[float], spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="500000,5000000,25000000", help="kernel counts, comma-separated")
    ap.add_argument("--workdir", default="/tmp/tf-bench-scale", type=Path)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--baseline-timeout", type=float, default=900.0)
    ap.add_argument("--ingest-timeout", type=float, default=3600.0)
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument(
        "--baseline-max-kernels", type=float, default=25e6, help="skip the peers above this many kernels"
    )
    ap.add_argument("--keep", action="store_true", help="keep the generated exports and stores")
    args = ap.parse_args()

    sizes = [int(float(s)) for s in args.sizes.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    helpers = load_baselines()
    baselines = None if args.no_baselines else helpers
    if helpers is not None:
        helpers.ensure_bytecode()
    nsys = shutil.which("nsys")
    rows: list[dict[str, Any]] = []
    for n in sizes:
        need = n * BYTES_PER_KERNEL * 2.2  # export + store + slack
        free = shutil.disk_usage(args.workdir).free
        if free < need:
            print(
                f"skip {n:,} kernels: {need / 1e9:.1f} GB needed, {free / 1e9:.1f} GB free", file=sys.stderr
            )
            continue
        export = args.workdir / f"synth_{n}.sqlite"
        db = args.workdir / f"synth_{n}.duckdb"
        for p in (export, db, Path(f"{db}.wal")):
            p.unlink(missing_ok=True)
        row: dict[str, Any] = {"kernels": n}
        gen = timed(
            [py, "-m", "traceforge", "synth", "--out", str(export), "--kernels", str(n), "--devices",
             str(args.devices), "--streams", str(args.streams), "--seed", str(args.seed), "--quiet",
             "--force-overwrite"],
            args.ingest_timeout, env,
        )  # fmt: skip
        if not gen["ok"]:
            print(f"synth failed for {n:,}: {gen['note']}", file=sys.stderr)
            continue
        row["size_gb"] = export.stat().st_size / 1e9
        row["synth_s"] = gen["wall_s"]
        ing = timed(
            [py, "-m", "traceforge", "ingest", str(export), "--db", str(db)], args.ingest_timeout, env
        )
        row["ingest"] = ing
        print(
            f"  {n:>11,} kernels {row['size_gb']:6.2f} GB: synth {gen['wall_s']:.1f} s, ingest "
            f"{ing['wall_s']:.1f} s, peak RSS {fmt(ing['rss'] and ing['rss'] / 1e9, '.2f')} GB {ing['note']}",
            file=sys.stderr,
            flush=True,
        )
        if not args.no_baselines and n <= args.baseline_max_kernels:
            if baselines is not None and hasattr(baselines, "nsys_stats_baseline"):
                row["nsys"] = run_baseline(baselines.nsys_stats_baseline, export, args.workdir)
            elif nsys:
                out = args.workdir / f"nsys_{n}"
                row["nsys"] = timed(
                    [nsys, "stats", "--report", "gpukernsum", "--format", "csv", "--force-overwrite", "true",
                     "--output", str(out), str(export)],
                    args.baseline_timeout,
                )  # fmt: skip
                for f in args.workdir.glob(f"nsys_{n}*"):
                    f.unlink()
            scanner_db = args.workdir / f"scanner_{n}.duckdb"
            if baselines is not None and hasattr(baselines, "duckdb_sqlite_scanner_baseline"):
                row["scanner"] = run_baseline(baselines.duckdb_sqlite_scanner_baseline, export, scanner_db)
            for p in (scanner_db, Path(f"{scanner_db}.wal")):
                p.unlink(missing_ok=True)
        rows.append(row)
        if not args.keep:
            for p in (export, db, Path(f"{db}.wal")):
                p.unlink(missing_ok=True)

    print()
    print(
        f"{'kernels':>11} {'export GB':>9} {'synth s':>8} {'ingest s':>9} {'s/GB':>6} {'kernels/s':>10} "
        f"{'peak RSS GB':>11} {'nsys stats s / GB':>17} {'sqlite_scanner s / GB':>21}"
    )
    for r in rows:
        ing = r["ingest"]
        per_gb = ing["wall_s"] / r["size_gb"] if ing["ok"] else None
        rate = r["kernels"] / ing["wall_s"] if ing["ok"] else None

        def base(key: str, r: dict[str, Any] = r) -> str:
            b = r.get(key)
            if b is None:
                return "n/a"
            if not b["ok"]:
                return "failed"
            rss = b.get("rss")
            return fmt(b["wall_s"]) + (f" / {rss / 1e9:.2f}" if rss and rss > 0 else "")

        print(
            f"{r['kernels']:>11,} {r['size_gb']:>9.2f} {r['synth_s']:>8.1f} "
            f"{fmt(ing['wall_s']) if ing['ok'] else 'FAILED':>9} {fmt(per_gb):>6} {fmt(rate, ',.0f'):>10} "
            f"{fmt(ing['rss'] and ing['rss'] / 1e9, '.2f'):>11} {base('nsys'):>17} {base('scanner'):>21}"
        )
    for r in rows:
        for key in ("nsys", "scanner"):
            b = r.get(key)
            if b is not None and not b["ok"]:
                print(f"{key} at {r['kernels']:,} kernels: {b['note']}")
    if len(rows) >= 2 and all(r["ingest"]["ok"] for r in rows):
        first, last = rows[0], rows[-1]
        ratio = (last["ingest"]["wall_s"] / last["size_gb"]) / (first["ingest"]["wall_s"] / first["size_gb"])
        print(f"\nlinearity: s/GB at the largest size is {ratio:.2f}x that at the smallest (1.0 = linear)")


if __name__ == "__main__":
    main()
