"""Directory ingest: ``--exclude GLOB``, and ``nsys stats`` CSVs left out with a note instead of failing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

import traceforge
from conftest import DATA, missing_tool

NOTE = "an nsys stats CSV, not an Nsight Compute export"
NCU_RAW = DATA / "small_matmul_h100_ncu2025.3.raw.csv"
CU11 = "cu11_driverapi_h200_nsys2022.4.sqlite"


@pytest.fixture(scope="module")
def stats_csvs(real_export, nsys_bin, tmp_path_factory) -> list[Path]:
    """Real ``nsys stats --format csv`` outputs (nsys 2022.4) of a real export: kernel summary and trace."""
    if nsys_bin is None:
        missing_tool("nsys 2022.4", "apt-get install nsight-systems")
    out = tmp_path_factory.mktemp("nsys_stats")
    export = out / CU11
    shutil.copyfile(real_export(CU11), export)
    reports = ("gpukernsum", "gputrace", "gpumemsizesum")
    args = [a for r in reports for a in ("--report", r)]
    subprocess.run(
        [nsys_bin, "stats", *args, "--format", "csv", "--force-overwrite", "true", "-o", out / "x", export],
        check=True,
        capture_output=True,
        timeout=300,
    )
    made = sorted(out.glob("x_*.csv"))
    assert len(made) == 3, made
    heads = [p.read_text().splitlines()[0] for p in made]
    assert any(h.startswith("Time (%)") for h in heads) and any(h.startswith("Start (ns)") for h in heads)
    return made


@pytest.fixture
def runs_dir(tmp_path, small_matmul_export, cpu_osrt_rep, stats_csvs) -> Path:
    """A results folder as users keep it: a capture, its ncu export, nsys stats tables, a CPU-only report."""
    runs = tmp_path / "runs"
    for sub in ("a", "a/stats", "ncu", "cpu", "old"):
        (runs / sub).mkdir(parents=True)
    shutil.copyfile(small_matmul_export, runs / "a" / "small_matmul.sqlite")
    for csv in stats_csvs:
        shutil.copyfile(csv, runs / "a" / "stats" / csv.name)
    shutil.copyfile(stats_csvs[0], runs / "top_gpukernsum.csv")
    shutil.copyfile(NCU_RAW, runs / "ncu" / NCU_RAW.name)
    shutil.copyfile(cpu_osrt_rep, runs / "cpu" / cpu_osrt_rep.name)
    shutil.copyfile(small_matmul_export, runs / "old" / "broken.sqlite")
    (runs / "old" / "broken.sqlite").write_bytes(b"not a database")
    return runs


def _query(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_directory_ingest_excludes_and_skips_stats_csvs(run_cli, runs_dir, fresh_db):
    result = run_cli("ingest", "--db", fresh_db, runs_dir, "--exclude", "cpu/*", "--exclude", "old")
    assert result.rc == 0, result
    skipped = [ln for ln in result.stdout.splitlines() if ln.startswith("skipped ")]
    names = sorted(Path(ln.split(": ")[0].removeprefix("skipped ")).name for ln in skipped)
    expected = ["top_gpukernsum.csv", "x_gpukernsum.csv", "x_gpumemsizesum.csv", "x_gputrace.csv"]
    assert names == expected, result
    assert all(ln.endswith(": " + NOTE) for ln in skipped), result
    assert "traceforge: error" not in result.stderr, result
    assert _query(fresh_db, "SELECT count(*) FROM ingest_failures") == [(0,)]
    assert _query(fresh_db, "SELECT count(*) FROM traces") == [(1,)]
    assert _query(fresh_db, "SELECT count(DISTINCT source_path) FROM ncu_metrics") == [(1,)]


def test_exclude_matches_relative_path_and_file_name(runs_dir):
    from traceforge.ingest import expand_inputs

    every = expand_inputs([runs_dir])
    assert sorted(Path(p).name for p, _why in every.skipped) == [
        "top_gpukernsum.csv",
        "x_gpukernsum.csv",
        "x_gpumemsizesum.csv",
        "x_gputrace.csv",
    ]
    assert all(why == NOTE for _p, why in every.skipped)
    by_path = expand_inputs([runs_dir], exclude=["a/*.sqlite", "cpu"])
    assert {Path(p).name for p in by_path.paths} == {NCU_RAW.name, "broken.sqlite"}
    by_name = expand_inputs([str(runs_dir / "**" / "*.*")], exclude=["*.nsys-rep", "broken.*"])
    assert {Path(p).name for p in by_name.paths} == {NCU_RAW.name, "small_matmul.sqlite"}
    assert len(by_name.skipped) == 4 and not by_name.problems


def test_api_exclude_and_stale_failures_cleared(runs_dir, fresh_db):
    stats = str(runs_dir / "a" / "stats" / "x_gpukernsum.csv")
    with traceforge.connect(fresh_db) as tf:
        # What a greedy ingest of the folder left behind.
        tf.store.con.execute(
            "INSERT INTO ingest_failures VALUES (?, NULL, 'not_an_export', 'not an ncu CSV', now())", [stats]
        )
        outcomes = tf.ingest([runs_dir], exclude=["cpu/*", "old/*"])  # raises on any failure
        assert sorted(o.status for o in outcomes) == ["ingested", "ingested"]
        assert tf.sql("SELECT count(*) AS n FROM ingest_failures")["n"][0] == 0


def test_stats_csv_named_explicitly_still_fails(run_cli, stats_csvs, fresh_db):
    result = run_cli("ingest", "--db", fresh_db, stats_csvs[0])
    assert result.rc == 1, result
    assert "not an Nsight Compute CSV export" in result.stderr, result
    assert _query(fresh_db, "SELECT count(*) FROM ingest_failures") == [(1,)]


def test_ingest_help_has_exclude_example(run_cli):
    result = run_cli("ingest", "--help")
    assert result.rc == 0 and "--exclude" in result.stdout and "Example: traceforge ingest" in result.stdout
