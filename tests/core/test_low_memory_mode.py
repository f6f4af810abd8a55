"""The low-memory way of ingesting large traces gives exactly the tables of the default way.

Above ``TRACEFORGE_LOW_MEMORY_ABOVE`` GPU operations (2M by default) the core gathers kernel columns one at a
time, computes the metric parts in turn (the NVTX projection first) and finds percentiles without copying
the values. Setting the threshold to 0 takes that path on small exports, so every stored row can be compared
with an ingest that took the default path (itself checked against the reference implementation and nsys).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import duckdb
import pytest

from traceforge.store.schema import DDL
from traceforge.synth import synthesize

#: Columns that record when or by what an ingest ran, not what it computed.
RUN_COLUMNS = {"traces": ["ingested_at"]}


def _tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for table in DDL:
            exclude = RUN_COLUMNS.get(table)
            columns = f"* EXCLUDE ({', '.join(exclude)})" if exclude else "*"
            out[table] = sorted(con.execute(f"SELECT {columns} FROM {table}").fetchall(), key=repr)
        return out
    finally:
        con.close()


@pytest.fixture(scope="module")
def multi_device(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 devices x 3 streams with NVTX request ranges: every metric part has work on every device."""
    out = tmp_path_factory.mktemp("low_memory") / "multi.sqlite"
    synthesize(out, kernels=20_000, devices=2, streams=3, seed=5)
    return out


@pytest.mark.parametrize(
    "export_name", ["multi_device", pytest.param("llama_export", marks=pytest.mark.slow)]
)
def test_low_memory_ingest_stores_the_same_rows(
    export_name: str, request: pytest.FixtureRequest, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    export: Path = request.getfixturevalue(export_name)
    default, low = tmp_path / "default.duckdb", tmp_path / "low.duckdb"
    assert run_cli("ingest", "--db", default, export).rc == 0
    result = run_cli("ingest", "--db", low, export, env={"TRACEFORGE_LOW_MEMORY_ABOVE": "0"})
    assert result.rc == 0, result.stderr
    expected, got = _tables(default), _tables(low)
    assert sum(len(rows) for rows in expected.values()) > 20_000
    assert expected["gaps"] and expected["nvtx_projection"] and expected["kernel_summary"]
    for table in DDL:
        assert got[table] == expected[table], f"{table} differs in the low-memory ingest"
