"""Messages that led users astray (issue 16, item 12), with real files and real subprocesses.

* A ``.nsys-rep`` whose ``.sqlite`` export lies beside it (newer than the report: its export) is read from
  that export, where it failed with "install nsys 2025.3.1" (the report was written by nsys 2025.3 and only
  nsys 2022.4, or none, is installed here). An older ``.sqlite`` is not used, and the error says why.
* Errors about a report name the report, never the temporary export traceforge made of it.
* An unreachable Dask scheduler fails in a few seconds with one line (it took 31 s).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

import duckdb
import pytest

from conftest import data_file

REP = "small_matmul_h100_nsys2025.3.nsys-rep"
SQLITE = "small_matmul_h100_nsys2025.3.sqlite"


def _rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


@pytest.fixture
def report_and_export(
    tmp_path: Path, small_matmul_rep: Path, real_export: Callable[[str], Path]
) -> tuple[Path, Path]:
    folder = tmp_path / "capture"
    folder.mkdir()
    rep = folder / REP
    shutil.copyfile(small_matmul_rep, rep)
    sqlite_path = folder / SQLITE
    shutil.copyfile(real_export(SQLITE), sqlite_path)
    t = rep.stat().st_mtime
    os.utime(sqlite_path, (t + 60, t + 60))  # exported a minute after the capture
    return rep, sqlite_path


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_report_is_read_from_its_export_beside_it(
    report_and_export: tuple[Path, Path], tmp_path: Path, run_cli: Any, jobs: str
) -> None:
    rep, sqlite_path = report_and_export
    db = tmp_path / f"beside{jobs}.duckdb"
    result = run_cli("ingest", "--db", db, rep, "--jobs", jobs, env={"NSYS": str(tmp_path / "no-nsys-here")})
    assert result.rc == 0, str(result)
    assert "install nsys" not in result.stderr
    con = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    kernels = con.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0]
    con.close()
    assert _rows(db, "SELECT source_path, kernel_count FROM traces") == [(str(rep), kernels)]
    if jobs == "1":
        assert f"read {SQLITE}, the report's export beside it" in result.stdout, str(result)


def test_an_older_export_beside_a_report_is_not_used_and_the_error_says_so(
    report_and_export: tuple[Path, Path], tmp_path: Path, run_cli: Any
) -> None:
    rep, sqlite_path = report_and_export
    t = rep.stat().st_mtime
    os.utime(sqlite_path, (t - 3600, t - 3600))  # an earlier capture's export
    db = tmp_path / "older.duckdb"
    result = run_cli("ingest", "--db", db, rep, env={"NSYS": str(tmp_path / "no-nsys-here")})
    assert result.rc == 1, str(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("traceforge: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"traceforge: error: {rep}: "), str(result)
    assert f"{SQLITE} beside it is older than the report" in errors[0]
    assert _rows(db, "SELECT count(*) FROM traces") == [(0,)]


@pytest.mark.nsys
def test_errors_about_a_report_name_the_report_not_its_temporary_export(
    tmp_path: Path, run_cli: Any, nsys_bin: Any
) -> None:
    """A CPU-only report (nsys 2022.4 exports it; its export has no kernels): every message names it."""
    rep = tmp_path / "cpu_osrt_nsys2022.4.nsys-rep"
    shutil.copyfile(data_file(rep.name), rep)
    for jobs in ("1", "2"):
        db = tmp_path / f"cpu{jobs}.duckdb"
        result = run_cli("ingest", "--db", db, rep, "--jobs", jobs, env={"NSYS": nsys_bin or ""})
        assert result.rc == 1, str(result)
        assert f"traceforge: error: {rep}: no CUDA kernels" in result.stderr, str(result)
        assert "traceforge-export-" not in result.stdout + result.stderr
        failures = _rows(db, "SELECT path, message FROM ingest_failures")
        assert [f[0] for f in failures] == [str(rep)] and "traceforge-export-" not in failures[0][1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_dask_scheduler_fails_in_seconds(
    tmp_path: Path, small_matmul_export: Path, run_cli: Any
) -> None:
    db = tmp_path / "dask.duckdb"
    started = time.monotonic()
    result = run_cli(
        "ingest", "--db", db, small_matmul_export, "--mode", "dask-futures", "--scheduler",
        f"tcp://127.0.0.1:{_free_port()}", timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.rc == 1, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:" in lines[0], str(result)
    assert "connection refused" in lines[0] and "Traceback" not in result.stderr
    assert elapsed < 15, f"took {elapsed:.1f} s"


def test_a_silent_dask_scheduler_address_fails_in_seconds(
    tmp_path: Path, small_matmul_export: Path, run_cli: Any
) -> None:
    """Something accepts connections there but never speaks Dask: the handshake is bounded too."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        result = run_cli(
            "ingest", "--db", tmp_path / "silent.duckdb", small_matmul_export, "--mode", "dask-futures",
            "--scheduler", f"tcp://127.0.0.1:{server.getsockname()[1]}",
            env={"TRACEFORGE_DASK_TIMEOUT": "2s"}, timeout=120,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()
    assert result.rc == 1, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not answer within 2s" in lines[0], str(result)
    assert elapsed < 20, f"took {elapsed:.1f} s"
