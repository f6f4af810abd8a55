"""Run a sweep spec: plan its cells, run each isolated and watched, record everything as it happens.

Cells are models x workloads x N x repetitions, in that order. Each request row is committed when the
worker reports it and each cell row when the cell ends, so a killed sweep loses nothing it recorded;
``resume=True`` continues the latest run of the same spec name, skipping finished cells and re-running an
interrupted one after deleting its partial rows (no duplicates). Cells on the spec's skip list are recorded
as ``skipped`` with their reason and no request rows.

After a cell captured under nsys, the report is exported to SQLite, ingested into the same store and linked
through ``cells.trace_id``; with ``capture.ncu`` the top-K kernels by GPU time (``kernel_summary``) are then
profiled by re-running the cell's workload under ``ncu``, whose details page lands in ``ncu_metrics``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ServerFailed, StoreError
from ..store.sql_params import bind
from .cell import CellOutcome, kill_tree, run_cell
from .nsys_trace import choose_trace
from .results import ensure_tables, fetch_dicts, insert_rows
from .spec import Spec
from .telemetry import TelemetrySampler, gpu_inventory

FINAL = ("ok", "skipped", "failed", "hung", "timeout")


@dataclass(frozen=True)
class PlannedCell:
    """One cell of the plan."""

    model: str
    workload: str
    n: int
    repetition: int

    def cell_id(self, run_id: str) -> str:
        """Deterministic id: the same cell of the same run always has the same id (resume relies on it)."""
        return f"{run_id}/{self.model}/{self.workload}/n{self.n}/r{self.repetition}"


def plan(spec: Spec) -> list[PlannedCell]:
    """The cells of a spec, in run order."""
    return [
        PlannedCell(m, w.name, n, r)
        for m in spec.models
        for w in spec.workloads
        for n in spec.concurrency
        for r in range(spec.repetitions)
    ]


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def _tool(path: str | None, env_var: str, name: str) -> str | None:
    if path:
        return path
    if os.environ.get(env_var):
        return os.environ[env_var]
    return shutil.which(name)


def _version_of(binary: str | None) -> str | None:
    if not binary:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else None


def manifest(spec: Spec, nsys: str | None, ncu: str | None) -> dict[str, Any]:
    """What the run ran on: host, GPUs, driver, CUDA, library and tool versions."""
    import duckdb

    from .. import __version__

    libs: dict[str, Any] = {
        "traceforge": __version__,
        "duckdb": duckdb.__version__,
        "python": sys.version.split()[0],
    }
    try:
        import requests

        libs["requests"] = requests.__version__
    except ImportError:
        libs["requests"] = None
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **gpu_inventory(),
        "libraries": libs,
        "nsys": _version_of(nsys) if spec.capture.nsys else None,
        **_trace_fields(spec, nsys),
        "ncu": _version_of(ncu) if spec.capture.ncu else None,
        "spec_path": spec.source_path,
        "backend": spec.backend,
        "base_url": spec.base_url,
    }


def _trace_fields(spec: Spec, nsys: str | None) -> dict[str, Any]:
    """The manifest's record of what nsys traced (``-t``), and what was left out and why."""
    if not (spec.capture.nsys and nsys):
        return {}
    choice = choose_trace(spec.capture.nsys_trace, nsys)
    return {"nsys_trace": choice.trace, "nsys_trace_note": choice.note}


class _Reporter:
    """A rich progress bar on a terminal, one plain line per cell otherwise (logs, CI, tests)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.progress: Any = None
        self.task: Any = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("sweep", total=total)

    def cell(self, index: int, label: str, status: str, detail: str = "") -> None:
        line = f"[{index}/{self.total}] {label}: {status}" + (f" ({detail})" if detail else "")
        if self.progress is not None:
            self.progress.console.print(line)
            self.progress.update(self.task, completed=index, description=label)
        elif not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def run_sweep(
    spec: Spec,
    db: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    retry_failed: bool = False,
    workdir: str | os.PathLike[str] | None = None,
    quiet: bool = False,
) -> str:
    """Run every cell of ``spec`` and record it in the store ``db``.

    Args:
        spec: a validated spec (:func:`traceforge.runners.spec.load_spec`).
        db: the DuckDB store (created when absent).
        resume: continue the latest run with this spec's name instead of starting a new one.
        retry_failed: with ``resume``, also re-run cells that ended failed, hung or timeout.
        workdir: where cells keep their job, event, log and capture files (default: ``<db>.runs/``).
        quiet: print nothing while running.

    Returns:
        The run id.
    """
    from ..store import Store

    store = Store(db)
    con = store.con
    ensure_tables(con)
    nsys = _tool(spec.capture.nsys_path, "NSYS", "nsys") if spec.capture.nsys else None
    ncu = _tool(spec.capture.ncu_path, "NCU", "ncu") if spec.capture.ncu else None
    if spec.capture.nsys and not nsys:
        store.close()
        raise StoreError(
            "capture.nsys = true but no nsys found (set capture.nsys_path or $NSYS)", path=spec.source_path
        )
    if spec.capture.ncu and not ncu:
        store.close()
        raise StoreError(
            "capture.ncu = true but no ncu found (set capture.ncu_path or $NCU)", path=spec.source_path
        )
    run_id = None
    if resume:
        row = con.execute(
            bind("SELECT run_id FROM runs WHERE name = ? ORDER BY started_at DESC LIMIT 1", [spec.name])
        ).fetchone()
        run_id = row[0] if row else None
    if run_id is None:
        run_id = f"{spec.name}-{_now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        man = manifest(spec, nsys, ncu)
        if man.get("nsys_trace_note") and not quiet:
            print(f"{spec.source_path or spec.name}: {man['nsys_trace_note']}", file=sys.stderr)
        insert_rows(
            con,
            "runs",
            [
                {
                    "run_id": run_id,
                    "name": spec.name,
                    "backend": spec.backend,
                    "model": spec.model,
                    "spec_toml": spec.source_toml,
                    "spec_path": spec.source_path,
                    "started_at": _now(),
                    "status": "running",
                    "host": man["host"],
                    "manifest_json": json.dumps(man),
                }
            ],
        )
    else:
        con.execute(bind("UPDATE runs SET status = 'running', finished_at = NULL WHERE run_id = ?", [run_id]))
    root = Path(workdir) if workdir else Path(str(store.path) + ".runs")
    cells = plan(spec)
    reporter = _Reporter(len(cells), quiet)
    previous = signal.getsignal(signal.SIGTERM)

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading_main():
        signal.signal(signal.SIGTERM, _term)
    status = "interrupted"
    try:
        for index, cell in enumerate(cells, start=1):
            _one_cell(spec, store, run_id, cell, index, root, nsys, ncu, reporter, retry_failed)
        status = "finished"
    finally:
        if threading_main():
            signal.signal(signal.SIGTERM, previous)
        reporter.close()
        try:
            con.execute(
                bind("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, _now(), run_id])
            )
        finally:
            store.close()
    return run_id


def threading_main() -> bool:
    """Whether this is the main thread (only it may install signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _one_cell(
    spec: Spec,
    store: Any,
    run_id: str,
    cell: PlannedCell,
    index: int,
    root: Path,
    nsys: str | None,
    ncu: str | None,
    reporter: _Reporter,
    retry_failed: bool,
) -> None:
    con = store.con
    cell_id = cell.cell_id(run_id)
    label = f"{cell.model} {cell.workload} N={cell.n} rep {cell.repetition}"
    prior = con.execute(bind("SELECT status FROM cells WHERE cell_id = ?", [cell_id])).fetchone()
    if prior is not None:
        final = prior[0] in ("ok", "skipped") or (prior[0] in FINAL and not retry_failed)
        if final:
            reporter.cell(index, label, f"{prior[0]} earlier, kept")
            return
        with store.transaction():
            for table in ("requests", "telemetry", "ncu_metrics", "cells"):
                con.execute(bind(f"DELETE FROM {table} WHERE cell_id = ?", [cell_id]))
    workload = next(w for w in spec.workloads if w.name == cell.workload)
    base = {
        "cell_id": cell_id,
        "run_id": run_id,
        "backend": spec.backend,
        "model": cell.model,
        "workload": cell.workload,
        "n": cell.n,
        "repetition": cell.repetition,
        "requests_planned": cell.n * spec.requests_per_agent,
        "max_new_tokens": workload.max_new_tokens,
        "agent_mode": spec.agent_mode,
    }
    rule = next((s for s in spec.skip if s.matches(cell.model, cell.workload, cell.n, cell.repetition)), None)
    if rule is not None:
        now = _now()
        insert_rows(
            con,
            "cells",
            [
                {
                    **base,
                    "status": "skipped",
                    "reason": f"skip list: {rule.reason}",
                    "started_at": now,
                    "finished_at": now,
                    "requests_planned": 0,
                }
            ],
        )
        reporter.cell(index, label, "skipped", rule.reason)
        return
    insert_rows(con, "cells", [{**base, "status": "running", "started_at": _now()}])
    cell_dir = root / _slug(run_id) / _slug(f"{cell.model}_{cell.workload}_n{cell.n}_r{cell.repetition}")
    cell_dir.mkdir(parents=True, exist_ok=True)
    sampler = TelemetrySampler(spec.telemetry_hz).start() if spec.telemetry else None
    last_flush = [time.monotonic()]

    def flush_telemetry(rows: list[dict[str, Any]]) -> None:
        for r in rows:
            r.update(run_id=run_id, cell_id=cell_id)
        insert_rows(con, "telemetry", rows)

    def on_tick() -> None:
        if sampler is not None and time.monotonic() - last_flush[0] > 1.0:
            last_flush[0] = time.monotonic()
            flush_telemetry(sampler.drain())

    def on_request(row: dict[str, Any]) -> None:
        row.update(
            request_id=f"{cell_id}/a{row['agent']}/q{row['request_index']}", cell_id=cell_id, run_id=run_id
        )
        insert_rows(con, "requests", [row])

    report_base = str(cell_dir / "trace")
    wrapper = None
    server = None
    if spec.capture.nsys and nsys and spec.server is None:
        wrapper = _nsys_wrapper(spec, nsys, report_base)
    try:
        if spec.server is not None:
            server = _start_server(spec, cell_dir, nsys if spec.capture.nsys else None, report_base)
        outcome = run_cell(
            spec,
            cell_dir=cell_dir,
            model=cell.model,
            workload=cell.workload,
            n=cell.n,
            requests_per_agent=spec.requests_per_agent,
            warmup_requests=spec.warmup_requests,
            on_request=on_request,
            on_tick=on_tick,
            wrapper=wrapper,
            report_path=report_base + ".nsys-rep",
        )
    except ServerFailed as exc:
        outcome = CellOutcome(status="failed", reason=str(exc), wall_s=0.0)
    finally:
        if server is not None:
            kill_tree(server, max(spec.kill_grace_s, 30.0), signal.SIGINT)
        if sampler is not None:
            flush_telemetry(sampler.stop())
    report = report_base + ".nsys-rep" if os.path.exists(report_base + ".nsys-rep") else None
    update: dict[str, Any] = {
        "status": outcome.status,
        "reason": outcome.reason,
        "finished_at": _now(),
        "wall_s": outcome.wall_s,
        "requests_ok": outcome.requests_ok,
        "requests_failed": outcome.requests_failed,
        "trace_path": report,
    }
    if outcome.versions:
        _merge_manifest(con, run_id, {"worker": outcome.versions})
    notes: list[str] = []
    if report and nsys:
        trace_id, sqlite_path, note = _export_and_ingest(spec, store, nsys, report)
        update["trace_id"] = trace_id
        update["trace_path"] = sqlite_path or report
        if note:
            notes.append(note)
        # Linked now, so the ncu rows written next inherit the trace id.
        con.execute(
            bind(
                "UPDATE cells SET trace_id = ?, trace_path = ? WHERE cell_id = ?",
                [trace_id, update["trace_path"], cell_id],
            ),
        )
        if spec.capture.ncu and ncu and sqlite_path:
            update["ncu_status"] = _profile_top_kernels(
                spec, store, ncu, cell, cell_id, cell_dir, trace_id, sqlite_path
            )
    elif spec.capture.nsys:
        notes.append("nsys wrote no report")
    if notes:
        update["reason"] = "; ".join([x for x in [update["reason"], *notes] if x])
    sets = ", ".join(f"{k} = ?" for k in update)
    con.execute(bind(f"UPDATE cells SET {sets} WHERE cell_id = ?", [*update.values(), cell_id]))
    detail = f"{outcome.wall_s:.1f} s, {outcome.requests_ok} ok, {outcome.requests_failed} failed"
    if update.get("reason"):
        detail += f"; {update['reason']}"
    reporter.cell(index, label, outcome.status, detail)


def _merge_manifest(con: Any, run_id: str, extra: dict[str, Any]) -> None:
    row = con.execute(bind("SELECT manifest_json FROM runs WHERE run_id = ?", [run_id])).fetchone()
    man = json.loads(row[0]) if row and row[0] else {}
    man.update(extra)
    con.execute(bind("UPDATE runs SET manifest_json = ? WHERE run_id = ?", [json.dumps(man), run_id]))


def _nsys_wrapper(spec: Spec, nsys: str, report_base: str) -> list[str]:
    return [
        nsys,
        "profile",
        "-t",
        choose_trace(spec.capture.nsys_trace, nsys).trace,
        "-s",
        "none",
        "--cpuctxsw=none",
        "-o",
        report_base,
        "--force-overwrite",
        "true",
        *spec.capture.nsys_args,
    ]


def _start_server(spec: Spec, cell_dir: Path, nsys: str | None, report_base: str) -> subprocess.Popen[Any]:
    assert spec.server is not None
    cmd = list(spec.server.command)
    if nsys and spec.server.under_nsys:
        cmd = [*_nsys_wrapper(spec, nsys, report_base), *cmd]
    env = {**os.environ, **spec.server.env}
    log = open(cell_dir / "server.log", "wb")  # noqa: SIM115 - the child keeps the descriptor
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, stdin=subprocess.DEVNULL
    )
    log.close()
    url = spec.server.ready_url or spec.base_url or ""
    deadline = time.monotonic() + spec.server.ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(
                f"server command exited with status {proc.returncode} before it was ready "
                f"(see {cell_dir / 'server.log'})"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - the spec's own URL
                if resp.status < 500:
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    kill_tree(proc, spec.kill_grace_s)
    raise ServerFailed(f"server not ready at {url} within {spec.server.ready_timeout_s:g} s")


def _export_and_ingest(
    spec: Spec, store: Any, nsys: str, report: str
) -> tuple[str | None, str | None, str | None]:
    """Export an .nsys-rep to SQLite and ingest it; returns (trace_id, sqlite path, note on failure)."""
    sqlite_path = report[: -len(".nsys-rep")] + ".sqlite"
    try:
        proc = subprocess.run(
            [nsys, "export", "--type", "sqlite", "--force-overwrite", "true", "-o", sqlite_path, report],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, None, f"nsys export failed: {exc}"
    if proc.returncode != 0 or not os.path.exists(sqlite_path):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return None, None, f"nsys export failed ({proc.returncode}): {tail[0][:200]}"
    if not spec.capture.ingest:
        return None, sqlite_path, None
    try:
        from ..ingest import run as ingest
    except ImportError as exc:
        return None, sqlite_path, f"trace not ingested (traceforge.ingest unavailable: {exc})"
    try:
        outcomes = ingest(store, [sqlite_path]).outcomes
    except Exception as exc:  # noqa: BLE001 - the cell's requests stay recorded; the note says what failed
        return None, sqlite_path, f"trace not ingested: {type(exc).__name__}: {exc}"
    outcome = outcomes[0] if outcomes else None
    err = getattr(outcome, "error", None)
    if outcome is None or err is not None:
        return None, sqlite_path, f"trace not ingested: {err}"
    return getattr(outcome, "trace_id", None), sqlite_path, None


def top_kernels(store: Any, trace_id: str | None, sqlite_path: str, k: int) -> list[tuple[str, str, int]]:
    """The top-K kernels by total GPU time that ncu can select: ``(name, short_name, total_ns)``.

    Kernels are ranked by ``kernel_summary.total_ns`` (read from the export itself when the trace was not
    ingested); ncu filters launches by function base name, so names sharing a base name (the many
    ``elementwise_kernel`` instances) count once, at the rank of their first one.
    """
    rows: list[tuple[str, str, int]] = []
    if trace_id:
        try:
            found = fetch_dicts(
                store.con,
                """
                SELECT ks.name, sum(ks.total_ns) AS total_ns,
                       (SELECT any_value(k.short_name) FROM kernels k
                        WHERE k.trace_id = ks.trace_id AND k.name = ks.name) AS short_name
                FROM kernel_summary ks WHERE ks.trace_id = ? GROUP BY ks.trace_id, ks.name
                ORDER BY total_ns DESC LIMIT ?""",
                [trace_id, 20 * k],
            )
            from ..ingest.ncu import kernel_short_name

            rows = [
                (r["name"], r["short_name"] or kernel_short_name(r["name"]), int(r["total_ns"]))
                for r in found
            ]
        except Exception:  # noqa: BLE001 - fall back to reading the export itself
            rows = []
    if not rows:
        con = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
        try:
            rows = [
                (str(a), str(b), int(c))
                for a, b, c in con.execute(
                    bind(
                        """
                SELECT d.value, s.value, SUM(k.end - k.start) AS total FROM CUPTI_ACTIVITY_KIND_KERNEL k
                JOIN StringIds d ON d.id = k.demangledName JOIN StringIds s ON s.id = k.shortName
                GROUP BY d.value ORDER BY total DESC LIMIT ?""",
                        [20 * k],
                    ),
                ).fetchall()
            ]
        finally:
            con.close()
    out: list[tuple[str, str, int]] = []
    seen: set[str] = set()
    for name, short, total in rows:
        if short not in seen:
            seen.add(short)
            out.append((name, short, total))
    return out[:k]


def _profile_top_kernels(
    spec: Spec,
    store: Any,
    ncu: str,
    cell: PlannedCell,
    cell_id: str,
    cell_dir: Path,
    trace_id: str | None,
    sqlite_path: str,
) -> str:
    from ..ingest.ncu import ingest_ncu_csv

    cap = spec.capture
    try:
        kernels = top_kernels(store, trace_id, sqlite_path, cap.ncu_top_k)
    except sqlite3.Error as exc:
        return f"failed: cannot read top kernels: {exc}"
    if not kernels:
        return "failed: the trace has no kernels"
    shorts = [short for _, short, _ in kernels]
    notes = []
    launches = missing = 0
    for rank, short in enumerate(shorts):
        # One ncu run per kernel: with one filter for all of them, the most frequent kernel would take every
        # profiled launch.
        base = str(cell_dir / f"ncu_k{rank}")
        wrapper = [
            ncu,
            "--clock-control",
            "none",
            "--kernel-name-base",
            "function",
            "-k",
            f"regex:^{re.escape(short)}$",
            "--launch-skip",
            str(cap.ncu_launch_skip),
            "--launch-count",
            str(cap.ncu_launch_count),
            "--metrics",
            ",".join(cap.ncu_metrics),
            "-o",
            base,
            "-f",
            *cap.ncu_args,
        ]
        outcome = run_cell(
            spec,
            cell_dir=cell_dir / f"ncu_run_k{rank}",
            model=cell.model,
            workload=cell.workload,
            n=1,
            requests_per_agent=cap.ncu_requests,
            warmup_requests=0,
            on_request=lambda row: None,
            wrapper=wrapper,
            timeout_s=cap.ncu_timeout_s,
        )
        rep = base + ".ncu-rep"
        if not os.path.exists(rep):
            notes.append(f"{short}: ncu wrote no report ({outcome.status}: {outcome.reason})")
            continue
        failed = None
        for page in ("raw", "details"):
            with open(f"{base}.{page}.csv", "wb") as fh:
                proc = subprocess.run(
                    [ncu, "--import", rep, "--csv", "--page", page],
                    stdout=fh,
                    stderr=subprocess.PIPE,
                    timeout=600,
                )
            if proc.returncode != 0:
                failed = f"ncu --import --page {page}: {proc.stderr.decode(errors='replace').strip()[:200]}"
        if failed:
            notes.append(f"{short}: {failed}")
            continue
        try:
            res = ingest_ncu_csv(store, f"{base}.details.csv", cell_id=cell_id, force=True)
        except Exception as exc:  # noqa: BLE001 - recorded on the cell
            notes.append(f"{short}: ingest of ncu CSV failed: {exc}")
            continue
        launches += res.launches
        missing += res.missing
        if not res.launches:
            notes.append(f"{short}: no launch matched after skipping {cap.ncu_launch_skip}")
        if not cap.keep_reports:
            os.unlink(rep)
    head = "ok" if launches and not notes else ("partial" if launches else "failed")
    text = f"{head}: {launches} launches of {len(shorts)} kernels ({', '.join(shorts)})"
    if missing:
        text += f"; {missing} metric values unreadable (NULL)"
    if notes:
        text += "; " + "; ".join(notes)
    return text


def iter_runs(con: Any) -> Iterator[dict[str, Any]]:
    """Stored runs, newest first."""
    yield from fetch_dicts(con, "SELECT * FROM runs ORDER BY started_at DESC")
