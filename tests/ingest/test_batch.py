"""Batch ingest of archives: expansion, parallel modes, failures, kill-and-resume, export, reanalyze.

Archives are built from the real small_matmul nsys export: copies whose kernel timestamps are shifted with
sqlite3 (so each has its own content fingerprint) plus damaged and misleading files. Expected numbers come
from ``tests/reference.py`` (plain Python over the exports), never from traceforge itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from conftest import data_export
from reference import compute
from traceforge import errors, ingest
from traceforge.ingest import batch
from traceforge.store import Store, dataset
from traceforge.store.schema import METRIC_VERSION

FIXTURE = data_export("small_matmul_h100_nsys2025.3.sqlite")
KERNELS = 42


def make_variant(dest: Path, shift_ns: int) -> Path:
    """A copy of the fixture whose kernels all start ``shift_ns`` later (a different fingerprint)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURE, dest)
    os.chmod(dest, 0o644)
    con = sqlite3.connect(dest)
    con.execute(
        'UPDATE CUPTI_ACTIVITY_KIND_KERNEL SET start = start + ?, "end" = "end" + ?', [shift_ns, shift_ns]
    )
    con.commit()
    con.close()
    return dest


def make_archive(root: Path, count: int) -> list[Path]:
    """``count`` distinct exports spread over nested directories."""
    return [make_variant(root / f"run{i % 3}" / f"cap{i:03d}.sqlite", 1000 * (i + 1)) for i in range(count)]


def db_rows(db: Path, query: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def check_against_reference(db: Path, files: list[Path], aliases: dict[str, str] | None = None) -> None:
    """Every file is stored once, with the busy time and kernel count of the plain-Python reference.

    ``aliases`` maps a file to another name of the same content that may have been stored instead.
    """
    rows = db_rows(
        db,
        "SELECT t.source_path, d.kernel_count, d.busy_ns, d.span_ns FROM traces t "
        "JOIN device_metrics d USING (trace_id)",
    )
    by_path = {r[0]: r[1:] for r in rows}
    assert len(rows) == len(by_path) == len(files)
    for path in files:
        ref = compute(str(path))
        (device,) = ref.device_metrics.values()
        stored = str(path) if str(path) in by_path else (aliases or {}).get(str(path), str(path))
        assert by_path[stored] == (device["kernel_count"], device["busy_ns"], device["span_ns"]), path
    counts = db_rows(db, "SELECT trace_id, count(*) FROM kernels GROUP BY trace_id")
    assert len(counts) == len(files) and {c for _, c in counts} == {KERNELS}


# ----------------------------------------------------------------------------------------------------
# expansion (no ingest needed)


def test_expand_inputs(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    files = make_archive(archive, 4)
    (archive / "run0" / "notes.txt").write_text("not an export")
    (archive / ".hidden").mkdir()
    make_variant(archive / ".hidden" / "skip.sqlite", 7)
    rep = archive / "run1" / "cap001.nsys-rep"  # its export cap001.sqlite lies beside it
    rep.write_bytes(b"report")
    lone_rep = archive / "run2" / "lone.nsys-rep"
    lone_rep.write_bytes(b"report")
    (archive / "run2" / "dir.sqlite").mkdir()  # a directory where an export is expected
    (archive / "run2" / "dangling.sqlite").symlink_to(tmp_path / "gone.sqlite")
    (tmp_path / "alias.sqlite").symlink_to(files[0])  # the same file under another name

    got = ingest.expand_inputs(
        [
            archive,
            str(files[1]),
            str(tmp_path / "alias.sqlite"),
            str(archive / "run*" / "cap00[02].sqlite"),
            str(tmp_path / "nope.sqlite"),
            str(tmp_path / "*.none"),
        ]
    )
    assert got.paths == sorted([*map(str, files), str(lone_rep)])
    problems = {os.path.basename(p): (type(e).__name__, e.message) for p, e in got.problems}
    assert problems["dir.sqlite"] == ("NotAnExportError", "is a directory, not an nsys export")
    assert problems["dangling.sqlite"][0] == "InputNotFoundError"
    assert "broken symbolic link" in problems["dangling.sqlite"][1]
    assert problems["nope.sqlite"] == ("InputNotFoundError", "no such file or directory")
    assert problems["*.none"] == ("InputNotFoundError", "no file matches this pattern")
    assert len(got.problems) == 4

    recursive = ingest.expand_inputs([str(archive / "**" / "*.sqlite")])
    assert set(map(str, files)) <= set(recursive.paths)
    assert sorted(os.path.basename(p) for p, _ in recursive.problems) == ["dangling.sqlite", "dir.sqlite"]


def test_mode_and_jobs_validation(tmp_path: Path) -> None:
    assert ingest.resolve_mode(None, 1) == "none"
    assert ingest.resolve_mode(None, 3) == "concurrent"
    with pytest.raises(errors.SpecError, match="--mode none"):
        ingest.resolve_mode("none", 2)
    with pytest.raises(errors.SpecError, match="unknown mode"):
        ingest.resolve_mode("threads", 2)


# ----------------------------------------------------------------------------------------------------
# whole batches through the CLI


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, list[Path], dict[str, Path]]:
    """Six good exports, a duplicate, and bad inputs of every kind."""
    root = tmp_path / "archive"
    good = make_archive(root, 6)
    bad = {
        "text": root / "run0" / "text.sqlite",
        "truncated": root / "run1" / "truncated.sqlite",
        "directory": root / "run2" / "directory.sqlite",
        "dangling": root / "run2" / "dangling.sqlite",
    }
    bad["text"].write_text("this is not a database\n")
    bad["truncated"].write_bytes(FIXTURE.read_bytes()[:20000])
    bad["directory"].mkdir()
    bad["dangling"].symlink_to(tmp_path / "moved-away.sqlite")
    duplicate = root / "copies" / "same-as-cap000.sqlite"
    duplicate.parent.mkdir()
    shutil.copyfile(good[0], duplicate)
    return root, good, {**bad, "duplicate": duplicate}


@pytest.mark.parametrize("jobs", [1, 2])
def test_ingest_archive_parallel(archive, run_cli, tmp_path: Path, jobs: int) -> None:
    root, good, other = archive
    db = tmp_path / "store.duckdb"
    res = run_cli("ingest", "--db", db, root, "--jobs", jobs)
    assert res.rc == 1, res
    assert "6 ingested, 1 skipped, 4 failed" in res.stderr, res
    for name in ("text", "truncated", "directory", "dangling"):
        assert f"traceforge: error: {other[name]}: " in res.stderr, (name, res)
    assert "Traceback" not in res.stderr
    # one line per file on stdout; the duplicate says which name holds its content
    (dup_line,) = [line for line in res.stdout.splitlines() if line.startswith("skipped")]
    assert "already stored as" in dup_line
    aliases = {str(good[0]): str(other["duplicate"])}
    check_against_reference(db, sorted(good), aliases)
    failures = dict(db_rows(db, "SELECT path, error_code FROM ingest_failures"))
    assert set(failures) == {str(other[n]) for n in ("text", "truncated", "directory", "dangling")}
    assert failures[str(other["directory"])] == "not_an_export"
    assert failures[str(other["dangling"])] == "not_found"
    assert all(failures.values())
    # the duplicate content was not stored twice, and the staging area is gone
    assert db_rows(db, "SELECT count(*) FROM traces") == [(6,)]
    assert not (tmp_path / ".store.duckdb.staging").exists()

    # a second run: everything stored is skipped, the bad files fail again, nothing is duplicated
    again = run_cli("ingest", "--db", db, root, "--jobs", jobs, "--quiet")
    assert again.rc == 1 and "0 ingested, 7 skipped, 4 failed" in again.stderr, again
    assert again.stdout == ""
    assert db_rows(db, "SELECT count(*), count(DISTINCT trace_id) FROM kernels") == [(6 * KERNELS, 6)]
    assert db_rows(db, "SELECT count(*) FROM ingest_failures") == [(4,)]

    # fix a bad file: it ingests and its failure row goes away
    make_variant(other["text"], 99_000)
    fixed = run_cli("ingest", "--db", db, other["text"])
    assert fixed.rc == 0, fixed
    assert db_rows(db, f"SELECT count(*) FROM ingest_failures WHERE path = '{other['text']}'") == [(0,)]


@pytest.mark.slow
def test_dask_local_cluster_matches_reference(archive, run_cli, tmp_path: Path) -> None:
    root, good, other = archive
    db = tmp_path / "dask.duckdb"
    out = tmp_path / "dataset"
    res = run_cli(
        "ingest", "--db", db, root, "--mode", "dask-futures", "--jobs", 2, "--output", out, timeout=300
    )
    assert res.rc == 1, res
    assert (
        "6 ingested, 1 skipped, 4 failed" in res.stderr and "mode dask-futures, 2 worker(s)" in res.stderr
    ), res
    check_against_reference(db, sorted(good), {str(good[0]): str(other["duplicate"])})
    # the workers' partitions are kept in the dataset and equal the store's rows
    assert len(dataset.list_partitions(out)) == 6
    con = duckdb.connect(str(db), read_only=True)
    for table in ("kernels", "device_metrics", "traces"):
        # ingested_at is stamped when the coordinator loads the partition, after the worker wrote it; the
        # paths of the duplicate's trace name whichever of its two files the coordinator or a worker saw first
        exclude = "EXCLUDE (ingested_at, source_path, export_path)" if table == "traces" else ""
        stored = con.execute(f"SELECT * {exclude} FROM {table} ORDER BY ALL").fetchall()
        in_place = con.execute(
            f"SELECT * {exclude} FROM read_parquet('{out}/{table}/*/*.parquet', hive_partitioning=true) "
            "ORDER BY ALL"
        ).fetchall()
        assert stored == in_place, table
    con.close()


def test_unreachable_scheduler_fails_cleanly(archive, run_cli, tmp_path: Path) -> None:
    root, good, _ = archive
    db = tmp_path / "store.duckdb"
    assert run_cli("ingest", "--db", db, good[0]).rc == 0
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_cli(
        "ingest",
        "--db",
        db,
        root,
        "--mode",
        "dask-futures",
        "--scheduler",
        f"tcp://127.0.0.1:{port}",
        env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
        timeout=120,
    )
    assert res.rc == 1, res
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("traceforge: error: cannot reach the Dask scheduler at tcp://127.0.0.1:"), res
    assert "Traceback" not in res.stderr
    # nothing lost, nothing half-written
    assert db_rows(db, "SELECT count(*) FROM traces") == [(1,)]
    assert db_rows(db, "SELECT count(*) FROM ingest_failures") == [(0,)]


@pytest.mark.slow
def test_killed_batch_resumes_without_duplicates(tmp_path: Path, run_cli) -> None:
    """SIGKILL a real batch once some traces are done; running it again finishes the rest exactly once."""
    root = tmp_path / "archive"
    files = make_archive(root, 16)
    db = tmp_path / "store.duckdb"
    out = tmp_path / "dataset"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "traceforge",
            "ingest",
            "--db",
            str(db),
            str(root),
            "--jobs",
            "2",
            "--output",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(dataset.list_partitions(out)) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the coordinator and its workers: the group this test started
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the batch finished before it could be killed"
    done_before = len(dataset.list_partitions(out))
    assert 4 <= done_before < 16

    res = run_cli("ingest", "--db", db, root, "--jobs", 2, "--output", out)
    assert res.rc == 0, res
    check_against_reference(db, sorted(files))
    assert db_rows(db, "SELECT count(*), count(DISTINCT trace_id) FROM traces") == [(16, 16)]
    assert len(dataset.list_partitions(out)) == 16
    assert [n for n in os.listdir(out / "_tmp") if not n.startswith(".")] == []


def test_file_vanishing_mid_batch(tmp_path: Path) -> None:
    files = make_archive(tmp_path / "a", 3)
    removed: list[str] = []

    def on_outcome(outcome) -> None:
        if not removed:
            files[-1].unlink()  # the batch is running; this file was listed but not read yet
            removed.append(str(files[-1]))

    with Store(tmp_path / "s.duckdb") as store:
        report = ingest.run(store, [tmp_path / "a"], on_outcome=on_outcome)
        assert report.count("ingested") == 2 and report.count("failed") == 1
        (failure,) = report.failures
        assert failure.path == removed[0] and "vanished during the batch" in failure.message
        assert store.con.execute("SELECT path, error_code FROM ingest_failures").fetchall() == [
            (removed[0], "not_found")
        ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path: Path) -> None:
    files = make_archive(tmp_path / "a", 2)
    files[0].chmod(0)
    with Store(tmp_path / "s.duckdb") as store:
        report = ingest.run(store, files)
        assert report.count("ingested") == 1
        (failure,) = report.failures
        assert failure.error.code == "permission"


# ----------------------------------------------------------------------------------------------------
# export and reanalyze


def test_export_cli(tmp_path: Path, run_cli) -> None:
    files = make_archive(tmp_path / "a", 3)
    db = tmp_path / "s.duckdb"
    assert run_cli("ingest", "--db", db, tmp_path / "a").rc == 0
    out = tmp_path / "ds"
    res = run_cli("export", "--db", db, "--format", "parquet", "--output", f"{out}/")
    assert res.rc == 0 and "3 partition(s) written" in res.stdout, res
    res = run_cli("export", "--db", db, "--format", "parquet", "--output", out)
    assert res.rc == 0 and "0 partition(s) written, 3 kept" in res.stdout, res
    con = duckdb.connect(str(db), read_only=True)
    for table in ("kernels", "api_calls", "device_metrics", "nvtx_projection", "traces"):
        a = con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
        b = con.execute(
            f"SELECT * FROM read_parquet('{out}/{table}/*/*.parquet', hive_partitioning=true) ORDER BY ALL"
        ).fetchall()
        assert a == b, table
    con.close()
    # the documented in-place query gives the reference's per-trace kernel time
    per_trace = dict(
        duckdb.sql(
            f"SELECT t.source_path, sum(k.duration_ns) FROM read_parquet('{out}/kernels/*/*.parquet', "
            f"hive_partitioning=true) k JOIN read_parquet('{out}/traces/*/*.parquet', "
            "hive_partitioning=true) t USING (trace_id) GROUP BY ALL"
        ).fetchall()
    )
    for path in files:
        (device,) = compute(str(path)).device_metrics.values()
        assert per_trace[str(path)] == device["kernel_time_ns"]

    (tmp_path / "file").write_text("x")
    bad = run_cli("export", "--db", db, "--format", "parquet", "--output", tmp_path / "file")
    assert (
        bad.rc == 1
        and bad.stderr.strip() == f"traceforge: error: {tmp_path / 'file'}: exists and is not a directory"
    )
    bad = run_cli("export", "--db", db, "--format", "csv", "--output", out)
    assert bad.rc != 0 and "csv" in bad.stderr


def test_reanalyze_without_the_files(tmp_path: Path, run_cli) -> None:
    files = make_archive(tmp_path / "a", 2)
    db = tmp_path / "s.duckdb"
    assert run_cli("ingest", "--db", db, tmp_path / "a").rc == 0
    before = db_rows(db, "SELECT * FROM device_metrics ORDER BY ALL")
    # simulate rows written by older metric code, then take the exports away
    con = duckdb.connect(str(db))
    # `gaps` is a view: its rows live in the storage table, emptied below.
    for table in ("device_metrics", "kernel_summary", "concurrency_levels"):
        con.execute(f"UPDATE {table} SET metric_version = 0")
    con.execute("UPDATE device_metrics SET busy_ns = -1, utilization = NULL")
    con.execute("DELETE FROM tf_store.gap_rows")
    con.execute("UPDATE traces SET metric_version = 0")
    con.close()
    shutil.rmtree(tmp_path / "a")

    res = run_cli("reanalyze", "--db", db)
    assert res.rc == 0 and f"2 trace(s) recomputed at metric version {METRIC_VERSION}" in res.stdout, res
    assert db_rows(db, "SELECT * FROM device_metrics ORDER BY ALL") == before
    assert db_rows(db, "SELECT DISTINCT metric_version FROM traces") == [(METRIC_VERSION,)]
    assert db_rows(db, "SELECT DISTINCT metric_version FROM gaps") in ([(METRIC_VERSION,)], [])
    res = run_cli("reanalyze", "--db", db)
    assert res.rc == 0 and "nothing to do" in res.stdout, res
    del files


def test_group_load_isolates_a_damaged_partition(tmp_path: Path) -> None:
    """Partitions are loaded several per transaction; one unreadable partition costs only its own trace."""
    files = make_archive(tmp_path / "a", 3)
    root = str(tmp_path / "ds")
    results = [batch.run_job(batch.JobSpec(path=str(p), staging=root, threads=1)) for p in files]
    assert [r.status for r in results] == ["partitioned"] * 3
    damaged = dataset.partition_file(root, "tf_store.gap_rows", results[1].trace_id)
    damaged.write_bytes(b"PAR1 not really")
    emitted = []
    with Store(tmp_path / "s.duckdb") as store:
        loader = batch._Loader(store, root, output=None, emit=emitted.append, max_group=10)
        for result in results:
            loader.add(result, replace=False)
        assert emitted == []  # still queued
        loader.flush()
        assert sorted((o.path, o.status) for o in emitted) == [
            (str(files[0]), "ingested"),
            (str(files[1]), "failed"),
            (str(files[2]), "ingested"),
        ]
        stored = {r[0] for r in store.con.execute("SELECT trace_id FROM traces").fetchall()}
        assert stored == {results[0].trace_id, results[2].trace_id}
        assert store.con.execute(
            "SELECT count(*) FROM gaps WHERE trace_id = ?", [results[1].trace_id]
        ).fetchone() == (0,)
        assert store.con.execute("SELECT path, error_code FROM ingest_failures").fetchall() == [
            (str(files[1]), "dataset")
        ]


def test_every_dask_worker_is_counted() -> None:
    """distributed 2025.x's ``scheduler_info()`` lists 5 workers unless asked for all: all are counted."""
    import logging

    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=7,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        workers = batch.all_workers_info(client)["workers"]
        assert len(workers) == 7
        assert sum(int(w["nthreads"]) for w in workers.values()) == 7
