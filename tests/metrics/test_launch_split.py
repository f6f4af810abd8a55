"""The launch split (issue 16, item 6): API time, queue time and kernel time of each kernel launch.

nsys's ``kernexecsum`` definitions: API time = the launching call's duration, queue time = kernel start -
call end where that is >= 0 (its query keeps zero; a kernel that starts before its call returns has none),
kernel time = the kernel's duration. The reference here reads the raw export with ``sqlite3``: each kernel's
launching call is the runtime call of the same process and correlation id, else the driver call (a
runtime call wraps the driver call it makes). Percentiles are numpy's linear ones (docs/schema.md).
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

import duckdb
import numpy as np
import pytest

#: GPU + NVTX (2025.3), CUDA graphs in graph mode (launch split over kernels only), driver API (2022.4).
EXPORTS = (
    "small_matmul_h100_nsys2025.3.sqlite",
    "known_graphmode_h200_nsys2025.3.sqlite",
    "cu11_driverapi_h200_nsys2022.4.sqlite",
)


def _launches(path: Path) -> list[dict[str, Any]]:
    """Every kernel of the export with its launching call's start and end (None when no call matched)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        calls: dict[tuple[int, int], tuple[int, int]] = {}
        # Driver calls first, so the runtime call of the same (pid, correlation id) overwrites them.
        for table in ("CUPTI_ACTIVITY_KIND_DRIVER", "CUPTI_ACTIVITY_KIND_RUNTIME"):
            if table in tables:
                for gtid, corr, start, end in con.execute(
                    f"SELECT globalTid, correlationId, start, end FROM {table}"
                ):
                    calls[((gtid >> 24) & 0xFFFFFF, corr)] = (start, end)
        strings = dict(con.execute("SELECT id, value FROM StringIds"))
        out = []
        for dev, stream, gpid, corr, start, end, name in con.execute(
            "SELECT deviceId, streamId, globalPid, correlationId, start, end, demangledName "
            "FROM CUPTI_ACTIVITY_KIND_KERNEL"
        ):
            call = calls.get(((gpid >> 24) & 0xFFFFFF, corr))
            api = queue = None
            if call is not None:
                api = call[1] - call[0]
                queue = start - call[1] if start - call[1] >= 0 else None
            out.append(
                {
                    "device": dev,
                    "stream": stream,
                    "name": strings[name],
                    "start": start,
                    "dur": end - start,
                    "call": call,
                    "api": api,
                    "queue": queue,
                }  # fmt: skip
            )
        return out
    finally:
        con.close()


def _pct(values: list[int], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if values else None


def _mean(values: list[int]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))


def _rows(db: Path, query: str, trace_id: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(query, [trace_id])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        con.close()


@pytest.fixture(scope="module", params=EXPORTS)
def case(
    request: pytest.FixtureRequest,
    real_export: Callable[[str], Path],
    ingested: Callable[[Path], tuple[Path, str]],
) -> tuple[Path, str, list[dict[str, Any]]]:
    export = real_export(request.param)
    db, trace_id = ingested(export)
    return db, trace_id, _launches(export)


def test_kernels_carry_the_calls_end_api_time_and_queue_time(
    case: tuple[Path, str, list[dict[str, Any]]],
) -> None:
    db, trace_id, launches = case
    columns = ("device_id", "start_ns", "duration_ns", "api_start_ns", "api_end_ns", "api_ns", "queue_ns")
    query = f"SELECT {', '.join(columns)} FROM kernels WHERE trace_id = ?"
    ours = sorted(tuple(r[c] for c in columns) for r in _rows(db, query, trace_id))
    expected = sorted(
        (k["device"], k["start"], k["dur"], *(k["call"] or (None, None)), k["api"], k["queue"])
        for k in launches
    )
    assert ours == expected
    # The case must exercise both sides of the queue rule and the unmatched case where the capture has it.
    assert any(k["queue"] is not None for k in launches)


def test_device_and_stream_metrics_split_like_the_reference(
    case: tuple[Path, str, list[dict[str, Any]]],
) -> None:
    db, trace_id, launches = case
    for table, key in (("device_metrics", ("device",)), ("stream_metrics", ("device", "stream"))):
        groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for k in launches:
            groups[tuple(k[c] for c in key)].append(k)
        rows = _rows(db, f"SELECT * FROM {table} WHERE trace_id = ?", trace_id)
        got = {(r["device_id"],) if len(key) == 1 else (r["device_id"], r["stream_id"]): r for r in rows}
        for group, ks in groups.items():
            r = got[group]
            api = [k["api"] for k in ks if k["api"] is not None]
            queue = [k["queue"] for k in ks if k["queue"] is not None]
            assert r["launch_queue_count"] == len(queue), (table, group)
            for q in (50, 90, 99):
                assert _close(r[f"launch_api_p{q}_ns"], _pct(api, q)), (table, group, q)
                assert _close(r[f"launch_queue_p{q}_ns"], _pct(queue, q)), (table, group, q)


def test_kernel_summary_splits_like_the_reference(case: tuple[Path, str, list[dict[str, Any]]]) -> None:
    db, trace_id, launches = case
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for k in launches:
        groups[(k["device"], k["name"])].append(k)
    rows = _rows(db, "SELECT * FROM kernel_summary WHERE trace_id = ?", trace_id)
    got = {(r["device_id"], r["name"]): r for r in rows}
    assert set(got) == set(groups)
    for group, ks in groups.items():
        r = got[group]
        api = [k["api"] for k in ks if k["api"] is not None]
        queue = [k["queue"] for k in ks if k["queue"] is not None]
        assert (r["launched_count"], r["queue_count"]) == (len(api), len(queue)), group
        assert _close(r["api_avg_ns"], _mean(api)) and _close(r["api_median_ns"], _pct(api, 50)), group
        assert _close(r["queue_avg_ns"], _mean(queue)) and _close(r["queue_median_ns"], _pct(queue, 50)), (
            group
        )


def test_reanalyze_recomputes_the_split_from_stored_rows(
    real_export: Callable[[str], Path], tmp_path: Path
) -> None:
    """The split is derived from the stored kernels (their calls' ends), as every metric is."""
    import traceforge
    from traceforge.ingest.reanalyze import reanalyze, stale_traces

    export = real_export("small_matmul_h100_nsys2025.3.sqlite")
    db = tmp_path / "re.duckdb"
    tf = traceforge.Traceforge(db)
    try:
        tf.ingest([export])
        query = (
            "SELECT name, launched_count, api_avg_ns, queue_count, queue_avg_ns FROM kernel_summary "
            "ORDER BY name"
        )
        before = tf.sql(query).rows()
        metrics = "SELECT launch_api_p50_ns, launch_queue_count, launch_queue_p99_ns FROM device_metrics"
        device_before = tf.sql(metrics).rows()
        assert device_before[0][1] > 0
        tf.store.con.execute("UPDATE kernel_summary SET api_avg_ns = NULL, queue_count = -1")
        tf.store.con.execute("UPDATE device_metrics SET launch_queue_count = -1")
        outcomes = reanalyze(tf.store, stale_traces(tf.store, everything=True))
        assert all(o.status == "recomputed" for o in outcomes), outcomes
        assert tf.sql(query).rows() == before
        assert tf.sql(metrics).rows() == device_before
    finally:
        tf.close()
