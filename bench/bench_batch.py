"""Benchmark of batch ingest: files/s and total time with --jobs 1, --jobs 2 and a 2-worker Dask LocalCluster.

The archive: copies of the real small_matmul export whose kernel timestamps are shifted with sqlite3 (each a
distinct fingerprint), optionally synthetic exports from ``traceforge synth`` and the real llama export. Each
configuration runs in its own subprocess on a fresh store, so its peak memory is its own.

    .venv/bin/python bench/bench_batch.py                       # 200 copies, all three configurations
    .venv/bin/python bench/bench_batch.py --files 300 --synth 20 --llama

Prints a table: files, ingested, failed, wall time, files/s, speed-up over --jobs 1, peak RSS of the
coordinator and of each worker.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("TRACEFORGE_FIXTURES", REPO / "tests" / "data"))
SMALL = FIXTURES / "small_matmul_h100_nsys2025.3.sqlite.xz"
LLAMA = FIXTURES / "llama1b_n1_h100_nsys2025.3.sqlite.xz"

CONFIGS = {
    "jobs1": {"jobs": 1, "mode": "none"},
    "jobs2": {"jobs": 2, "mode": "concurrent"},
    "dask2": {"jobs": 2, "mode": "dask-futures"},
}


def build_archive(root: Path, files: int, synth: int, llama: bool, synth_kernels: int = 10_000) -> int:
    """Write the archive; returns the number of files."""
    count = 0
    for i in range(files):
        dest = root / f"batch{i % 10}" / f"small_{i:04d}.sqlite"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with lzma.open(SMALL) as fin, open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        con = sqlite3.connect(dest)
        con.execute(
            'UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = start + ?, "end" = "end" + ?', [i + 1, i + 1]
        )
        con.commit()
        con.close()
        count += 1
    for i in range(synth):
        dest = root / "synth" / f"synth_{i:03d}.sqlite"
        dest.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "traceforge",
                "synth",
                "--output",
                str(dest),
                "--seed",
                str(i),
                "--kernels",
                str(synth_kernels),
                "--quiet",
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            print(
                f"traceforge synth unavailable ({res.stderr.strip()[:120]}); no synthetic files",
                file=sys.stderr,
            )
            break
        count += 1
    if llama and LLAMA.exists():
        dest = root / "real" / "llama1b_n1.sqlite"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with lzma.open(LLAMA) as fin, open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        count += 1
    return count


def run_one(config: str, archive: str, db: str) -> dict:
    """Run one configuration in this process and return its figures."""
    sys.path.insert(0, str(REPO / "python"))
    from traceforge import ingest
    from traceforge.store import Store

    spec = CONFIGS[config]
    start = time.perf_counter()
    with Store(db) as store:
        report = ingest.run(store, [archive], jobs=spec["jobs"], mode=spec["mode"])
    wall = time.perf_counter() - start
    return {
        "config": config,
        "files": len(report.outcomes),
        "ingested": report.count("ingested"),
        "failed": report.count("failed"),
        "wall_s": wall,
        "coordinator_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "worker_peak_rss": sorted(report.worker_peak_rss_bytes.values()),
        "workers": report.workers,
        "failures": [f"{o.path}: {o.message}" for o in report.failures[:3]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="shifted copies of small_matmul")
    parser.add_argument("--synth", type=int, default=0, help="synthetic exports from `traceforge synth`")
    parser.add_argument("--synth-kernels", type=int, default=10_000, help="kernels per synthetic export")
    parser.add_argument("--llama", action="store_true", help="add the real 183k-kernel llama export")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--archive", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.archive, args.db)))
        return

    with tempfile.TemporaryDirectory(prefix="tf-bench-batch-") as tmp:
        archive = Path(tmp) / "archive"
        t0 = time.perf_counter()
        n = build_archive(archive, args.files, args.synth, args.llama, args.synth_kernels)
        size = sum(p.stat().st_size for p in archive.rglob("*") if p.is_file())
        print(
            f"archive: {n} files, {size / 1e6:.1f} MB, built in {time.perf_counter() - t0:.1f} s; "
            f"{os.cpu_count()} CPUs"
        )
        rows = []
        for config in args.configs.split(","):
            db = Path(tmp) / f"{config}.duckdb"
            res = subprocess.run(
                [sys.executable, __file__, "--one", config, "--archive", str(archive), "--db", str(db)],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                print(f"{config}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        base = next((r["wall_s"] for r in rows if r["config"] == "jobs1"), None)
        header = (
            f"{'config':8} {'files':>6} {'ok':>6} {'failed':>6} {'wall s':>8} {'files/s':>8} {'speed-up':>8} "
            f"{'coord MB':>9}  worker peak MB"
        )
        print(header)
        print("-" * len(header))
        for r in rows:
            speed = f"{base / r['wall_s']:.2f}x" if base else "-"
            workers = ", ".join(f"{b / 2**20:.0f}" for b in r["worker_peak_rss"]) or "-"
            print(
                f"{r['config']:8} {r['files']:>6} {r['ingested']:>6} {r['failed']:>6} {r['wall_s']:>8.2f} "
                f"{r['files'] / r['wall_s']:>8.1f} {speed:>8} {r['coordinator_peak_rss'] / 2**20:>9.0f}  "
                f"{workers}"
            )
            for failure in r["failures"]:
                print(f"    failed: {failure}")


if __name__ == "__main__":
    main()
