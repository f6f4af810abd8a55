"""A batch stages each trace in the store's own form: it lands the rows of a direct ingest, table by table.

The staging form (``traceforge.store.dataset.stage_trace`` / ``load_staged``) is a performance trick: the
coordinator copies stored rows instead of re-deriving them from the public form. These tests hold it to the
plain way, a one-process ``ingest`` of the same real exports, on every base table of the store (storage
tables included), and check the two other roads into the staging form: a partition kept in an ``--output``
dataset by an earlier run, and one left in the staging dataset by a killed run.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from traceforge import ingest
from traceforge.ingest import batch
from traceforge.store import Store, dataset

#: Real captures that between them fill every storage table: kernels, API calls and gaps (all), GIL ranges
#: and OS calls (the 4-thread GIL capture), GPU metrics (the metrics capture), graph executions.
CAPTURES = (
    "llm_threads4_gil_osrt_h200_nsys2025.3.sqlite",
    "known_gpumetrics_osrt_h200_nsys2025.3.sqlite",
    "known_graphmode_h200_nsys2025.3.sqlite",
    "transformers_serve_cb_graphs_h200_nsys2025.3.sqlite",
)

#: Stamped when a trace lands, so different between two stores of the same rows.
STAMPS = {"ingested_at"}


def _small_groups(init):
    """The loader's ``__init__`` with groups of one partition: every trace is its own load."""

    def wrapped(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "max_group": 1})

    return wrapped


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, real_export) -> list[Path]:
    root = tmp_path_factory.mktemp("staging_archive")
    paths = []
    for name in CAPTURES:
        target = root / name
        target.write_bytes(real_export(name).read_bytes())
        paths.append(target)
    return paths


@pytest.fixture(scope="module")
def direct_store(tmp_path_factory: pytest.TempPathFactory, archive: list[Path]) -> Path:
    """The plain way: every file read and written by this process, one after the other."""
    db = tmp_path_factory.mktemp("direct") / "direct.duckdb"
    report = ingest.run(str(db), [str(p) for p in archive], jobs=1)
    assert [o.status for o in report.outcomes] == ["ingested"] * len(archive)
    return db


def _base_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND NOT temporary ORDER BY ALL"
    ).fetchall()
    return [(str(s), str(t)) for s, t in rows]


def _rows(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> list[tuple]:
    columns = [str(r[0]) for r in con.execute(f'DESCRIBE "{schema}"."{table}"').fetchall()]
    kept = ", ".join(f'"{c}"' for c in columns if c not in STAMPS)
    return con.execute(f'SELECT {kept} FROM "{schema}"."{table}" ORDER BY ALL').fetchall()


def assert_same_store(expected_db: Path, actual_db: Path, *, storage: bool = True) -> None:
    """The stores hold the same rows: in every public table and view, and (``storage``) every base table.

    ``storage=False`` for a store filled from public partitions: their class ids (private numbering in the
    storage tables) are derived again, so only what they mean, the public rows, must match.
    """
    a = duckdb.connect(str(expected_db), read_only=True)
    b = duckdb.connect(str(actual_db), read_only=True)
    try:
        tables = _base_tables(a)
        assert tables == _base_tables(b)
        views = [
            ("main", str(r[0]))
            for r in a.execute(
                "SELECT view_name FROM duckdb_views() "
                "WHERE database_name = current_database() AND NOT internal AND schema_name = 'main'"
            ).fetchall()
        ]
        assert {"kernels", "api_calls", "gaps", "gil_intervals", "os_calls", "gpu_metrics"} <= {
            v for _, v in views
        }
        compared = 0
        for schema, table in [*tables, *views]:
            if table in ("layout", "ingest_failures") or (schema != "main" and not storage):
                continue
            expected = _rows(a, schema, table)
            assert _rows(b, schema, table) == expected, f"{schema}.{table} differs"
            compared += len(expected)
        assert compared > 100_000  # the captures' rows, not empty tables
        filled = {
            t
            for s, t in tables
            if s == "tf_store" and a.execute(f"SELECT count(*) FROM {s}.{t}").fetchone()[0]
        }
        assert {
            "kernel_rows",
            "api_call_rows",
            "gap_rows",
            "gil_rows",
            "os_call_rows",
            "gpu_metric_rows",
        } <= filled
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("loaders", ["1", "3"])
def test_a_batch_lands_the_rows_of_a_direct_ingest(
    archive, direct_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loaders: str
) -> None:
    """Loaded by one loader, or by three side by side (separate DuckDB connections, groups of one)."""
    monkeypatch.setenv(batch.LOADERS_ENV, loaders)
    monkeypatch.setattr(batch._Loader, "__init__", _small_groups(batch._Loader.__init__))
    db = tmp_path / "batch.duckdb"
    report = ingest.run(str(db), [str(p) for p in archive], jobs=2)
    assert [o.status for o in report.outcomes] == ["ingested"] * len(archive), report.outcomes
    assert_same_store(direct_store, db)
    assert not (tmp_path / ".batch.duckdb.staging").exists()  # the staging dataset is gone once loaded


def test_parallel_loads_finish_where_every_commit_would_checkpoint(
    archive, direct_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four loaders, groups of one, and a store whose every commit checkpoints: the batch must finish.

    A checkpoint at a loader's commit waits for the other loads to release their tables while holding the
    GIL, which a finished load needs to do so: with automatic checkpoints left on, this deadlocked.
    """
    monkeypatch.setenv(batch.LOADERS_ENV, "4")
    monkeypatch.setattr(batch._Loader, "__init__", _small_groups(batch._Loader.__init__))
    db = tmp_path / "parallel.duckdb"
    with Store(db) as store:
        store.con.execute("SET checkpoint_threshold = '1kB'")
        report = ingest.run(store, [str(p) for p in archive], jobs=2)
        assert [o.status for o in report.outcomes] == ["ingested"] * len(archive), report.outcomes
        # the user's setting is back once the batch is done
        assert store.con.execute("SELECT current_setting('checkpoint_threshold')").fetchone() == (
            "1000 bytes",
        )
    assert_same_store(direct_store, db)


def test_a_kept_public_partition_is_staged_from_the_dataset(archive, direct_store, tmp_path: Path) -> None:
    """With ``--output``, a later batch into another store stages each trace from the kept partition."""
    out = tmp_path / "dataset"
    first = ingest.run(str(tmp_path / "first.duckdb"), [str(p) for p in archive], jobs=2, output=str(out))
    assert [o.status for o in first.outcomes] == ["ingested"] * len(archive)
    assert len(dataset.list_partitions(out)) == len(archive)
    db = tmp_path / "second.duckdb"
    report = ingest.run(str(db), [str(p) for p in archive], jobs=2, output=str(out))
    assert [o.status for o in report.outcomes] == ["ingested"] * len(archive)
    # each came from its public partition (converted by the worker), not from reading the export again
    assert all("partition from an earlier run" in o.message for o in report.outcomes), report.outcomes
    assert_same_store(direct_store, db, storage=False)


def test_a_partition_staged_by_a_killed_run_is_loaded(archive, direct_store, tmp_path: Path) -> None:
    db = tmp_path / "resumed.duckdb"
    with Store(db) as store:
        staging = batch.staging_dir(store)
    for path in archive[:2]:  # what a killed run left: staged, never loaded
        assert batch.run_job(batch.JobSpec(path=str(path), staging=staging)).status == "partitioned"
    report = ingest.run(str(db), [str(p) for p in archive], jobs=2)
    by_path = {o.path: o for o in report.outcomes}
    assert [by_path[str(p)].status for p in archive] == ["ingested"] * len(archive)
    assert all("partition from an earlier run" in by_path[str(p)].message for p in archive[:2])
    assert_same_store(direct_store, db)


def test_loads_run_side_by_side_by_default_and_never_beyond_the_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(batch.LOADERS_ENV, raising=False)
    assert [batch.loaders_for(w) for w in (1, 2, 4, 16)] == [1, 2, 4, 4]
    monkeypatch.setenv(batch.LOADERS_ENV, "1")
    assert batch.loaders_for(16) == 1
    monkeypatch.setenv(batch.LOADERS_ENV, "8")
    assert [batch.loaders_for(w) for w in (2, 16)] == [2, 8]
    monkeypatch.setenv(batch.LOADERS_ENV, "lots")  # not a count: the default
    assert batch.loaders_for(16) == 4
