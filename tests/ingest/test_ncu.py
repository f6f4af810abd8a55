"""ncu CSV ingest against the real Nsight Compute 2025.3 exports in ``tests/data``."""

from __future__ import annotations

import csv
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import data_export, data_file
from traceforge.errors import InputNotFoundError, NotAnExportError
from traceforge.ingest.ncu import ingest_ncu_csv, kernel_name_key, kernel_short_name
from traceforge.runners.results import ensure_tables, insert_rows
from traceforge.store import Store

RAW = data_file("small_matmul_h100_ncu2025.3.raw.csv")
DETAILS = data_file("small_matmul_h100_ncu2025.3.details.csv")
NSYS = data_export("small_matmul_h100_nsys2025.3.sqlite")


def _num(text: str) -> float:
    # Independent of traceforge's parser: ncu's thousands separator is a comma, the decimal mark a dot.
    return float(text.replace(",", ""))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "t.duckdb")
    ensure_tables(s.con)
    yield s
    s.close()


def test_raw_page_one_row_per_launch_and_metric(store: Store, tmp_path: Path) -> None:
    rows = list(csv.reader(RAW.open()))
    header, units, body = rows[0], rows[1], rows[2:]
    metric_cols = [i for i, h in enumerate(header) if "__" in h]
    out = ingest_ncu_csv(store, str(RAW))
    assert out.status == "ingested" and out.kind == "ncu-raw"
    assert out.rows == len(body) * len(metric_cols) and out.launches == len(body) == 18
    got = {
        (lid, m): (v, u)
        for lid, m, v, u in store.con.execute(
            "SELECT launch_id, metric, value, unit FROM ncu_metrics"
        ).fetchall()
    }
    assert len(got) == out.rows
    for r in body:
        for i in metric_cols:
            value, unit = got[(int(r[0]), header[i])]
            assert unit == (units[i] or None)
            if r[i] == "":
                assert value is None
            elif r[i].replace(",", "").replace(".", "").isdigit():
                assert value == pytest.approx(_num(r[i]))
    # The thousands separator case: launch 0 has a grid of 1,056 blocks.
    assert got[(0, "launch__grid_size")][0] == 1056.0
    assert header.index("launch__grid_size") and body[0][header.index("launch__grid_size")] == "1,056"


def test_details_page_and_agreement_with_raw(store: Store) -> None:
    body = list(csv.DictReader(DETAILS.open()))
    out = ingest_ncu_csv(store, str(DETAILS))
    assert out.kind == "ncu-details" and out.rows == len(body) == 126 and out.missing == 0
    db = store.con.execute(
        "SELECT launch_id, metric, unit, value, section FROM ncu_metrics ORDER BY launch_id, metric"
    ).fetchall()
    expected = sorted(
        (int(r["ID"]), r["Metric Name"], r["Metric Unit"] or None, _num(r["Metric Value"]), r["Section Name"])
        for r in body
    )
    assert [(a, b, c, pytest.approx(d), e) for a, b, c, d, e in expected] == db
    ingest_ncu_csv(store, str(RAW))
    # The details page rounds what the raw page prints in full: both describe the same launches.
    pairs = store.con.execute(
        """SELECT d.value, r.value FROM ncu_metrics d JOIN ncu_metrics r USING (launch_id, metric)
           WHERE d.page = 'details' AND r.page = 'raw'"""
    ).fetchall()
    assert len(pairs) == 126
    for d, r in pairs:
        assert d == pytest.approx(r, rel=0.01, abs=0.01)


def test_unreadable_metric_is_null_and_reported(store: Store, tmp_path: Path) -> None:
    rows = list(csv.reader(DETAILS.open()))
    target = next(
        i for i, r in enumerate(rows) if r[-3] == "dram__throughput.avg.pct_of_peak_sustained_elapsed"
    )
    rows[target][-1] = "n/a"
    path = tmp_path / "na.details.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh, quoting=csv.QUOTE_ALL).writerows(rows)
    out = ingest_ncu_csv(store, str(path))
    assert out.missing == 1
    assert any("dram__throughput.avg.pct_of_peak_sustained_elapsed" in w for w in out.warnings)
    value, missing, text = store.con.execute(
        "SELECT value, missing, value_text FROM ncu_metrics WHERE launch_id = ? AND metric = ?",
        [int(rows[target][0]), "dram__throughput.avg.pct_of_peak_sustained_elapsed"],
    ).fetchone()
    assert value is None and missing is True and text == "n/a"
    # Aggregates skip the unreadable launch instead of averaging a zero in.
    n = store.con.execute(
        "SELECT count(value) FROM ncu_metrics "
        "WHERE metric = 'dram__throughput.avg.pct_of_peak_sustained_elapsed'"
    ).fetchone()[0]
    assert n == 17


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"a,b\n1,2\n", "not an Nsight Compute CSV export"),
        (b"", "not an Nsight Compute CSV export"),
        (b"\x00\xff\xfe binary", "not UTF-8"),
        (b'"ID","Kernel Name","x__y"\n"0","k","1"\n', "units row"),
    ],
)
def test_not_an_ncu_export(store: Store, tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(NotAnExportError) as err:
        ingest_ncu_csv(store, str(path))
    assert str(path) in str(err.value) and needle in str(err.value)
    ensure_tables(store.con)
    assert store.con.execute("SELECT count(*) FROM ncu_metrics").fetchone()[0] == 0


def test_truncated_file_writes_nothing(store: Store, tmp_path: Path) -> None:
    lines = DETAILS.read_text().splitlines()
    path = tmp_path / "cut.details.csv"
    path.write_text("\n".join(lines[:40]) + "\n" + lines[40][:100] + "\n")
    with pytest.raises(NotAnExportError, match="line 41"):
        ingest_ncu_csv(store, str(path))
    assert store.con.execute("SELECT count(*) FROM ncu_metrics").fetchone()[0] == 0


def test_missing_file(store: Store, tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        ingest_ncu_csv(store, str(tmp_path / "nope.csv"))


def test_reingest_skips_and_force_replaces(store: Store) -> None:
    first = ingest_ncu_csv(store, str(DETAILS))
    again = ingest_ncu_csv(store, str(DETAILS))
    assert again.status == "skipped" and again.rows == 0
    forced = ingest_ncu_csv(store, str(DETAILS), force=True)
    assert forced.rows == first.rows
    assert store.con.execute("SELECT count(*) FROM ncu_metrics").fetchone()[0] == first.rows


def test_linked_to_cell_and_trace(store: Store) -> None:
    ensure_tables(store.con)
    insert_rows(store.con, "cells", [{"cell_id": "c1", "run_id": "r1", "trace_id": "00112233aabbccdd"}])
    out = ingest_ncu_csv(store, str(DETAILS), cell_id="c1")
    assert out.trace_id == "00112233aabbccdd"
    assert store.con.execute("SELECT DISTINCT cell_id, trace_id FROM ncu_metrics").fetchall() == [
        ("c1", "00112233aabbccdd")
    ]


def test_names_join_nsys(store: Store) -> None:
    """ncu and nsys print different demangled names; the key and short name must bring them together."""
    con = sqlite3.connect(NSYS)
    nsys = con.execute(
        """SELECT DISTINCT d.value, s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k
           JOIN StringIds d ON d.id = k.demangledName JOIN StringIds s ON s.id = k.shortName"""
    ).fetchall()
    for demangled, short in nsys:  # nsys's own shortName is the oracle for the base name
        assert kernel_short_name(demangled) == short
    ingest_ncu_csv(store, str(DETAILS))
    ncu_names = [r[0] for r in store.con.execute("SELECT DISTINCT kernel_name FROM ncu_metrics").fetchall()]
    verbatim = {d for d, _ in nsys} & set(ncu_names)
    assert verbatim == {"void cutlass::Kernel2<cutlass_80_simt_sgemm_256x128_8x4_nn_align1>(T1::Params)"}
    store.con.execute("CREATE TABLE nsys_names(name VARCHAR)")
    store.con.executemany("INSERT INTO nsys_names VALUES (?)", [(d,) for d, _ in nsys])
    # SQL macro (RE2) and Python give the same key.
    for (name,) in store.con.execute("SELECT name FROM nsys_names").fetchall():
        sql_key = store.con.execute("SELECT tf_kernel_key(?)", [name]).fetchone()[0]
        assert sql_key == kernel_name_key(name)
    joined = store.con.execute(
        """SELECT DISTINCT m.kernel_short_name FROM ncu_metrics m
           JOIN nsys_names n ON tf_kernel_key(n.name) = m.kernel_name_key"""
    ).fetchall()
    # The GEMM matches verbatim; the normal-distribution kernel only once nsys's "at::native::" and "(int)4"
    # are reduced as ncu prints them.
    assert sorted(r[0] for r in joined) == ["Kernel2", "distribution_elementwise_grid_stride_kernel"]


def test_cli_ingest_dispatches_csv(tmp_path: Path) -> None:
    src = tmp_path / "k.details.csv"
    shutil.copy(DETAILS, src)
    db = tmp_path / "cli.duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "traceforge", "ingest", "--db", str(db), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with Store(db, read_only=True) as s:
        assert s.con.execute("SELECT count(*) FROM ncu_metrics").fetchone()[0] == 126
