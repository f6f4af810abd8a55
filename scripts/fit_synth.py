#!/usr/bin/env python3
"""Fit the synthetic-export generator's distributions to a real nsys 2025.3 export (run once, keep output).

Reads ``llama1b_n1_h100_nsys2025.3.sqlite`` (decompress the fixture first: ``xz -dk``) and writes, inside the
``traceforge-synth`` crate:

- ``data/schema_2025_3.sql``: the export's ``CREATE TABLE`` statements, verbatim, in ``sqlite_master`` order;
- ``data/static_2025_3.sql``: ``INSERT`` statements for the enum tables, the capture metadata
  (``META_DATA_CAPTURE`` without the environment and arguments of the captured program) and
  ``TARGET_INFO_SYSTEM_ENV`` (without its environment dump), copied from the export;
- ``data/fit_llama1b_n1.tsv``: the fitted model (format described in its header).

The model is the launching thread's stream of GPU operations inside the NVTX request ranges (steady state):
a first-order Markov chain over operations (a kernel configuration = name + grid + block, a memcpy kind, a
memset, a stream synchronisation), and empirical quantile functions for every duration, gap and size:
kernel durations per configuration, API call durations per API, the CPU time between consecutive launches,
the GPU start after the launch call's end when the GPU was idle, the GPU gap when work was queued,
memcpy/memset sizes and durations.

Usage: ``python scripts/fit_synth.py /tmp/llama1b_n1_h100_nsys2025.3.sqlite [rust/traceforge-synth/data]``
"""

from __future__ import annotations

import collections
import sqlite3
import sys
from pathlib import Path

import numpy as np

#: probabilities of the stored quantile points; the generator interpolates linearly between them. The coarse
#: grid serves the per-operation durations and sizes (light tails); the fine grid the timing distributions,
#: whose rare long gaps (Python overhead, prefill) carry much of the mean and need their tail resolved.
PROBS = [0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0]
FINE = sorted(
    {round(float(x), 6) for x in np.arange(0, 0.999, 0.001)}
    | {round(float(x), 6) for x in np.arange(0.999, 0.9999, 0.0001)}
    | {round(float(x), 6) for x in np.arange(0.9999, 1.0, 0.00001)}
    | {1.0}
)
#: driver calls that accompany a launch on the same thread right before it (the launch "prelude").
PRELUDE_APIS = {"cuKernelGetName", "cuKernelGetAttribute", "cuKernelSetAttribute"}
LAUNCH_APIS = {"cudaLaunchKernel_v7000", "cuLaunchKernelEx", "cudaLaunchKernelExC_v11060", "cuLaunchKernel"}


def quantiles(values: list[float] | np.ndarray, probs: list[float] = PROBS) -> str:
    """Format the quantile points of ``values`` (integers, ns or bytes) as a space-separated list."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("empty sample")
    q = np.round(np.quantile(arr, probs))
    return " ".join(str(int(v)) for v in q)


def fine(name: str, values: list[int]) -> str:
    """Quantiles on the fine grid, reporting how well the interpolated quantile function keeps the mean."""
    q = np.round(np.quantile(np.asarray(values, dtype=np.float64), FINE))
    p = np.asarray(FINE)
    model_mean = float(np.sum(np.diff(p) * (q[1:] + q[:-1]) / 2))
    print(f"  {name:32s} n={len(values):7d} mean={np.mean(values):14.1f} model mean={model_mean:14.1f}")
    return " ".join(str(int(v)) for v in q)


def sql_literal(value: object) -> str:
    """Render one value as an SQLite literal."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def dump_static(con: sqlite3.Connection, out: Path) -> None:
    """Write the schema and the static rows (enums, capture metadata) of the export."""
    rows = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY rowid").fetchall()
    (out / "schema_2025_3.sql").write_text(
        "-- CREATE TABLE statements of an nsys 2025.3.2 SQLite export (schema 3.20.3), copied verbatim\n"
        "-- from llama1b_n1_h100_nsys2025.3.sqlite by scripts/fit_synth.py, in sqlite_master order.\n"
        + "".join(f"{sql};\n" for _, sql in rows)
    )
    lines = ["-- Static rows of an nsys 2025.3.2 export, copied by scripts/fit_synth.py."]
    for (name,) in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'ENUM_%' ORDER BY rowid"
    ):
        for row in con.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
            lines.append(f"INSERT INTO {name} VALUES ({', '.join(sql_literal(v) for v in row)});")
    # The GPU's row is the template the generator copies once per synthetic device.
    for row in con.execute("SELECT * FROM TARGET_INFO_GPU ORDER BY rowid LIMIT 1"):
        lines.append(f"INSERT INTO TARGET_INFO_GPU VALUES ({', '.join(sql_literal(v) for v in row)});")
    for name, value in con.execute("SELECT name, value FROM META_DATA_CAPTURE ORDER BY rowid"):
        # The captured program's environment and command line are the capturing machine's, not nsys's.
        if ":ENVIRONMENT_VARIABLE" in name or ":ARGUMENT_" in name or name.endswith(":WORKING_DIR"):
            continue
        if name.endswith(":COMMAND"):
            value = "python3"
        lines.append(f"INSERT INTO META_DATA_CAPTURE VALUES ({sql_literal(name)}, {sql_literal(value)});")
    for row in con.execute("SELECT * FROM TARGET_INFO_SYSTEM_ENV ORDER BY rowid"):
        row = list(row)
        if row[2] == "DeviceEnvironment":
            row[4] = ""
        lines.append(f"INSERT INTO TARGET_INFO_SYSTEM_ENV VALUES ({', '.join(sql_literal(v) for v in row)});")
    (out / "static_2025_3.sql").write_text("\n".join(lines) + "\n")


def fit(con: sqlite3.Connection, out: Path) -> None:
    """Fit the operation model and write ``fit_llama1b_n1.tsv``."""
    strings = dict(con.execute("SELECT id, value FROM StringIds"))
    (main_tid,) = con.execute(
        "SELECT globalTid FROM CUPTI_ACTIVITY_KIND_RUNTIME GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    requests = con.execute(
        "SELECT start, end FROM NVTX_EVENTS WHERE eventType = 59 AND text LIKE 'agent%/req%' ORDER BY start"
    ).fetchall()
    in_request = [(s, e) for s, e in requests]

    def request_of(t: int) -> int:
        for i, (s, e) in enumerate(in_request):
            if s <= t < e:
                return i
        return -1

    # GPU operations keyed by correlation id (one process in this capture).
    gpu: dict[int, dict] = {}
    for row in con.execute(
        "SELECT correlationId, start, end, demangledName, shortName, mangledName, gridX, gridY, gridZ, "
        "blockX, blockY, blockZ, registersPerThread, staticSharedMemory, dynamicSharedMemory, "
        "localMemoryPerThread, "
        "localMemoryTotal, sharedMemoryExecuted, launchType, cacheConfig, sharedMemoryLimitConfig "
        "FROM CUPTI_ACTIVITY_KIND_KERNEL"
    ):
        cfg = (row[3], row[6], row[7], row[8], row[9], row[10], row[11])
        gpu[row[0]] = {"kind": "K", "start": row[1], "end": row[2], "cfg": cfg, "row": row}
    for corr, s, e, nbytes, kind, srck, dstk in con.execute(
        "SELECT correlationId, start, end, bytes, copyKind, srcKind, dstKind FROM CUPTI_ACTIVITY_KIND_MEMCPY"
    ):
        gpu[corr] = {"kind": "C", "start": s, "end": e, "cfg": (kind, srck, dstk), "bytes": nbytes}
    for corr, s, e, nbytes, value, memkind in con.execute(
        "SELECT correlationId, start, end, bytes, value, memKind FROM CUPTI_ACTIVITY_KIND_MEMSET"
    ):
        gpu[corr] = {"kind": "E", "start": s, "end": e, "cfg": (value, memkind), "bytes": nbytes}
    syncs = {
        corr: (s, e, st)
        for corr, s, e, st in con.execute(
            "SELECT correlationId, start, end, syncType FROM CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"
        )
    }

    api = con.execute(
        "SELECT start, end, correlationId, nameId FROM CUPTI_ACTIVITY_KIND_RUNTIME WHERE globalTid = ? "
        "ORDER BY start",
        (main_tid,),
    ).fetchall()

    op_info: dict[tuple, dict] = {}
    api_dur: dict[str, list[int]] = collections.defaultdict(list)
    cpu_gap: list[int] = []
    inner_gap: list[int] = []
    idle_latency: list[int] = []
    queued_gap: list[int] = []
    sync_tail: list[int] = []
    sync_lead: list[int] = []
    prelude_patterns: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    transitions: collections.Counter = collections.Counter()

    prev_op_key = None
    prev_api_end = None
    prev_request = -2
    gpu_end = 0  # end of the last GPU operation (one stream in this capture)
    pending: list[tuple[int, int, str]] = []
    for start, end, corr, name_id in api:
        name = strings[name_id]
        req = request_of(start)
        if name in PRELUDE_APIS:
            pending.append((start, end, name))
            continue
        op = gpu.get(corr)
        sync = syncs.get(corr)
        if op is None and sync is None:
            pending = []
            continue
        if op is not None:
            key = (op["kind"], op["cfg"])
        else:
            key = ("Y", (sync[2],))
        info = op_info.setdefault(key, {"count": 0, "api": collections.Counter(), "dur": [], "bytes": []})
        info["count"] += 1
        info["api"][name] += 1
        if req >= 0:
            api_dur[name].append(end - start)
            for s, e, n in pending:
                api_dur[n].append(e - s)
            if name in LAUNCH_APIS:
                prelude_patterns[name][tuple(n for _, _, n in pending)] += 1
            first = pending[0][0] if pending else start
            if prev_request == req and prev_api_end is not None:
                cpu_gap.append(first - prev_api_end)
                transitions[(prev_op_key, key)] += 1
            for (_, e0, _), (s1, _, _) in zip(pending, pending[1:] + [(start, end, name)]):
                inner_gap.append(s1 - e0)
            if op is not None:
                info["dur"].append(op["end"] - op["start"])
                if op["kind"] != "K":
                    info["bytes"].append(op["bytes"])
                if gpu_end <= end:
                    # Measured from the call's end: a call that blocks (lazy module loading) delays the
                    # start with it, and the CPU is blocked too, so no queue builds behind it.
                    idle_latency.append(op["start"] - end)
                else:
                    queued_gap.append(op["start"] - gpu_end)
            else:
                sync_tail.append(end - max(start, gpu_end))
                sync_lead.append(sync[0] - start)
            prev_op_key, prev_api_end, prev_request = key, end, req
        if op is not None:
            gpu_end = max(gpu_end, op["end"])
        pending = []

    keys = [k for k in op_info if op_info[k]["dur"] or k[0] == "Y"]
    index = {k: i for i, k in enumerate(keys)}
    kernel_rows = {}
    for op in gpu.values():
        if op["kind"] == "K" and op["cfg"] not in kernel_rows:
            kernel_rows[op["cfg"]] = op["row"]

    req_kernels = []
    for s, e in in_request:
        (n,) = con.execute(
            "SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN CUPTI_ACTIVITY_KIND_RUNTIME r "
            "ON r.correlationId = k.correlationId WHERE r.start >= ? AND r.start < ?",
            (s, e),
        ).fetchone()
        req_kernels.append(n)
    request_gaps = [b[0] - a[1] for a, b in zip(in_request, in_request[1:])]

    lines = [
        "# traceforge-synth model fitted by scripts/fit_synth.py to llama1b_n1_h100_nsys2025.3.sqlite",
        "# (steady state: API calls of the launching thread inside the NVTX request ranges).",
        "# Tab-separated records; Q = quantile points (integers) at the probabilities of the P record.",
        "# P grid probs               coarse grid: K, C, E records; fine grid: D, A records",
        "# D name Q                      named distribution (ns unless said otherwise)",
        "# A api_name Q                  API call duration",
        "# L launch_api prelude          driver calls made right before the launch (','-separated, '-' none)",
        "# K op launch_api count regs gx gy gz bx by bz static dyn local_thread local_total shmem_exec"
        " launch_type cache_cfg limit_cfg Qdur short demangled mangled",
        "# C op api count copyKind srcKind dstKind Qbytes Qdur",
        "# E op api count value memKind Qbytes Qdur",
        "# Y op api count syncType",
        "# T from_op to_op count       Markov transition counts",
        "P\tcoarse\t" + " ".join(repr(p) for p in PROBS),
        "P\tfine\t" + " ".join(repr(p) for p in FINE),
        f"D\tcpu_gap\t{fine('cpu_gap', cpu_gap)}",
        f"D\tprelude_gap\t{fine('prelude_gap', inner_gap)}",
        f"D\tidle_start_after_call\t{fine('idle_start_after_call', idle_latency)}",
        f"D\tqueued_gpu_gap\t{fine('queued_gpu_gap', queued_gap)}",
        f"D\tsync_tail\t{fine('sync_tail', sync_tail)}",
        f"D\tsync_lead\t{fine('sync_lead', sync_lead)}",
        f"D\tkernels_per_request\t{fine('kernels_per_request', req_kernels)}",
        f"D\trequest_gap\t{fine('request_gap', request_gaps or [100_000])}",
    ]
    for name in sorted(api_dur):
        lines.append(f"A\t{name}\t{fine(name, api_dur[name])}")
    for name in sorted(prelude_patterns):
        pattern, _ = prelude_patterns[name].most_common(1)[0]
        lines.append(f"L\t{name}\t{','.join(pattern) if pattern else '-'}")
    for key in keys:
        info = op_info[key]
        api_name = info["api"].most_common(1)[0][0]
        i = index[key]
        if key[0] == "K":
            row = kernel_rows[key[1]]
            (dem, short, mangled, gx, gy, gz, bx, by, bz, regs) = row[3:13]
            (sshm, dshm, lpt, ltot, shx, lt, cc, lim) = row[13:]
            lines.append(
                "\t".join(
                    str(v)
                    for v in [
                        "K",
                        i,
                        api_name,
                        info["count"],
                        regs,
                        gx,
                        gy,
                        gz,
                        bx,
                        by,
                        bz,
                        sshm,
                        dshm,
                        lpt,
                        ltot,
                        shx if shx is not None else -1,
                        lt,
                        cc,
                        lim if lim is not None else -1,
                        quantiles(info["dur"]),
                        strings[short],
                        strings[dem],
                        strings[mangled] if mangled is not None else "-",
                    ]
                )
            )
        elif key[0] == "C":
            kind, srck, dstk = key[1]
            lines.append(
                f"C\t{i}\t{api_name}\t{info['count']}\t{kind}\t{srck}\t{dstk}\t"
                f"{quantiles(info['bytes'])}\t{quantiles(info['dur'])}"
            )
        elif key[0] == "E":
            value, memkind = key[1]
            lines.append(
                f"E\t{i}\t{api_name}\t{info['count']}\t{value}\t{memkind}\t"
                f"{quantiles(info['bytes'])}\t{quantiles(info['dur'])}"
            )
        else:
            lines.append(f"Y\t{i}\t{api_name}\t{info['count']}\t{key[1][0]}")
    for (a, b), n in sorted(transitions.items(), key=lambda kv: (index[kv[0][0]], index[kv[0][1]])):
        lines.append(f"T\t{index[a]}\t{index[b]}\t{n}")
    (out / "fit_llama1b_n1.tsv").write_text("\n".join(lines) + "\n")
    print(
        f"{len(keys)} operations, {len(transitions)} transitions, {len(cpu_gap)} CPU gaps, "
        f"{len(idle_latency)} idle launches, {len(queued_gap)} queued launches"
    )


def main() -> None:
    """Entry point."""
    src = Path(sys.argv[1])
    default = Path(__file__).parent.parent / "rust/traceforge-synth/data"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else default
    out.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    dump_static(con, out)
    fit(con, out)


if __name__ == "__main__":
    main()
