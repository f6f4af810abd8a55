"""``traceforge runs`` and ``traceforge sweep`` show the idle split per cell and per N (real CLI subprocess).

The constructed sweep of ``sweep_store`` with idle columns written into its linked traces' ``device_metrics``
(varied per trace, so every cell's split differs); expected values are read back with DuckDB directly.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from sweep_store import build_sweep_store

COLS = ("idle_sync_ns", "idle_gil_wait_ns", "idle_os_ns", "idle_cuda_api_ns", "idle_other_ns")
STATES = ("sync", "gil_wait", "os", "cuda_api", "other")


@pytest.fixture(scope="module")
def idle_db(tmp_path_factory):
    db = build_sweep_store(tmp_path_factory.mktemp("idle-runs") / "sweep.duckdb")
    con = duckdb.connect(str(db))
    sets = ", ".join(
        f"{c} = busy_ns // {k + 2} + (hash(trace_id || '{c}') % 1000)::BIGINT * 1000"
        for k, c in enumerate(COLS)
    )
    con.execute(f"UPDATE device_metrics SET {sets}, idle_unattributed_ns = 0")
    con.execute(f"UPDATE device_metrics SET gap_total_ns = {' + '.join(COLS)}")
    con.close()
    return db


def _expected(db, group: str) -> dict:
    con = duckdb.connect(str(db), read_only=True)
    sums = ", ".join(f"sum(d.{c})" for c in COLS)
    rows = con.execute(
        f"SELECT {group}, {sums}, sum(d.gap_total_ns) FROM cells c JOIN device_metrics d USING (trace_id) "
        f"WHERE c.status = 'ok' GROUP BY {group}"
    ).fetchall()
    con.close()
    out = {}
    for key, *vals, total in rows:
        out[key] = {"idle_ms": total / 1e6, **{f"{s}%": 100 * v / total for s, v in zip(STATES, vals)}}
    return out


def test_runs_shows_the_idle_split_per_cell(idle_db, run_cli):
    expected = _expected(idle_db, "c.cell_id")
    r = run_cli("runs", "--db", idle_db, "--run", "run1", "--format", "json")
    assert r.rc == 0, r
    cells = {c["cell_id"]: c for c in json.loads(r.stdout)["cells"]}
    assert len(expected) == 12 and set(expected) < set(cells)
    for cell_id, exp in expected.items():
        for k, v in exp.items():
            assert cells[cell_id][k] == pytest.approx(v), (cell_id, k)
    assert cells["c-n8-failed"]["idle_ms"] is None  # no linked trace
    # the table carries the columns, with the values as runs formats them
    r = run_cli("runs", "--db", idle_db, "--run", "run1", env={"COLUMNS": "400"})
    assert r.rc == 0, r
    for col in ("idle_ms", "sync%", "gil_wait%", "os%", "other%"):
        assert col in r.stdout
    for cell_id, exp in expected.items():
        line = next(
            ln for ln in r.stdout.splitlines() if f"{int(cell_id[3]):08x}{int(cell_id[-1]):08x}" in ln
        )
        cells_txt = [x.strip() for x in line.split("│")]
        assert f"{exp['idle_ms']:.3g}" in cells_txt and f"{exp['gil_wait%']:.3g}" in cells_txt, line


def test_sweep_shows_the_idle_split_per_n(idle_db, run_cli):
    expected = _expected(idle_db, "c.n")
    r = run_cli("sweep", "--db", idle_db, "--format", "json")
    assert r.rc == 0, r
    [a] = json.loads(r.stdout)
    points = {p["n"]: p for p in a["points"]}
    assert set(expected) == set(points) == {1, 2, 4, 8}
    for n, exp in expected.items():
        for k, v in exp.items():
            assert points[n][k] == pytest.approx(v), (n, k)
    r = run_cli("sweep", "--db", idle_db)
    assert r.rc == 0, r
    header = next(ln for ln in r.stdout.splitlines() if ln.startswith("n "))
    assert header.split()[-6:] == ["idle_ms", "sync%", "gil_wait%", "os%", "cuda_api%", "other%"]
    for n, exp in expected.items():
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(f"{n} "))
        assert line.split()[-6] == f"{exp['idle_ms']:.4g}", line


def test_sweep_without_idle_attribution_has_no_idle_columns(tmp_path, run_cli):
    db = build_sweep_store(tmp_path / "plain.duckdb")  # linked traces, idle columns NULL
    r = run_cli("sweep", "--db", db)
    assert r.rc == 0 and "idle_ms" not in r.stdout, r
    r = run_cli("runs", "--db", db, env={"COLUMNS": "400"})
    assert r.rc == 0 and "gil_wait%" not in r.stdout, r
