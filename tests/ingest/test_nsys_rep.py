"""The ``.nsys-rep`` success path: a GPU report that Debian's nsys 2022.4 can export, ingested end to end.

``cu11_driverapi_h200_nsys2022.4.nsys-rep`` was written by nsys 2022.4 on an H200 (90 kernels launched through
the CUDA driver API). traceforge runs ``nsys export`` on it; the kernel count it stores is compared with the
same capture's SQLite export (``tests/data``), read with plain ``sqlite3``. The error paths of ``.nsys-rep``
ingest (no nsys, a newer report, a CPU-only report) are in ``test_bad_input``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import pytest

from conftest import data_export

pytestmark = [pytest.mark.nsys]

SQLITE = "cu11_driverapi_h200_nsys2022.4.sqlite"


def _sqlite_scalar(path: Path, query: str) -> Any:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(query).fetchone()[0]
    finally:
        con.close()


def test_nsys_rep_of_nsys_2022_4_is_exported_and_ingested(
    cu11_rep: Path, fresh_db: Path, run_cli: Any
) -> None:
    expected = _sqlite_scalar(data_export(SQLITE), "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL")
    assert expected == 90
    result = run_cli("ingest", "--db", fresh_db, cu11_rep)
    assert result.rc == 0, str(result)
    assert "Traceback" not in result.stderr
    con = duckdb.connect(str(fresh_db), read_only=True)
    try:
        traces = con.execute("SELECT source_path, nsys_version, kernel_count FROM traces").fetchall()
        kernels = con.execute("SELECT count(*) FROM kernels").fetchone()[0]
        per_device = con.execute("SELECT sum(kernel_count) FROM device_metrics").fetchone()[0]
    finally:
        con.close()
    assert len(traces) == 1, traces
    source_path, nsys_version, kernel_count = traces[0]
    assert Path(source_path).name == cu11_rep.name
    assert "2022.4" in str(nsys_version)
    assert kernel_count == kernels == per_device == expected
