"""GPU metric samples in the store (issue 15): their packed storage, a forced re-ingest, re-analysis from the
stored samples, and the Parquet dataset round trip. Their values are checked against the reference in
tests/test_host_evidence.py; here the real capture ``known_gpumetrics_osrt`` (167,002 samples, 22 metrics).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import duckdb

GPUMETRICS = "known_gpumetrics_osrt_h200_nsys2025.3.sqlite"
TABLES = {
    "gpu_metrics": "device_id, metric, ts_ns, value",
    "gpu_metric_summary": "device_id, metric, sample_count, mean, min, max, p50, p90, p99",
    "nvtx_gpu_metrics": '"range", metric, mean, samples',
}


def _rows(con: duckdb.DuckDBPyConnection, trace_id: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: sorted(
            con.execute(f"SELECT {cols} FROM {table} WHERE trace_id = ?", [trace_id]).fetchall(), key=repr
        )
        for table, cols in TABLES.items()
    }


def test_samples_are_stored_packed_with_each_name_once(
    real_export: Callable[[str], Path], ingested: Callable[[Path], tuple[Path, str]]
) -> None:
    db, trace_id = ingested(real_export(GPUMETRICS))
    con = duckdb.connect(str(db), read_only=True)
    try:
        key = int(trace_id, 16)
        names = con.execute(
            "SELECT count(*), count(DISTINCT metric) FROM tf_store.gpu_metric_classes WHERE trace_key = ?",
            [key],
        ).fetchone()
        assert names == (22, 22)
        stored = con.execute(
            "SELECT count(*) FROM tf_store.gpu_metric_rows WHERE fields.trace_key = ?", [key]
        ).fetchone()
        assert stored == (167_002,)
        kind = con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = 'gpu_metrics'"
        ).fetchone()
        assert kind == ("VIEW",)
        assert con.execute("SELECT count(*) FROM nvtx_gpu_metrics").fetchone() == (71 * 22,)
    finally:
        con.close()


def test_forced_reingest_replaces_the_samples(real_export: Callable[[str], Path], tmp_path: Path) -> None:
    import traceforge

    export = real_export(GPUMETRICS)
    db = tmp_path / "twice.duckdb"
    with traceforge.connect(db) as tf:
        tf.ingest([export])
        (trace_id,) = tf.sql("SELECT trace_id FROM traces")["trace_id"].to_list()
        tf.ingest([export], force=True)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM gpu_metrics").fetchone() == (167_002,)
        assert con.execute("SELECT count(*) FROM tf_store.gpu_metric_classes").fetchone() == (22,)
        assert con.execute("SELECT count(*) FROM gpu_metric_summary").fetchone() == (22,)
        assert con.execute("SELECT count(*) FROM nvtx_gpu_metrics").fetchone() == (71 * 22,)
        assert len(_rows(con, trace_id)["gpu_metrics"]) == 167_002
    finally:
        con.close()


def test_reanalysis_recomputes_the_metric_tables_from_the_stored_samples(
    real_export: Callable[[str], Path], ingested: Callable[[Path], tuple[Path, str]], tmp_path: Path
) -> None:
    from traceforge.ingest.reanalyze import reanalyze
    from traceforge.store import Store

    db, trace_id = ingested(real_export(GPUMETRICS))
    copy = tmp_path / "reanalyzed.duckdb"
    shutil.copyfile(db, copy)
    with Store(copy) as store:
        before = _rows(store.con, trace_id)
        store.con.execute("DELETE FROM gpu_metric_summary")
        store.con.execute("DELETE FROM nvtx_gpu_metrics")
        outcomes = reanalyze(store, [trace_id])
        assert [o.status for o in outcomes] == ["recomputed"], outcomes
        after = _rows(store.con, trace_id)
    assert len(before["gpu_metric_summary"]) == 22
    for table in TABLES:
        assert after[table] == before[table], table


def test_dataset_round_trip_keeps_every_sample(
    real_export: Callable[[str], Path], ingested: Callable[[Path], tuple[Path, str]], tmp_path: Path
) -> None:
    from traceforge.store import Store, dataset

    db, trace_id = ingested(real_export(GPUMETRICS))
    root = tmp_path / "ds"
    con = duckdb.connect(str(db), read_only=True)
    try:
        before = _rows(con, trace_id)
        assert dataset.export_trace(con, root, trace_id)
    finally:
        con.close()
    with Store(tmp_path / "loaded.duckdb") as store:
        dataset.load_partition(store, root, trace_id)
        after = _rows(store.con, trace_id)
    for table in TABLES:
        assert after[table] == before[table], table
