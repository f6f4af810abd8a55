"""A file changed while it is read is refused, never stored torn or under the old file's fingerprint
(issue 19, item 10); and a long-text export ingests with the default pool (item 6)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

import traceforge
from traceforge.errors import InputChangedError
from traceforge.ingest.trace import read_trace, write_trace


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("change", ["appended", "rewritten in place", "replaced by rename"])
def test_an_export_changed_between_read_and_commit_is_refused(
    tmp_path: Path, llama_export: Path, small_matmul_export: Path, change: str
) -> None:
    """The trace is read (and hashed) from one version of the file; another writer changes the file before
    the API calls finish streaming and the commit: the ingest is refused and nothing is stored."""
    export = tmp_path / "run.sqlite"
    shutil.copyfile(llama_export, export)
    db = tmp_path / "store.duckdb"
    with traceforge.connect(db) as tf:
        data = read_trace(str(export), threads=2)
        if change == "appended":
            with open(export, "ab") as fh:
                fh.write(b"\0" * 4096)
        elif change == "rewritten in place":
            with open(export, "r+b") as fh:  # same size, new bytes: only the times tell
                fh.seek(4096)
                fh.write(b"\1" * 16)
        else:
            shutil.copyfile(small_matmul_export, tmp_path / "new.sqlite")
            os.replace(tmp_path / "new.sqlite", export)
        with pytest.raises(InputChangedError, match="changed while it was read"):
            write_trace(tf.store, data)
        assert tf.sql("SELECT count(*) AS n FROM traces")["n"][0] == 0
        assert tf.sql("SELECT count(*) AS n FROM kernels")["n"][0] == 0


def test_the_cli_says_a_changed_file_was_not_stored(tmp_path: Path, llama_export: Path, run_cli: Any) -> None:
    """Through the CLI in a subprocess whose ``write_trace`` first appends to the file (another writer
    between the read and the commit): exit 1 and a line saying nothing was stored; once the file is
    complete, it ingests (under its new size and fingerprint)."""
    export = tmp_path / "growing.sqlite"
    shutil.copyfile(llama_export, export)
    db = tmp_path / "store.duckdb"
    script = (
        "import sys, traceforge\n"
        "from traceforge.ingest import trace\n"
        "original = trace.write_trace\n"
        "def write(store, data, **kw):\n"
        "    open(sys.argv[1], 'ab').write(b'\\0' * 4096)  # another writer appends meanwhile\n"
        "    return original(store, data, **kw)\n"
        "trace.write_trace = write\n"
        "import traceforge.cli\n"
        "sys.exit(traceforge.cli.main(['ingest', sys.argv[1], '--db', sys.argv[2]]))\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(export), str(db)], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip().splitlines()[0]
    assert "growing.sqlite: changed while it was read" in line and "nothing of it was stored" in line, (
        r.stderr
    )
    assert "[changed]" in line
    assert _rows(db, "SELECT count(*) FROM traces") == [(0,)]
    again = run_cli("ingest", export, "--db", db)
    assert again.rc == 0 and again.stdout.startswith("ingested"), again
    assert _rows(db, "SELECT file_size_bytes FROM traces") == [(export.stat().st_size,)]


def _long_text_export(src: Path, out: Path, rows: int, length: int) -> int:
    """A copy of a real export with ``rows`` NVTX push/pop ranges of ``length``-byte distinct texts on the
    real thread of its existing range, added with sqlite3; returns the bytes of text added."""
    shutil.copyfile(src, out)
    con = sqlite3.connect(out)
    start, tid = con.execute("SELECT start, globalTid FROM NVTX_EVENTS ORDER BY start LIMIT 1").fetchone()
    body = "abcdefghij" * (length // 10 + 1)
    con.executemany(
        "INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, domainId) "
        "VALUES (?, ?, 59, ?, ?, 0)",
        [(start + i * 1000, start + i * 1000 + 500, f"{i:08d}{body}"[:length], tid) for i in range(rows)],
    )
    con.commit()
    con.close()
    return rows * length


def test_an_export_with_88_mb_of_nvtx_text_ingests_with_the_default_pool(
    tmp_path: Path, small_matmul_export: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 NVTX ranges of 220 KB texts (88 MB): DuckDB keeps such strings pinned until their rows are
    written, which ran the default 64MB ingest pool out of memory ("failed to pin block"). Every range
    must land with its whole text, as SQLite reads it."""
    for variable in ("TRACEFORGE_INGEST_MEMORY_LIMIT", "TRACEFORGE_MEMORY_LIMIT"):
        monkeypatch.delenv(variable, raising=False)
    export = tmp_path / "long_text.sqlite"
    added = _long_text_export(small_matmul_export, export, rows=400, length=220_000)
    assert added > 64 * 1000**2
    db = tmp_path / "store.duckdb"
    r = run_cli("ingest", export, "--db", db)
    assert r.rc == 0, r.stderr
    con = sqlite3.connect(export)
    expected = sorted(
        (len(t), t[:8]) for (t,) in con.execute("SELECT text FROM NVTX_EVENTS WHERE text IS NOT NULL")
    )
    con.close()
    got = sorted(
        (int(n), str(p))
        for n, p in _rows(db, "SELECT length(name), substr(name, 1, 8) FROM nvtx_ranges WHERE kind != 'mark'")
    )
    assert got == expected


def test_an_export_with_38_mb_of_kernel_names_ingests_with_the_default_pool(
    tmp_path: Path, small_matmul_export: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each of the 42 kernels of a real export renamed (demangled and short name) to its own 900 KB string
    with sqlite3: 38 MB of kernel names, which also ran the 64MB pool out. The stored names must be
    SQLite's."""
    for variable in ("TRACEFORGE_INGEST_MEMORY_LIMIT", "TRACEFORGE_MEMORY_LIMIT"):
        monkeypatch.delenv(variable, raising=False)
    export = tmp_path / "long_names.sqlite"
    shutil.copyfile(small_matmul_export, export)
    con = sqlite3.connect(export)
    base = con.execute("SELECT max(id) + 1 FROM StringIds").fetchone()[0]
    kernels = [r for (r,) in con.execute("SELECT rowid FROM CUPTI_ACTIVITY_KIND_KERNEL")]
    body = "abcdefghij" * 90_000
    con.executemany(
        "INSERT INTO StringIds (id, value) VALUES (?, ?)", [(base + k, f"{k:08d}{body}") for k in kernels]
    )
    con.execute(
        "UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET demangledName = ? + rowid, shortName = ? + rowid", [base, base]
    )
    con.commit()
    expected = sorted(
        con.execute(
            "SELECT k.start, length(n.value), substr(n.value, 1, 8) FROM CUPTI_ACTIVITY_KIND_KERNEL k "
            "JOIN StringIds n ON n.id = k.demangledName"
        ).fetchall()
    )
    assert sum(length for _, length, _ in expected) > 37 * 1000**2
    con.close()
    db = tmp_path / "store.duckdb"
    r = run_cli("ingest", export, "--db", db)
    assert r.rc == 0, r.stderr
    got = sorted(
        (int(a), int(b), str(c))
        for a, b, c in _rows(db, "SELECT start_ns, length(name), substr(name, 1, 8) FROM kernels")
    )
    assert got == expected
