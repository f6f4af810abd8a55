"""``traceforge ingest / sql / traces`` as real subprocesses, and the Python API (``connect(db).ingest()``).

Expected values come from the export itself (read with sqlite3) or from independent tools (``xxh128sum``
for the content fingerprint), never from traceforge.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

from conftest import missing_tool
from store_dump import dump


def _sqlite_scalar(path: Path, query: str) -> Any:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(query).fetchone()[0]
    finally:
        con.close()


def _kernels_per_stream(path: Path) -> dict[int, int]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT streamId, count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL GROUP BY 1"))
    finally:
        con.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_matmul_export: Path, run_cli: Any) -> Path:
    db = tmp_path_factory.mktemp("cli") / "cli.duckdb"
    result = run_cli("ingest", "--db", db, small_matmul_export)
    assert result.rc == 0, str(result)
    assert "Traceback" not in result.stderr
    return db


def test_ingest_records_the_trace(store: Path, small_matmul_export: Path) -> None:
    con = duckdb.connect(str(store), read_only=True)
    try:
        row = con.execute(
            "SELECT trace_id, fingerprint, source_path, export_path, file_size_bytes, schema_version, "
            "nsys_version, "
            "kernel_count, gpu_count, gpus, trace_start_ns, trace_end_ns, capture_start_utc_ns FROM traces"
        ).fetchall()
    finally:
        con.close()
    assert len(row) == 1
    (trace_id, fp, source, export, size, schema, version, kernels, gpu_count, gpus, t0, t1, utc) = row[0]
    assert source == str(small_matmul_export.resolve()) and export == source
    assert size == small_matmul_export.stat().st_size
    meta = dict(sqlite3.connect(f"file:{small_matmul_export}?mode=ro", uri=True).execute(
        "SELECT name, value FROM META_DATA_EXPORT"
    ).fetchall())  # fmt: skip
    assert schema == meta["EXPORT_SCHEMA_VERSION"] == "3.20.3"
    assert version == meta["EXPORT_PRODUCT_VERSION"]
    assert (
        kernels
        == _sqlite_scalar(small_matmul_export, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL")
        == 42
    )
    assert gpu_count == 1 and "H100" in gpus
    assert (t0, t1) == tuple(
        sqlite3.connect(f"file:{small_matmul_export}?mode=ro", uri=True)
        .execute("SELECT startTime, stopTime FROM ANALYSIS_DETAILS")
        .fetchone()
    )
    assert utc == _sqlite_scalar(small_matmul_export, "SELECT utcEpochNs FROM TARGET_INFO_SESSION_START_TIME")
    assert len(trace_id) == 16 and fp.startswith(trace_id) and len(fp) == 32
    xxh = shutil.which("xxh128sum")
    if xxh is None:
        missing_tool("xxh128sum (the independent fingerprint check)", "apt-get install xxhash")
    expected = subprocess.run([xxh, str(small_matmul_export)], capture_output=True, text=True, check=True)
    assert fp == expected.stdout.split()[0]


def test_sql_formats(store: Path, small_matmul_export: Path, run_cli: Any) -> None:
    expected = _kernels_per_stream(small_matmul_export)
    query = "SELECT stream_id, count(*) AS n FROM kernels GROUP BY stream_id ORDER BY stream_id"

    result = run_cli("sql", "--db", store, query, "--format", "csv")
    assert result.rc == 0, str(result)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {int(r["stream_id"]): int(r["n"]) for r in rows} == expected

    result = run_cli("sql", "--db", store, query, "--format", "json")
    assert result.rc == 0, str(result)
    assert {r["stream_id"]: r["n"] for r in json.loads(result.stdout)} == expected

    result = run_cli("sql", "--db", store, query, "--format", "table")
    assert result.rc == 0, str(result)
    assert "stream_id" in result.stdout
    for stream, n in expected.items():
        assert any(str(stream) in line and str(n) in line for line in result.stdout.splitlines())

    result = run_cli("sql", "--db", store, query)  # table is the default
    assert result.rc == 0 and "stream_id" in result.stdout


def test_sql_errors_are_one_line(store: Path, tmp_path: Path, run_cli: Any) -> None:
    result = run_cli("sql", "--db", store, "SELECT no_such_column FROM kernels")
    assert result.rc != 0 and "Traceback" not in result.stderr, str(result)
    assert [line for line in result.stderr.splitlines() if line.strip()][0].startswith("traceforge: error:")
    assert "no_such_column" in result.stderr

    missing = tmp_path / "nothing_here.duckdb"
    result = run_cli("sql", "--db", missing, "SELECT 1")
    assert result.rc != 0 and "Traceback" not in result.stderr, str(result)
    assert missing.name in result.stderr
    assert not missing.exists(), "a read-only query created the database"


def test_traces_command(store: Path, small_matmul_export: Path, run_cli: Any) -> None:
    result = run_cli("traces", "--db", store, "--format", "json")
    assert result.rc == 0, str(result)
    (row,) = json.loads(result.stdout)
    assert row["source_path"] == str(small_matmul_export.resolve())
    assert row["kernel_count"] == 42
    table = run_cli("traces", "--db", store)
    assert table.rc == 0 and row["trace_id"] in table.stdout


def test_reingest_is_a_noop_unless_forced(
    tmp_path: Path, small_matmul_export: Path, fresh_db: Path, run_cli: Any
) -> None:
    assert run_cli("ingest", "--db", fresh_db, small_matmul_export).rc == 0
    before = dump(fresh_db)

    again = run_cli("ingest", "--db", fresh_db, small_matmul_export)
    assert again.rc == 0, str(again)
    assert "skipped" in (again.stdout + again.stderr).lower()
    assert dump(fresh_db) == before

    # Same content under another name: same fingerprint, still a no-op.
    copy = tmp_path / "renamed_copy.sqlite"
    shutil.copyfile(small_matmul_export, copy)
    assert run_cli("ingest", "--db", fresh_db, copy).rc == 0
    assert dump(fresh_db) == before

    forced = run_cli("ingest", "--db", fresh_db, "--force", small_matmul_export)
    assert forced.rc == 0, str(forced)
    after = dump(fresh_db)
    for table, rows in before.items():
        if table == "traces":
            assert len(after[table]) == 1
        else:
            assert len(after[table]) == len(rows), f"--force changed the row count of {table}"
    assert sorted(after["kernels"], key=repr) == sorted(before["kernels"], key=repr)


def test_ingest_directory_and_glob(tmp_path: Path, edge_export: Any, fresh_db: Path, run_cli: Any) -> None:
    folder = tmp_path / "captures"
    (folder / "nested").mkdir(parents=True)
    a = shutil.copyfile(edge_export("two_devices"), folder / "a.sqlite")
    b = shutil.copyfile(edge_export("nvtx"), folder / "nested" / "b.sqlite")
    result = run_cli("ingest", "--db", fresh_db, folder)
    assert result.rc == 0, str(result)
    con = duckdb.connect(str(fresh_db), read_only=True)
    try:
        got = dict(con.execute("SELECT source_path, kernel_count FROM traces").fetchall())
    finally:
        con.close()
    assert got == {
        str(Path(a).resolve()): _sqlite_scalar(Path(a), "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL"),
        str(Path(b).resolve()): _sqlite_scalar(Path(b), "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL"),
    }
    db2 = tmp_path / "glob.duckdb"
    result = run_cli("ingest", "--db", db2, str(folder / "*.sqlite"))
    assert result.rc == 0, str(result)
    con = duckdb.connect(str(db2), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM traces").fetchone()[0] == 1
    finally:
        con.close()


def test_default_db_from_environment(tmp_path: Path, small_matmul_export: Path, run_cli: Any) -> None:
    db = tmp_path / "from_env.duckdb"
    result = run_cli("ingest", small_matmul_export, env={"TRACEFORGE_DB": str(db)}, cwd=tmp_path)
    assert result.rc == 0, str(result)
    assert db.exists() and not (tmp_path / "traceforge.duckdb").exists()


def test_python_api(small_matmul_export: Path, edge_export: Any, fresh_db: Path) -> None:
    import polars as pl

    import traceforge

    two_devices = edge_export("two_devices")
    with traceforge.connect(fresh_db) as tf:
        outcomes = tf.ingest([small_matmul_export, two_devices])
        assert [o.status for o in outcomes] == ["ingested", "ingested"]
        df = tf.sql(
            "SELECT device_id, kernel_count FROM device_metrics WHERE trace_id = ? ORDER BY device_id",
            [next(o.trace_id for o in outcomes if o.path == str(two_devices))],  # sorted by path
        )
        assert isinstance(df, pl.DataFrame)
        con = sqlite3.connect(f"file:{two_devices}?mode=ro", uri=True)
        expected = con.execute(
            "SELECT deviceId, count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL GROUP BY 1 ORDER BY 1"
        )
        assert df.rows() == [tuple(r) for r in expected.fetchall()]
        con.close()
        assert tf.traces().height == 2
        again = tf.ingest(small_matmul_export)
        assert [o.status for o in again] == ["skipped"]


def test_ingest_says_when_a_trace_is_graph_mode(
    tmp_path: Path, real_export: Any, small_matmul_export: Path, run_cli: Any
) -> None:
    """One line for a graph-mode capture (its GRAPH_TRACE row count, from the export), none otherwise."""
    graph = real_export("known_graphmode_h200_nsys2025.3.sqlite")
    node = real_export("known_nodemode_h200_nsys2025.3.sqlite")
    executions = _sqlite_scalar(graph, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_GRAPH_TRACE")
    for jobs in ("1", "2"):
        db = tmp_path / f"graphs{jobs}.duckdb"
        result = run_cli("ingest", "--db", db, "--jobs", jobs, graph, node, small_matmul_export)
        assert result.rc == 0, str(result)
        lines = [line for line in result.stdout.splitlines() if "CUDA graph mode" in line]
        assert len(lines) == 1, result.stdout
        assert f"{executions} graph executions recorded whole" in lines[0]
        assert "--cuda-graph-trace=node" in lines[0]
