"""GPU metric samples at scale (issues 15, 18): traceforge's ingest of a capture with ``GPU_METRICS`` against
DuckDB + sqlite_scanner copying the same samples.

The peer copies every ``GPU_METRICS`` row (device = ``typeId & 255``, metric name joined from
``TARGET_INFO_GPU_METRICS``) into a DuckDB file and computes the per-(device, metric) summary
(count, avg, min, max, ``quantile_cont`` 0.5/0.9/0.99) in SQL: less than traceforge's ingest, which stores
the whole trace (kernels, API calls, NVTX, every metric table) as well. Each run is its own subprocess;
wall time and peak RSS come from ``wait4`` (as ``/usr/bin/time -v``). Runs alternate between the two.

    python bench/bench_gpu_metrics.py --input /tmp/held/llmgraph_gil_metrics.sqlite --runs 3
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import Measurement, ensure_bytecode, find_sqlite_extension, timed, traceforge_ingest  # noqa: E402

PEER_SQL = r"""
ATTACH '{export}' AS ex (TYPE sqlite, READ_ONLY);
CREATE TABLE gpu_metrics AS
    SELECT g.typeId & 255 AS device_id, t.metricName AS metric, g.timestamp AS ts_ns, g.value
    FROM ex.GPU_METRICS g
    LEFT JOIN ex.TARGET_INFO_GPU_METRICS t ON t.typeId = g.typeId AND t.metricId = g.metricId;
CREATE TABLE gpu_metric_summary AS
    SELECT device_id, metric, count(*) AS sample_count, avg(value) AS mean, min(value) AS min,
           max(value) AS max, quantile_cont(value, 0.5) AS p50, quantile_cont(value, 0.9) AS p90,
           quantile_cont(value, 0.99) AS p99
    FROM gpu_metrics GROUP BY ALL;
"""

_PEER_SCRIPT = """
import sys, duckdb
ext, export, db_out = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect(db_out)
con.execute(f"LOAD '{{ext}}'")
con.execute({sql!r}.format(export=export.replace("'", "''")))
con.close()
"""


def duckdb_gpu_metrics(path: str, db_out: str) -> Measurement:
    """DuckDB + sqlite_scanner: copy the samples (names resolved) and summarise them."""
    ext = find_sqlite_extension()
    if ext is None:
        raise RuntimeError(
            "DuckDB's sqlite extension not found: pip install duckdb-ext-sqlite==1.4.4.20260205"
        )
    for suffix in ("", ".wal"):
        if os.path.exists(db_out + suffix):
            os.unlink(db_out + suffix)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as pyf:
        pyf.write(_PEER_SCRIPT.format(sql=PEER_SQL))
    try:
        return timed("duckdb sqlite_scanner (GPU_METRICS)", [sys.executable, pyf.name, ext, path, db_out])
    finally:
        os.unlink(pyf.name)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="an nsys export with GPU_METRICS")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    args = parser.parse_args()
    con = sqlite3.connect(f"file:{args.input}?mode=ro", uri=True)
    (samples,) = con.execute("SELECT count(*) FROM GPU_METRICS").fetchone()
    con.close()
    print(f"{args.input}: {os.path.getsize(args.input) / 1e6:.0f} MB, {samples:,} GPU metric samples")
    ensure_bytecode()
    results: dict[str, list[Measurement]] = {"traceforge": [], "duckdb": []}
    for _ in range(args.runs):
        results["traceforge"].append(
            traceforge_ingest(args.input, os.path.join(args.workdir, "tf_gm.duckdb"))
        )
        results["duckdb"].append(duckdb_gpu_metrics(args.input, os.path.join(args.workdir, "duck_gm.duckdb")))
    for runs in results.values():
        bad = [m for m in runs if m.rc != 0]
        if bad:
            print(bad[0].output, file=sys.stderr)
            return 1
    best = {k: min(v, key=lambda m: m.wall_s) for k, v in results.items()}
    peak = {k: max(m.peak_rss_bytes for m in v) for k, v in results.items()}
    for key, m in best.items():
        walls = ", ".join(f"{r.wall_s:.2f}" for r in results[key])
        print(f"{m.name:40s} best {m.wall_s:6.2f} s ({walls})  peak RSS {peak[key] / 2**20:6.0f} MiB")
    print(
        f"ratio traceforge / duckdb: time {best['traceforge'].wall_s / best['duckdb'].wall_s:.2f}, "
        f"peak RSS {peak['traceforge'] / peak['duckdb']:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
