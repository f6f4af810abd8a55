"""``traceforge export --format perfetto | chrome-json`` on real captures, read back independently.

The Perfetto file is parsed with Perfetto's own message definitions (the ``perfetto`` package's
``perfetto_trace_pb2``, ``tests/perfetto_reader.py``), its slices rebuilt from begin/end pairs per track as
the trace processor does; every count and time is compared with a plain sqlite3 reading of the original nsys
export (``tests/reference.py``, ``tests/reference_host.py``), never with traceforge's own tables.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

import pytest

import reference
import reference_host
from perfetto_reader import ReadTrace, read_perfetto

GIL = "llm_threads4_gil_osrt_h200_nsys2025.3.sqlite"
METRICS = "known_gpumetrics_osrt_h200_nsys2025.3.sqlite"
GRAPHS = "known_graphmode_h200_nsys2025.3.sqlite"
SMALL = "small_matmul_h100_nsys2025.3.sqlite"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, real_export: Callable[[str], Path], run_cli: Any) -> Path:
    db = tmp_path_factory.mktemp("timeline") / "store.duckdb"
    paths = [real_export(n) for n in (GIL, METRICS, GRAPHS, SMALL)]
    result = run_cli("ingest", "--db", db, *paths)
    assert result.rc == 0, str(result)
    return db


@pytest.fixture(scope="module")
def exported(store: Path, run_cli: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ReadTrace]:
    root = tmp_path_factory.mktemp("pftrace")
    made: dict[tuple[str, ...], ReadTrace] = {}

    def get(name: str, *extra: str) -> ReadTrace:
        key = (name, *extra)
        if key not in made:
            out = root / f"{name}.{len(made)}.pftrace"
            # the trace named by a prefix of its file name, as a user types it
            result = run_cli(
                "export", "--db", store, "--format", "perfetto", "--trace", name[:12], "-o", out, *extra
            )
            assert result.rc == 0, str(result)
            assert "ui.perfetto.dev" in result.stdout
            made[key] = read_perfetto(out)
        return made[key]

    return get


def _origin(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        starts = [con.execute("SELECT startTime FROM ANALYSIS_DETAILS").fetchone()[0]]
        for table in (
            "CUPTI_ACTIVITY_KIND_KERNEL",
            "CUPTI_ACTIVITY_KIND_MEMCPY",
            "CUPTI_ACTIVITY_KIND_MEMSET",
        ):
            try:
                starts.append(con.execute(f"SELECT min(start) FROM {table}").fetchone()[0])
            except sqlite3.OperationalError:
                pass
        return min(s for s in starts if s is not None)
    finally:
        con.close()


def _gpu_ops(ex: reference.Export, graph_mode: bool) -> list[tuple[int, int, int, int, int, Any]]:
    """(device, stream, start, end, pid, correlation) of every kernel, memcpy/memset and graph execution."""
    ops = [(k.device_id, k.stream_id, k.start, k.end, k.pid, k.correlation_id) for k in ex.kernels]
    ops += [(m.device_id, m.stream_id, m.start, m.end, m.pid, m.correlation_id) for m in ex.memops]
    if graph_mode:
        ops += [(g.device_id, g.stream_id, g.start, g.end, g.pid, g.correlation_id) for g in ex.graph_traces]
    return ops


def _by_track(read: ReadTrace) -> dict[tuple[str, ...], list[Any]]:
    """Slices keyed by where they sit: ("gpu", device, stream) or ("cpu", pid, tid, category)."""
    out: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for s in read.slices:
        t = read.root_of(s.track)
        if t.name.startswith("stream "):
            dev = read.tracks[t.parent].name.split(":")[0].split()[1]
            out[("gpu", dev, t.name.split()[1])].append(s)
        elif t.tid is not None:
            out[("cpu", str(t.pid), str(t.tid), "api")].append(s)
        else:
            thread = read.tracks[t.parent]
            out[("cpu", str(thread.pid), str(thread.tid), t.name)].append(s)
    return out


def _summary(items: list[tuple[int, int]]) -> tuple[int, int]:
    return len(items), sum(e - s for s, e in items)


@pytest.mark.parametrize("name", [GIL, GRAPHS, SMALL])
def test_every_track_holds_the_exports_events(name: str, exported: Any, real_export: Any) -> None:
    path = real_export(name)
    read = exported(name)
    assert read.unmatched_ends == 0 and read.open_at_end == 0  # every slice nests on its track
    ex = reference.read_export(str(path))
    graph_mode = bool(ex.graph_traces)
    by = _by_track(read)

    expected: dict[tuple[str, ...], list[tuple[int, int]]] = defaultdict(list)
    for dev, stream, s, e, _, _ in _gpu_ops(ex, graph_mode):
        expected[("gpu", str(dev), str(stream))].append((s, e))
    for a in ex.api_calls:
        expected[("cpu", str(a.pid), str(a.tid), "api")].append((a.start, a.end))
    for r in reference_host.user_nvtx_ranges(ex):
        expected[("cpu", str(r.pid), str(r.tid), "NVTX")].append((r.start, r.end))
    for g in reference_host.gil_intervals(str(path)):
        expected[("cpu", str(g["pid"]), str(g["tid"]), "GIL")].append((g["start_ns"], g["end_ns"]))
    for o in reference_host.os_calls(str(path)):
        if o["tid"] is not None:
            expected[("cpu", str(o["pid"]), str(o["tid"]), "OS runtime")].append((o["start_ns"], o["end_ns"]))

    got = {k: _summary([(s.start, s.end) for s in v]) for k, v in by.items()}
    want = {k: _summary(v) for k, v in expected.items()}
    assert got == want
    # the same intervals, not only the same totals
    for key, items in expected.items():
        assert sorted((s.start, s.end) for s in by[key]) == sorted(items), key
    if name == GIL:
        assert {k[3] for k in want if k[0] == "cpu"} == {"api", "NVTX", "GIL", "OS runtime"}


@pytest.mark.parametrize("name", [GIL, SMALL])
def test_each_launch_has_a_flow_to_its_gpu_work(name: str, exported: Any, real_export: Any) -> None:
    path = real_export(name)
    read = exported(name)
    ex = reference.read_export(str(path))
    launched = {(pid, corr) for *_, pid, corr in _gpu_ops(ex, bool(ex.graph_traces)) if corr is not None}
    api_keys = {(a.pid, a.correlation_id) for a in ex.api_calls}
    matched = launched & api_keys
    by = _by_track(read)
    api_flows = Counter(f for k, v in by.items() if k[0] == "cpu" for s in v for f in s.flows)
    gpu_flows = Counter(f for k, v in by.items() if k[0] == "gpu" for s in v for f in s.flows)
    assert len(api_flows) == len(matched) > 0
    assert set(api_flows.values()) == {1}  # one launch per flow
    assert set(gpu_flows) == set(api_flows)  # every flow ends on GPU work, every matched op has one
    ops_with_launch = sum(
        1 for *_, pid, corr in _gpu_ops(ex, bool(ex.graph_traces)) if (pid, corr) in matched
    )
    assert sum(gpu_flows.values()) == ops_with_launch
    # a flow joins an API call and GPU work of the same (pid, correlation id): the launch starts first
    starts = {f: s.start for k, v in by.items() if k[0] == "cpu" for s in v for f in s.flows}
    for k, v in by.items():
        if k[0] == "gpu":
            for s in v:
                for f in s.flows:
                    assert starts[f] <= s.start


def _reference_busy(intervals: list[tuple[int, int]], a: int, b: int) -> int:
    """Busy time of the union of ``intervals`` inside ``[a, b)``, by merging (deliberately plain)."""
    return sum(min(e, b) - max(s, a) for s, e in reference_host.merge(intervals) if e > a and s < b)


@pytest.mark.parametrize("name", [GIL, GRAPHS])
def test_counters_match_the_kernel_rows(name: str, exported: Any, real_export: Any) -> None:
    path = real_export(name)
    read = exported(name)
    ex = reference.read_export(str(path))
    acts = [(k.start, k.end) for k in ex.kernels] + [(g.start, g.end) for g in ex.graph_traces]
    counters = {read.tracks[t].name: sorted(v) for t, v in read.counters.items()}
    util = counters["utilization"]
    assert len(util) > 100
    for (t0, v), (t1, _) in zip(util, util[1:]):
        assert v == pytest.approx(100.0 * _reference_busy(acts, t0, t1) / (t1 - t0), abs=1e-9)
    assert util[-1][1] == 0.0
    conc = counters["kernel concurrency"]
    events = sorted([(s, 1) for s, _ in acts] + [(e, -1) for _, e in acts])
    level, expected = 0, {}
    for t, d in events:
        level += d
        expected[t] = level
    assert dict(conc) == {t: float(v) for t, v in expected.items()}


def test_gpu_metric_counters_hold_every_sample(exported: Any, real_export: Any) -> None:
    path = real_export(METRICS)
    read = exported(METRICS)
    samples = reference_host.gpu_metrics(str(path))
    want = Counter(m for _, m, ts, _ in samples if ts >= 0)  # Perfetto timestamps are unsigned
    got = Counter({read.tracks[t].name: len(v) for t, v in read.counters.items()})
    for metric, n in want.items():
        assert got[metric] == n, metric
    values = defaultdict(list)
    for _, m, ts, v in samples:
        if ts >= 0:
            values[m].append((ts, float(v)))
    for t, v in read.counters.items():
        name = read.tracks[t].name
        if name in values:
            assert sorted(v) == sorted(values[name])


def test_window_keeps_the_events_that_overlap_it(exported: Any, real_export: Any) -> None:
    path = real_export(GIL)
    origin = _origin(path)
    lo_ms, hi_ms = 16000, 16500
    lo, hi = origin + lo_ms * 1_000_000, origin + hi_ms * 1_000_000
    read = exported(GIL, "--window", f"{lo_ms}:{hi_ms}")
    ex = reference.read_export(str(path))
    by = _by_track(read)
    kernels = Counter(
        (str(k.device_id), str(k.stream_id)) for k in ex.kernels if k.end > lo and k.start < hi
    ) + Counter((str(m.device_id), str(m.stream_id)) for m in ex.memops if m.end > lo and m.start < hi)
    assert sum(kernels.values()) > 0
    assert {k[1:]: len(v) for k, v in by.items() if k[0] == "gpu"} == dict(kernels)
    api = Counter((str(a.pid), str(a.tid)) for a in ex.api_calls if a.end > lo and a.start < hi)
    assert {k[1:3]: len(v) for k, v in by.items() if k[0] == "cpu" and k[3] == "api"} == dict(api)


def test_chrome_json_has_the_same_events(store: Path, run_cli: Any, tmp_path: Path, real_export: Any) -> None:
    out = tmp_path / "small.json"
    result = run_cli("export", "--db", store, "--format", "chrome-json", "--trace", SMALL, "-o", out)
    assert result.rc == 0, str(result)
    doc = json.loads(out.read_text())
    ex = reference.read_export(str(real_export(SMALL)))
    events = doc["traceEvents"]
    names = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    slices = [e for e in events if e["ph"] == "X"]
    stream_slices = Counter(
        names[(e["pid"], e["tid"])] for e in slices if names[(e["pid"], e["tid"])].startswith("stream")
    )
    want = Counter(f"stream {s}" for _, s, *_ in _gpu_ops(ex, False))
    assert stream_slices == want
    api = sorted(
        (round(e["ts"] * 1000), round((e["ts"] + e["dur"]) * 1000))
        for e in slices
        if (e["pid"], e["tid"]) in names
        and not names[(e["pid"], e["tid"])].startswith(("stream", "NVTX", "GIL", "OS"))
    )
    assert api == sorted((a.start, a.end) for a in ex.api_calls)
    flows = Counter(e["ph"] for e in events if e["ph"] in "st")
    assert flows["s"] == flows["t"] > 0


def test_bad_requests_are_one_line_and_leave_nothing(store: Path, run_cli: Any, tmp_path: Path) -> None:
    cases = [
        (["--trace", SMALL, "-o", tmp_path], "is a directory"),
        (["--trace", SMALL, "-o", tmp_path / "missing" / "x.pftrace"], "does not exist"),
        (["-o", tmp_path / "x.pftrace"], "needs --trace"),
        (["--trace", "nosuch", "-o", tmp_path / "x.pftrace"], "no trace 'nosuch'"),
        (["--trace", SMALL, "--trace", GIL, "-o", tmp_path / "x.pftrace"], "one --trace"),
        (["--trace", SMALL, "--window", "5:1", "-o", tmp_path / "x.pftrace"], "end must be after"),
        (["--trace", "/dev/null", "-o", "/dev/null"], "no trace"),
    ]
    for args, message in cases:
        result = run_cli("export", "--db", store, "--format", "perfetto", *args)
        assert result.rc != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    result = run_cli("export", "--db", store, "--format", "perfetto", "--trace", SMALL, "-o", "/dev/null")
    assert result.rc != 0 and "not a regular file" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize("case", ["unsorted", "zero_length", "equal_timestamps", "nvtx", "two_processes"])
def test_edge_cases_nest_and_keep_every_event(
    case: str, edge_export: Any, run_cli: Any, tmp_path: Path
) -> None:
    path = edge_export(case)
    db = tmp_path / "edge.duckdb"
    assert run_cli("ingest", "--db", db, path).rc == 0
    out = tmp_path / "edge.pftrace"
    result = run_cli("export", "--db", db, "--format", "perfetto", "-o", out)  # the store's only trace
    assert result.rc == 0, str(result)
    read = read_perfetto(out)
    assert read.unmatched_ends == 0 and read.open_at_end == 0
    ex = reference.read_export(str(path))
    by = _by_track(read)
    want: dict[tuple[str, ...], list[tuple[int, int]]] = defaultdict(list)
    for dev, stream, s, e, _, _ in _gpu_ops(ex, bool(ex.graph_traces)):
        want[("gpu", str(dev), str(stream))].append((s, e))
    for a in ex.api_calls:
        want[("cpu", str(a.pid), str(a.tid), "api")].append((a.start, a.end))
    for r in reference_host.user_nvtx_ranges(ex):
        want[("cpu", str(r.pid), str(r.tid), "NVTX")].append((r.start, r.end))
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    for start, gtid in con.execute("SELECT start, globalTid FROM NVTX_EVENTS WHERE eventType = 34"):  # marks
        key = ("cpu", str(reference.decode_pid(gtid)), str(reference.decode_tid(gtid)), "NVTX")
        want[key].append((start, start))  # a zero-length slice
    con.close()
    got = {k: sorted((s.start, s.end) for s in v) for k, v in by.items()}
    # Perfetto timestamps are unsigned: events before time 0 of the session clock are left out
    want = {k: sorted(i for i in v if i[0] >= 0) for k, v in want.items()}
    assert got == {k: v for k, v in want.items() if v}
    lanes = [t.name for t in read.tracks.values() if "(overlap" in t.name]
    if case == "unsorted":  # random kernels overlap on their stream: split into lanes, none dropped
        assert lanes
    # each lane's slices nest: no two on one lane partly overlap
    per_lane: dict[int, list[Any]] = defaultdict(list)
    for s in read.slices:
        per_lane[s.track].append(s)
    for slices in per_lane.values():
        stack: list[int] = []
        for s in sorted(slices, key=lambda x: (x.start, -x.end)):
            while stack and stack[-1] <= s.start:
                stack.pop()
            assert not stack or s.end <= stack[-1]
            stack.append(s.end)
