"""``traceforge rm`` and ``Traceforge.rm``: a trace leaves the store with every row of it, in every table."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

import traceforge

NODEMODE = "known_nodemode_h200_nsys2025.3.sqlite"

#: Columns that differ between two ingests of the same file (when it landed).
_WHEN = {"ingested_at", "failed_at"}


def _dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every base table of every schema (``tf_store`` included), sorted, times left out."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() ORDER BY 1, 2"
        ).fetchall()
        out = {}
        for schema, table in tables:
            columns = [
                c
                for (c,) in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
                    "AND schema_name = ? AND table_name = ? ORDER BY column_index",
                    [schema, table],
                ).fetchall()
                if c not in _WHEN
            ]
            listed = ", ".join(f'"{c}"' for c in columns)
            rows = con.execute(f'SELECT {listed} FROM "{schema}"."{table}"').fetchall()
            out[f"{schema}.{table}"] = sorted(rows, key=repr)
        return out
    finally:
        con.close()


def _rows_of(db: Path, trace_id: str) -> dict[str, int]:
    """Per table of any schema with a trace_id / trace_key column (or packed row field): rows of the trace."""
    key = int(trace_id, 16)
    con = duckdb.connect(str(db), read_only=True)
    try:
        found = {}
        for schema, table, column, kind in con.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database()"
        ).fetchall():
            if column == "trace_id":
                where, value = "trace_id = ?", trace_id
            elif column == "trace_key":
                where, value = "trace_key = ?", key
            elif kind.startswith("STRUCT(") and "trace_key " in kind:
                where, value = f'"{column}".trace_key = ?', key
            else:
                continue
            sql = f'SELECT count(*) FROM "{schema}"."{table}" WHERE {where}'
            (n,) = con.execute(sql, [value]).fetchone()
            found[f"{schema}.{table}.{column}"] = n
        return found
    finally:
        con.close()


def _ingest(run_cli, db: Path, *paths: Path) -> None:
    result = run_cli("ingest", "--db", db, *paths)
    assert result.rc == 0, result


@pytest.fixture
def two_exports(real_export, small_matmul_export, tmp_path) -> tuple[Path, Path]:
    """Private copies of two real exports (small_matmul: 42 kernels; the node-mode graph capture)."""
    a = tmp_path / small_matmul_export.name
    b = tmp_path / NODEMODE
    shutil.copyfile(small_matmul_export, a)
    shutil.copyfile(real_export(NODEMODE), b)
    return a, b


def _trace_id(db: Path, name: str) -> str:
    con = duckdb.connect(str(db), read_only=True)
    try:
        (tid,) = con.execute("SELECT trace_id FROM traces WHERE source_path LIKE '%' || ?", [name]).fetchone()
        return str(tid)
    finally:
        con.close()


def test_rm_then_reingest_is_a_fresh_store(run_cli, two_exports, tmp_path):
    a, b = two_exports
    db = tmp_path / "store.duckdb"
    _ingest(run_cli, db, a, b)
    tid = _trace_id(db, a.name)
    with duckdb.connect(str(db)) as con:
        con.execute(
            "INSERT INTO ingest_failures VALUES (?, NULL, 'E', 'old failure', now()), "
            "('/elsewhere/other.sqlite', NULL, 'E', 'another file', now())",
            [str(a)],
        )

    result = run_cli("rm", "--db", db, a.name)  # by file name
    assert result.rc == 0, result
    assert tid in result.stdout
    # Nothing of the trace is left in any table of any schema (views included).
    left = _rows_of(db, tid)
    assert left and not any(left.values()), {k: n for k, n in left.items() if n}

    only_b = tmp_path / "only_b.duckdb"
    _ingest(run_cli, only_b, b)
    after_rm = _dump(db)
    # Its failure went with it; another file's stays.
    assert after_rm.pop("main.ingest_failures") == [("/elsewhere/other.sqlite", None, "E", "another file")]
    assert after_rm == {k: v for k, v in _dump(only_b).items() if k != "main.ingest_failures"}

    # Ingested again, it lands as into a fresh store (the walkthrough got 168 kernels instead of 42).
    _ingest(run_cli, db, a)
    fresh = tmp_path / "fresh.duckdb"
    _ingest(run_cli, fresh, b, a)
    again = _dump(db)
    again.pop("main.ingest_failures")
    expected = _dump(fresh)
    expected.pop("main.ingest_failures")
    assert again == expected
    assert len([r for r in again["main.device_metrics"] if tid in r]) == 1
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM kernels WHERE trace_id = ?", [tid]).fetchone() == (42,)


def test_rm_covers_tables_added_later_and_unlinks_cells(small_matmul_export, tmp_path):
    """Tables found in the catalog, not a list: a new table in any schema loses the trace's rows too."""
    from traceforge.runners.results import ensure_tables

    db = tmp_path / "store.duckdb"
    with traceforge.connect(db) as tf:
        tf.ingest([small_matmul_export])
        tid = tf.sql("SELECT trace_id FROM traces")["trace_id"][0]
        con = tf.store.con
        ensure_tables(con)
        con.execute("INSERT INTO cells (cell_id, run_id, trace_id) VALUES ('c1', 'r1', ?)", [tid])
        con.execute("CREATE TABLE gil_samples (trace_id VARCHAR, t_ns BIGINT)")
        con.execute("INSERT INTO gil_samples VALUES (?, 1), ('ffffffffffffffff', 2)", [tid])
        con.execute("CREATE TABLE tf_store.os_rows (trace_key UBIGINT, t_ns BIGINT)")
        con.execute("INSERT INTO tf_store.os_rows VALUES (?, 1), (1, 2)", [int(tid, 16)])
        con.execute("CREATE TABLE tf_store.metric_rows (fields STRUCT(trace_key UBIGINT, v DOUBLE))")
        con.execute("INSERT INTO tf_store.metric_rows VALUES ({'trace_key': ?, 'v': 1.0})", [int(tid, 16)])

        assert tf.rm(tid[:6]) == [tid]  # a unique prefix

        assert tf.sql("SELECT cell_id, trace_id FROM cells").rows() == [("c1", None)]
        assert tf.sql("SELECT t_ns FROM gil_samples").rows() == [(2,)]
        assert tf.sql("SELECT t_ns FROM tf_store.os_rows").rows() == [(2,)]
        assert tf.sql("SELECT count(*) FROM tf_store.metric_rows").rows() == [(0,)]
    left = _rows_of(db, tid)
    assert not any(left.values()), {k: n for k, n in left.items() if n}


@pytest.mark.parametrize("name", ["nosuchtrace", ""])
def test_rm_refuses_unknown_and_ambiguous_names(run_cli, two_exports, tmp_path, name):
    a, b = two_exports
    db = tmp_path / "store.duckdb"
    _ingest(run_cli, db, a, b)
    before = _dump(db)
    # An unknown name, or one of two names unknown: one line, rc 1, nothing removed.
    result = run_cli("rm", "--db", db, a.name, name)
    assert result.rc != 0, result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("traceforge: error:"), result
    assert _dump(db) == before
    # A prefix both paths share is ambiguous.
    result = run_cli("rm", "--db", db, str(tmp_path) + "/")
    assert result.rc != 0 and "ambiguous" in result.stderr, result
    assert result.stderr.count("\n") == 1, result
    assert _dump(db) == before


def test_rm_help_has_an_example(run_cli):
    result = run_cli("rm", "--help")
    assert result.rc == 0 and "Example: traceforge rm" in result.stdout, result
