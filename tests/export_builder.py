"""Build small nsys SQLite exports with the real nsys 2025.3 schema, for edge cases the fixtures lack.

The ``CREATE TABLE`` statements are copied at test time from a real export's ``sqlite_master`` (never written
by hand), the small metadata and enum tables are copied with their rows, and the event tables are filled from
Python lists. Serialized ids follow nsys: ``globalPid = (1 << 48) | (pid << 24)``,
``globalTid = globalPid | tid``.

Example::

    build_export(template, out, kernels=[Kernel(0, 10), Kernel(5, 20, stream=8)],
                 api_calls=[Api(-5, 1, corr=1)])
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

#: Event tables the builder fills; everything else that is not in SKIPPED is copied from the template.
EVENT_TABLES = (
    "StringIds",
    "CUPTI_ACTIVITY_KIND_KERNEL",
    "CUPTI_ACTIVITY_KIND_MEMCPY",
    "CUPTI_ACTIVITY_KIND_MEMSET",
    "CUPTI_ACTIVITY_KIND_RUNTIME",
    "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION",
    "NVTX_EVENTS",
    "PROCESSES",
    "ThreadNames",
    "TARGET_INFO_GPU",
    "TARGET_INFO_CUDA_DEVICE",
    "TARGET_INFO_CUDA_STREAM",
    "TARGET_INFO_CUDA_CONTEXT_INFO",
    "ProcessStreams",
    "ANALYSIS_FILE",
    "DIAGNOSTIC_EVENT",
    "PROFILER_OVERHEAD",
)

NVTX_EVENT_TYPE = {"push_pop": 59, "start_end": 60, "mark": 34}
NVTX_DOMAIN_CREATE = 75


def global_pid(pid: int) -> int:
    """nsys' serialized process id."""
    return (1 << 48) | (pid << 24)


def global_tid(pid: int, tid: int) -> int:
    """nsys' serialized thread id."""
    return global_pid(pid) | tid


@dataclass
class Kernel:
    """A kernel execution ``[start, end)`` on (device, stream), launched by the API call with ``corr``."""

    start: int
    end: int
    device: int = 0
    stream: int = 7
    pid: int = 100
    corr: Optional[int] = None
    name: str = "kernel_a"
    grid: tuple[int, int, int] = (1, 1, 1)
    block: tuple[int, int, int] = (128, 1, 1)
    graph_node: Optional[int] = None


@dataclass
class Memcpy:
    """A memcpy; ``copy_kind`` is CUPTI's enum (1 HtoD, 2 DtoH, 8 DtoD, 10 PtoP...)."""

    start: int
    end: int
    bytes: int = 1024
    copy_kind: int = 1
    device: int = 0
    stream: int = 7
    pid: int = 100
    corr: Optional[int] = None


@dataclass
class Memset:
    """A memset."""

    start: int
    end: int
    bytes: int = 512
    device: int = 0
    stream: int = 7
    pid: int = 100
    corr: Optional[int] = None


@dataclass
class Api:
    """A CUDA runtime/driver API call on thread (pid, tid)."""

    start: int
    end: int
    corr: Optional[int]
    pid: int = 100
    tid: int = 100
    name: str = "cudaLaunchKernel_v7000"


@dataclass
class Nvtx:
    """An NVTX range (``push_pop`` / ``start_end``) or mark, optionally in a non-default domain."""

    start: int
    end: Optional[int]
    text: str
    pid: int = 100
    tid: int = 100
    kind: str = "push_pop"
    domain: Optional[str] = None
    registered: bool = False  # name through StringIds (textId) instead of the text column


def template_schema(template: str | Path) -> list[tuple[str, str, Optional[str]]]:
    """``(type, name, sql)`` of every table and index of a real export, in creation order."""
    con = sqlite3.connect(f"file:{template}?mode=ro", uri=True)
    try:
        return list(
            con.execute(
                "SELECT type, name, sql FROM sqlite_master WHERE type IN ('table', 'index') "
                "AND sql IS NOT NULL "
                "ORDER BY rowid"
            )
        )
    finally:
        con.close()


def build_export(
    template: str | Path,
    out: str | Path,
    *,
    kernels: Sequence[Kernel] = (),
    memcpys: Sequence[Memcpy] = (),
    memsets: Sequence[Memset] = (),
    api_calls: Sequence[Api] = (),
    nvtx: Sequence[Nvtx] = (),
    omit_tables: Iterable[str] = (),
    shuffle_seed: Optional[int] = None,
    schema_version: Optional[str] = None,
) -> Path:
    """Write an export at ``out`` with the template's schema and the given events.

    Args:
        template: a real nsys 2025.3 export (its schema and metadata rows are copied).
        out: the SQLite file to write (replaced if present).
        kernels, memcpys, memsets, api_calls, nvtx: the events.
        omit_tables: tables to leave out entirely (e.g. ``CUPTI_ACTIVITY_KIND_KERNEL``).
        shuffle_seed: insert each event table's rows in a random order (unsorted rowids).
        schema_version: overwrite ``EXPORT_SCHEMA_VERSION`` (and its parts) in ``META_DATA_EXPORT``.

    Returns:
        The path written.
    """
    out = Path(out)
    if out.exists():
        out.unlink()
    omit = set(omit_tables)
    rng = random.Random(shuffle_seed)

    def order(rows: list[tuple]) -> list[tuple]:
        if shuffle_seed is not None:
            rows = rows[:]
            rng.shuffle(rows)
        return rows

    schema = template_schema(template)
    con = sqlite3.connect(out)
    try:
        present = set()
        for kind, name, sql in schema:
            if kind == "table" and name in omit:
                continue
            if kind == "index" and any(t in sql for t in omit):
                continue
            con.execute(sql)
            if kind == "table":
                present.add(name)
        con.execute("ATTACH DATABASE ? AS tpl", [f"file:{template}?mode=ro"])
        for name in sorted(present - set(EVENT_TABLES)):
            con.execute(f'INSERT INTO main."{name}" SELECT * FROM tpl."{name}"')

        strings: dict[str, int] = {}

        def sid(text: str) -> int:
            if text not in strings:
                strings[text] = len(strings) + 1
            return strings[text]

        pids = sorted({x.pid for x in [*kernels, *memcpys, *memsets, *api_calls, *nvtx]} or {100})
        devices = sorted({x.device for x in [*kernels, *memcpys, *memsets]} or {0})
        streams = sorted({(x.device, x.stream, x.pid) for x in [*kernels, *memcpys, *memsets]})

        if "CUPTI_ACTIVITY_KIND_KERNEL" in present:
            rows = [
                (
                    k.start,
                    k.end,
                    k.device,
                    1,
                    None,
                    k.stream,
                    k.corr,
                    global_pid(k.pid),
                    sid(k.name),
                    sid(k.name.split("<")[0].split("(")[0]),
                    None,
                    0,
                    0,
                    32,
                    *k.grid,
                    *k.block,
                    0,
                    0,
                    0,
                    0,
                    i + 1,
                    0,
                    k.graph_node,
                    None,
                )
                for i, k in enumerate(kernels)
            ]
            con.executemany(
                "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL (start, end, deviceId, contextId, greenContextId,"
                " streamId,"
                " correlationId, globalPid, demangledName, shortName, mangledName, launchType, cacheConfig,"
                " registersPerThread, gridX, gridY, gridZ, blockX, blockY, blockZ, staticSharedMemory,"
                " dynamicSharedMemory, localMemoryPerThread, localMemoryTotal, gridId, sharedMemoryExecuted,"
                " graphNodeId, sharedMemoryLimitConfig) VALUES (" + ",".join("?" * 28) + ")",
                order(rows),
            )
        if "CUPTI_ACTIVITY_KIND_MEMCPY" in present:
            rows = [
                (
                    m.start,
                    m.end,
                    m.device,
                    1,
                    None,
                    m.stream,
                    m.corr,
                    global_pid(m.pid),
                    m.bytes,
                    m.copy_kind,
                    1,
                )
                for m in memcpys
            ]
            con.executemany(
                "INSERT INTO CUPTI_ACTIVITY_KIND_MEMCPY (start, end, deviceId, contextId, greenContextId,"
                " streamId,"
                " correlationId, globalPid, bytes, copyKind, copyCount) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                order(rows),
            )
        if "CUPTI_ACTIVITY_KIND_MEMSET" in present:
            rows = [
                (m.start, m.end, m.device, 1, None, m.stream, m.corr, global_pid(m.pid), 0, m.bytes)
                for m in memsets
            ]
            con.executemany(
                "INSERT INTO CUPTI_ACTIVITY_KIND_MEMSET (start, end, deviceId, contextId, greenContextId,"
                " streamId,"
                " correlationId, globalPid, value, bytes) VALUES (?,?,?,?,?,?,?,?,?,?)",
                order(rows),
            )
        if "CUPTI_ACTIVITY_KIND_RUNTIME" in present:
            rows = [
                (
                    a.start,
                    a.end,
                    1 if a.name.startswith("cu") and not a.name.startswith("cuda") else 0,
                    global_tid(a.pid, a.tid),
                    a.corr,
                    sid(a.name),
                    0,
                )
                for a in api_calls
            ]
            con.executemany(
                "INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME (start, end, eventClass, globalTid, correlationId,"
                " nameId,"
                " returnValue) VALUES (?,?,?,?,?,?,?)",
                order(rows),
            )
        if "NVTX_EVENTS" in present:
            domain_ids: dict[tuple[int, str], int] = {}
            rows = []
            for n in nvtx:
                if n.domain is not None and (n.pid, n.domain) not in domain_ids:
                    domain_ids[(n.pid, n.domain)] = len(domain_ids) + 1
                    first = min(x.start for x in nvtx if x.pid == n.pid and x.domain == n.domain)
                    rows.append(
                        (
                            first - 1,
                            None,
                            NVTX_DOMAIN_CREATE,
                            n.domain,
                            global_tid(n.pid, n.tid),
                            None,
                            domain_ids[(n.pid, n.domain)],
                        )
                    )
            for n in nvtx:
                domain = domain_ids[(n.pid, n.domain)] if n.domain is not None else 0
                text, text_id = (None, sid(n.text)) if n.registered else (n.text, None)
                rows.append(
                    (n.start, n.end, NVTX_EVENT_TYPE[n.kind], text, global_tid(n.pid, n.tid), text_id, domain)
                )
            con.executemany(
                "INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, textId, domainId)"
                " VALUES (?,?,?,?,?,?,?)",
                order(rows),
            )
        if "PROCESSES" in present:
            con.executemany(
                "INSERT INTO PROCESSES (globalPid, pid, name) VALUES (?,?,?)",
                [(global_pid(p), p, f"python{p}") for p in pids],
            )
        if "ThreadNames" in present:
            tids = sorted({(a.pid, a.tid) for a in [*api_calls, *nvtx]})
            con.executemany(
                "INSERT INTO ThreadNames (nameId, priority, globalTid) VALUES (?,?,?)",
                [(sid(f"thread{t}"), 20, global_tid(p, t)) for p, t in tids],
            )
        if "TARGET_INFO_GPU" in present:
            for dev in devices:
                con.execute(
                    "INSERT INTO main.TARGET_INFO_GPU SELECT * FROM tpl.TARGET_INFO_GPU WHERE rowid = "
                    "(SELECT min(rowid) FROM tpl.TARGET_INFO_GPU)"
                )
                con.execute(
                    "UPDATE main.TARGET_INFO_GPU SET id = ?, cuDevice = ?, busLocation = ? WHERE rowid = "
                    "(SELECT max(rowid) FROM main.TARGET_INFO_GPU)",
                    [dev, dev, f"0000:00:{6 + dev:02x}.0"],
                )
        if "TARGET_INFO_CUDA_DEVICE" in present:
            con.executemany(
                "INSERT INTO TARGET_INFO_CUDA_DEVICE (gpuId, cudaId, pid) VALUES (?,?,?)",
                [(d, d, p) for d in devices for p in pids],
            )
        if "TARGET_INFO_CUDA_STREAM" in present:
            con.executemany(
                "INSERT INTO TARGET_INFO_CUDA_STREAM (streamId, hwId, vmId, processId, contextId, priority,"
                " flag)"
                " VALUES (?,?,?,?,?,?,?)",
                [(s, d, 1, p, 1, 0, 2) for d, s, p in streams],
            )
        if "StringIds" in present:
            con.executemany(
                "INSERT INTO StringIds (id, value) VALUES (?, ?)", [(i, s) for s, i in strings.items()]
            )
        times = [x.start for x in [*kernels, *memcpys, *memsets, *api_calls, *nvtx]]
        times += [x.end for x in [*kernels, *memcpys, *memsets, *api_calls, *nvtx] if x.end is not None]
        if "ANALYSIS_DETAILS" in present and times:
            con.execute(
                "UPDATE ANALYSIS_DETAILS SET startTime = ?, stopTime = ?, duration = ?",
                [min(times), max(times), max(times) - min(times)],
            )
        if schema_version is not None and "META_DATA_EXPORT" in present:
            major, minor, micro = (schema_version.split(".") + ["0", "0"])[:3]
            for key, value in (
                ("EXPORT_SCHEMA_VERSION", schema_version),
                ("EXPORT_SCHEMA_VERSION_MAJOR", major),
                ("EXPORT_SCHEMA_VERSION_MINOR", minor),
                ("EXPORT_SCHEMA_VERSION_MICRO", micro),
            ):
                con.execute("UPDATE META_DATA_EXPORT SET value = ? WHERE name = ?", [value, key])
        con.commit()
        con.execute("DETACH DATABASE tpl")
    finally:
        con.close()
    return out


# ----------------------------------------------------------------------------------------------------
# Edge cases: each returns the keyword arguments of build_export (events only).


def _launched(
    kernels: list[Kernel],
    *,
    tid: int = 100,
    lead: int = 3,
    name: str = "cudaLaunchKernel_v7000",
    first_corr: int = 1,
) -> tuple[list[Kernel], list[Api]]:
    """Give every kernel its own launching API call ``lead`` ns before it (on the kernel's pid)."""
    calls = []
    for i, k in enumerate(kernels):
        k.corr = first_corr + i
        calls.append(Api(k.start - lead - (i % 5), k.start - (i % 3), k.corr, pid=k.pid, tid=tid, name=name))
    return kernels, calls


def case_zero_length() -> dict:
    kernels, calls = _launched(
        [
            Kernel(100, 100),  # zero length at the very start
            Kernel(110, 150),
            Kernel(150, 150),  # zero length touching the end of a busy period
            Kernel(170, 170),  # zero length alone inside a gap: does not split it
            Kernel(200, 260),
            Kernel(230, 230, stream=8),  # zero length inside a busy period
            Kernel(300, 300, stream=8),  # zero length at the very end
        ]
    )
    return {"kernels": kernels, "api_calls": calls}


def case_equal_timestamps() -> dict:
    kernels, calls = _launched(
        [
            Kernel(0, 10, name="a"),
            Kernel(10, 20, name="b"),  # starts exactly where a ends: no overlap, no gap
            Kernel(10, 20, stream=8, name="b"),  # identical interval on another stream: concurrency 2
            Kernel(10, 30, stream=9, name="c"),  # three start at 10: the level jumps 1 -> 3 at once
            Kernel(20, 30, name="a"),
            Kernel(40, 50, name="a"),
            Kernel(40, 50, stream=8, name="a"),
            Kernel(50, 60, stream=9, name="c"),
        ]
    )
    return {"kernels": kernels, "api_calls": calls}


def case_many_streams() -> dict:
    rng = random.Random(7)
    kernels = []
    for stream in range(16):
        t = rng.randrange(0, 500)
        for _ in range(25):
            t += rng.randrange(0, 400)
            length = rng.choice([0, 1, 3, 50, 200, 1000, 5000])
            kernels.append(
                Kernel(
                    t,
                    t + length,
                    stream=20 + stream,
                    name=f"k{rng.randrange(6)}",
                    grid=(rng.choice([1, 64]), 1, 1),
                )
            )
            t += length
    kernels, calls = _launched(kernels, lead=40)
    return {"kernels": kernels, "api_calls": calls}


def case_unsorted() -> dict:
    rng = random.Random(11)
    kernels = []
    for _ in range(200):
        start = rng.randrange(0, 100_000)
        kernels.append(
            Kernel(
                start,
                start + rng.randrange(0, 900),
                stream=rng.choice([7, 8, 9]),
                name=rng.choice(["x", "y", "z"]),
            )
        )
    memcpys = [
        Memcpy(rng.randrange(0, 100_000), 0, bytes=rng.randrange(1, 1 << 20), copy_kind=rng.choice([1, 2, 8]))
        for _ in range(30)
    ]
    for m in memcpys:
        m.end = m.start + rng.randrange(1, 2000)
    kernels, calls = _launched(kernels, lead=100)
    for i, m in enumerate(memcpys):
        m.corr = 10_000 + i
        calls.append(Api(m.start - 50, m.start - 10, m.corr, name="cudaMemcpyAsync_v3020"))
    return {"kernels": kernels, "memcpys": memcpys, "api_calls": calls, "shuffle_seed": 5}


def case_two_devices() -> dict:
    kernels = [Kernel(1000 * i, 1000 * i + 600, device=i % 2, stream=7 + (i % 3)) for i in range(40)]
    kernels += [Kernel(500, 5_000, device=1, stream=30, name="long")]
    kernels, calls = _launched(kernels, lead=20)
    memcpys = [
        Memcpy(100, 400, bytes=4096, copy_kind=1, device=0),
        Memcpy(200, 300, bytes=1 << 20, copy_kind=10, device=1, stream=31),
        Memcpy(700, 700, bytes=64, copy_kind=2, device=1),  # zero duration: bandwidth NULL
        Memcpy(900, 1900, bytes=1 << 16, copy_kind=8, device=1),
    ]
    memsets = [Memset(50, 80, bytes=256, device=0), Memset(60, 100, bytes=128, device=1)]
    for i, m in enumerate([*memcpys, *memsets]):
        m.corr = 500 + i
        calls.append(Api(m.start - 30, m.start - 5, m.corr, name="cudaMemcpyAsync_v3020"))
    return {"kernels": kernels, "memcpys": memcpys, "memsets": memsets, "api_calls": calls}


def case_two_processes() -> dict:
    """Two processes whose CUPTI correlation ids collide: the join must use the pid as well."""
    a, calls_a = _launched([Kernel(100 * i, 100 * i + 40, pid=100) for i in range(1, 30)], tid=100, lead=7)
    b, calls_b = _launched(
        [Kernel(100 * i + 20, 100 * i + 90, pid=200, stream=9) for i in range(1, 30)], tid=201, lead=61
    )
    return {"kernels": a + b, "api_calls": calls_a + calls_b}


def case_nvtx() -> dict:
    """Nested push/pop ranges, a non-default domain, start/end ranges, a mark, two threads, a graph launch."""
    kernels: list[Kernel] = []
    calls: list[Api] = []
    memcpys: list[Memcpy] = []
    corr = 0

    def launch(t: int, tid: int = 100, n_kernels: int = 1, api: str = "cudaLaunchKernel_v7000") -> None:
        nonlocal corr
        corr += 1
        calls.append(Api(t, t + 5, corr, tid=tid, name=api))
        for j in range(n_kernels):
            kernels.append(
                Kernel(
                    t + 20 + 30 * j,
                    t + 40 + 30 * j,
                    corr=corr,
                    name=f"k{j}",
                    graph_node=(1000 + j) if n_kernels > 1 else None,
                )
            )

    for t in (1000, 1100, 1200, 1500, 1600, 2500, 3000, 4000):
        launch(t)
    launch(2000, n_kernels=5, api="cudaGraphLaunch_v10000")  # one call, five kernel nodes
    launch(1050, tid=101)  # other thread, inside thread 100's ranges in time
    launch(5000)  # outside every range
    corr += 1
    calls.append(Api(1300, 1310, corr, name="cudaMemcpyAsync_v3020"))
    memcpys.append(Memcpy(1400, 1450, bytes=2048, copy_kind=2, corr=corr))
    ranges = [
        Nvtx(900, 4100, "outer"),
        Nvtx(1000, 1700, "middle"),
        Nvtx(1100, 1250, "inner", registered=True),
        Nvtx(1500, 1500, "empty push"),
        Nvtx(1900, 2600, "graph", domain="MyLib"),
        Nvtx(2990, 3000, "ends at launch"),  # the call at 3000 starts at the range end: outside
        Nvtx(3000, 3005, "starts at launch"),  # ...and inside this one
        Nvtx(1000, 3200, "async", kind="start_end"),
        Nvtx(1040, 1060, "other thread", tid=101),
        Nvtx(1200, None, "mark", kind="mark"),
        Nvtx(6000, 7000, "no gpu work", domain="MyLib", registered=True),
    ]
    return {"kernels": kernels, "memcpys": memcpys, "api_calls": calls, "nvtx": ranges}


def case_unmatched_launches() -> dict:
    kernels, calls = _launched([Kernel(100 * i, 100 * i + 50) for i in range(20)])
    del calls[::3]  # a third of the kernels lose their API row
    kernels.append(Kernel(5000, 5100, corr=None))
    return {"kernels": kernels, "api_calls": calls}


def case_empty_tables() -> dict:
    return {}


EDGE_CASES = {
    "zero_length": case_zero_length,
    "equal_timestamps": case_equal_timestamps,
    "many_streams": case_many_streams,
    "unsorted": case_unsorted,
    "two_devices": case_two_devices,
    "two_processes": case_two_processes,
    "nvtx": case_nvtx,
    "unmatched_launches": case_unmatched_launches,
    "empty_tables": case_empty_tables,
}
