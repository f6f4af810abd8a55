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

import contextlib
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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ServerFailed, SpecError, StoreError
from ..store.sql_params import bind
from .cell import CellOutcome, run_cell
from .nsys_trace import choose_trace
from .results import ensure_tables, fetch_dicts, insert_rows
from .server import RunningServer, log_tail, preflight
from .spec import Server, Spec, parse_spec
from .telemetry import TelemetrySampler, gpu_inventory

FINAL = ("ok", "skipped", "failed", "hung", "timeout")


@dataclass(frozen=True)
class PlannedCell:
    """One cell of the plan (``server``: the ``[[server]]`` name, when the spec has several)."""

    model: str
    workload: str
    n: int
    repetition: int
    server: str | None = None

    def cell_id(self, run_id: str) -> str:
        """Deterministic id: the same cell of the same run always has the same id (resume relies on it)."""
        middle = f"{self.server}/" if self.server else ""
        return f"{run_id}/{self.model}/{middle}{self.workload}/n{self.n}/r{self.repetition}"

    def label(self) -> str:
        """How progress lines name the cell."""
        server = f" [{self.server}]" if self.server else ""
        return f"{self.model}{server} {self.workload} N={self.n} rep {self.repetition}"


def plan(spec: Spec) -> list[PlannedCell]:
    """The cells of a spec, in run order: models x servers x workloads x N x repetitions.

    A server's cells are consecutive, so a server started once per sweep serves them all in one go.
    """
    names: list[str | None] = [s.name for s in spec.servers] if len(spec.servers) > 1 else [None]
    return [
        PlannedCell(m, w.name, n, r, server)
        for m in spec.models
        for server in names
        for w in spec.workloads
        for n in spec.concurrency
        for r in range(spec.repetitions)
    ]


def server_of(spec: Spec, cell: PlannedCell) -> Server | None:
    """The server a cell talks to (None: the spec starts none)."""
    if not spec.servers:
        return None
    return next((s for s in spec.servers if s.name == cell.server), spec.servers[0])


def spec_differences(old: Spec, new: Spec) -> list[str]:
    """What changed between two specs, one ``key: old -> new`` line each (empty: the same sweep).

    Where the file lives and its comments do not count; every setting does.
    """
    ignore = {"source_path", "source_toml", "description"}
    a = {k: v for k, v in old.to_json().items() if k not in ignore}
    b = {k: v for k, v in new.to_json().items() if k not in ignore}
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            was, now = (json.dumps(x.get(key), default=str) for x in (a, b))
            out.append(f"{key}: {was} -> {now}")
    return out


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


#: How long a sweep waits for another process's write to the store to finish before giving up.
STORE_WAIT_S = 120.0


@contextlib.contextmanager
def _store_session(db: str | os.PathLike[str] | None) -> Iterator[Any]:
    """The store, open for one short write: a sweep holds the file only while it records something.

    Between cells the file is free, so ``runs``, ``sql`` and ``report`` can read it while a sweep of hours
    runs; a write that meets another process's lock waits for it (up to ``STORE_WAIT_S``).
    """
    from ..store import Store

    store = Store(db, wait_s=STORE_WAIT_S)
    try:
        yield store
    finally:
        store.close()


def run_sweep(
    spec: Spec,
    db: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    retry_failed: bool = False,
    workdir: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    force_new_run: bool = False,
) -> str:
    """Run every cell of ``spec`` and record it in the store ``db``.

    Args:
        spec: a validated spec (:func:`traceforge.runners.spec.load_spec`).
        db: the DuckDB store (created when absent).
        resume: continue the latest run with this spec's name instead of starting a new one; refused when
            the spec changed since (the message lists the differences) unless ``force_new_run``.
        retry_failed: with ``resume``, also re-run cells that ended failed, hung or timeout.
        workdir: where cells keep their job, event, log and capture files (default: ``<db>.runs/``).
        quiet: print nothing while running.
        force_new_run: with ``resume`` and a changed spec, start a new run instead of refusing.

    Returns:
        The run id.

    Raises:
        SpecError: ``resume`` of a run whose spec differs from ``spec``.
        StoreError: no nsys/ncu where the spec captures with them; the store cannot be opened.
    """
    nsys = _tool(spec.capture.nsys_path, "NSYS", "nsys") if spec.capture.nsys else None
    ncu = _tool(spec.capture.ncu_path, "NCU", "ncu") if spec.capture.ncu else None
    if spec.capture.nsys and not nsys:
        raise StoreError(
            "capture.nsys = true but no nsys found (set capture.nsys_path or $NSYS)", path=spec.source_path
        )
    if spec.capture.ncu and not ncu:
        raise StoreError(
            "capture.ncu = true but no ncu found (set capture.ncu_path or $NCU)", path=spec.source_path
        )
    with _store_session(db) as store:
        con = store.con
        ensure_tables(con)
        db_path = store.path
        run_id = _resumed_run(con, spec, force_new_run) if resume else None
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
            con.execute(
                bind("UPDATE runs SET status = 'running', finished_at = NULL WHERE run_id = ?", [run_id])
            )
    root = Path(workdir) if workdir else Path(db_path + ".runs")
    cells = plan(spec)
    reporter = _Reporter(len(cells), quiet)
    servers = _ServerPool(spec, root / _slug(run_id), nsys if spec.capture.nsys else None)
    # A server the sweep does not start is asked once, before any cell: a dead one fails every cell at
    # once with the reason, instead of each request waiting out its timeout.
    unreachable = preflight(spec) if spec.backend != "pytorch_direct" and not spec.servers else None
    previous = signal.getsignal(signal.SIGTERM)

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading_main():
        signal.signal(signal.SIGTERM, _term)
    status = "interrupted"
    try:
        for index, cell in enumerate(cells, start=1):
            _one_cell(
                spec, db, run_id, cell, index, root, nsys, ncu, reporter, retry_failed, servers, unreachable
            )
        status = "finished"
    finally:
        if threading_main():
            signal.signal(signal.SIGTERM, previous)
        servers.stop_all()
        reporter.close()
        with _store_session(db) as store:
            store.con.execute(
                bind("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, _now(), run_id])
            )
    return run_id


def _resumed_run(con: Any, spec: Spec, force_new_run: bool) -> str | None:
    """The run ``--resume`` continues: the latest of this spec's name, if its spec is this one.

    Raises:
        SpecError: the stored run's spec differs (unless ``force_new_run``: then None, a new run).
    """
    row = con.execute(
        bind(
            "SELECT run_id, spec_toml, spec_path FROM runs WHERE name = ? ORDER BY started_at DESC LIMIT 1",
            [spec.name],
        )
    ).fetchone()
    if row is None:
        return None
    run_id, stored_toml, stored_path = row
    try:
        stored = parse_spec(stored_toml or "", source=stored_path or run_id)
    except SpecError:
        stored = None
    changes = ["the stored spec cannot be read"] if stored is None else spec_differences(stored, spec)
    if not changes:
        return str(run_id)
    if force_new_run:
        return None
    listed = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
    raise SpecError(
        f"--resume: the spec changed since run {run_id} ({listed}); run it as a new run with "
        "--force-new-run, or resume with the spec that run used",
        path=spec.source_path or None,
    )


class _ServerPool:
    """The servers of a sweep: started when a cell needs one, kept across cells of ``scope = "sweep"``."""

    def __init__(self, spec: Spec, log_root: Path, nsys: str | None) -> None:
        self.spec = spec
        self.log_root = log_root
        self.nsys = nsys
        self.running: dict[str | None, RunningServer] = {}
        self.failed: dict[str | None, str] = {}

    def get(self, server: Server) -> RunningServer:
        """The running server, started (again) when it is not running.

        Raises:
            ServerFailed: it would not start; later cells of a sweep-scoped server fail at once with the
                same reason instead of waiting out ``ready_timeout_s`` again.
        """
        if server.scope == "sweep" and server.name in self.failed:
            raise ServerFailed(f"{self.failed[server.name]} (when first started; not retried)")
        current = self.running.get(server.name)
        if current is not None and current.alive():
            return current
        if current is not None:
            self.release(server)
        for other in list(self.running):
            if other != server.name:  # one server at a time: they share the GPU and usually the port
                self.running.pop(other).stop(self.spec.kill_grace_s)
        log_dir = self.log_root / _slug(f"server_{server.name or 'default'}")
        try:
            started = RunningServer.start(self.spec, server, log_dir, self.nsys)
        except ServerFailed as exc:
            if server.scope == "sweep":
                self.failed[server.name] = str(exc)
            raise
        self.running[server.name] = started
        return started

    def release(self, server: Server) -> None:
        """Stop a server (after a cell of ``scope = "cell"``, or one that hung)."""
        current = self.running.pop(server.name, None)
        if current is not None:
            current.stop(self.spec.kill_grace_s)

    def stop_all(self) -> None:
        """Stop every server still running (the sweep's end)."""
        for name in list(self.running):
            self.running.pop(name).stop(self.spec.kill_grace_s)


def threading_main() -> bool:
    """Whether this is the main thread (only it may install signal handlers)."""
    import threading

    return threading.current_thread() is threading.main_thread()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def gpu_activity(sqlite_path: str) -> tuple[int, int]:
    """``(kernels, CUDA graph executions)`` recorded in an nsys SQLite export (0 for an absent table)."""
    con = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        counts = []
        for table in ("CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_GRAPH_TRACE"):
            found = con.execute(f"SELECT count(*) FROM {table}").fetchone() if table in tables else (0,)
            counts.append(found[0])
    finally:
        con.close()
    return int(counts[0]), int(counts[1])


def _one_cell(
    spec: Spec,
    db: str | os.PathLike[str] | None,
    run_id: str,
    cell: PlannedCell,
    index: int,
    root: Path,
    nsys: str | None,
    ncu: str | None,
    reporter: _Reporter,
    retry_failed: bool,
    servers: _ServerPool,
    unreachable: str | None,
) -> None:
    cell_id = cell.cell_id(run_id)
    label = cell.label()
    server = server_of(spec, cell)
    workload = next(w for w in spec.workloads if w.name == cell.workload)
    server_name = server.name if server is not None else None
    base: dict[str, Any] = {
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
        "api": spec.workload_api(workload),
        "server": server_name,
        "prompt_tokens": workload.prompt_tokens,
        "base_url": spec.base_url,
    }
    rule = next(
        (s for s in spec.skip if s.matches(cell.model, cell.workload, cell.n, cell.repetition, server_name)),
        None,
    )
    with _store_session(db) as store:
        con = store.con
        prior = con.execute(bind("SELECT status FROM cells WHERE cell_id = ?", [cell_id])).fetchone()
        if prior is not None:
            final = prior[0] in ("ok", "skipped") or (prior[0] in FINAL and not retry_failed)
            if final:
                reporter.cell(index, label, f"{prior[0]} earlier, kept")
                return
            with store.transaction():
                for table in ("requests", "telemetry", "ncu_metrics", "cells"):
                    con.execute(bind(f"DELETE FROM {table} WHERE cell_id = ?", [cell_id]))
        now = _now()
        if rule is not None:
            row = {**base, "status": "skipped", "reason": f"skip list: {rule.reason}"}
            insert_rows(con, "cells", [{**row, "started_at": now, "finished_at": now, "requests_planned": 0}])
            reporter.cell(index, label, "skipped", rule.reason)
            return
        insert_rows(con, "cells", [{**base, "status": "running", "started_at": now}])
    cell_dir = root / _slug(run_id) / _slug(cell_id.split("/", 1)[1])
    cell_dir.mkdir(parents=True, exist_ok=True)
    sampler = TelemetrySampler(spec.telemetry_hz).start() if spec.telemetry else None
    # Rows wait here and land with the cell's row in one transaction when it ends (the store stays free
    # meanwhile); a sweep killed mid-cell re-runs that cell on --resume, and events.jsonl keeps its events.
    requests: list[dict[str, Any]] = []
    telemetry: list[dict[str, Any]] = []

    def on_tick() -> None:
        if sampler is not None:
            telemetry.extend(sampler.drain())

    def on_request(row: dict[str, Any]) -> None:
        row.update(
            request_id=f"{cell_id}/a{row['agent']}/q{row['request_index']}", cell_id=cell_id, run_id=run_id
        )
        requests.append(row)

    report_base = str(cell_dir / "trace")
    wrapper = None
    running: RunningServer | None = None
    report: str | None = None
    notes: list[str] = []
    outcome: CellOutcome | None = None
    if spec.capture.nsys and nsys and server is None:
        wrapper = _nsys_wrapper(spec, nsys, report_base)
    try:
        if unreachable:
            raise ServerFailed(unreachable)
        if server is not None:
            running = servers.get(server)
        session = running.session if running is not None else None
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
            on_ready=(lambda: session.start(report_base)) if session is not None else None,
        )
        if session is not None and session.recording is not None:
            report, note = session.stop()
            if note:
                notes.append(note)
        if running is not None and not running.alive():
            notes.append(f"server exited during the cell ({running.log}: {log_tail(running.log)})")
    except ServerFailed as exc:
        outcome = CellOutcome(status="failed", reason=str(exc), wall_s=0.0)
    finally:
        if server is not None and (
            server.scope == "cell" or outcome is None or outcome.status in ("hung", "timeout", "failed")
        ):
            # A hung or failing server is not trusted with the next cell: it is started afresh.
            servers.release(server)
        if sampler is not None:
            telemetry.extend(sampler.stop())
    assert outcome is not None  # set by run_cell or the except clause; anything else propagated
    if wrapper is not None and os.path.exists(report_base + ".nsys-rep"):
        report = report_base + ".nsys-rep"
    status, reason = outcome.status, outcome.reason
    update: dict[str, Any] = {
        "finished_at": _now(),
        "wall_s": outcome.wall_s,
        "requests_ok": outcome.requests_ok,
        "requests_failed": outcome.requests_failed,
        "trace_path": report,
    }
    captured = spec.capture.nsys and nsys and (server is None or server.under_nsys)
    with _store_session(db) as store:
        con = store.con
        if outcome.versions:
            _merge_manifest(con, run_id, {"worker": outcome.versions})
        with store.transaction():
            insert_rows(con, "requests", requests)
            for r in telemetry:
                r.update(run_id=run_id, cell_id=cell_id)
            insert_rows(con, "telemetry", telemetry)
        if report and nsys:
            trace_id, sqlite_path, note = _export_and_ingest(spec, store, nsys, report)
            update["trace_id"] = trace_id
            update["trace_path"] = sqlite_path or report
            if note:
                notes.append(note)
            if sqlite_path and spec.capture.require_gpu and status == "ok":
                kernels, graphs = gpu_activity(sqlite_path)
                if kernels + graphs == 0:
                    status = "failed"
                    notes.append(
                        "the capture holds no GPU activity (no kernel, no CUDA graph execution): "
                        "was the GPU work traced (-t cuda) and did the server run on the GPU?"
                    )
            elif sqlite_path is None and status == "ok":
                status = "failed"
            # Linked now, so the ncu rows written next inherit the trace id.
            con.execute(
                bind(
                    "UPDATE cells SET trace_id = ?, trace_path = ? WHERE cell_id = ?",
                    [trace_id, update["trace_path"], cell_id],
                ),
            )
            if spec.capture.ncu and ncu and sqlite_path and status == "ok":
                update["ncu_status"] = _profile_top_kernels(
                    spec, store, ncu, cell, cell_id, cell_dir, trace_id, sqlite_path
                )
        elif captured and outcome.status not in ("skipped",):
            if not any("report" in n for n in notes):
                notes.append("nsys wrote no report")
            if status == "ok":
                status = "failed"
        if notes:
            reason = "; ".join([x for x in [reason, *notes] if x])
        update.update(status=status, reason=reason)
        sets = ", ".join(f"{k} = ?" for k in update)
        con.execute(bind(f"UPDATE cells SET {sets} WHERE cell_id = ?", [*update.values(), cell_id]))
    detail = f"{outcome.wall_s:.1f} s, {outcome.requests_ok} ok, {outcome.requests_failed} failed"
    if reason:
        detail += f"; {reason}"
    reporter.cell(index, label, status, detail)


def _merge_manifest(con: Any, run_id: str, extra: dict[str, Any]) -> None:
    row = con.execute(bind("SELECT manifest_json FROM runs WHERE run_id = ?", [run_id])).fetchone()
    man = json.loads(row[0]) if row and row[0] else {}
    man.update(extra)
    con.execute(bind("UPDATE runs SET manifest_json = ? WHERE run_id = ?", [json.dumps(man), run_id]))


def _nsys_wrapper(spec: Spec, nsys: str, report_base: str) -> list[str]:
    """``nsys profile ... --`` around an in-process (pytorch_direct) cell worker."""
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
