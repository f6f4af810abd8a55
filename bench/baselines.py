"""The peers traceforge's ingest is measured against, each run as its own subprocess with its peak memory.

* ``nsys_stats_baseline(path)``: Nsight Systems' own
  ``nsys stats --report gpukernsum,kernexectrace,gpumemtimesum --format csv`` (Debian's nsys 2022.4,
  ``scripts/install-nsys.sh``) on the export.
* ``duckdb_sqlite_scanner_baseline(path, db_out)``: DuckDB 1.4.4 with its ``sqlite`` extension
  (sqlite_scanner) copies kernels, memcpy, memset, CUDA API calls (runtime and driver, names resolved),
  NVTX events, OS runtime calls and GPU metric samples (where the export has them) into a DuckDB file,
  then computes per-device concurrency levels, busy time, max concurrency and gap percentiles, the OS
  call summary and the GPU metric summary in SQL: one ``CREATE TABLE AS`` per table, one transaction.
* ``traceforge_ingest(path, db_out)``: ``python -m traceforge ingest`` (every table written to a DuckDB file).

The sqlite extension cannot be downloaded here (``INSTALL sqlite`` needs extensions.duckdb.org); it installs
offline-friendly from PyPI: ``pip install --target DIR duckdb-ext-sqlite==1.4.4.20260205`` and is loaded from
its file. ``find_sqlite_extension()`` looks in ``$DUCKDB_SQLITE_EXTENSION`` (the file),
``$DUCKDB_EXT_DIR`` (a ``--target`` dir), an importable ``duckdb_ext`` package, then
``/tmp/duckdb-ext-sqlite``.

Every function returns a :class:`Measurement` (wall seconds, peak RSS from the kernel's ``wait4`` rusage, as
``/usr/bin/time -v`` reports it, exit status).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Measurement:
    """One timed subprocess."""

    name: str
    wall_s: float
    peak_rss_bytes: int
    rc: int
    output: str = ""


def timed(
    name: str,
    argv: list[str],
    *,
    env: Optional[dict[str, str]] = None,
    cwd: Optional[Path] = None,
) -> Measurement:
    """Run ``argv``: wall time and peak RSS from the kernel's ``wait4`` rusage (as ``/usr/bin/time -v``).

    ``ru_maxrss`` of a reaped child is the largest resident set of that process and the descendants it waited
    for, so a tool that forks (nsys stats runs Python report scripts) is measured by its largest process.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=cwd)
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()[-4000:]
    return Measurement(name, wall, usage.ru_maxrss * 1024, proc.returncode, output)


# ----------------------------------------------------------------------------------------------------
# nsys stats


def find_nsys() -> Optional[str]:
    """Debian's nsys 2022.4 (``$NSYS`` first)."""
    for candidate in (os.environ.get("NSYS"), shutil.which("nsys"), "/usr/bin/nsys"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


#: The three reports, by nsys 2022.4's names; nsys 2024+ renamed them (cuda_gpu_kern_sum, ...).
NSYS_REPORTS = ("gpukernsum", "kernexectrace", "gpumemtimesum")
NSYS_REPORTS_NEW = ("cuda_gpu_kern_sum", "cuda_kern_exec_trace", "cuda_gpu_mem_time_sum")


def nsys_stats_baseline(
    path: str | os.PathLike[str],
    out_dir: Optional[str | os.PathLike[str]] = None,
    reports: tuple[str, ...] = NSYS_REPORTS,
) -> Measurement:
    """Time ``nsys stats --report gpukernsum,kernexectrace,gpumemtimesum --format csv`` on the export.

    nsys reads the file in place (read-only, immutable URI); the CSVs go to a temp dir under ``out_dir``.
    """
    nsys = find_nsys()
    if nsys is None:
        raise RuntimeError("nsys not found: run scripts/install-nsys.sh")
    with tempfile.TemporaryDirectory(prefix="nsys-stats-", dir=out_dir) as tmp:
        m = timed(
            "nsys stats",
            [
                nsys,
                "stats",
                "--report",
                ",".join(reports),
                "--format",
                "csv",
                "--output",
                os.path.join(tmp, "out"),
                "--force-overwrite",
                "true",
                os.fspath(path),
            ],
        )
        missing = [r for r in reports if not os.path.exists(os.path.join(tmp, f"out_{r}.csv"))]
    if m.rc == 0 and missing:
        m.rc = 2
        m.output += f"\nmissing reports: {missing}"
    return m


# ----------------------------------------------------------------------------------------------------
# DuckDB + sqlite_scanner


def find_sqlite_extension() -> Optional[str]:
    """Path of ``sqlite_scanner.duckdb_extension`` for DuckDB 1.4.4, or None."""
    explicit = os.environ.get("DUCKDB_SQLITE_EXTENSION")
    if explicit and os.path.exists(explicit):
        return explicit
    roots = [os.environ.get("DUCKDB_EXT_DIR", ""), "/tmp/duckdb-ext-sqlite"]
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is not None and spec.submodule_search_locations:
        roots += [os.path.dirname(p) for p in spec.submodule_search_locations]
    for root in roots:
        if root:
            hits = glob.glob(
                os.path.join(root, "**", "v1.4.4", "*", "sqlite_scanner.duckdb_extension"), recursive=True
            )
            if hits:
                return hits[0]
    return None


#: The work the DuckDB baseline does: copy the events (names resolved by joins), then the timeline metrics
#: in SQL. The fastest straightforward DuckDB way: one ``CREATE TABLE AS`` per table straight from the
#: attached export, all in one transaction (in autocommit every statement commits and checkpoints the
#: file: that alone took the x6 export from ~3 s to ~7 s), and the helper tables (strings, the sweep's
#: segments) as TEMP tables that are never written to the file. The statements run one by one: DuckDB's
#: Python client ran the same script given as one multi-statement string ~1.5x slower.
DUCKDB_SQL = r"""
BEGIN;
CREATE TEMP TABLE strings AS SELECT id, value FROM ex.StringIds;
CREATE TABLE kernels AS
    SELECT k.deviceId AS device_id, k.streamId AS stream_id, (k.globalPid >> 24) & 16777215 AS pid,
           k.correlationId AS correlation_id, k.start AS start_ns, k."end" AS end_ns,
           k."end" - k.start AS duration_ns, s.value AS name, k.gridX, k.gridY, k.gridZ, k.blockX, k.blockY,
           k.blockZ
    FROM ex.CUPTI_ACTIVITY_KIND_KERNEL k LEFT JOIN strings s ON s.id = k.demangledName;
CREATE TABLE memcpy AS
    SELECT deviceId AS device_id, streamId AS stream_id, (globalPid >> 24) & 16777215 AS pid,
           correlationId AS correlation_id, start AS start_ns, "end" AS end_ns, bytes, copyKind AS copy_kind
    FROM ex.CUPTI_ACTIVITY_KIND_MEMCPY;
{memset}
CREATE TABLE api_calls AS
    SELECT (r.globalTid >> 24) & 16777215 AS pid, r.globalTid & 16777215 AS tid,
           r.correlationId AS correlation_id,
           r.start AS start_ns, r."end" AS end_ns, s.value AS name
    FROM ex.CUPTI_ACTIVITY_KIND_RUNTIME r LEFT JOIN strings s ON s.id = r.nameId
    {driver};
{nvtx}
CREATE TEMP TABLE segments AS
    SELECT device_id, t, level, lead(t) OVER w - t AS len
    FROM (SELECT device_id, t, d,
                 sum(d) OVER (PARTITION BY device_id ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS level
          FROM (SELECT device_id, start_ns AS t, 1 AS d FROM kernels WHERE end_ns > start_ns
                UNION ALL SELECT device_id, end_ns AS t, -1 AS d FROM kernels WHERE end_ns > start_ns) e) e
    WINDOW w AS (PARTITION BY device_id ORDER BY t, d ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING);
CREATE TABLE concurrency_levels AS
    SELECT device_id, level, sum(len) AS time_ns FROM segments WHERE level > 0 AND len > 0 GROUP BY ALL;
CREATE TABLE gaps AS
    SELECT device_id, t AS start_ns, t + len AS end_ns, len AS duration_ns
    FROM segments WHERE level = 0 AND len > 0;
CREATE TABLE device_metrics AS
    SELECT k.device_id, k.kernel_count, k.kernel_time_ns, k.span_ns, c.busy_ns, c.overlap_ns,
           c.max_concurrency,
           g.gap_count, g.gap_total_ns, g.gap_p50_ns, g.gap_p90_ns, g.gap_p99_ns, g.gap_max_ns
    FROM (SELECT device_id, count(*) AS kernel_count, sum(duration_ns) AS kernel_time_ns,
                 max(end_ns) - min(start_ns) AS span_ns FROM kernels GROUP BY 1) k
    LEFT JOIN (SELECT device_id, sum(len) FILTER (level >= 1) AS busy_ns,
                      sum(len) FILTER (level >= 2) AS overlap_ns,
                      max(level) AS max_concurrency FROM segments GROUP BY 1) c USING (device_id)
    LEFT JOIN (SELECT device_id, count(*) AS gap_count, sum(duration_ns) AS gap_total_ns,
                      quantile_cont(duration_ns, 0.5) AS gap_p50_ns,
                      quantile_cont(duration_ns, 0.9) AS gap_p90_ns,
                      quantile_cont(duration_ns, 0.99) AS gap_p99_ns, max(duration_ns) AS gap_max_ns
               FROM gaps GROUP BY 1) g USING (device_id);
{extra}
COMMIT;
"""

MEMSET_SQL = """CREATE TABLE memset AS
    SELECT deviceId AS device_id, streamId AS stream_id, (globalPid >> 24) & 16777215 AS pid,
           correlationId AS correlation_id, start AS start_ns, "end" AS end_ns, bytes
    FROM ex.CUPTI_ACTIVITY_KIND_MEMSET;"""

DRIVER_SQL = """UNION ALL
    SELECT (r.globalTid >> 24) & 16777215, r.globalTid & 16777215, r.correlationId, r.start, r."end", s.value
    FROM ex.CUPTI_ACTIVITY_KIND_DRIVER r LEFT JOIN strings s ON s.id = r.nameId"""

NVTX_SQL = """CREATE TABLE nvtx AS
    SELECT (n.globalTid >> 24) & 16777215 AS pid, n.globalTid & 16777215 AS tid, n.start AS start_ns,
           n."end" AS end_ns, n.eventType AS event_type, n.domainId AS domain_id,
           coalesce(s.value, n.text) AS name
    FROM ex.NVTX_EVENTS n LEFT JOIN strings s ON s.id = n.textId;"""

#: Host-side tables, copied where the export has them (the work traceforge does for GIL and OS tracing):
#: OS runtime calls with names resolved and their per-name summary (what ``nsys stats --report osrtsum``
#: shows), and GPU metric samples with metric names joined and summarised per (device, metric).
OSRT_SQL = """CREATE TABLE os_calls AS
    SELECT (o.globalTid >> 24) & 16777215 AS pid, o.globalTid & 16777215 AS tid, o.start AS start_ns,
           o."end" AS end_ns, s.value AS name
    FROM ex.OSRT_API o LEFT JOIN strings s ON s.id = o.nameId;
CREATE TABLE os_call_summary AS
    SELECT name, count(*) AS calls, sum(end_ns - start_ns) AS total_ns, avg(end_ns - start_ns) AS avg_ns,
           quantile_cont(end_ns - start_ns, 0.5) AS median_ns, min(end_ns - start_ns) AS min_ns,
           max(end_ns - start_ns) AS max_ns, stddev_samp(end_ns - start_ns) AS stddev_ns
    FROM os_calls GROUP BY name;"""

GPU_METRICS_SQL = """CREATE TABLE gpu_metrics AS
    SELECT g.typeId & 255 AS device_id, t.metricName AS metric, g.timestamp AS ts_ns, g.value
    FROM ex.GPU_METRICS g
    LEFT JOIN ex.TARGET_INFO_GPU_METRICS t ON t.typeId = g.typeId AND t.metricId = g.metricId;
CREATE TABLE gpu_metric_summary AS
    SELECT device_id, metric, count(*) AS sample_count, avg(value) AS mean, min(value) AS min,
           max(value) AS max, quantile_cont(value, [0.5, 0.9, 0.99]) AS percentiles
    FROM gpu_metrics GROUP BY ALL;"""

_DUCKDB_SCRIPT = """
import sqlite3, sys, duckdb
ext, export, db_out = sys.argv[1], sys.argv[2], sys.argv[3]
source = sqlite3.connect(f"file:{{export}}?mode=ro", uri=True)
tables = {{r[0] for r in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}}
extra = []
if "OSRT_API" in tables:
    extra.append({osrt!r})
if "GPU_METRICS" in tables and "TARGET_INFO_GPU_METRICS" in tables:
    extra.append({gpu_metrics!r})
sql = {sql!r}.format(
    memset={memset!r} if "CUPTI_ACTIVITY_KIND_MEMSET" in tables else "",
    driver={driver!r} if "CUPTI_ACTIVITY_KIND_DRIVER" in tables else "",
    nvtx={nvtx!r} if "NVTX_EVENTS" in tables else "",
    extra="\\n".join(extra),
)
con = duckdb.connect(db_out)
con.execute(f"LOAD '{{ext}}'")
con.execute("ATTACH '" + export.replace("'", "''") + "' AS ex (TYPE sqlite, READ_ONLY)")
for statement in sql.split(";"):
    if statement.strip():
        con.execute(statement)
con.close()
"""


def duckdb_sqlite_scanner_baseline(
    path: str | os.PathLike[str], db_out: str | os.PathLike[str]
) -> Measurement:
    """Time DuckDB + sqlite_scanner doing the copy and the timeline metrics into ``db_out`` (replaced)."""
    ext = find_sqlite_extension()
    if ext is None:
        raise RuntimeError(
            "DuckDB's sqlite extension not found: pip install --target /tmp/duckdb-ext-sqlite "
            "duckdb-ext-sqlite==1.4.4.20260205 (INSTALL sqlite needs network)"
        )
    for suffix in ("", ".wal"):
        if os.path.exists(os.fspath(db_out) + suffix):
            os.unlink(os.fspath(db_out) + suffix)
    script = _DUCKDB_SCRIPT.format(
        sql=DUCKDB_SQL,
        memset=MEMSET_SQL,
        driver=DRIVER_SQL,
        nvtx=NVTX_SQL,
        osrt=OSRT_SQL,
        gpu_metrics=GPU_METRICS_SQL,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as pyf:
        pyf.write(script)
    try:
        return timed(
            "duckdb sqlite_scanner", [sys.executable, pyf.name, ext, os.fspath(path), os.fspath(db_out)]
        )
    finally:
        os.unlink(pyf.name)


# ----------------------------------------------------------------------------------------------------
# traceforge


def ensure_bytecode() -> None:
    """Compile the traceforge package that ``python -m traceforge`` imports, once, before timing it.

    An installed wheel carries its bytecode; a checkout run under ``PYTHONDONTWRITEBYTECODE=1`` (as on the
    development machines) would otherwise compile some twenty modules from source in every timed run.
    """
    locate = "import os, traceforge; print(os.path.dirname(traceforge.__file__))"
    package = subprocess.run(
        [sys.executable, "-c", locate], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True, stdout=subprocess.DEVNULL)


def traceforge_ingest(path: str | os.PathLike[str], db_out: str | os.PathLike[str]) -> Measurement:
    """Time ``python -m traceforge ingest --quiet --db db_out path`` (``db_out`` replaced first)."""
    for suffix in ("", ".wal"):
        if os.path.exists(os.fspath(db_out) + suffix):
            os.unlink(os.fspath(db_out) + suffix)
    return timed(
        "traceforge ingest",
        [sys.executable, "-m", "traceforge", "ingest", "--quiet", "--db", os.fspath(db_out), os.fspath(path)],
        cwd=REPO,
    )
