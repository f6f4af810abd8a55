"""The package's shape: one version source, each module importable alone, the store's layout version."""

from __future__ import annotations

import importlib.metadata
import pkgutil
import subprocess
import sys

import duckdb
import pytest

import traceforge


def test_one_version_source(run_cli) -> None:
    assert traceforge.__version__ == importlib.metadata.version("traceforge")
    res = run_cli("--version")
    assert res.rc == 0, res
    assert res.stdout.startswith(f"traceforge {traceforge.__version__} (core ")
    assert "SQLite " in res.stdout


def test_every_module_imports_alone_and_import_traceforge_stays_light() -> None:
    names = [m.name for m in pkgutil.walk_packages(traceforge.__path__, "traceforge.")]
    names = [n for n in names if not n.endswith("__main__")]
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    for m in [k for k in sys.modules if k == 'traceforge' or k.startswith('traceforge.')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
    )
    subprocess.run([sys.executable, "-c", code, *names], check=True)
    light = (
        "import sys, traceforge, traceforge.ingest, traceforge.store; print(sorted("
        "m for m in ('duckdb', 'polars', 'importlib.metadata') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", light], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_store_records_its_layout_version(tmp_path) -> None:
    from traceforge.store import LAYOUT_TABLE, LAYOUT_VERSION, Store
    from traceforge.store.schema import STORAGE_SCHEMA

    db = tmp_path / "s.duckdb"
    Store(db).close()
    con = duckdb.connect(str(db))
    assert con.execute(f"SELECT version FROM {STORAGE_SCHEMA}.{LAYOUT_TABLE}").fetchall() == [
        (LAYOUT_VERSION,)
    ]
    # A store of before layout versions recorded only a digest: it is upgraded and gets the version.
    con.execute(f"CREATE OR REPLACE TABLE {STORAGE_SCHEMA}.{LAYOUT_TABLE} (digest VARCHAR)")
    con.execute(f"INSERT INTO {STORAGE_SCHEMA}.{LAYOUT_TABLE} VALUES ('0123456789abcdef')")
    con.close()
    Store(db).close()
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute(f"SELECT version FROM {STORAGE_SCHEMA}.{LAYOUT_TABLE}").fetchall() == [
        (LAYOUT_VERSION,)
    ]
    con.close()


def test_a_store_of_a_newer_layout_is_refused(tmp_path) -> None:
    from traceforge.errors import StoreError
    from traceforge.store import LAYOUT_TABLE, LAYOUT_VERSION, Store
    from traceforge.store.schema import STORAGE_SCHEMA

    db = tmp_path / "s.duckdb"
    Store(db).close()
    con = duckdb.connect(str(db))
    con.execute(f"UPDATE {STORAGE_SCHEMA}.{LAYOUT_TABLE} SET version = {LAYOUT_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer than this traceforge"):
        Store(db)
