"""Synthetic nsys exports (traceforge.synth, ``traceforge synth``).

Independent checks only: the schema is compared with the real nsys 2025.3 fixtures through ``sqlite_master``
and ``pragma_table_info``; metrics of an ingested synthetic export are compared with ``tests/reference.py``
(plain Python over sqlite3); realism is judged with numpy on the real ``llama1b_n1`` capture; nsys 2022.4's
own ``stats`` reads the generated file when it is installed.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import reference
import traceforge
from traceforge.synth import (
    SynthArgumentError,
    SynthExistsError,
    SynthOutputError,
    synthesize,
    synthesize_with_summary,
)

KERNEL_TABLES = (
    "CUPTI_ACTIVITY_KIND_KERNEL",
    "CUPTI_ACTIVITY_KIND_MEMCPY",
    "CUPTI_ACTIVITY_KIND_MEMSET",
    "CUPTI_ACTIVITY_KIND_RUNTIME",
    "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
    "NVTX_EVENTS",
)


def schema(path: Path) -> dict[str, Any]:
    """sqlite_master entries in order, and each table's pragma_table_info rows in column order."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        master = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid").fetchall()
        columns = {
            name: con.execute(
                'SELECT cid, name, type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid',
                (name,),
            ).fetchall()
            for (_, name, _, _) in master
        }
        return {"master": master, "columns": columns}
    finally:
        con.close()


def rows(path: Path, query: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(query, params).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """2 devices x 3 streams, 4,000 kernels, 3 requests per device: small enough for the reference."""
    out = tmp_path_factory.mktemp("synth") / "multi.sqlite"
    return synthesize_with_summary(out, kernels=4_000, devices=2, streams=3, seed=11, requests=3)


NSYS2022 = "cu11_driverapi_h200_nsys2022.4.sqlite"


@pytest.fixture(scope="module")
def multi_2022(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """The same simulation as ``multi`` in the nsys 2022.4 layout (schema 3.0.0, driver-API launches)."""
    out = tmp_path_factory.mktemp("synth2022") / "multi2022.sqlite"
    return synthesize_with_summary(
        out, kernels=4_000, devices=2, streams=3, seed=11, requests=3, nsys_version="2022.4"
    )


# --- schema fidelity -------------------------------------------------------------------------------------


def test_schema_equals_real_2025_3_export(multi: tuple[Path, dict], llama_export: Path) -> None:
    ours, real = schema(multi[0]), schema(llama_export)
    assert [m[1] for m in ours["master"]] == [m[1] for m in real["master"]], "tables or their order differ"
    assert ours["master"] == real["master"], "CREATE TABLE text differs"
    assert ours["columns"] == real["columns"]
    assert all(m[0] == "table" for m in ours["master"]), "nsys exports carry no indexes or views"


def test_schema_2022_4_equals_real_2022_4_export(multi_2022: tuple[Path, dict], real_export: Any) -> None:
    """Same tables (order, CREATE text), columns, declared types, NOT NULL, keys as the real 2022.4 export."""
    path, summary = multi_2022
    ours, real = schema(path), schema(real_export(NSYS2022))
    assert [m[1] for m in ours["master"]] == [m[1] for m in real["master"]], "tables or their order differ"
    assert ours["columns"] == real["columns"]
    assert ours["master"] == real["master"], "CREATE TABLE text differs"
    keys = "SELECT name FROM EXPORT_META_DATA ORDER BY rowid"
    assert rows(path, keys) == rows(real_export(NSYS2022), keys)
    meta = dict(rows(path, "SELECT name, value FROM EXPORT_META_DATA"))
    assert meta["EXPORT_SCHEMA_VERSION"] == "3.0.0" and meta["EXPORT_PRODUCT_VERSION"] == "2022.4.2.1"
    assert meta["EXPORT_OUTUPT_PATH_ABS"] == str(path)  # sic, as nsys 2022.4 spells it
    launches = rows(
        path,
        "SELECT s.value, r.eventClass, count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL k "
        "JOIN CUPTI_ACTIVITY_KIND_RUNTIME r ON r.correlationId = k.correlationId "
        "AND r.globalTid >> 24 = k.globalPid >> 24 JOIN StringIds s ON s.id = r.nameId GROUP BY 1, 2",
    )
    assert launches == [("cuLaunchKernel", 1, summary["kernels"])], (
        "driver-API launches, as in the real export"
    )


def test_schema_covers_the_small_matmul_export(multi: tuple[Path, dict], small_matmul_export: Path) -> None:
    """The other real 2025.3 export (no memset table) has no table or column the generated file lacks."""
    ours, real = schema(multi[0]), schema(small_matmul_export)
    for name, cols in real["columns"].items():
        assert ours["columns"].get(name) == cols, name


def test_metadata_and_static_tables(multi: tuple[Path, dict], llama_export: Path) -> None:
    path, _ = multi
    meta = dict(rows(path, "SELECT name, value FROM META_DATA_EXPORT"))
    real_meta = dict(rows(llama_export, "SELECT name, value FROM META_DATA_EXPORT"))
    assert set(meta) == set(real_meta)
    for key in ("EXPORT_PRODUCT_VERSION", "EXPORT_SCHEMA_VERSION", "EXPORT_SCHEMA_VERSION_MAJOR"):
        assert meta[key] == real_meta[key]
    assert meta["EXPORT_PARAM_OUTPUT_PATH_ABS"] == str(path)
    for table in [
        t for (t,) in rows(llama_export, "SELECT name FROM sqlite_master WHERE name LIKE 'ENUM_%'")
    ]:
        assert rows(path, f"SELECT * FROM {table}") == rows(llama_export, f"SELECT * FROM {table}"), table
    gpus = rows(
        path, "SELECT id, name, busLocation, uuid, cuDevice, smCount FROM TARGET_INFO_GPU ORDER BY id"
    )
    assert [g[0] for g in gpus] == [0, 1] and all(g[1] == "NVIDIA H100 80GB HBM3" for g in gpus)
    assert len({g[3] for g in gpus}) == 2, "distinct UUIDs"
    (start, stop, duration) = rows(path, "SELECT startTime, stopTime, duration FROM ANALYSIS_DETAILS")[0]
    assert duration == stop - start
    for table in KERNEL_TABLES:
        (lo, hi) = rows(path, f"SELECT min(start), max(coalesce(end, start)) FROM {table}")[0]
        assert start <= lo and hi <= stop, table
    (utc, text) = rows(path, "SELECT utcEpochNs, utcTime FROM TARGET_INFO_SESSION_START_TIME")[0]
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(utc // 10**9)) == text


# --- content -----------------------------------------------------------------------------------------------


def test_every_gpu_operation_links_to_its_launching_call(multi: tuple[Path, dict]) -> None:
    path, summary = multi
    for table in ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY", "CUPTI_ACTIVITY_KIND_MEMSET"):
        (n, linked, before) = rows(
            path,
            f"SELECT count(*), count(r.start), count(*) FILTER (WHERE r.start <= g.start) FROM {table} g "
            "LEFT JOIN CUPTI_ACTIVITY_KIND_RUNTIME r ON r.correlationId = g.correlationId "
            "AND r.globalTid >> 24 = g.globalPid >> 24",
        )[0]
        assert n > 0 and n == linked == before, table
    # correlation ids repeat across the two processes but are unique within one, as in CUPTI
    (dupes,) = rows(
        path,
        "SELECT count(*) FROM (SELECT globalTid >> 24, correlationId FROM CUPTI_ACTIVITY_KIND_RUNTIME "
        "GROUP BY 1, 2 HAVING count(*) > 1)",
    )[0]
    assert dupes == 0
    assert rows(path, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL")[0][0] == summary["kernels"] == 4_000
    # launching calls are runtime (eventClass 0) or driver (1) calls named in StringIds
    names = {
        n
        for (n,) in rows(
            path,
            "SELECT DISTINCT s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN CUPTI_ACTIVITY_KIND_RUNTIME r "
            "ON r.correlationId = k.correlationId AND r.globalTid >> 24 = k.globalPid >> 24 "
            "JOIN StringIds s ON s.id = r.nameId",
        )
    }
    assert "cudaLaunchKernel_v7000" in names and names <= {
        "cudaLaunchKernel_v7000",
        "cuLaunchKernelEx",
        "cudaLaunchKernelExC_v11060",
        "cuLaunchKernel",
    }


def test_streams_threads_and_nvtx(multi: tuple[Path, dict]) -> None:
    path, _ = multi
    # a stream runs one thing at a time: no two operations overlap on one (device, stream)
    for table in ("CUPTI_ACTIVITY_KIND_KERNEL",):
        ops = rows(
            path, f"SELECT deviceId, streamId, start, end FROM {table} ORDER BY deviceId, streamId, start"
        )
        for a, b in zip(ops, ops[1:]):
            if a[:2] == b[:2]:
                assert b[2] >= a[3], (a, b)
    streams = rows(
        path, "SELECT deviceId, count(DISTINCT streamId) FROM CUPTI_ACTIVITY_KIND_KERNEL GROUP BY 1"
    )
    assert streams == [(0, 3), (1, 3)]
    # each request is a push/pop range on the launching thread, covering the calls it made
    ranges = rows(
        path, "SELECT start, end, text, globalTid, eventType FROM NVTX_EVENTS ORDER BY globalTid, start"
    )
    assert [r[2] for r in ranges] == [f"agent{d}/req{i}" for d in range(2) for i in range(3)]
    assert all(r[4] == 59 for r in ranges)
    threads = {t for (t,) in rows(path, "SELECT globalTid FROM ThreadNames")}
    assert {r[3] for r in ranges} == threads
    for start, end, _, tid, _ in ranges:
        (inside,) = rows(
            path,
            "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME "
            "WHERE globalTid = ? AND start >= ? AND end <= ?",
            (tid, start, end),
        )[0]
        assert inside > 0
    processes = rows(path, "SELECT globalPid, pid FROM PROCESSES")
    assert all(g >> 24 & 0xFFFFFF == p for g, p in processes) and len(processes) == 2


def test_kernel_names_cover_the_families(multi: tuple[Path, dict]) -> None:
    path, _ = multi
    names = [
        n
        for (n,) in rows(
            path,
            "SELECT DISTINCT s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k "
            "JOIN StringIds s ON s.id = k.demangledName",
        )
    ]
    families = {
        "gemm": ("nvjet_", "gemm", "cublasLt"),
        "attention": ("sdpa", "flash"),
        "elementwise": ("elementwise_kernel",),
        "reduction": ("reduce_kernel",),
        "nccl": ("ncclDevKernel_AllReduce",),
    }
    for family, needles in families.items():
        assert any(any(x in n for x in needles) for n in names), family
    short = rows(
        path,
        "SELECT DISTINCT d.value, s.value FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds d "
        "ON d.id = k.demangledName JOIN StringIds s ON s.id = k.shortName",
    )
    assert all(s in d for d, s in short), "shortName is the base name of demangledName"
    kinds = dict(rows(path, "SELECT copyKind, min(bytes) FROM CUPTI_ACTIVITY_KIND_MEMCPY GROUP BY 1"))
    assert set(kinds) <= {1, 2, 8} and 8 in kinds and min(kinds.values()) > 0


def _timeline_stats(path: Path) -> dict[str, float]:
    """Plain numpy statistics of device 0's kernels, the way one would eyeball a capture."""
    k = np.array(
        rows(
            path,
            "SELECT k.start, k.end, k.start - r.start FROM CUPTI_ACTIVITY_KIND_KERNEL k "
            "JOIN CUPTI_ACTIVITY_KIND_RUNTIME r ON r.correlationId = k.correlationId "
            "AND r.globalTid >> 24 = k.globalPid >> 24 WHERE k.deviceId = 0 ORDER BY k.start",
        ),
        dtype=np.int64,
    )
    start, end, latency = k[:, 0], k[:, 1], k[:, 2]
    reach = np.maximum.accumulate(end)
    gaps = start[1:] - reach[:-1]
    gaps = gaps[gaps > 0]
    busy = (end - start).sum() - np.clip(reach[:-1] - start[1:], 0, None).sum()  # exact for one stream
    span = reach[-1] - start[0]
    return {
        "duration_p50": float(np.median(end - start)),
        "duration_mean": float(np.mean(end - start)),
        "gap_p50": float(np.median(gaps)),
        "gap_p90": float(np.percentile(gaps, 90)),
        "latency_p50": float(np.median(latency)),
        "utilization": float(busy / span),
        "api_per_kernel": rows(path, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME")[0][0] / len(k),
    }


def test_timing_looks_like_the_fitted_capture(tmp_path: Path, llama_export: Path) -> None:
    """One device, one stream like the capture: the eyeball statistics land close to the real ones."""
    ours = _timeline_stats(synthesize(tmp_path / "like_llama.sqlite", kernels=150_000, seed=3))
    real = _timeline_stats(llama_export)
    tolerance = {
        "duration_p50": 0.05,
        "duration_mean": 0.10,
        "gap_p50": 0.10,
        "gap_p90": 0.15,
        "latency_p50": 0.10,
        "utilization": 0.30,
        "api_per_kernel": 0.10,
    }
    off = {k: (ours[k], real[k]) for k, tol in tolerance.items() if abs(ours[k] - real[k]) > tol * real[k]}
    assert not off, f"synthetic vs real: {off}"


# --- ingest agrees with the independent reference -------------------------------------------------------


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    return a == b


@pytest.mark.parametrize(("variant", "schema_version"), [("multi", "3.20.3"), ("multi_2022", "3.0.0")])
def test_ingest_matches_reference(
    variant: str, schema_version: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Both layouts (2025.3 and 2022.4) ingest to the metrics of the plain-Python reference."""
    path, _ = request.getfixturevalue(variant)
    ref = reference.compute(str(path))
    with traceforge.connect(tmp_path / "store.duckdb") as tf:
        tf.ingest([path])
        device = {r["device_id"]: r for r in tf.sql("SELECT * FROM device_metrics").to_dicts()}
        stream = {
            (r["device_id"], r["stream_id"]): r for r in tf.sql("SELECT * FROM stream_metrics").to_dicts()
        }
        ksum = {(r["device_id"], r["name"]): r for r in tf.sql("SELECT * FROM kernel_summary").to_dicts()}
        msum = {
            (r["device_id"], r["op"], r["copy_kind"]): r
            for r in tf.sql("SELECT * FROM memop_summary").to_dicts()
        }
        proj = {
            (r["pid"], r["tid"], r["start_ns"]): r for r in tf.sql("SELECT * FROM nvtx_projection").to_dicts()
        }
        (trace,) = tf.sql("SELECT * FROM traces").to_dicts()
    bad: list[str] = []

    def check(where: str, got: dict, expected: dict, cols: list[str]) -> None:
        for c in cols:
            if not close(got.get(c), expected[c]):
                bad.append(f"{where}.{c}: traceforge={got.get(c)!r} reference={expected[c]!r}")

    metric_cols = [c for c in next(iter(ref.device_metrics.values())) if not c.startswith("_")]
    assert set(device) == set(ref.device_metrics) == {0, 1}
    for dev, exp in ref.device_metrics.items():
        check(f"device_metrics[{dev}]", device[dev], exp, [c for c in metric_cols if c in device[dev]])
        assert exp["max_concurrency"] >= 2, "three streams overlap somewhere"
        assert exp["launch_matched"] == exp["kernel_count"]
    assert set(stream) == set(ref.stream_metrics)
    for key, exp in ref.stream_metrics.items():
        check(f"stream_metrics[{key}]", stream[key], exp, [c for c in metric_cols if c in stream[key]])
    assert set(ksum) == set(ref.kernel_summary)
    for key, exp in ref.kernel_summary.items():
        check(
            f"kernel_summary[{key}]", ksum[key], exp, [c for c in exp if c != "stddev_ns" or exp["count"] > 1]
        )
    assert set(msum) == set(ref.memop_summary)
    for key, exp in ref.memop_summary.items():
        check(f"memop_summary[{key}]", msum[key], exp, list(exp))
    assert len(proj) == len(ref.nvtx_projection) == 6
    for exp in ref.nvtx_projection:
        got = proj[(exp["pid"], exp["tid"], exp["start_ns"])]
        cols = [
            "gpu_op_count",
            "launch_count",
            "kernel_count",
            "kernel_time_ns",
            "gpu_start_ns",
            "gpu_end_ns",
        ]
        check(f"nvtx_projection[{exp['name']}]", got, exp, cols)
    assert trace["kernel_count"] == len(ref.export.kernels) == 4_000
    assert trace["gpu_count"] == 2 and trace["schema_version"] == schema_version
    assert not bad, "\n".join(bad[:40])


@pytest.mark.nsys
def test_nsys_stats_reads_the_synthetic_export(
    multi: tuple[Path, dict], nsys_cache: Path, nsys_bin: Any
) -> None:
    """nsys' own report scripts accept the file and count what a plain SQL count sees."""
    from nsys_oracle import run_stats

    path, summary = multi
    stats = run_stats(path, nsys_cache, reports=("gpukernsum", "gpumemtimesum"), nsys=nsys_bin)
    kern = stats["gpukernsum"]
    assert kern is not None
    assert sum(r["Instances"] for r in kern) == summary["kernels"]
    direct = rows(path, "SELECT sum(end - start) FROM CUPTI_ACTIVITY_KIND_KERNEL")[0][0]
    assert sum(r["Total Time (ns)"] for r in kern) == direct
    mem = stats["gpumemtimesum"]
    assert mem is not None and sum(r["Count"] for r in mem) == summary["memcpys"] + summary["memsets"]


@pytest.mark.nsys
def test_nsys_2022_4_gpukernsum_matches_kernel_summary(
    tmp_path: Path, nsys_cache: Path, nsys_bin: Any
) -> None:
    """nsys 2022.4's gpukernsum on a small 2022.4 synthetic export agrees with traceforge's kernel_summary."""
    from nsys_oracle import run_stats

    path = synthesize(tmp_path / "small2022.sqlite", kernels=2_000, streams=2, seed=5, nsys_version="2022.4")
    kern = run_stats(path, nsys_cache, reports=("gpukernsum",), nsys=nsys_bin)["gpukernsum"]
    assert kern is not None
    with traceforge.connect(tmp_path / "store.duckdb") as tf:
        tf.ingest([path])
        ours = tf.sql("SELECT * FROM kernel_summary").to_dicts()
    theirs: dict[str, list[dict[str, Any]]] = {}
    for r in kern:
        theirs.setdefault(r["Name"], []).append(r)
    mine: dict[str, list[dict[str, Any]]] = {}
    for r in ours:
        mine.setdefault(r["name"], []).append(r)
    assert set(mine) == set(theirs)
    bad = []
    for name, rs in theirs.items():
        m = mine[name]
        pairs = [
            ("count", sum(r["count"] for r in m), sum(r["Instances"] for r in rs)),
            ("total_ns", sum(r["total_ns"] for r in m), sum(r["Total Time (ns)"] for r in rs)),
            ("min_ns", min(r["min_ns"] for r in m), min(r["Min (ns)"] for r in rs)),
            ("max_ns", max(r["max_ns"] for r in m), max(r["Max (ns)"] for r in rs)),
        ]
        if len(rs) == len(m) == 1:
            for col, n in (("avg_ns", "Avg (ns)"), ("median_ns", "Med (ns)"), ("stddev_ns", "StdDev (ns)")):
                pairs.append((col, m[0][col], rs[0][n]))
        # nsys rounds averages, medians and standard deviations to 0.1 ns
        bad += [
            f"{name!r}.{c}: {a} vs nsys {b}" for c, a, b in pairs if not math.isclose(a, b, abs_tol=0.051)
        ]
    assert sum(r["Instances"] for r in kern) == 2_000
    assert not bad, "\n".join(bad[:20])


# --- determinism -------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path: Path) -> None:
    path = tmp_path / "det.sqlite"
    synthesize(path, kernels=20_000, devices=2, streams=2, seed=42)
    first = path.read_bytes()
    synthesize(path, kernels=20_000, devices=2, streams=2, seed=42, overwrite=True)
    assert path.read_bytes() == first, "same arguments and seed must give a byte-identical file"

    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    synthesize(elsewhere / "det.sqlite", kernels=20_000, devices=2, streams=2, seed=42)
    query = "SELECT * FROM CUPTI_ACTIVITY_KIND_KERNEL ORDER BY rowid"
    assert rows(elsewhere / "det.sqlite", query) == rows(path, query), "rows do not depend on the directory"

    synthesize(tmp_path / "other.sqlite", kernels=20_000, devices=2, streams=2, seed=43)
    assert rows(tmp_path / "other.sqlite", query) != rows(path, query)
    assert rows(tmp_path / "other.sqlite", "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL") == [(20_000,)]


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kernels": 0}, "kernels"),
        ({"kernels": -5}, "kernels"),
        ({"kernels": 1.5}, "kernels"),
        ({"kernels": 3, "devices": 4}, "kernels"),
        ({"devices": 0}, "devices"),
        ({"devices": 65}, "devices"),
        ({"streams": 0}, "streams"),
        ({"seed": -1}, "seed"),
        ({"kernels": 10, "requests": 11}, "requests"),
    ],
)
def test_api_rejects_bad_arguments(tmp_path: Path, kwargs: dict, field: str) -> None:
    out = tmp_path / "bad.sqlite"
    with pytest.raises(SynthArgumentError, match=f"invalid {field}") as info:
        synthesize(out, **kwargs)
    assert isinstance(info.value, ValueError) and info.value.code == "synth_argument"
    assert list(tmp_path.iterdir()) == []


def test_api_output_errors(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.sqlite"
    with pytest.raises(SynthOutputError, match="does not exist") as info:
        synthesize(missing, kernels=10)
    assert str(missing) in str(info.value) and isinstance(info.value, OSError)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SynthOutputError):
        synthesize(blocker / "x.sqlite", kernels=10)
    existing = tmp_path / "exists.sqlite"
    existing.write_text("keep me")
    with pytest.raises(SynthExistsError) as info2:
        synthesize(existing, kernels=10)
    assert isinstance(info2.value, FileExistsError) and str(existing) in str(info2.value)
    assert existing.read_text() == "keep me"
    synthesize(existing, kernels=10, overwrite=True)
    assert rows(existing, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL") == [(10,)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.sqlite", "file"], "no temporary left behind"


def test_cli_writes_and_reports(run_cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "cli.sqlite"
    res = run_cli("synth", "--out", out, "--kernels", 1_000, "--devices", 2, "--streams", 2, "--seed", 7)
    assert res.rc == 0, res
    assert "1,000 kernels" in res.stdout and str(out) in res.stdout
    assert rows(out, "SELECT count(*), count(DISTINCT deviceId) FROM CUPTI_ACTIVITY_KIND_KERNEL") == [
        (1000, 2)
    ]
    again = run_cli("synth", "--out", out, "--kernels", 1_000)
    assert again.rc == 1 and again.stderr.strip().count("\n") == 0, again
    assert (
        again.stderr.startswith("traceforge: error: ")
        and str(out) in again.stderr
        and "already exists" in again.stderr
    )
    forced = run_cli("synth", "-o", out, "-n", 500, "--force-overwrite", "--quiet")
    assert forced.rc == 0 and forced.stdout == "", forced
    assert rows(out, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL") == [(500,)]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--kernels", "0"], "invalid kernels"),
        (["--kernels", "-3"], "invalid kernels"),
        (["--devices", "0"], "invalid devices"),
        (["--streams", "1000"], "invalid streams"),
    ],
)
def test_cli_bad_values(run_cli: Any, tmp_path: Path, args: list[str], needle: str) -> None:
    res = run_cli("synth", "--out", tmp_path / "x.sqlite", *args)
    assert res.rc == 1, res
    assert res.stderr.startswith("traceforge: error: ") and needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_unparseable_and_unwritable(run_cli: Any, tmp_path: Path) -> None:
    res = run_cli("synth", "--out", tmp_path / "x.sqlite", "--kernels", "lots")
    assert res.rc == 2 and "--kernels" in res.stderr, res
    target = tmp_path / "missing" / "x.sqlite"
    res = run_cli("synth", "--out", target, "--kernels", 10)
    assert res.rc == 1 and len(res.stderr.strip().splitlines()) == 1, res
    assert str(target) in res.stderr and "does not exist" in res.stderr
    res = run_cli("synth", "--out", tmp_path, "--kernels", 10)
    assert res.rc != 0 and "directory" in res.stderr.lower(), res


def test_cli_nsys_version(run_cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "old.sqlite"
    res = run_cli("synth", "--out", out, "--kernels", 300, "--nsys-version", "2022.4", "--quiet")
    assert res.rc == 0, res
    tables = {t for (t,) in rows(out, "SELECT name FROM sqlite_master")}
    assert "EXPORT_META_DATA" in tables and "META_DATA_EXPORT" not in tables
    assert rows(out, "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL") == [(300,)]
    bad = run_cli("synth", "--out", tmp_path / "x.sqlite", "--nsys-version", "2023.1")
    assert bad.rc == 2 and "--nsys-version" in bad.stderr, bad
    helped = run_cli("synth", "--help")
    assert "--nsys-version" in helped.stdout and "--nsys-version 2022.4" in helped.stdout
    with pytest.raises(SynthArgumentError, match="invalid nsys_version"):
        synthesize(tmp_path / "y.sqlite", kernels=10, nsys_version="2022.3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.sqlite"]


def test_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "big.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "traceforge", "synth", "--out", str(out), "--kernels", str(200_000_000)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".big.sqlite.tmp") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, "generation never started"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert list(tmp_path.iterdir()) == [], "partial output removed"


# --- host-side tables (issue 18) -------------------------------------------------------------------------

HOST_TABLES = {
    "llm_threads4_gil_osrt_h200_nsys2025.3.sqlite": ("NVTX_EVENTS", "OSRT_API", "OSRT_CALLCHAINS"),
    "known_gpumetrics_osrt_h200_nsys2025.3.sqlite": (
        "GENERIC_EVENT_TYPES",
        "GENERIC_EVENT_SOURCES",
        "GENERIC_EVENT_TYPE_FIELDS",
        "TARGET_INFO_GPU_METRICS",
        "GPU_METRICS",
    ),
}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """GIL ranges over 3 threads, OS calls and GPU metrics at 1 kHz on 2 devices."""
    out = tmp_path_factory.mktemp("synth_host") / "host.sqlite"
    return synthesize_with_summary(
        out,
        kernels=6_000,
        devices=2,
        seed=5,
        nvtx_ranges=9_001,
        gil_threads=3,
        gpu_metrics_hz=1_000,
        osrt_calls=2_000,
    )


def test_host_tables_equal_the_real_captures(host: tuple[Path, dict], real_export: Any) -> None:
    """The host tables' CREATE text and columns are those of the real GIL/OSRT and GPU-metric captures."""
    ours = schema(host[0])
    ours_sql = {m[1]: m[3] for m in ours["master"]}
    for fixture, tables in HOST_TABLES.items():
        real = schema(real_export(fixture))
        real_sql = {m[1]: m[3] for m in real["master"]}
        for t in tables:
            assert ours_sql.get(t) == real_sql[t], t
            assert ours["columns"][t] == real["columns"][t], t
    # Without a host flag, none of them is written (the plain export stays the real llama1b schema).
    plain = schema(synthesize(host[0].with_name("plain.sqlite"), kernels=100))
    assert not {"OSRT_API", "GPU_METRICS"} & {m[1] for m in plain["master"]}


def test_host_rows_are_what_the_summary_says(host: tuple[Path, dict]) -> None:
    path, summary = host
    gil = rows(
        path,
        "SELECT s.value, count(*), count(DISTINCT n.globalTid) FROM NVTX_EVENTS n JOIN StringIds s "
        "ON s.id = n.textId WHERE n.eventType = 59 AND n.domainId = 1 GROUP BY 1 ORDER BY 1",
    )
    assert {label for label, _, _ in gil} == {"Holding GIL", "Waiting for GIL"}
    assert sum(n for _, n, _ in gil) == summary["gil_ranges"] == 9_001
    assert max(t for _, _, t in gil) == 3
    domain = rows(path, "SELECT text, domainId FROM NVTX_EVENTS WHERE eventType = 75")
    assert domain == [("GIL Trace", 1)]
    # A thread's GIL ranges and OS calls follow one another without overlapping.
    for table, where in (("NVTX_EVENTS", "eventType = 59 AND domainId = 1"), ("OSRT_API", "1")):
        seq = rows(path, f'SELECT globalTid, start, "end" FROM {table} WHERE {where} ORDER BY 1, 2')
        for (t0, _s0, e0), (t1, s1, e1) in zip(seq, seq[1:]):
            assert s1 < e1
            assert t0 != t1 or e0 <= s1, (table, t0, e0, s1)
    (os_n, os_threads) = rows(path, "SELECT count(*), count(DISTINCT globalTid) FROM OSRT_API")[0]
    assert (os_n, os_threads) == (summary["osrt_calls"], 3)
    start, stop = summary["start_ns"], summary["stop_ns"]
    samples = rows(
        path,
        "SELECT typeId & 255, count(DISTINCT metricId), count(*), min(timestamp), max(timestamp) "
        "FROM GPU_METRICS GROUP BY 1 ORDER BY 1",
    )
    assert [s[:2] for s in samples] == [(0, 22), (1, 22)]
    assert sum(s[2] for s in samples) == summary["gpu_metric_samples"]
    for _, _, n, lo, hi in samples:
        assert start <= lo and hi < stop
        assert n == 22 * ((hi - lo) // 1_000_000 + 1)  # every metric every millisecond
    names = rows(path, "SELECT DISTINCT typeId & 255, metricId, metricName FROM TARGET_INFO_GPU_METRICS")
    assert len(names) == 44


def test_host_flags_are_checked() -> None:
    with pytest.raises(SynthArgumentError, match="gil_threads"):
        synthesize("never.sqlite", kernels=100, gil_threads=2_000, nvtx_ranges=10)
    with pytest.raises(SynthArgumentError, match="nvtx_ranges"):
        synthesize("never.sqlite", kernels=100, gil_threads=2)
    with pytest.raises(SynthArgumentError, match="2025.3"):
        synthesize("never.sqlite", kernels=100, osrt_calls=10, nsys_version="2022.4")
    assert not Path("never.sqlite").exists()
