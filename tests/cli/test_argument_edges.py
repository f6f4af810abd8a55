"""Arguments and stores at their edges (issue 19, item 12): one clear line, never a traceback.

Windows must be finite and within the capture clock; a reader error met while DuckDB consumes the stream
is reported as the core's own reason (not DuckDB's ``arrow_scan ... External error`` wrapper, and not cut
at 300 characters); ``--db`` naming a DuckDB file that is not a traceforge store (and not empty) or a
SQLite file (an nsys export) is refused before anything is added to it. (Trace prefixes matched
literally: tests/cli/test_trace_names.py.)
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import pytest

import traceforge


@pytest.fixture(scope="module")
def one_trace(tmp_path_factory: pytest.TempPathFactory, small_matmul_export: Path) -> tuple[Path, str]:
    db = tmp_path_factory.mktemp("edges") / "store.duckdb"
    with traceforge.connect(db) as tf:
        tf.ingest([small_matmul_export])
        [trace_id] = tf.sql("SELECT trace_id FROM traces")["trace_id"].to_list()
    return db, trace_id


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("0:1e308", "beyond the capture clock's range"),
        ("nan:inf", "must be finite numbers"),
        ("-inf:5", "must be finite numbers"),
        ("0:nan", "must be finite numbers"),
        ("-1e300:0", "beyond the capture clock's range"),
    ],
)
@pytest.mark.parametrize("command", ["report", "plot"])
def test_windows_must_be_finite_and_on_the_clock(
    tmp_path: Path, run_cli: Any, one_trace: tuple[Path, str], window: str, message: str, command: str
) -> None:
    db, tid = one_trace
    out = tmp_path / ("r.html" if command == "report" else "t.svg")
    args = ["report"] if command == "report" else ["plot", "timeline", "--trace", tid]
    r = run_cli(*args, "--window", window, "--output", out, "--db", db)
    assert r.rc == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"traceforge: error: --window '{window}'"), r
    assert message in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()


def _break_a_runtime_leaf(src: Path, out: Path) -> int:
    """Copy ``src`` and give the first cell of a middle leaf page of its CUDA runtime table the largest
    rowid of its varint's length (breaking the interior keys' bounds); return that page's number."""
    shutil.copyfile(src, out)
    con = sqlite3.connect(out)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    pages = [
        p
        for (p,) in con.execute(
            "SELECT pageno FROM dbstat WHERE name = 'CUPTI_ACTIVITY_KIND_RUNTIME' AND pagetype = 'leaf' "
            "ORDER BY pageno"
        )
    ]
    con.close()
    page = pages[len(pages) // 2]
    data = bytearray(out.read_bytes())
    base = (page - 1) * page_size
    assert data[base] == 0x0D  # a table leaf
    at = base + int.from_bytes(data[base + 8 : base + 10], "big")
    while data[at] & 0x80:  # the payload length varint
        at += 1
    at += 1
    length = 1
    while data[at + length - 1] & 0x80:
        length += 1
    data[at : at + length] = bytes([0xFF] * (length - 1) + [0x7F])
    out.write_bytes(bytes(data))
    return page


def test_a_reader_error_under_duckdb_is_the_reason_itself_whole(
    tmp_path: Path, llama_export: Path, run_cli: Any
) -> None:
    """The damage is in the API calls, which the core streams while DuckDB inserts them: DuckDB reported
    ``reading the export failed: Invalid Input Error: arrow_scan: get_next failed(): External error: ...``
    cut at 300 characters, so the reason behind a long path was lost."""
    deep = tmp_path / ("a_rather_long_folder_name_" * 4) / ("and_another_one_beneath_it_" * 4)
    deep.mkdir(parents=True)
    export = deep / "damaged_runtime_table.sqlite"
    page = _break_a_runtime_leaf(llama_export, export)
    assert len(str(export)) > 250
    db = tmp_path / "store.duckdb"
    r = run_cli("ingest", export, "--db", db)
    assert r.rc == 1, r
    line = r.stderr.strip().splitlines()[0]
    assert line.startswith(f"traceforge: error: {export}: page {page}: rowid "), line
    assert line.endswith("the interior keys above give the page [corrupt]"), line
    for wrapper in ("arrow_scan", "External error", "Invalid Input Error", "reading the export failed"):
        assert wrapper not in line
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM traces").fetchone() == (0,)
    [(reason,)] = con.execute("SELECT message FROM ingest_failures").fetchall()
    con.close()
    assert reason.endswith("the interior keys above give the page") and "arrow" not in reason


def test_a_foreign_duckdb_file_is_refused_and_left_as_it_was(
    tmp_path: Path, small_matmul_export: Path, run_cli: Any
) -> None:
    db = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE measurements (t DOUBLE)")
    con.execute("CREATE VIEW recent AS SELECT * FROM measurements")
    con.close()
    r = run_cli("ingest", small_matmul_export, "--db", db)
    assert r.rc == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a DuckDB database but not a traceforge store" in lines[0], r
    assert "measurements, recent" in lines[0]
    con = duckdb.connect(str(db), read_only=True)
    names = sorted(n for (n,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall())
    con.close()
    assert names == ["measurements", "recent"]  # none of traceforge's tables added


def test_an_empty_duckdb_file_becomes_a_store(
    tmp_path: Path, small_matmul_export: Path, run_cli: Any
) -> None:
    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    r = run_cli("ingest", small_matmul_export, "--db", db)
    assert r.rc == 0 and r.stdout.startswith("ingested"), r


@pytest.mark.parametrize("command", [["ingest", "{export}"], ["traces"], ["sql", "SELECT 1"]])
def test_a_sqlite_file_as_the_store_is_refused_clearly(
    tmp_path: Path, small_matmul_export: Path, run_cli: Any, command: list[str]
) -> None:
    """DuckDB took a SQLite --db for a database to attach and tried to download its sqlite extension."""
    export = tmp_path / "run.sqlite"
    shutil.copyfile(small_matmul_export, export)
    before = export.read_bytes()
    args = [a.replace("{export}", str(small_matmul_export)) for a in command]
    r = run_cli(
        *args, "--db", export, env={"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    )
    assert r.rc == 1, r
    lines = r.stderr.strip().splitlines()
    message = "is a SQLite database (an nsys export?), not a traceforge store"
    assert any(message in ln for ln in lines) and "extension" not in r.stderr.lower(), r
    assert "Traceback" not in r.stderr
    assert export.read_bytes() == before
