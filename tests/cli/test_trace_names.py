"""Trace arguments of ``diff``, ``reanalyze`` and ``export`` (real subprocesses): an id, a file name or path,
or a unique prefix of one, matched literally (``%`` and ``_`` are characters, not SQL LIKE patterns).

Two real exports are ingested under chosen file names; the ids expected are read from the store with DuckDB.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import duckdb
import pytest


@pytest.fixture(scope="module")
def named_store(
    tmp_path_factory: pytest.TempPathFactory,
    small_matmul_export: Path,
    real_export: Callable[[str], Path],
    run_cli: Any,
) -> tuple[Path, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("trace_names")
    exports = root / "exports"
    exports.mkdir()
    shutil.copyfile(small_matmul_export, exports / "run_a50.sqlite")
    shutil.copyfile(real_export("cu11_driverapi_h200_nsys2022.4.sqlite"), exports / "zeta.sqlite")
    db = root / "names.duckdb"
    result = run_cli("ingest", "--db", db, exports / "run_a50.sqlite", exports / "zeta.sqlite")
    assert result.rc == 0, str(result)
    con = duckdb.connect(str(db), read_only=True)
    try:
        ids = {
            Path(path).name: tid
            for tid, path in con.execute("SELECT trace_id, source_path FROM traces").fetchall()
        }
    finally:
        con.close()
    assert set(ids) == {"run_a50.sqlite", "zeta.sqlite"}
    return db, exports, ids


def _diff_ids(run_cli: Any, db: Path, a: str, b: str) -> tuple[str, str]:
    import json

    result = run_cli("diff", a, b, "--db", db, "--format", "json")
    assert result.rc == 0, str(result)
    doc = json.loads(result.stdout)
    return doc["trace_a"], doc["trace_b"]


def test_diff_takes_file_names_paths_and_prefixes(named_store: Any, run_cli: Any) -> None:
    db, exports, ids = named_store
    run, zeta = ids["run_a50.sqlite"], ids["zeta.sqlite"]
    assert _diff_ids(run_cli, db, "run_a50.sqlite", "zeta.sqlite") == (run, zeta)
    assert _diff_ids(run_cli, db, "run", "ZET") == (run, zeta)
    assert _diff_ids(run_cli, db, str(exports / "run_a50.sqlite"), zeta[:6]) == (run, zeta)
    assert _diff_ids(run_cli, db, str(exports / "ru"), run) == (run, run)


@pytest.mark.parametrize("pattern", ["%a50", "r_n", "%", "_"])
def test_prefixes_are_literal_not_like_patterns(named_store: Any, run_cli: Any, pattern: str) -> None:
    db, _, ids = named_store
    result = run_cli("diff", pattern, ids["zeta.sqlite"], "--db", db)
    assert result.rc == 1, str(result)
    assert result.stderr.startswith(f"traceforge: error: no trace '{pattern}'"), str(result)
    assert "Traceback" not in result.stderr


def test_id_prefix_with_underscore_is_literal(named_store: Any, run_cli: Any) -> None:
    db, _, ids = named_store
    pattern = ids["run_a50.sqlite"][0] + "_"  # as LIKE, `_` would match the id's second character
    result = run_cli("diff", pattern, ids["zeta.sqlite"], "--db", db)
    assert result.rc == 1 and "no trace" in result.stderr, str(result)


def test_ambiguous_prefix_is_one_clear_line(named_store: Any, run_cli: Any) -> None:
    db, exports, _ = named_store
    result = run_cli("diff", str(exports) + "/", "zeta", "--db", db)
    assert result.rc == 1, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ambiguous" in lines[0] and "run_a50.sqlite" in lines[0], str(result)


def test_reanalyze_and_export_take_file_name_prefixes(named_store: Any, run_cli: Any, tmp_path: Path) -> None:
    db, _, ids = named_store
    result = run_cli("reanalyze", "--db", db, "--all", "--trace", "run_a")
    assert result.rc == 0, str(result)
    assert "1 trace(s) recomputed" in result.stdout, str(result)
    out = tmp_path / "dataset"
    result = run_cli("export", "--db", db, "--output", out, "--trace", "zeta")
    assert result.rc == 0, str(result)
    assert "1 partition(s) written" in result.stdout, str(result)
    partitions = {p.name for p in (out / "kernels").iterdir()}
    assert partitions == {f"trace_id={ids['zeta.sqlite']}"}
    result = run_cli("export", "--db", db, "--output", out, "--trace", "%eta")
    assert result.rc == 1 and "no trace '%eta'" in result.stderr, str(result)
