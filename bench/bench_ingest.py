"""Benchmark of ``traceforge ingest`` against nsys stats and DuckDB's sqlite_scanner, on real exports.

Inputs (built once into ``--workdir`` and reused):

* ``llama1b_n1``: the real nsys 2025.3 export in ``tests/data`` (183,594 kernels, 31 MB);
* ``llama1b_n1x6``: the same export concatenated six times with sqlite3 (every event of copy *i* shifted by
  *i* x the capture duration, correlation ids offset so they stay unique): 1.1M kernels, ~180 MB.

For each input, each contender runs as its own subprocess (``--repeat`` times, fresh output each time) under
``/usr/bin/time -v``:

* traceforge: ``python -m traceforge ingest`` writing every table to a DuckDB file;
* nsys stats: ``nsys stats --report gpukernsum,kernexectrace,gpumemtimesum --format csv`` (Debian's 2022.4);
* DuckDB: sqlite_scanner copying kernels, memcpy, memset, API calls (names resolved) and NVTX into a DuckDB
  file and computing concurrency levels, busy time and gap percentiles in SQL (bench/baselines.py).

Prints one table: median and best wall time, peak RSS (and as a fraction of the export size), kernels/s,
and traceforge's speed-up over each peer, next to the targets (>= 20x nsys stats, >= 2x DuckDB, >= 1.5M
kernels/s on llama1b_n1x6, peak memory a small fraction of the export). It also checks that traceforge's
busy time, max concurrency and gap percentiles equal the DuckDB baseline's, so a fast wrong answer shows.

    .venv/bin/python bench/bench_ingest.py                  # both inputs, 3 runs each
    .venv/bin/python bench/bench_ingest.py --repeat 5 --only concatenated
"""

from __future__ import annotations

import argparse
import lzma
import math
import os
import shutil
import sqlite3
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baselines  # noqa: E402

#: The real capture's folder: the repository's test data unless ``TRACEFORGE_FIXTURES`` names another.
FIXTURES = Path(os.environ.get("TRACEFORGE_FIXTURES", Path(__file__).resolve().parents[1] / "tests" / "data"))
LLAMA_XZ = FIXTURES / "llama1b_n1_h100_nsys2025.3.sqlite.xz"

#: Tables whose rows are replicated by ``concatenate``; the others (metadata, enums, strings) are shared.
EVENT_TABLES = (
    "CUPTI_ACTIVITY_KIND_KERNEL",
    "CUPTI_ACTIVITY_KIND_MEMCPY",
    "CUPTI_ACTIVITY_KIND_MEMSET",
    "CUPTI_ACTIVITY_KIND_RUNTIME",
    "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
    "NVTX_EVENTS",
)


def decompress(src: Path, out: Path) -> Path:
    """``xz -dk`` in Python, once."""
    if not out.exists():
        tmp = out.with_suffix(".part")
        with lzma.open(src) as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        tmp.rename(out)
    return out


def concatenate(src: Path, out: Path, copies: int) -> Path:
    """``copies`` back-to-back copies of an export's events in one export (real rows, shifted in time)."""
    if out.exists():
        return out
    tmp = out.with_suffix(".part")
    shutil.copyfile(src, tmp)
    con = sqlite3.connect(tmp)
    con.execute("PRAGMA journal_mode = OFF")
    con.execute("PRAGMA synchronous = OFF")
    start, stop = con.execute("SELECT min(startTime), max(stopTime) FROM ANALYSIS_DETAILS").fetchone()
    shift = stop - start
    tables = [
        t
        for t in EVENT_TABLES
        if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [t]).fetchone()
    ]
    max_corr = 0
    for t in tables:
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
        if "correlationId" in cols:
            max_corr = max(
                max_corr, con.execute(f"SELECT coalesce(max(correlationId), 0) FROM {t}").fetchone()[0]
            )
    corr_step = max_corr + 1
    original_rows = {t: con.execute(f"SELECT coalesce(max(rowid), 0) FROM {t}").fetchone()[0] for t in tables}
    for i in range(1, copies):
        for t in tables:
            cols = [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
            exprs = []
            for c in cols:
                if c in ("start", "end"):
                    exprs.append(f'"{c}" + {i * shift}')
                elif c == "correlationId":
                    exprs.append(f'"{c}" + {i * corr_step}')
                else:
                    exprs.append(f'"{c}"')
            col_list = ", ".join(f'"{c}"' for c in cols)
            con.execute(
                f"INSERT INTO {t} ({col_list}) SELECT {', '.join(exprs)} FROM {t} WHERE rowid <= ?",
                [original_rows[t]],
            )
    con.execute(
        "UPDATE ANALYSIS_DETAILS SET stopTime = stopTime + ?, duration = duration + ?",
        [(copies - 1) * shift, (copies - 1) * shift],
    )
    con.commit()
    con.close()
    tmp.rename(out)
    return out


def kernel_count(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0])
    finally:
        con.close()


def agreement(tf_db: Path, duck_db: Path) -> str:
    """Do traceforge's device metrics equal the DuckDB baseline's (computed independently in SQL)?"""
    import duckdb

    cols = [
        "kernel_count",
        "busy_ns",
        "overlap_ns",
        "max_concurrency",
        "gap_count",
        "gap_total_ns",
        "gap_p50_ns",
        "gap_p90_ns",
        "gap_p99_ns",
        "gap_max_ns",
    ]
    query = f"SELECT device_id, {', '.join(cols)} FROM device_metrics ORDER BY device_id"
    a = duckdb.connect(str(tf_db), read_only=True)
    b = duckdb.connect(str(duck_db), read_only=True)
    try:
        ra, rb = a.execute(query).fetchall(), b.execute(query).fetchall()
    finally:
        a.close()
        b.close()
    if len(ra) != len(rb):
        return f"DIFFERENT ({len(ra)} vs {len(rb)} devices)"
    for x, y in zip(ra, rb):
        for name, u, v in zip(["device_id", *cols], x, y):
            if not (u == v or (u is not None and v is not None and math.isclose(u, v, rel_tol=1e-9))):
                return f"DIFFERENT: {name} {u} vs {v}"
    return "same"


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print ``rows`` under ``header`` as an aligned text table (the benches' output)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "traceforge-bench"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--only", choices=["llama1b_n1", "concatenated"], action="append")
    parser.add_argument("--skip", choices=["nsys", "duckdb"], action="append", default=[])
    parser.add_argument(
        "--new-nsys-report-names",
        action="store_true",
        help="nsys 2024+ report names (cuda_gpu_kern_sum, cuda_kern_exec_trace, cuda_gpu_mem_time_sum); "
        "$NSYS picks the binary",
    )
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    llama = decompress(LLAMA_XZ, args.workdir / "llama1b_n1.sqlite")
    big = concatenate(llama, args.workdir / f"llama1b_n1x{args.copies}.sqlite", args.copies)
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s ({args.workdir})", file=sys.stderr)
    inputs = {"llama1b_n1": llama, f"llama1b_n1x{args.copies}": big}
    if args.only:
        keep = {"llama1b_n1" if o == "llama1b_n1" else f"llama1b_n1x{args.copies}" for o in args.only}
        inputs = {k: v for k, v in inputs.items() if k in keep}

    reports = baselines.NSYS_REPORTS_NEW if args.new_nsys_report_names else baselines.NSYS_REPORTS
    baselines.ensure_bytecode()
    rows = []
    for label, path in inputs.items():
        n_kernels = kernel_count(path)
        size = path.stat().st_size
        runs: dict[str, list[baselines.Measurement]] = {"traceforge": [], "nsys stats": [], "duckdb": []}
        tf_db, duck_db = (
            args.workdir / f"{label}.traceforge.duckdb",
            args.workdir / f"{label}.baseline.duckdb",
        )
        for _ in range(args.repeat):  # interleaved, so that load from other users hits all contenders alike
            runs["traceforge"].append(baselines.traceforge_ingest(path, tf_db))
            if "nsys" not in args.skip:
                runs["nsys stats"].append(baselines.nsys_stats_baseline(path, args.workdir, reports))
            if "duckdb" not in args.skip:
                runs["duckdb"].append(baselines.duckdb_sqlite_scanner_baseline(path, duck_db))
        for name, ms in runs.items():
            for m in ms:
                if m.rc != 0:
                    print(f"{label}: {name} failed (rc {m.rc}):\n{m.output}", file=sys.stderr)
        check = agreement(tf_db, duck_db) if runs["duckdb"] and runs["traceforge"][-1].rc == 0 else "-"
        tf_med = statistics.median(m.wall_s for m in runs["traceforge"])
        for name, ms in runs.items():
            if not ms:
                continue
            med = statistics.median(m.wall_s for m in ms)
            best = min(m.wall_s for m in ms)
            rss = max(m.peak_rss_bytes for m in ms)
            rows.append(
                [
                    label,
                    f"{n_kernels:,}",
                    f"{size / 1e6:.0f} MB",
                    name,
                    f"{med:.2f}",
                    f"{best:.2f}",
                    f"{n_kernels / med / 1e6:.2f}",
                    f"{rss / 1e6:.0f} MB",
                    f"{rss / size:.2f}",
                    "1.0x" if name == "traceforge" else f"{med / tf_med:.1f}x",
                    check if name == "duckdb" else "",
                ]
            )
    header = [
        "input",
        "kernels",
        "export",
        "tool",
        "median s",
        "best s",
        "M kernels/s",
        "peak RSS",
        "RSS/export",
        "tool/traceforge",
        "metrics vs traceforge",
    ]
    print_table(header, rows)
    print(
        f"\n{args.repeat} runs each, interleaved; 'tool/traceforge' is the tool's median time over "
        "traceforge's "
        "(targets: nsys stats >= 20x, duckdb >= 2x; traceforge >= 1.5 M kernels/s on the x6 input). "
        f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
