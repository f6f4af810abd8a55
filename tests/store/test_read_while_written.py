"""A store readable while it is written (issue 16, item 2): two real processes on one DuckDB file.

DuckDB lets one process write a file or several read it, never both at once. ``traceforge ingest`` holds
the file only for each trace's short transaction, and readers (``Store(read_only=True)``: ``sql``,
``traces``, ``runs``, ``report``) wait a few seconds for a lock instead of failing with DuckDB's ``Could not
set lock on file``; one still locked after the wait gives one line naming the store and the lock's pid.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import duckdb

#: Seven real captures of distinct content, so each is a trace of its own (llama1b: 183k kernels).
EXPORTS = (
    "small_matmul_h100_nsys2025.3.sqlite",
    "llama1b_n1_h100_nsys2025.3.sqlite",
    "known_graphmode_h200_nsys2025.3.sqlite",
    "known_nodemode_h200_nsys2025.3.sqlite",
    "llm_threads4_gil_osrt_h200_nsys2025.3.sqlite",
    "known_gpumetrics_osrt_h200_nsys2025.3.sqlite",
    "cu11_driverapi_h200_nsys2022.4.sqlite",
)

#: The querying process: opens the store read-only in a loop (as every read command does) and prints one
#: line per attempt, ``ok N`` (traces seen) or ``error MESSAGE``, until the file ``stop`` appears.
READER = textwrap.dedent(
    """
    import os, sys, time
    from traceforge.store import Store
    db, stop = sys.argv[1], sys.argv[2]
    while not os.path.exists(stop):
        if not os.path.exists(db):
            time.sleep(0.01)
            continue
        try:
            with Store(db, read_only=True) as store:
                n = store.con.execute("SELECT count(*) FROM traces").fetchone()[0]
            print("ok", n, flush=True)
        except Exception as exc:
            print("error", str(exc).splitlines()[0], flush=True)
        time.sleep(0.02)
    """
)


def test_queries_succeed_while_a_batch_ingests(
    tmp_path: Path, real_export: Callable[[str], Path], run_cli: Any
) -> None:
    folder = tmp_path / "captures"
    folder.mkdir()
    for name in EXPORTS:
        (folder / name).write_bytes(real_export(name).read_bytes())
    db, stop = tmp_path / "shared.duckdb", tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(db), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        writer = run_cli("ingest", "--db", db, folder, timeout=600)
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=60)
    assert writer.rc == 0, str(writer)
    assert writer.stdout.count("ingested ") == len(EXPORTS), str(writer)
    lines = out.splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert not errors, f"{len(errors)} of {len(lines)} reads failed while ingesting, e.g. {errors[:3]}\n{err}"
    counts = [int(line.split()[1]) for line in lines if line.startswith("ok")]
    # The reader got in between traces: it saw the store part-way through the batch, more than once.
    partway = sorted({c for c in counts if 0 < c < len(EXPORTS)})
    assert len(partway) >= 2, f"reads saw trace counts {sorted(set(counts))} only"
    assert counts == sorted(counts), "a reader saw traces disappear"
    # The CLI reads the finished store too.
    done = run_cli("sql", "--db", db, "SELECT count(*) AS n FROM traces", "--format", "csv")
    assert done.rc == 0 and done.stdout.split() == ["n", str(len(EXPORTS))], str(done)


#: A process holding the store open for writing (as an ingest's transaction does) until told to stop.
HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    print("released", flush=True)
    time.sleep(60)
    """
)


def _hold(db: Path, seconds: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def _store(tmp_path: Path, small_matmul_export: Path, run_cli: Any) -> Path:
    db = tmp_path / "held.duckdb"
    result = run_cli("ingest", "--db", db, small_matmul_export)
    assert result.rc == 0, str(result)
    return db


def test_a_reader_waits_for_a_short_write(tmp_path: Path, small_matmul_export: Path, run_cli: Any) -> None:
    db = _store(tmp_path, small_matmul_export, run_cli)
    holder = _hold(db, 1.5)
    try:
        result = run_cli("traces", "--db", db)
        assert result.rc == 0, str(result)
        assert "small_matmul" in result.stdout
    finally:
        holder.kill()
        holder.wait()


def test_a_store_locked_too_long_fails_in_one_line_with_the_pid(
    tmp_path: Path, small_matmul_export: Path, run_cli: Any
) -> None:
    db = _store(tmp_path, small_matmul_export, run_cli)
    holder = _hold(db, 120)
    try:
        started = time.monotonic()
        result = run_cli("sql", "--db", db, "SELECT 1", env={"TRACEFORGE_LOCK_WAIT": "1"})
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert result.rc != 0
    assert "Traceback" not in result.stderr and "Could not set lock" not in result.stderr, str(result)
    lines = result.stderr.strip().splitlines()
    expected = f"store {db} is being written by another traceforge process (pid {holder.pid}); retry"
    assert len(lines) == 1 and expected in lines[0], str(result)
    assert elapsed < 30


def test_a_store_opened_by_an_ingest_is_free_between_traces(
    tmp_path: Path, real_export: Callable[[str], Path], monkeypatch: Any
) -> None:
    """In one process, with ``TRACEFORGE_SHARE_AFTER=0``: after each trace the file is closed (another
    connection of a different configuration, read-only, opens it at once: DuckDB refuses that while a writer
    is open). By default it is freed only for a reader that waits, or after 5 s held."""
    from traceforge.ingest import run

    monkeypatch.setenv("TRACEFORGE_SHARE_AFTER", "0")

    db = tmp_path / "free.duckdb"
    seen: list[int] = []

    def on_outcome(outcome: Any) -> None:
        con = duckdb.connect(str(db), read_only=True)
        try:
            seen.append(int(con.execute("SELECT count(*) FROM traces").fetchone()[0]))
        finally:
            con.close()

    report = run(
        str(db),
        [real_export(EXPORTS[0]), real_export(EXPORTS[2])],
        on_outcome=on_outcome,
    )
    assert report.count("ingested") == 2
    assert seen == [1, 2]
