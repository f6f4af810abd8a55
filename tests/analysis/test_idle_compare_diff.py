"""``compare`` and ``diff`` on the idle-attribution columns of ``device_metrics`` (issue 15).

``compare`` runs over the constructed sweep with idle columns written into its linked traces; ``diff`` over
two real captures (``known_gpumetrics_osrt`` and ``llm_threads4_gil_osrt``), checked against DuckDB directly.
"""

from __future__ import annotations

import json

import duckdb
import pytest

import traceforge
from sweep_store import build_sweep_store
from traceforge.analysis.diff import IDLE_COLUMNS

GIL = "llm_threads4_gil_osrt_h200_nsys2025.3.sqlite"
METRICS = "known_gpumetrics_osrt_h200_nsys2025.3.sqlite"


def idle_sweep_store(path):
    """The constructed sweep with each linked trace's idle states set from its busy time (all distinct)."""
    build_sweep_store(path)
    con = duckdb.connect(str(path))
    sets = ", ".join(f"{c} = busy_ns // {k + 2}" for k, c in enumerate(IDLE_COLUMNS))
    con.execute(f"UPDATE device_metrics SET {sets}")
    con.execute(f"UPDATE device_metrics SET gap_total_ns = {' + '.join(IDLE_COLUMNS)}")
    con.close()
    return path


@pytest.fixture(scope="module")
def idle_sweep_db(tmp_path_factory):
    return idle_sweep_store(tmp_path_factory.mktemp("idle-sweep") / "sweep.duckdb")


@pytest.mark.parametrize("column", ["idle_gil_wait_ns", "idle_os_ns", "idle_sync_ns", "idle_other_ns"])
def test_compare_on_an_idle_column(idle_sweep_db, run_cli, column):
    r = run_cli(
        "compare",
        "--db",
        idle_sweep_db,
        "--metric",
        f"device_metrics.{column}",
        "--by",
        "cells.n",
        "--baseline",
        "1",
        "--format",
        "json",
    )
    assert r.rc == 0, r
    doc = json.loads(r.stdout)
    con = duckdb.connect(str(idle_sweep_db), read_only=True)
    expected = {
        f"cells.n={n}": (cnt, mean, lo, hi)
        for n, cnt, mean, lo, hi in con.execute(
            f"SELECT c.n, count(*), avg(d.{column}), min(d.{column}), max(d.{column}) FROM cells c "
            "JOIN device_metrics d USING (trace_id) GROUP BY c.n"
        ).fetchall()
    }
    con.close()
    got = {g["group"]: (g["n"], g["mean"], g["min"], g["max"]) for g in doc["groups"]}
    assert set(got) == set(expected)
    for k, (cnt, mean, lo, hi) in expected.items():
        assert got[k][0] == cnt and got[k][1] == pytest.approx(mean) and got[k][2:] == (lo, hi)
    assert len(doc["comparisons"]) == 3


@pytest.fixture(scope="module")
def real_pair(tmp_path_factory, real_export):
    db = tmp_path_factory.mktemp("idle-diff") / "two.duckdb"
    with traceforge.connect(db) as tf:
        tf.ingest([real_export(METRICS), real_export(GIL)])
        ids = dict(tf.sql("SELECT source_path, trace_id FROM traces").iter_rows())
    ta = next(t for p, t in ids.items() if METRICS in p)
    tb = next(t for p, t in ids.items() if GIL in p)
    return db, ta, tb


def test_diff_shows_the_idle_rows(real_pair, run_cli):
    db, ta, tb = real_pair
    con = duckdb.connect(str(db), read_only=True)
    cols = ", ".join(IDLE_COLUMNS)
    va = con.execute(
        f"SELECT {cols} FROM device_metrics WHERE trace_id = ? AND device_id = 0", [ta]
    ).fetchone()
    vb = con.execute(
        f"SELECT {cols} FROM device_metrics WHERE trace_id = ? AND device_id = 0", [tb]
    ).fetchone()
    con.close()
    r = run_cli("diff", ta, tb, "--db", db, "--format", "json")
    assert r.rc == 0, r
    rows = {d["metric"]: d for d in json.loads(r.stdout)["devices"] if d["device_id"] == 0}
    for col, a, b in zip(IDLE_COLUMNS, va, vb):
        assert (rows[col]["a"], rows[col]["b"], rows[col]["delta"]) == (a, b, b - a), col
    assert vb[1] > 0  # the GIL trace waited for the GIL while the GPU was idle
    text = run_cli("diff", ta, tb, "--db", db)
    assert text.rc == 0, text
    lines = {ln.split()[1]: ln.split() for ln in text.stdout.splitlines() if ln.startswith("0 ")}
    for col, a, b in zip(IDLE_COLUMNS, va, vb):
        assert col in lines
        assert lines[col][2:4] == [str(a), str(b)], lines[col]


def test_diff_without_idle_attribution_leaves_the_rows_out(real_pair, tmp_path):
    import shutil

    from traceforge.analysis.diff import diff_traces
    from traceforge.store import Store

    db, ta, tb = real_pair
    copy = tmp_path / "old.duckdb"
    shutil.copyfile(db, copy)
    con = duckdb.connect(str(copy))
    con.execute("UPDATE device_metrics SET " + ", ".join(f"{c} = NULL" for c in IDLE_COLUMNS))
    con.close()
    with Store(copy, read_only=True) as store:
        d = diff_traces(store, ta, tb)
    assert not set(IDLE_COLUMNS) & set(d.devices["metric"].to_list())
