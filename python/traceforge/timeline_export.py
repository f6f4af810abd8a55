"""A stored trace as a timeline file for ui.perfetto.dev: Perfetto protobuf or Chrome trace-event JSON.

The rows come out of DuckDB as Arrow streams and go straight into the Rust writer
(``traceforge._core.TimelineWriter``, ``rust/traceforge-core/src/trace_export``), which encodes each event as
it arrives: memory stays bounded by DuckDB's batch and the interned names, and a million kernels take a few
seconds. What is written (docs/export.md):

- per GPU a track ``GPU <id>: <name>`` with one track per stream: kernels, memcpy/memset and
  whole CUDA graph executions (graph-mode captures); counter tracks ``kernel concurrency`` (activities
  active, at every change), ``utilization`` (% busy per time bin) and every GPU metric captured;
- per process and thread a thread track of its CUDA API calls, with child tracks ``NVTX``, ``GIL`` and
  ``OS runtime`` where the capture has them;
- a flow from each launching API call to its GPU work, joined on (pid, correlation id).

Times are the store's nanoseconds (the capture's session clock); ``--window`` keeps the events that overlap
it, unclipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .analysis.timebins import capture_origin
from .errors import QueryError, TraceforgeError
from .store.sql_params import bind

if TYPE_CHECKING:
    from .store import Store

#: Formats of ``traceforge export`` written here (parquet is the dataset export).
TIMELINE_FORMATS = ("perfetto", "chrome-json")

#: Time bins of the exported utilization counter, per device, over the exported span.
UTILIZATION_BINS = 5000

#: Above this many slices Chrome JSON gets a note: the JSON importers and the file size do not scale.
CHROME_JSON_ADVISED_MAX = 500_000

#: How the flow id of a launch is made from (pid, correlation id): unique, nonzero, within 63 bits.
_FLOW_ID = "(CAST({p}pid AS BIGINT) * 4294967296 + CAST({p}correlation_id AS BIGINT) + 1)"


@dataclass
class TimelineExport:
    """What :func:`export_timeline` wrote.

    Attributes:
        path: the file written.
        format: ``perfetto`` or ``chrome-json``.
        trace_id: the trace.
        start_ns, end_ns: the exported window on the capture's clock.
        origin_ns: the capture start that ``--window`` is relative to.
        stats: the writer's counts (``slices``, ``counters``, ``flow_starts``, ``flow_steps``, ``tracks``,
            ``overlap_lanes``, ``skipped``, ``bytes``).
        notes: what the user should know (events left out, an empty window, a large Chrome JSON file).
    """

    path: str
    format: str
    trace_id: str
    start_ns: int
    end_ns: int
    origin_ns: int
    stats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def window_bounds(store: Store, trace_id: str, window_ms: tuple[float, float] | None) -> tuple[int, int, int]:
    """``(origin_ns, start_ns, end_ns)``: the window in ms from the capture start, or the whole capture."""
    origin, end = capture_origin(store, trace_id)
    if window_ms is None:
        return origin, origin, end
    lo, hi = window_ms
    if hi <= lo:
        raise QueryError(f"--window {lo:g}:{hi:g}: the end must be after the start")
    return origin, origin + round(lo * 1e6), origin + round(hi * 1e6)


def _values(rows: list[tuple[Any, ...]], columns: str) -> str:
    """An inline ``(VALUES ...) AS m(columns)`` table of small integer rows (the track map)."""
    if not rows:
        width = len(columns.split(","))
        nulls = ", ".join(["NULL::BIGINT"] * width)
        return f"(SELECT {nulls} WHERE false) AS m({columns})"
    body = ", ".join("(" + ", ".join("NULL" if v is None else str(int(v)) for v in r) + ")" for r in rows)
    return f"(VALUES {body}) AS m({columns})"


class _Tracks:
    """Track uuids, handed out in declaration order (the writer wants parents first)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.next = 1

    def add(self, name: str, **kw: Any) -> int:
        uuid = self.next
        self.next += 1
        self.writer.track(uuid, name, **kw)
        return uuid


def export_timeline(
    store: Store,
    trace_id: str,
    output: str,
    *,
    fmt: str = "perfetto",
    window_ms: tuple[float, float] | None = None,
) -> TimelineExport:
    """Write one stored trace (or the part of it overlapping ``window_ms``) as a timeline file.

    The file is written beside ``output`` under a temporary name and renamed over it when complete, so
    ``output`` is either the old file or the whole new one.

    Raises:
        QueryError: an unknown format, an empty window, an output that is a directory or a device.
    """
    from . import _core

    if fmt not in TIMELINE_FORMATS:
        raise QueryError(f"--format {fmt}: not a timeline format ({', '.join(TIMELINE_FORMATS)})")
    target = os.path.abspath(output)
    if os.path.isdir(target):
        raise QueryError(f"--output {output}: is a directory (give a file name, e.g. trace.pftrace)")
    if os.path.exists(target) and not os.path.isfile(target):
        raise QueryError(f"--output {output}: exists and is not a regular file")
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise QueryError(f"--output {output}: the directory {parent} does not exist")
    origin, lo, hi = window_bounds(store, trace_id, window_ms)
    result = TimelineExport(target, fmt, trace_id, lo, hi, origin)
    tmp = os.path.join(parent, f".{os.path.basename(target)}.{os.getpid()}.tmp")
    try:
        writer = _core.TimelineWriter(tmp, fmt)
        # The whole capture: every row, including GPU metric samples before the first event; a window:
        # the rows that overlap it.
        flo, fhi = (-(1 << 62), 1 << 62) if window_ms is None else (lo, hi)
        tracks, device_track = _write(store, writer, trace_id, flo, fhi)
        _gpu_counters(store, writer, tracks, trace_id, device_track, (lo, hi), (flo, fhi))
        result.stats = dict(writer.finish())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, TraceforgeError) and exc.path == tmp:
            exc.path = target  # name the user's file, not the temporary one (a full disk, say)
        elif isinstance(exc, OSError):
            raise QueryError(f"cannot write the timeline: {exc.strerror or exc}", path=output) from exc
        raise
    if fmt == "chrome-json" and result.stats.get("slices", 0) > CHROME_JSON_ADVISED_MAX:
        result.notes.append(
            f"{result.stats['slices']:,} slices in Chrome JSON: large JSON traces load slowly or not at all; "
            "use --format perfetto or a --window"
        )
    if not result.stats.get("slices") and not result.stats.get("counters"):
        result.notes.append("no event of the trace overlaps this window: the file is empty")
    if result.stats.get("skipped"):
        result.notes.append(
            f"{result.stats['skipped']:,} event(s) left out: no start time, or before time 0 of the "
            "session clock (Perfetto timestamps are unsigned)"
        )
    return result


def _write(store: Store, writer: Any, trace_id: str, lo: int, hi: int) -> tuple[_Tracks, dict[int, int]]:
    """Declare the tracks and write the slices of the rows overlapping ``[lo, hi)``.

    Returns the track allocator and each device's track (for the counters).
    """
    con = store.con
    tracks = _Tracks(writer)
    win = f"end_ns > {int(lo)} AND start_ns < {int(hi)}"
    tid_sql = bind("trace_id = ?", [trace_id])

    def rows(query: str) -> list[tuple[Any, ...]]:
        return con.execute(query).fetchall()

    # ---- GPU side: a root track per device, a track per stream, counters per device.
    graph_mode = "kernel_count IS NULL"
    streams = rows(
        f"SELECT device_id, stream_id FROM ("
        f"SELECT device_id, stream_id FROM kernels WHERE {tid_sql} AND {win} "
        f"UNION SELECT device_id, stream_id FROM memops WHERE {tid_sql} AND {win} "
        f"UNION SELECT device_id, stream_id FROM graph_launches WHERE {tid_sql} AND {graph_mode} AND {win}) "
        "ORDER BY device_id, stream_id NULLS LAST"
    )
    names = dict(rows(f"SELECT device_id, name FROM devices WHERE {tid_sql}"))
    device_track: dict[int, int] = {}
    stream_map: list[tuple[Any, ...]] = []
    for dev, stream in streams:
        if dev not in device_track:
            label = f"GPU {dev}" + (f": {names[dev]}" if names.get(dev) else "")
            device_track[dev] = tracks.add(label, rank=len(device_track))
        name = f"stream {stream}" if stream is not None else "stream ?"
        uuid = tracks.add(name, parent=device_track[dev], rank=int(stream) if stream is not None else 1 << 30)
        stream_map.append((dev, stream, uuid))
    # Devices with GPU metrics only still get a track (for the metric counters).
    metric_rows = rows(
        f"SELECT device_id, metric FROM gpu_metric_summary WHERE {tid_sql} ORDER BY device_id, metric"
    )
    for dev, _ in metric_rows:
        if dev not in device_track:
            device_track[dev] = tracks.add(f"GPU {dev}", rank=len(device_track))

    if stream_map:
        m = _values(stream_map, "device_id, stream_id, track")
        flow = _FLOW_ID.format(p="")
        writer.slices(
            con.sql(
                "SELECT track, start_ns, end_ns, name, flow_in FROM ("
                f"SELECT device_id, stream_id, start_ns, end_ns, name, "
                f"CASE WHEN launch_tid IS NOT NULL THEN {flow} END AS flow_in "
                f"FROM kernels WHERE {tid_sql} AND {win} "
                f"UNION ALL SELECT device_id, stream_id, start_ns, end_ns, "
                f"CASE WHEN op = 'memset' THEN 'memset' ELSE 'memcpy ' || copy_kind END, "
                f"CASE WHEN launch_tid IS NOT NULL THEN {flow} END FROM memops WHERE {tid_sql} AND {win} "
                f"UNION ALL SELECT device_id, stream_id, start_ns, end_ns, 'graph ' || graph_id, "
                f"CASE WHEN launch_tid IS NOT NULL THEN {flow} END FROM graph_launches "
                f"WHERE {tid_sql} AND {graph_mode} AND {win}"
                ") e JOIN "
                + m
                + " ON e.device_id = m.device_id AND e.stream_id IS NOT DISTINCT FROM m.stream_id "
                "ORDER BY start_ns, end_ns DESC"
            )
        )

    # ---- CPU side: a process track per pid, a thread track per thread, category tracks under it.
    sources = {
        "api": f"SELECT pid, tid FROM api_calls WHERE {tid_sql} AND {win}",
        "nvtx": f"SELECT pid, tid FROM nvtx_ranges WHERE {tid_sql} AND coalesce(end_ns, start_ns + 1) > {lo} "
        f"AND start_ns < {hi}",
        "gil": f"SELECT pid, tid FROM gil_intervals WHERE {tid_sql} AND {win}",
        "os": f"SELECT pid, tid FROM os_calls WHERE {tid_sql} AND {win}",
    }
    present = {
        kind: {
            (int(p), int(t)) for p, t in rows(f"SELECT DISTINCT pid, tid FROM ({q}) WHERE tid IS NOT NULL")
        }
        for kind, q in sources.items()
    }
    threads = sorted(set().union(*present.values()))
    if not threads:
        return tracks, device_track
    pnames = {int(p): n for p, n in rows(f"SELECT pid, name FROM processes WHERE {tid_sql}")}
    tnames = {(int(p), int(t)): n for p, t, n in rows(f"SELECT pid, tid, name FROM threads WHERE {tid_sql}")}
    proc_track: dict[int, int] = {}
    cat_maps: dict[str, list[tuple[Any, ...]]] = {k: [] for k in sources}
    labels = {"nvtx": "NVTX", "gil": "GIL", "os": "OS runtime"}
    for pid, tid in threads:
        if pid not in proc_track:
            pname = pnames.get(pid)
            proc_track[pid] = tracks.add(
                f"{pname or 'process'} {pid}", pid=pid, rank=len(device_track) + len(proc_track)
            )
        tname = tnames.get((pid, tid))
        thread = tracks.add(
            f"{tname} {tid}" if tname else f"thread {tid}", parent=proc_track[pid], pid=pid, tid=tid, rank=tid
        )
        cat_maps["api"].append((pid, tid, thread))
        for rank, kind in enumerate(("nvtx", "gil", "os")):
            if (pid, tid) in present[kind]:
                cat_maps[kind].append((pid, tid, tracks.add(labels[kind], parent=thread, rank=rank)))

    launched = (
        f"SELECT DISTINCT pid, correlation_id FROM kernels WHERE {tid_sql} AND {win} "
        f"UNION SELECT pid, correlation_id FROM memops WHERE {tid_sql} AND {win} "
        f"UNION SELECT pid, correlation_id FROM graph_launches WHERE {tid_sql} AND {graph_mode} AND {win}"
    )
    parts = [
        "SELECT m.track, a.start_ns, a.end_ns, a.name, "
        f"CASE WHEN l.pid IS NOT NULL THEN {_FLOW_ID.format(p='a.')} END AS flow_out "
        f"FROM api_calls a JOIN {_values(cat_maps['api'], 'pid, tid, track')} "
        "ON a.pid = m.pid AND a.tid = m.tid "
        f"LEFT JOIN ({launched}) l ON a.pid = l.pid AND a.correlation_id = l.correlation_id "
        f"WHERE a.{tid_sql} AND a.end_ns > {lo} AND a.start_ns < {hi}"
    ]
    if cat_maps["nvtx"]:
        parts.append(
            "SELECT m.track, start_ns, coalesce(end_ns, start_ns), name, NULL "
            f"FROM nvtx_ranges n JOIN {_values(cat_maps['nvtx'], 'pid, tid, track')} "
            f"ON n.pid = m.pid AND n.tid = m.tid WHERE n.{tid_sql} "
            f"AND coalesce(end_ns, start_ns + 1) > {lo} AND start_ns < {hi}"
        )
    if cat_maps["gil"]:
        parts.append(
            "SELECT m.track, start_ns, end_ns, CASE WHEN state = 'hold' THEN 'holding GIL' "
            "ELSE 'waiting for GIL' END, NULL "
            f"FROM gil_intervals g JOIN {_values(cat_maps['gil'], 'pid, tid, track')} "
            f"ON g.pid = m.pid AND g.tid = m.tid WHERE g.{tid_sql} AND {win}"
        )
    if cat_maps["os"]:
        parts.append(
            "SELECT m.track, start_ns, end_ns, name, NULL "
            f"FROM os_calls o JOIN {_values(cat_maps['os'], 'pid, tid, track')} "
            f"ON o.pid = m.pid AND o.tid = m.tid WHERE o.{tid_sql} AND {win}"
        )
    writer.slices(
        con.sql(
            "SELECT track, start_ns, end_ns, name, flow_out FROM ("
            + " UNION ALL ".join(parts)
            + ") ORDER BY start_ns, end_ns DESC"
        )
    )
    return tracks, device_track


def _gpu_counters(
    store: Store,
    writer: Any,
    tracks: _Tracks,
    trace_id: str,
    device_track: dict[int, int],
    span: tuple[int, int],
    rows_in: tuple[int, int],
) -> None:
    """Per device: kernel concurrency at each change, utilization per bin, and every GPU metric sample.

    ``span`` is what the utilization bins cover; ``rows_in`` the times of the rows written.
    """
    lo, hi = rows_in
    import numpy as np
    import polars as pl

    from .analysis import timebins

    con = store.con
    tid_sql = bind("trace_id = ?", [trace_id])
    for dev, parent in device_track.items():
        acts = timebins.activities(store, trace_id, dev, lo, hi)
        if acts.starts.size:
            conc = tracks.add("kernel concurrency", parent=parent, counter=True, unit="activities", rank=-3)
            # The level after each instant where it changes (ends at t before starts at t: half-open).
            times, level = timebins.concurrency_steps(acts.starts, acts.ends)
            writer.counters(
                pl.DataFrame(
                    {
                        "track": np.full(times.size, conc, dtype=np.int64),
                        "ts_ns": times,
                        "value": level.astype(np.float64),
                    }
                )
            )
            util = tracks.add("utilization", parent=parent, counter=True, unit="%", rank=-2)
            # bins of at least 1 µs: finer says nothing the concurrency counter does not
            edges = timebins.bin_edges(
                span[0], span[1], min(UTILIZATION_BINS, max(1, (span[1] - span[0]) // 1000))
            )
            busy = timebins.busy_per_bin(acts, edges)
            widths = edges[1:] - edges[:-1]
            frame = pl.DataFrame(
                {
                    "track": np.full(edges.size, util, dtype=np.int64),
                    "ts_ns": edges.astype(np.int64),
                    "value": np.r_[100.0 * busy / widths, 0.0],
                }
            )
            writer.counters(frame)
        for (mdev,) in con.execute(
            f"SELECT DISTINCT device_id FROM gpu_metric_summary WHERE {tid_sql} AND device_id = {int(dev)}"
        ).fetchall():
            metrics = [
                str(r[0])
                for r in con.execute(
                    f"SELECT metric FROM gpu_metric_summary WHERE {tid_sql} AND device_id = {int(mdev)} "
                    "ORDER BY metric"
                ).fetchall()
            ]
            if not metrics:
                continue
            mmap = [
                (i, tracks.add(name, parent=parent, counter=True, rank=i)) for i, name in enumerate(metrics)
            ]
            listing = ", ".join(bind("(?, ?)", [name, track]) for name, (_, track) in zip(metrics, mmap))
            writer.counters(
                con.sql(
                    "SELECT m.track::BIGINT AS track, g.ts_ns, CAST(g.value AS DOUBLE) AS value "
                    f"FROM gpu_metrics g JOIN (VALUES {listing}) AS m(metric, track) ON g.metric = m.metric "
                    f"WHERE g.{tid_sql} AND g.device_id = {int(mdev)} AND g.ts_ns >= {lo} AND g.ts_ns < {hi}"
                )
            )
