"""Read a Perfetto protobuf trace back with Perfetto's own message definitions (the ``perfetto`` package's
``perfetto_trace_pb2``), independently of the Rust writer: tracks, slices rebuilt from begin/end pairs on
each track, flows, counter samples.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Track:
    uuid: int
    name: str
    parent: int | None
    pid: int | None = None
    tid: int | None = None
    counter: bool = False


@dataclass
class Slice:
    track: int
    start: int
    end: int
    name: str
    flows: tuple[int, ...]


@dataclass
class ReadTrace:
    tracks: dict[int, Track] = field(default_factory=dict)
    slices: list[Slice] = field(default_factory=list)
    counters: dict[int, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    unmatched_ends: int = 0
    open_at_end: int = 0

    def root_of(self, uuid: int) -> Track:
        """The track a slice counts on: an overlap lane counts on the track it was split from."""
        t = self.tracks[uuid]
        while "(overlap" in t.name and t.parent is not None:
            t = self.tracks[t.parent]
        return t

    def ancestors(self, uuid: int) -> list[Track]:
        out, t = [], self.tracks[uuid]
        while t.parent is not None:
            t = self.tracks[t.parent]
            out.append(t)
        return out


def read_perfetto(path: Path) -> ReadTrace:
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    trace = pb.Trace()
    trace.ParseFromString(Path(path).read_bytes())
    out = ReadTrace()
    names: dict[int, str] = {}
    stacks: dict[int, list[tuple[int, str, tuple[int, ...]]]] = defaultdict(list)
    events = []
    for p in trace.packet:
        if p.HasField("interned_data"):
            for n in p.interned_data.event_names:
                names[n.iid] = n.name
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            t = Track(d.uuid, d.name, d.parent_uuid if d.HasField("parent_uuid") else None)
            if d.HasField("thread"):
                t.pid, t.tid = d.thread.pid, d.thread.tid
            elif d.HasField("process"):
                t.pid = d.process.pid
            t.counter = d.HasField("counter")
            out.tracks[d.uuid] = t
        if p.HasField("track_event"):
            e = p.track_event
            events.append(
                (
                    p.timestamp,
                    len(events),
                    e.type,
                    e.track_uuid,
                    names.get(e.name_iid, e.name),
                    tuple(e.flow_ids),
                    e.double_counter_value,
                )
            )
    # Perfetto's trace processor sorts by timestamp, ties in file order: the same here.
    events.sort(key=lambda x: (x[0], x[1]))
    for ts, _, typ, track, name, flows, value in events:
        if typ == pb.TrackEvent.TYPE_SLICE_BEGIN:
            stacks[track].append((ts, name, flows))
        elif typ == pb.TrackEvent.TYPE_SLICE_END:
            if not stacks[track]:
                out.unmatched_ends += 1
                continue
            start, sname, sflows = stacks[track].pop()
            out.slices.append(Slice(track, start, ts, sname, sflows))
        elif typ == pb.TrackEvent.TYPE_COUNTER:
            out.counters[track].append((ts, value))
    out.open_at_end = sum(len(s) for s in stacks.values())
    return out
