"""The hive-partitioned Parquet dataset: layout, types, atomic publication, round trips through the store.

The rows come from the real small_matmul nsys export, read here with Python's own sqlite3 (independent of
traceforge's reader), so the checks compare against the export itself.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from conftest import data_export
from traceforge.store import Store, dataset
from traceforge.store.schema import TRACE_TABLES

FIXTURE = data_export("small_matmul_h100_nsys2025.3.sqlite")
ROOT = Path(__file__).resolve().parents[2]


def _export_tables(trace_id: str) -> tuple[dict, dict]:
    """The trace row and a few tables of the fixture, straight from SQLite."""
    con = sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)
    kernels = con.execute(
        "SELECT k.deviceId, k.streamId, k.correlationId, k.start, k.end, k.end - k.start, s.value, "
        "k.gridX, k.blockX FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = k.demangledName "
        "ORDER BY k.start"
    ).fetchall()
    memcpy = con.execute("SELECT deviceId, start, end, bytes FROM CUPTI_ACTIVITY_KIND_MEMCPY").fetchall()
    con.close()
    frames = {
        "kernels": pl.DataFrame(
            {
                "trace_id": [trace_id] * len(kernels),
                "device_id": [r[0] for r in kernels],
                "stream_id": [r[1] for r in kernels],
                "correlation_id": [r[2] for r in kernels],
                "start_ns": [r[3] for r in kernels],
                "end_ns": [r[4] for r in kernels],
                "duration_ns": [r[5] for r in kernels],
                "name": [r[6] for r in kernels],
                # int32 on purpose: the dataset must store the DDL's types, not the producer's
                "grid_x": pl.Series([r[7] for r in kernels], dtype=pl.Int32),
                "block_x": pl.Series([r[8] for r in kernels], dtype=pl.Int16),
            }
        ),
        # no trace_id column: the writer fills it in
        "memops": pl.DataFrame(
            {
                "device_id": [r[0] for r in memcpy],
                "start_ns": [r[1] for r in memcpy],
                "end_ns": [r[2] for r in memcpy],
                "bytes": [r[3] for r in memcpy],
                "op": ["memcpy"] * len(memcpy),
            }
        ),
    }
    row = {
        "trace_id": trace_id,
        "source_path": str(FIXTURE),
        "fingerprint": trace_id * 2,
        "kernel_count": len(kernels),
        "memop_count": len(memcpy),
        "metric_version": 1,
    }
    return row, {"kernels": kernels, "memcpy": memcpy, "frames": frames}


def _write(root: Path, trace_id: str, **kw: object) -> tuple[dict, dict]:
    row, raw = _export_tables(trace_id)
    assert dataset.write_partition(root, row, raw["frames"], **kw) is True
    return row, raw


def test_layout_types_and_in_place_query(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    # an all-digit id: hive inference alone would make it a number and drop the leading zeros
    ids = ["0000000000001234", "abcdef0123456789"]
    for trace_id in ids:
        _, raw = _write(root, trace_id)
    for table in (*TRACE_TABLES, "traces"):
        for trace_id in ids:
            assert (root / table / f"trace_id={trace_id}" / "data.parquet").is_file(), table
    assert [n for n in os.listdir(root / "_tmp") if not n.startswith(".")] == []
    assert dataset.list_partitions(root) == ids

    con = duckdb.connect()
    glob = f"{root}/kernels/*/*.parquet"
    types = dict(
        r[:2]
        for r in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning=true)"
        ).fetchall()
    )
    assert types["trace_id"] == "VARCHAR"
    assert types["grid_x"] == "INTEGER" and types["block_x"] == "INTEGER"  # the DDL's types
    assert types["start_ns"] == "BIGINT"
    got = con.execute(
        f"SELECT device_id, stream_id, correlation_id, start_ns, end_ns, duration_ns, name, grid_x, block_x "
        f"FROM read_parquet('{glob}', hive_partitioning=true) WHERE trace_id = '0000000000001234' "
        f"ORDER BY start_ns"
    ).fetchall()
    assert got == raw["kernels"]
    assert len(got) == 42
    memops = con.execute(
        f"SELECT trace_id, device_id, start_ns, end_ns, bytes FROM read_parquet('{root}/memops/*/*.parquet', "
        "hive_partitioning=true) WHERE trace_id = 'abcdef0123456789' ORDER BY start_ns"
    ).fetchall()
    assert [r[1:] for r in memops] == sorted(raw["memcpy"], key=lambda r: r[1])
    assert {r[0] for r in memops} == {"abcdef0123456789"}
    # a table the producer did not give is an empty file with the full schema
    assert con.execute(f"SELECT count(*) FROM read_parquet('{root}/gaps/*/*.parquet')").fetchone() == (0,)
    # polars reads the same dataset (engine-agnostic)
    frame = pl.scan_parquet(f"{root}/kernels/**/*.parquet", hive_partitioning=True).collect()
    assert frame.height == 84 and frame["trace_id"].dtype == pl.String


def test_existing_partition_is_kept_unless_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    row, raw = _write(root, "00000000000000aa")
    before = (root / "kernels/trace_id=00000000000000aa/data.parquet").stat().st_mtime_ns
    assert dataset.write_partition(root, row, raw["frames"]) is False
    assert (root / "kernels/trace_id=00000000000000aa/data.parquet").stat().st_mtime_ns == before
    row2, raw2 = _export_tables("00000000000000aa")
    frames = {"kernels": raw2["frames"]["kernels"].head(5)}
    assert dataset.write_partition(root, row2, frames, overwrite=True) is True
    n = duckdb.sql(f"SELECT count(*) FROM '{root}/kernels/trace_id=00000000000000aa/data.parquet'").fetchone()
    assert n == (5,)
    assert dataset.list_partitions(root) == ["00000000000000aa"]
    # the replaced table directories were cleaned out of the dataset (no stray files anywhere)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "_tmp" not in p.parts)
    assert len(files) == len(TRACE_TABLES) + 1


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    row, raw = _export_tables("00000000000000bb")
    bad = {"kernels": pl.DataFrame({"start_ns": ["not a number"]})}
    with pytest.raises(dataset.DatasetError, match="00000000000000bb"):
        dataset.write_partition(root, row, bad)
    assert not dataset.has_partition(root, "00000000000000bb")
    assert [p for p in root.rglob("*") if p.is_file() and p.name != ".lock"] == []
    with pytest.raises(dataset.DatasetError, match="unknown table"):
        dataset.write_partition(root, row, {"kernelz": raw["frames"]["kernels"]})
    with pytest.raises(dataset.DatasetError, match="not a trace id"):
        dataset.write_partition(root, {**row, "trace_id": "../../etc"}, {})


def test_store_round_trip_and_export(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _, raw = _write(root, "00000000000000cc")
    _write(root, "00000000000000dd")
    with Store(tmp_path / "a.duckdb") as store:
        assert dataset.load_partition(store, root, "00000000000000cc") == 42
        assert dataset.load_partition(store, root, "00000000000000dd") == 42
        got = store.con.execute(
            "SELECT device_id, stream_id, correlation_id, start_ns, end_ns, duration_ns, name, grid_x, "
            "block_x FROM kernels WHERE trace_id = '00000000000000cc' ORDER BY start_ns"
        ).fetchall()
        assert got == raw["kernels"]
        assert store.con.execute("SELECT count(*) FROM memops").fetchone() == (2 * len(raw["memcpy"]),)
        # loading again with replace does not duplicate
        dataset.load_partition(store, root, "00000000000000cc", replace=True)
        assert store.con.execute("SELECT count(*) FROM kernels").fetchone() == (84,)
        assert store.con.execute("SELECT count(*) FROM traces").fetchone() == (2,)
        with pytest.raises(dataset.DatasetError, match="no complete partition"):
            dataset.load_partition(store, root, "00000000000000ee")
        out = tmp_path / "export"
        assert list(dataset.export_store(store, out)) == [
            ("00000000000000cc", True),
            ("00000000000000dd", True),
        ]
        assert list(dataset.export_store(store, out)) == [
            ("00000000000000cc", False),
            ("00000000000000dd", False),
        ]
        for table in ("kernels", "memops", "traces"):
            a = store.con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            b = store.con.execute(
                f"SELECT * FROM read_parquet('{out}/{table}/*/*.parquet', hive_partitioning=true) "
                "ORDER BY ALL"
            ).fetchall()
            assert a == b, table


def test_load_is_all_or_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _write(root, "00000000000000ff")
    # damage one table file: the load must fail and leave the store untouched
    (root / "nvtx_ranges/trace_id=00000000000000ff/data.parquet").write_bytes(b"PAR1 garbage")
    with Store(tmp_path / "a.duckdb") as store:
        with pytest.raises(dataset.DatasetError, match="00000000000000ff"):
            dataset.load_partition(store, root, "00000000000000ff")
        for table in ("traces", "kernels", "memops"):
            assert store.con.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_repair_removes_leftovers_of_dead_writers_only(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _write(root, "0000000000000011")
    # leftovers of a killed writer: a temp dir named after a dead pid, and orphan table dirs
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = root / "_tmp" / f"0000000000000022.{dead_pid}.abcd1234"
    (stale / "kernels").mkdir(parents=True)
    live = root / "_tmp" / f"0000000000000033.{os.getpid()}.abcd1234"
    live.mkdir()
    orphan = root / "kernels" / "trace_id=0000000000000022"
    orphan.mkdir()
    (orphan / "data.parquet").write_bytes(b"half")
    removed = dataset.repair(root)
    assert str(stale) in removed and str(orphan) in removed
    assert live.exists() and not stale.exists() and not orphan.exists()
    assert dataset.list_partitions(root) == ["0000000000000011"]


def test_killed_writer_never_leaves_a_half_partition(tmp_path: Path) -> None:
    """SIGKILL a real process writing partitions in a loop; every complete partition must be whole."""
    root = tmp_path / "ds"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(ROOT / "tests" / "store")!r}, {str(ROOT / "tests")!r}]
        from test_dataset import _export_tables
        from traceforge.store import dataset
        i = 0
        while True:
            row, raw = _export_tables(f"{{i:016x}}")
            dataset.write_partition({str(root)!r}, row, raw["frames"])
            print(i, flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for _ in range(3):  # let it finish a few partitions, then kill it at an arbitrary point
            assert proc.stdout.readline(), "writer died early"
        time.sleep(0.13)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    complete = dataset.list_partitions(root)
    assert len(complete) >= 3
    con = duckdb.connect()
    for trace_id in complete:
        for table in TRACE_TABLES:
            path = dataset.partition_file(root, table, trace_id)
            assert path.is_file(), (trace_id, table)
            con.execute(f"SELECT count(*) FROM '{path}'").fetchone()  # readable Parquet
        assert con.execute(
            f"SELECT count(*) FROM '{dataset.partition_file(root, 'kernels', trace_id)}'"
        ).fetchone() == (42,)
    dataset.repair(root)
    assert [n for n in os.listdir(root / "_tmp") if not n.startswith(".")] == []
    for table in TRACE_TABLES:
        present = sorted(p.name.split("=")[1] for p in (root / table).iterdir())
        assert present == complete, table


def test_group_load_is_all_or_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    ids = ["0000000000000a01", "0000000000000a02", "0000000000000a03"]
    for trace_id in ids:
        _write(root, trace_id)
    with Store(tmp_path / "a.duckdb") as store:
        counts = dataset.load_partitions(store, root, [(t, f"/archive/{t}.sqlite", False) for t in ids[:2]])
        assert counts == {ids[0]: 42, ids[1]: 42}
        assert store.con.execute("SELECT source_path FROM traces ORDER BY 1").fetchall() == [
            (f"/archive/{ids[0]}.sqlite",),
            (f"/archive/{ids[1]}.sqlite",),
        ]
        (root / "memops" / f"trace_id={ids[2]}" / "data.parquet").unlink()
        with pytest.raises(dataset.DatasetError, match="lacks table memops"):
            dataset.load_partitions(store, root, [(ids[0], None, True), (ids[2], None, False)])
        # the failed group changed nothing: the replaced trace is still there, the other never landed
        assert store.con.execute(
            "SELECT trace_id, count(*) FROM kernels GROUP BY 1 ORDER BY 1"
        ).fetchall() == [
            (ids[0], 42),
            (ids[1], 42),
        ]


def test_a_partition_from_before_cuda_graphs_loads(tmp_path: Path) -> None:
    """A partition written before ``graph_launches``/``graph_summary`` existed loads without them."""
    root = tmp_path / "ds"
    trace_id = "0000000000000b01"
    _write(root, trace_id)
    for table in dataset.LATER_PARTITION_TABLES:
        (root / table / f"trace_id={trace_id}" / "data.parquet").unlink()
    with Store(tmp_path / "a.duckdb") as store:
        assert dataset.load_partitions(store, root, [(trace_id, None, False)]) == {trace_id: 42}
        assert store.con.execute("SELECT count(*) FROM graph_launches").fetchone() == (0,)
