"""The store's layout: ``kernels`` and ``api_calls`` are views over normalised storage tables.

The views must show exactly the documented columns and types, and a store written before the views
existed (both tables spelled out row by row) must be upgraded in place without losing or changing a row.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import pytest

from traceforge.store import LAYOUT_TABLE, Store
from traceforge.store.schema import DDL, ROW_COLUMN, ROW_FIELDS, STORAGE_SCHEMA, VIEW_DDL


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]


def _rows(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[Any, ...]]:
    return sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


def test_views_have_the_documented_columns_and_types(ingested: Any, small_matmul_export: Path) -> None:
    db, _trace_id = ingested(small_matmul_export)
    documented = duckdb.connect()
    stored = duckdb.connect(str(db), read_only=True)
    try:
        for table in VIEW_DDL:
            documented.execute(DDL[table])
            assert _columns(stored, table) == _columns(documented, table), table
            kind = stored.execute(
                "SELECT table_type FROM information_schema.tables "
                "WHERE table_schema = 'main' AND table_name = ?",
                [table],
            ).fetchone()
            assert kind == ("VIEW",)
    finally:
        documented.close()
        stored.close()


@pytest.mark.slow
def test_a_store_with_spelled_out_tables_is_upgraded(
    ingested: Any, small_matmul_export: Path, llama_export: Path, tmp_path: Path
) -> None:
    """Rebuild the old layout (every table a base table) from a current store, open it, compare every row."""
    current = tmp_path / "current.duckdb"
    shutil.copyfile(ingested(small_matmul_export)[0], current)
    with Store(current) as store:
        from traceforge.ingest import run

        outcomes = run(store, [str(llama_export)]).outcomes
        assert [o.status for o in outcomes] == ["ingested"]
    src = duckdb.connect(str(current), read_only=True)
    tables = [*DDL]
    before = {table: _rows(src, table) for table in tables}
    src.close()
    assert len(before["kernels"]) > 180_000 and len(before["api_calls"]) > 400_000

    old = tmp_path / "old_layout.duckdb"
    con = duckdb.connect(str(old))
    con.execute(f"ATTACH '{current}' AS cur (READ_ONLY)")
    for table in tables:
        con.execute(DDL[table])
        con.execute(f"INSERT INTO {table} SELECT * FROM cur.{table}")
    con.execute("DETACH cur")
    assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone() == (0,)
    con.close()

    for _ in range(2):  # the second open finds the new layout and changes nothing
        Store(old).close()
        con = duckdb.connect(str(old), read_only=True)
        try:
            after = {table: _rows(con, table) for table in tables}
            classes = con.execute(f"SELECT count(*) FROM {STORAGE_SCHEMA}.kernel_classes").fetchone()
        finally:
            con.close()
        for table in tables:
            assert after[table] == before[table], f"{table} changed in the upgrade"
        assert classes is not None and 0 < classes[0] < 1000


def test_storage_rows_written_as_plain_columns_are_packed(
    ingested: Any, small_matmul_export: Path, tmp_path: Path
) -> None:
    """A store whose row tables hold plain columns (the layout before ``ROW_COLUMN``) is packed in place."""
    db = tmp_path / "plain_rows.duckdb"
    shutil.copyfile(ingested(small_matmul_export)[0], db)
    con = duckdb.connect(str(db))
    before = {table: _rows(con, table) for table in VIEW_DDL}
    con.execute(f"DROP TABLE {STORAGE_SCHEMA}.{LAYOUT_TABLE}")  # that layout recorded no digest
    for table, fields in ROW_FIELDS.items():
        columns = ", ".join(f"{ROW_COLUMN}.{name} AS {name}" for name, _kind in fields)
        con.execute(f"CREATE TABLE {STORAGE_SCHEMA}._plain AS SELECT {columns} FROM {STORAGE_SCHEMA}.{table}")
        con.execute(f"DROP TABLE {STORAGE_SCHEMA}.{table}")
        con.execute(f"ALTER TABLE {STORAGE_SCHEMA}._plain RENAME TO {table}")
    con.close()

    for _ in range(2):  # the second open finds the packed layout and changes nothing
        Store(db).close()
        con = duckdb.connect(str(db), read_only=True)
        try:
            for table in ROW_FIELDS:
                assert _columns(con, f"{STORAGE_SCHEMA}.{table}")[0][0] == ROW_COLUMN
            for table in VIEW_DDL:
                assert _rows(con, table) == before[table], f"{table} changed in the upgrade"
        finally:
            con.close()
    assert sum(len(rows) for rows in before.values()) > 40


def test_ingest_lowers_the_buffer_pool_and_gives_it_back(
    small_matmul_export: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """While a trace lands the pool is ``TRACEFORGE_INGEST_MEMORY_LIMIT``; queries get the other limit."""
    from traceforge.ingest import run

    monkeypatch.setenv("TRACEFORGE_MEMORY_LIMIT", "300MB")
    monkeypatch.setenv("TRACEFORGE_INGEST_MEMORY_LIMIT", "100MB")

    def limit(store: Store) -> str:
        row = store.con.execute("SELECT current_setting('memory_limit')").fetchone()
        assert row is not None
        return str(row[0])

    with Store(tmp_path / "s.duckdb") as store:
        configured = limit(store)
        with store.ingest_memory():
            during = limit(store)
        assert [o.status for o in run(store, [str(small_matmul_export)]).outcomes] == ["ingested"]
        assert limit(store) == configured
    # DuckDB reports limits in MiB: 300 MB ~ 286 MiB, 100 MB ~ 95 MiB.
    assert configured.startswith("286") and during.startswith("95"), (configured, during)


def _setting(store: Store, name: str) -> str:
    row = store.con.execute(f"SELECT current_setting('{name}')").fetchone()
    assert row is not None
    return str(row[0])


def test_ingest_on_a_many_core_host_caps_duckdb_threads(
    llama_export: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """DuckDB's thread-per-core default ran a small ingest pool out of memory on hosts of many cores.

    64 threads with a 16MB pool failed on llama1b_n1 ("failed to pin block") before the ingest capped its
    threads and sized its pool for them; the store gets its own settings back afterwards.
    """
    from traceforge.ingest import run

    monkeypatch.setenv("TRACEFORGE_INGEST_MEMORY_LIMIT", "16MB")
    monkeypatch.delenv("TRACEFORGE_INGEST_THREADS", raising=False)
    with Store(tmp_path / "s.duckdb") as store:
        store.con.execute("SET threads = 64")
        with store.ingest_memory():
            during = (_setting(store, "threads"), _setting(store, "memory_limit"))
        outcomes = run(store, [str(llama_export)]).outcomes
        assert [(o.status, o.message) for o in outcomes][0][0] == "ingested", outcomes[0].message
        assert _setting(store, "threads") == "64"
        (kernels,) = store.con.execute("SELECT count(*) FROM kernels").fetchone() or (0,)
    expected = (
        sqlite3.connect(f"file:{llama_export}?mode=ro", uri=True)
        .execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL")
        .fetchone()
    )
    assert (kernels,) == expected
    # 4 threads, each left 8 MiB: the 16MB asked for is raised to 32 MiB.
    assert during == ("4", "32.0 MiB"), during


def test_ingest_threads_and_pool_come_from_the_environment(
    small_matmul_export: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    from traceforge.ingest import run

    monkeypatch.setenv("TRACEFORGE_INGEST_THREADS", "1")
    monkeypatch.setenv("TRACEFORGE_INGEST_MEMORY_LIMIT", "0.5GiB")
    with Store(tmp_path / "s.duckdb") as store:
        with store.ingest_memory():
            assert (_setting(store, "threads"), _setting(store, "memory_limit")) == ("1", "512.0 MiB")
        monkeypatch.setenv("TRACEFORGE_INGEST_THREADS", "many")
        outcomes = run(store, [str(small_matmul_export)]).outcomes
        assert outcomes[0].status == "failed"
        assert "TRACEFORGE_INGEST_THREADS='many' is not a whole number" in outcomes[0].message
        monkeypatch.setenv("TRACEFORGE_INGEST_THREADS", "2")
        monkeypatch.setenv("TRACEFORGE_INGEST_MEMORY_LIMIT", "lots")
        outcomes = run(store, [str(small_matmul_export)]).outcomes
        assert "TRACEFORGE_INGEST_MEMORY_LIMIT='lots' is not a size" in outcomes[0].message
        assert store.con.execute("SELECT count(*) FROM traces").fetchone() == (0,)
        monkeypatch.delenv("TRACEFORGE_INGEST_MEMORY_LIMIT")
        assert [o.status for o in run(store, [str(small_matmul_export)]).outcomes] == ["ingested"]


def test_a_store_before_cuda_graphs_gets_the_graph_columns_and_reanalysis_fills_them(
    ingested: Any, real_export: Any, tmp_path: Path
) -> None:
    """Layout 3 (before issue 21: no graph columns or tables, metric version 1) is upgraded in place; the
    new columns are NULL until ``reanalyze`` recomputes them. Reanalysis uses the stored graph executions:
    on a store that has them it reproduces a fresh ingest; one written before them had none to store."""
    from traceforge.ingest.reanalyze import reanalyze, stale_traces
    from traceforge.store.schema import ADDED_COLUMNS, METRIC_VERSION

    fresh, trace_id = ingested(real_export("known_graphmode_h200_nsys2025.3.sqlite"))
    metrics = (
        "(SELECT device_id, stream_id, busy_ns, gap_count, graph_launch_count, graph_ns FROM stream_metrics)"
    )
    for before_graphs in (False, True):
        db = tmp_path / f"layout3_{before_graphs}.duckdb"
        shutil.copyfile(fresh, db)
        con = duckdb.connect(str(db))
        expected = _rows(con, metrics)
        if before_graphs:
            for table, column, _kind in ADDED_COLUMNS:
                con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
            con.execute("DROP TABLE graph_launches")
            con.execute("DROP TABLE graph_summary")
            con.execute(f"UPDATE {STORAGE_SCHEMA}.{LAYOUT_TABLE} SET version = 3, digest = 'layout3'")
        con.execute("UPDATE traces SET metric_version = 1")
        con.close()

        with Store(db) as store:
            columns = {(t, c) for t, c in store.con.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
            ).fetchall()}  # fmt: skip
            assert {(t, c) for t, c, _kind in ADDED_COLUMNS} <= columns
            if before_graphs:
                assert store.con.execute("SELECT count(graph_ns) FROM device_metrics").fetchone() == (0,)
            assert stale_traces(store) == [trace_id]
            outcomes = reanalyze(store, [trace_id])
            assert [o.status for o in outcomes] == ["recomputed"], outcomes
            assert store.con.execute("SELECT metric_version FROM traces").fetchone() == (METRIC_VERSION,)
            got = _rows(store.con, metrics)
            summary = store.con.execute("SELECT count, total_ns FROM graph_summary").fetchall()
        if before_graphs:
            # No graph execution was stored: the kernels-only figures, and no graph work.
            assert sum(r[4] for r in got) == 0 and summary == []
            assert sum(r[2] for r in got) < sum(r[2] for r in expected)
        else:
            assert got == expected
            assert summary == [(20, 1_120_638)]


def test_a_store_before_idle_attribution_gets_the_idle_columns_and_reanalysis_fills_them(
    ingested: Any, real_export: Any, tmp_path: Path
) -> None:
    """Layout 4 (before issue 15: no idle columns in device_metrics or the gap rows) is upgraded in place;
    the idle columns are NULL until ``reanalyze`` recomputes them from the stored API calls, GIL ranges and
    OS calls, which reproduces a fresh ingest."""
    from traceforge.ingest.reanalyze import reanalyze, stale_traces
    from traceforge.store.schema import IDLE_COLUMNS, METRIC_VERSION

    fresh, trace_id = ingested(real_export("known_gpumetrics_osrt_h200_nsys2025.3.sqlite"))
    idle = ", ".join(IDLE_COLUMNS)
    queries = (f"(SELECT device_id, gap_total_ns, {idle} FROM device_metrics)", "(SELECT * FROM gaps)")
    db = tmp_path / "layout4.duckdb"
    shutil.copyfile(fresh, db)
    con = duckdb.connect(str(db))
    expected = [_rows(con, q) for q in queries]
    assert sum(r[1] for r in expected[0]) > 0 and sum(r[4] for r in expected[0]) > 0  # os time attributed
    for column in IDLE_COLUMNS:
        con.execute(f"ALTER TABLE device_metrics DROP COLUMN {column}")
    kept = [(n, k) for n, k in ROW_FIELDS["gap_rows"] if n not in IDLE_COLUMNS]
    con.execute("DROP VIEW gaps")
    con.execute(
        f"CREATE TABLE {STORAGE_SCHEMA}._old AS SELECT struct_pack("
        + ", ".join(f"{n} := {ROW_COLUMN}.{n}" for n, _k in kept)
        + f") AS {ROW_COLUMN} FROM {STORAGE_SCHEMA}.gap_rows"
    )
    con.execute(f"DROP TABLE {STORAGE_SCHEMA}.gap_rows")
    con.execute(f"ALTER TABLE {STORAGE_SCHEMA}._old RENAME TO gap_rows")
    con.execute(f"UPDATE {STORAGE_SCHEMA}.{LAYOUT_TABLE} SET version = 4, digest = 'layout4'")
    con.execute("UPDATE traces SET metric_version = 2")
    con.close()

    with Store(db) as store:
        nulls = store.con.execute("SELECT count(idle_os_ns) FROM device_metrics").fetchone()
        assert nulls == (0,)
        assert store.con.execute("SELECT count(*), count(idle_os_ns) FROM gaps").fetchone() == (70, 0)
        assert stale_traces(store) == [trace_id]
        outcomes = reanalyze(store, [trace_id])
        assert [o.status for o in outcomes] == ["recomputed"], outcomes
        assert store.con.execute("SELECT metric_version FROM traces").fetchone() == (METRIC_VERSION,)
        got = [_rows(store.con, q) for q in queries]
    assert got[0] == expected[0]
    # gaps: the same rows (metric_version aside, which is current in both)
    assert got[1] == expected[1]


def test_a_store_before_the_launch_split_gets_its_columns_and_a_reingest_fills_them(
    ingested: Any, small_matmul_export: Path, tmp_path: Path
) -> None:
    """Layout 5 (before issue 16's launch split: no ``api_end_ns`` in the kernel rows, no split columns) is
    upgraded in place: the split is NULL (the calls' ends were never kept, so ``reanalyze`` cannot recompute
    it) until ``ingest --force`` stores the trace again, which reproduces a fresh ingest."""
    import traceforge
    from traceforge.store.schema import LAUNCH_SPLIT_METRIC_COLUMNS, LAUNCH_SPLIT_SUMMARY_COLUMNS

    fresh, _trace_id = ingested(small_matmul_export)
    split = ", ".join(c for c, _k in LAUNCH_SPLIT_METRIC_COLUMNS)
    per_name = ", ".join(c for c, _k in LAUNCH_SPLIT_SUMMARY_COLUMNS)
    queries = (
        f"(SELECT device_id, {split} FROM device_metrics)",
        f"(SELECT stream_id, {split} FROM stream_metrics)",
        f"(SELECT name, {per_name} FROM kernel_summary)",
        "(SELECT start_ns, api_end_ns, api_ns, queue_ns FROM kernels)",
    )
    db = tmp_path / "layout5.duckdb"
    shutil.copyfile(fresh, db)
    con = duckdb.connect(str(db))
    expected = [_rows(con, q) for q in queries]
    assert any(r[4] for r in expected[0])  # kernels queued
    for table, columns in (
        ("device_metrics", LAUNCH_SPLIT_METRIC_COLUMNS),
        ("stream_metrics", LAUNCH_SPLIT_METRIC_COLUMNS),
        ("kernel_summary", LAUNCH_SPLIT_SUMMARY_COLUMNS),
    ):
        for column, _kind in columns:
            con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    kept = [(n, k) for n, k in ROW_FIELDS["kernel_rows"] if n != "api_end_ns"]
    con.execute("DROP VIEW kernels")
    con.execute(
        f"CREATE TABLE {STORAGE_SCHEMA}._old AS SELECT struct_pack("
        + ", ".join(f"{n} := {ROW_COLUMN}.{n}" for n, _k in kept)
        + f") AS {ROW_COLUMN} FROM {STORAGE_SCHEMA}.kernel_rows"
    )
    con.execute(f"DROP TABLE {STORAGE_SCHEMA}.kernel_rows")
    con.execute(f"ALTER TABLE {STORAGE_SCHEMA}._old RENAME TO kernel_rows")
    con.execute(f"UPDATE {STORAGE_SCHEMA}.{LAYOUT_TABLE} SET version = 5, digest = 'layout5'")
    con.execute("UPDATE traces SET metric_version = 3")
    con.close()

    with Store(db) as store:
        assert store.con.execute(
            "SELECT count(*), count(api_end_ns), count(queue_ns) FROM kernels"
        ).fetchone() == (
            42,
            0,
            0,
        )
        assert store.con.execute("SELECT count(launch_queue_count) FROM device_metrics").fetchone() == (0,)
        # The kernel rows themselves are unchanged.
        assert store.con.execute(
            "SELECT count(*) FROM kernels WHERE api_start_ns IS NOT NULL"
        ).fetchone() == (42,)
    with traceforge.connect(db) as tf:
        tf.ingest([small_matmul_export], force=True)
        got = [_rows(tf.store.con, q) for q in queries]
    assert got == expected
