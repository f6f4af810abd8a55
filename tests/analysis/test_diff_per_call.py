"""``diff`` per call (issue 16, item 7): each kernel's and NVTX range name's per-call mean and median beside
its totals, ranked by the change in total time, and the traces named by their files.

Two real exports (small_matmul and llama1b_n1) are ingested; the reference reads each export with ``sqlite3``
(kernels: demangled name, ``end - start``) and the test reference's NVTX reader, and computes count, total,
mean and median (numpy's linear median, as ``kernel_summary``) per name.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import reference
import traceforge


def _per_name(durations: dict[str, list[int]]) -> dict[str, tuple[int, int, float, float]]:
    return {n: (len(d), sum(d), sum(d) / len(d), float(np.median(d))) for n, d in durations.items()}


def _kernels(path: Path) -> dict[str, tuple[int, int, float, float]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out: dict[str, list[int]] = defaultdict(list)
        for name, dur in con.execute(
            "SELECT s.value, k.end - k.start FROM CUPTI_ACTIVITY_KIND_KERNEL k "
            "JOIN StringIds s ON s.id = k.demangledName"
        ):
            out[name].append(dur)
        return _per_name(out)
    finally:
        con.close()


def _nvtx(path: Path) -> dict[str, tuple[int, int, float, float]]:
    out: dict[str, list[int]] = defaultdict(list)
    for r in reference.read_export(str(path)).nvtx:
        out[r.name].append(r.end - r.start)
    return _per_name(out)


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, small_matmul_export: Path, llama_export: Path
) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("diff-per-call") / "two.duckdb"
    with traceforge.connect(db) as tf:
        tf.ingest([small_matmul_export, llama_export])
        ids = dict(tf.sql("SELECT export_path, trace_id FROM traces").iter_rows())
    return {"db": db, "a": ids[str(small_matmul_export)], "b": ids[str(llama_export)],
            "path_a": small_matmul_export, "path_b": llama_export}  # fmt: skip


def _rel(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or a == 0 else (b - a) / a


def _check_rows(rows: list[dict[str, Any]], ref_a: dict[str, Any], ref_b: dict[str, Any], what: str) -> None:
    assert {r["name"] for r in rows} == set(ref_a) | set(ref_b), what
    for r in rows:
        ca, ta, ma, meda = ref_a.get(r["name"], (0, 0, None, None))
        cb, tb, mb, medb = ref_b.get(r["name"], (0, 0, None, None))
        assert (r["count_a"], r["count_b"], r["total_ns_a"], r["total_ns_b"]) == (ca, cb, ta, tb), (what, r)
        assert r["delta_ns"] == tb - ta, (what, r)
        for got, want in (
            (r["avg_ns_a"], ma),
            (r["avg_ns_b"], mb),
            (r["median_ns_a"], meda),
            (r["median_ns_b"], medb),
            (r["rel_avg"], _rel(ma, mb)),
            (r["rel_median"], _rel(meda, medb)),
        ):
            assert (got is None and want is None) or got == pytest.approx(want, rel=1e-9), (what, r)
    # Ranked by the change in total time.
    changes = [abs(r["delta_ns"]) for r in rows]
    assert changes == sorted(changes, reverse=True), what


def test_kernels_and_nvtx_compare_per_call(pair: dict[str, Any]) -> None:
    from traceforge.analysis.diff import diff_traces
    from traceforge.store import Store

    ka, kb = _kernels(pair["path_a"]), _kernels(pair["path_b"])
    with Store(pair["db"], read_only=True) as store:
        d = diff_traces(store, pair["a"], pair["b"], top=3)
    _check_rows(d.kernels.to_dicts(), ka, kb, "kernels")
    _check_rows(d.nvtx.to_dicts(), _nvtx(pair["path_a"]), _nvtx(pair["path_b"]), "nvtx")
    both = [n for n in ka if n in kb]
    assert len(both) >= 3, "the two captures must share kernels for the per-call ranking to mean anything"
    by_total = sorted(both, key=lambda n: (-abs(kb[n][1] - ka[n][1]), n))[:3]
    by_call = sorted(both, key=lambda n: (-abs((kb[n][2] - ka[n][2]) / ka[n][2]), n))[:3]
    assert d.top_abs["name"].to_list() == by_total
    assert d.top_rel["name"].to_list() == by_call
    # The device section carries the launch split (values as device_metrics holds them).
    devices = {r["metric"]: r for r in d.devices.to_dicts() if r["device_id"] == 0}
    with Store(pair["db"], read_only=True) as store:
        queued = dict(store.con.execute("SELECT trace_id, launch_queue_count FROM device_metrics").fetchall())
    assert (devices["launch_queue_count"]["a"], devices["launch_queue_count"]["b"]) == (
        queued[pair["a"]],
        queued[pair["b"]],
    )
    assert {"launch_api_p50_ns", "launch_queue_p50_ns", "launch_queue_p99_ns"} <= set(devices)


def test_diff_names_the_traces_by_file(pair: dict[str, Any], run_cli: Any) -> None:
    text = run_cli("diff", pair["a"], pair["b"], "--db", pair["db"], "--top", "2")
    assert text.rc == 0, str(text)
    lines = text.stdout.splitlines()
    assert lines[0] == f"A = {pair['path_a'].name} ({pair['a']})"
    assert lines[1] == f"B = {pair['path_b'].name} ({pair['b']})"
    assert f"kernels only in A ({pair['path_a'].name} ({pair['a']}))" in text.stdout
    for column in ("avg_ns_a", "avg_ns_b", "rel_avg", "median_ns_a", "median_ns_b", "rel_median"):
        assert column in text.stdout
    doc = json.loads(
        run_cli("diff", "small_matmul", "llama1b", "--db", pair["db"], "--format", "json").stdout
    )
    assert (doc["file_a"], doc["file_b"]) == (str(pair["path_a"]), str(pair["path_b"]))
    assert {"avg_ns_a", "median_ns_b", "rel_avg"} <= set(doc["nvtx"][0])
