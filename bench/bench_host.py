"""Benchmark of NVTX/GIL-heavy and GPU-metric-heavy inputs against DuckDB's sqlite_scanner and nsys stats.

Inputs (built once into ``--workdir`` and reused):

* ``llm_threads4_gil``: the real GIL/OSRT capture in ``tests/data`` (278k GIL ranges over 7 threads);
* ``gpumetrics_osrt``: the real GPU-metric capture in ``tests/data``;
* ``gil<N>``: ``traceforge synth --nvtx-ranges N --gil-threads 16 --osrt-calls N/10`` with N/4 kernels, for
  each N of ``--gil-sizes``;
* ``metrics<N>``: ``traceforge synth --gpu-metrics-hz F`` with F chosen so that the export holds about N
  samples (22 metrics), 200k kernels, for each N of ``--metric-sizes``.

Contenders, each its own subprocess (``--repeat`` times, interleaved), wall time and peak RSS from ``wait4``:
traceforge ingest (every table), DuckDB + sqlite_scanner doing the same copy (``bench/baselines.py``: kernels,
API calls, memcpy/memset, NVTX and OS calls with names resolved, GPU metrics with names joined, the
concurrency/busy/gap SQL, the OS call and GPU metric summaries), and ``nsys stats --report nvtxsum,osrtsum``
where nsys is installed. Prints medians, the host rows (NVTX + GIL ranges, OS calls, GPU metric samples), and
seconds per million host rows, so linearity shows across sizes.

    .venv/bin/python bench/bench_host.py --gil-sizes 2000000,5000000 --metric-sizes 5000000
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baselines  # noqa: E402
from bench_ingest import FIXTURES, decompress, print_table  # noqa: E402

REAL = {
    "llm_threads4_gil": "llm_threads4_gil_osrt_h200_nsys2025.3.sqlite.xz",
    "gpumetrics_osrt": "known_gpumetrics_osrt_h200_nsys2025.3.sqlite.xz",
}


def synth(out: Path, args: list[str]) -> Path:
    """``traceforge synth`` into ``out`` once."""
    if not out.exists():
        cmd = [sys.executable, "-m", "traceforge", "synth", "--out", str(out), "--quiet", *args]
        subprocess.run(cmd, check=True, cwd=baselines.REPO)
    return out


def host_rows(path: Path) -> dict[str, int]:
    """Row counts of the host-side tables and kernels."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        count = {
            t: (con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] if t in tables else 0)
            for t in ("NVTX_EVENTS", "OSRT_API", "GPU_METRICS", "CUPTI_ACTIVITY_KIND_KERNEL")
        }
    finally:
        con.close()
    return {
        "nvtx": count["NVTX_EVENTS"],
        "osrt": count["OSRT_API"],
        "metrics": count["GPU_METRICS"],
        "kernels": count["CUPTI_ACTIVITY_KIND_KERNEL"],
    }


def nsys_host(path: Path, workdir: Path) -> baselines.Measurement:
    return baselines.nsys_stats_baseline(path, workdir, ("nvtxsum", "osrtsum"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "traceforge-bench-host"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gil-sizes", default="2000000", help="GIL ranges of the synthetic GIL exports")
    parser.add_argument(
        "--metric-sizes", default="5000000", help="GPU metric samples of the synthetic exports"
    )
    parser.add_argument("--skip", choices=["nsys", "duckdb", "real"], action="append", default=[])
    parser.add_argument(
        "--capture",
        action="append",
        default=[],
        metavar="PATH",
        help="another real export to bench (e.g. a held-out heavy capture; .xz is decompressed once)",
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    inputs: dict[str, Path] = {}
    if "real" not in args.skip:
        for label, name in REAL.items():
            if (FIXTURES / name).exists():
                inputs[label] = decompress(FIXTURES / name, args.workdir / name.removesuffix(".xz"))
    for capture in map(Path, args.capture):
        name = capture.name.removesuffix(".xz")
        plain = capture if capture.suffix != ".xz" else decompress(capture, args.workdir / name)
        inputs[name.removesuffix(".sqlite")] = plain
    t0 = time.perf_counter()
    for n in (int(x) for x in args.gil_sizes.split(",") if x):
        inputs[f"gil{n // 1000}k"] = synth(
            args.workdir / f"gil{n}.sqlite",
            ["--kernels", str(max(1, n // 4)), "--nvtx-ranges", str(n), "--gil-threads", "16"]
            + ["--osrt-calls", str(n // 10), "--seed", "18"],
        )
    for n in (int(x) for x in args.metric_sizes.split(",") if x):
        # 200k synthetic kernels span ~8.9 s of capture; 22 metrics on one GPU.
        hz = max(1, math.ceil(n / 22 / 8.9))
        inputs[f"metrics{n // 1000}k"] = synth(
            args.workdir / f"metrics{n}.sqlite",
            ["--kernels", "200000", "--gpu-metrics-hz", str(hz), "--seed", "18"],
        )
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s ({args.workdir})", file=sys.stderr)
    baselines.ensure_bytecode()
    rows = []
    for label, path in inputs.items():
        counts = host_rows(path)
        host = counts["nvtx"] + counts["osrt"] + counts["metrics"]
        runs: dict[str, list[baselines.Measurement]] = {"traceforge": [], "duckdb": [], "nsys stats": []}
        tf_db, duck_db = args.workdir / f"{label}.tf.duckdb", args.workdir / f"{label}.peer.duckdb"
        for _ in range(args.repeat):
            runs["traceforge"].append(baselines.traceforge_ingest(path, tf_db))
            if "duckdb" not in args.skip:
                runs["duckdb"].append(baselines.duckdb_sqlite_scanner_baseline(path, duck_db))
            if "nsys" not in args.skip and baselines.find_nsys():
                runs["nsys stats"].append(nsys_host(path, args.workdir))
        tf_med = statistics.median(m.wall_s for m in runs["traceforge"])
        for name, ms in runs.items():
            if not ms:
                continue
            for m in ms:
                if m.rc != 0:
                    print(f"{label}: {name} failed (rc {m.rc}):\n{m.output[-1500:]}", file=sys.stderr)
            med = statistics.median(m.wall_s for m in ms)
            rows.append(
                [
                    label,
                    f"{counts['kernels']:,}",
                    f"{host:,}",
                    f"{path.stat().st_size / 1e6:.0f} MB",
                    name,
                    f"{med:.2f}",
                    f"{med / max(host, 1) * 1e6:.3f}",
                    f"{max(m.peak_rss_bytes for m in ms) / 1e6:.0f} MB",
                    "1.0x" if name == "traceforge" else f"{med / tf_med:.1f}x",
                ]
            )
    header = [
        "input",
        "kernels",
        "host rows",
        "export",
        "tool",
        "median s",
        "s/M host rows",
        "peak RSS",
        "x tf",
    ]
    print_table(header, rows)
    print(
        f"\n{args.repeat} runs each, interleaved; host rows = NVTX events (GIL ranges included) + OS calls "
        "+ GPU metric samples; 'x tf' = the tool's median over traceforge's; "
        "nsys stats runs nvtxsum,osrtsum only. "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
