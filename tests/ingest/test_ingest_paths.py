"""The API and the CLI ingest through one path: same files picked, same rows stored, same failures recorded.

Before issue 20 they disagreed: given a folder with ``a.sqlite``, ``a.nsys-rep`` (its report) and
``.hidden/b.sqlite``, the API took all three and the CLI only ``a.sqlite``; and only the CLI cleared a fixed
file from ``ingest_failures``. Both now go through ``traceforge.ingest.run``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import duckdb
import pytest

import traceforge

TRACE_COLUMNS = (
    "trace_id, source_path, export_path, fingerprint, file_size_bytes, nsys_version, schema_version, "
    "gpu_count, kernel_count, memop_count, api_call_count, nvtx_count, metric_version"
)
FAILURE_COLUMNS = "path, error_code, message"


def _variant(source: Path, dest: Path, shift_ns: int) -> Path:
    """A copy of ``source`` whose kernels start ``shift_ns`` later (other content, other fingerprint)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    os.chmod(dest, 0o644)
    con = sqlite3.connect(dest)
    con.execute(
        'UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = start + ?, "end" = "end" + ?', [shift_ns, shift_ns]
    )
    con.commit()
    con.close()
    return dest


@pytest.fixture
def folder(tmp_path: Path, small_matmul_export: Path) -> Path:
    """``a.sqlite``, its report ``a.nsys-rep``, ``.hidden/b.sqlite`` and a bad ``bad.sqlite``."""
    root = tmp_path / "captures"
    root.mkdir()
    shutil.copyfile(small_matmul_export, root / "a.sqlite")
    (root / "a.nsys-rep").write_bytes(b"the report a.sqlite was exported from")
    _variant(small_matmul_export, root / ".hidden" / "b.sqlite", 5_000)
    (root / "bad.sqlite").write_text("not an export at all\n")
    return root


def _rows(db: Path) -> tuple[list[tuple], list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        traces = con.execute(f"SELECT {TRACE_COLUMNS} FROM traces ORDER BY trace_id").fetchall()
        failures = con.execute(f"SELECT {FAILURE_COLUMNS} FROM ingest_failures ORDER BY path").fetchall()
    finally:
        con.close()
    return traces, failures


def _api(db: Path, inputs: list[Path], **options: object) -> list[traceforge.ingest.IngestOutcome]:
    with traceforge.connect(db) as tf:
        return tf.ingest(inputs, raise_on_error=False, **options)  # type: ignore[arg-type]


def test_api_and_cli_pick_the_same_files_and_store_the_same_rows(
    folder: Path, tmp_path: Path, run_cli
) -> None:
    api_db, cli_db = tmp_path / "api.duckdb", tmp_path / "cli.duckdb"
    outcomes = _api(api_db, [folder])
    res = run_cli("ingest", "--db", cli_db, folder)
    assert res.rc == 1, res
    assert "Traceback" not in res.stderr, res

    # one file of a.sqlite / a.nsys-rep, nothing from the hidden folder, the bad file failed
    assert sorted((os.path.basename(o.path), o.status) for o in outcomes) == [
        ("a.sqlite", "ingested"),
        ("bad.sqlite", "failed"),
    ]
    assert "1 ingested, 0 skipped, 1 failed" in res.stderr, res
    api_rows, cli_rows = _rows(api_db), _rows(cli_db)
    assert api_rows == cli_rows
    traces, failures = api_rows
    assert [os.path.basename(t[1]) for t in traces] == ["a.sqlite"]
    assert [(os.path.basename(f[0]), f[1]) for f in failures] == [("bad.sqlite", "not_an_export")]


def test_a_fixed_file_is_cleared_from_ingest_failures_by_both(
    folder: Path, tmp_path: Path, run_cli, small_matmul_export: Path
) -> None:
    api_db, cli_db = tmp_path / "api.duckdb", tmp_path / "cli.duckdb"
    _api(api_db, [folder])
    assert run_cli("ingest", "--db", cli_db, folder).rc == 1
    assert len(_rows(api_db)[1]) == len(_rows(cli_db)[1]) == 1

    _variant(small_matmul_export, folder / "bad.sqlite", 9_000)  # fixed: now a real export
    outcomes = _api(api_db, [folder])
    assert sorted((os.path.basename(o.path), o.status) for o in outcomes) == [
        ("a.sqlite", "skipped"),
        ("bad.sqlite", "ingested"),
    ]
    res = run_cli("ingest", "--db", cli_db, folder)
    assert res.rc == 0, res
    api_rows, cli_rows = _rows(api_db), _rows(cli_db)
    assert api_rows == cli_rows
    traces, failures = api_rows
    assert failures == []
    assert sorted(os.path.basename(t[1]) for t in traces) == ["a.sqlite", "bad.sqlite"]


def test_api_jobs_2_stores_what_jobs_1_stores(
    folder: Path, tmp_path: Path, small_matmul_export: Path
) -> None:
    for i in range(3):  # a few more distinct traces, so that two workers share them
        _variant(small_matmul_export, folder / f"run{i}" / "c.sqlite", 1_000 * (i + 1))
    one, two = tmp_path / "jobs1.duckdb", tmp_path / "jobs2.duckdb"
    outcomes_1 = _api(one, [folder], jobs=1)
    outcomes_2 = _api(two, [folder], jobs=2)

    def summary(outcomes: list[traceforge.ingest.IngestOutcome]) -> list[tuple]:
        # a worker hashes a file before reading it, so its failures may know their trace id: not compared
        return sorted((o.path, o.status, None if o.status == "failed" else o.trace_id) for o in outcomes)

    assert summary(outcomes_1) == summary(outcomes_2)
    assert [o.status for o in outcomes_1].count("ingested") == 4
    assert _rows(one) == _rows(two)
    con = duckdb.connect(str(two), read_only=True)
    try:
        per_trace = con.execute("SELECT trace_id, count(*) FROM kernels GROUP BY 1 ORDER BY 1").fetchall()
    finally:
        con.close()
    con = duckdb.connect(str(one), read_only=True)
    try:
        assert (
            per_trace
            == con.execute("SELECT trace_id, count(*) FROM kernels GROUP BY 1 ORDER BY 1").fetchall()
        )
    finally:
        con.close()
