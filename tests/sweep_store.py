"""A constructed load-sweep store (runner tables written with the runners' own ``insert_rows``).

Its answers are known by construction (Amdahl's law with s = 0.3); used by the analysis and report tests.
"""

from __future__ import annotations

from pathlib import Path

S_TRUE = 0.3  # Amdahl serial fraction of the constructed sweep
AGG1 = 100.0  # aggregate tokens/s at N=1
NS = (1, 2, 4, 8)
REPS = 3
REQS_PER_AGENT = 4
TOKENS = 100
JITTER = (-0.02, 0.0, 0.02)  # per-repetition speed factor; sums to zero, so means are exact


def amdahl(n: float) -> float:
    return 1.0 / (S_TRUE + (1.0 - S_TRUE) / n)


def per_request_speed(n: int) -> float:
    return AGG1 * amdahl(n) / n


def busy_ns(n: int, rep: int) -> int:
    return 1_000_000 * n + 10_000 * rep * rep  # device busy time grows with N; reps differ


def build_sweep_store(path: Path, *, with_traces: bool = True) -> Path:
    """A sweep of N in {1,2,4,8} x 3 repetitions, plus one failed cell at N=8, plus linked traces."""
    from traceforge.runners.results import ensure_tables, insert_rows
    from traceforge.store import Store

    with Store(path) as store:
        ensure_tables(store.con)
        runs = [{"run_id": "run1", "name": "constructed", "backend": "ollama", "model": "m1", "status": "ok"}]
        cells, requests, traces, dms = [], [], [], []
        for n in NS:
            for rep in range(REPS):
                cell_id = f"c-n{n}-r{rep}"
                trace_id = f"{n:08x}{rep:08x}"
                v = per_request_speed(n) * (1 + JITTER[rep])
                wall_s = TOKENS / v
                cells.append(
                    {
                        "cell_id": cell_id,
                        "run_id": "run1",
                        "backend": "ollama",
                        "model": "m1",
                        "workload": "chat",
                        "n": n,
                        "repetition": rep,
                        "status": "ok",
                        "wall_s": REQS_PER_AGENT * wall_s + 1.0,
                        "trace_id": trace_id,
                    }
                )
                for agent in range(n):
                    for k in range(REQS_PER_AGENT):
                        requests.append(
                            {
                                "request_id": f"{cell_id}-a{agent}-k{k}",
                                "cell_id": cell_id,
                                "run_id": "run1",
                                "agent": agent,
                                "request_index": k,
                                "status": "ok",
                                "start_s": 10.0 + k * wall_s,
                                "wall_ms": 1000 * wall_s,
                                "ttft_ms": 50.0 * n + agent,
                                "prompt_tokens": 20,
                                "output_tokens": TOKENS,
                                "tokens_per_s": v,
                            }
                        )
                traces.append({"trace_id": trace_id})
                dms.append((trace_id, busy_ns(n, rep)))
        cells.append(
            {
                "cell_id": "c-n8-failed",
                "run_id": "run1",
                "backend": "ollama",
                "model": "m1",
                "workload": "chat",
                "n": 8,
                "repetition": 3,
                "status": "failed",
                "reason": "server died",
                "wall_s": 2.0,
            }
        )
        requests.append(
            {
                "request_id": "c-n8-failed-0",
                "cell_id": "c-n8-failed",
                "run_id": "run1",
                "agent": 0,
                "request_index": 0,
                "status": "error",
                "error": "connection reset",
                "start_s": 0.0,
                "wall_ms": 5.0,
            }
        )
        insert_rows(store.con, "runs", runs)
        insert_rows(store.con, "cells", cells)
        insert_rows(store.con, "requests", requests)
        for trace_id, busy in dms if with_traces else []:
            store.con.execute("INSERT INTO traces (trace_id, kernel_count) VALUES (?, 10)", [trace_id])
            store.con.execute(
                "INSERT INTO device_metrics (trace_id, device_id, kernel_count, busy_ns, max_concurrency) "
                "VALUES (?, 0, 10, ?, 1)",
                [trace_id, busy],
            )
    return path
