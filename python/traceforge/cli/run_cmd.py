"""``traceforge run`` (run a sweep spec) and ``traceforge runs`` (stored runs and per-cell summaries)."""

from __future__ import annotations

import json
from typing import Any

import click

from . import set_exit_code


@click.command("run")
@click.argument("spec_path", metavar="SPEC.toml", type=click.Path(dir_okay=False))
@click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False),
    default=None,
    help="DuckDB store (default: $TRACEFORGE_DB or ./traceforge.duckdb).",
)
@click.option("--resume", is_flag=True, help="Continue the latest run of this spec, skipping finished cells.")
@click.option(
    "--retry-failed", is_flag=True, help="With --resume, also re-run failed, hung and timed-out cells."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where cells keep job, log and capture files (default: DB.runs/).",
)
@click.option(
    "--force-new-run",
    is_flag=True,
    help="With --resume, start a new run when the spec changed since the last one (instead of refusing).",
)
@click.option("--dry-run", is_flag=True, help="Validate the spec and print the planned cells; run nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def run(
    spec_path: str,
    db: str | None,
    resume: bool,
    retry_failed: bool,
    workdir: str | None,
    force_new_run: bool,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Run the load sweep specified in SPEC.toml and record it in the store."""
    from ..runners.spec import load_spec
    from ..runners.sweep import plan, run_sweep, server_of

    spec = load_spec(spec_path)
    if dry_run:
        for cell in plan(spec):
            server = server_of(spec, cell)
            name = server.name if server is not None else None
            skip = next(
                (s for s in spec.skip if s.matches(cell.model, cell.workload, cell.n, cell.repetition, name)),
                None,
            )
            click.echo(
                f"{cell.model}\t" + (f"{name}\t" if name else "")
                + f"{cell.workload}\tN={cell.n}\trep={cell.repetition}"
                + (f"\tskipped: {skip.reason}" if skip else "")
            )  # fmt: skip
        return
    run_id = run_sweep(
        spec,
        db,
        resume=resume,
        retry_failed=retry_failed,
        workdir=workdir,
        quiet=quiet,
        force_new_run=force_new_run,
    )
    from ..runners.results import fetch_dicts
    from ..store import Store

    with Store(db, read_only=True) as store:
        counts = fetch_dicts(
            store.con,
            "SELECT status, count(*) AS n FROM cells WHERE run_id = ? GROUP BY 1 ORDER BY 1",
            [run_id],
        )
    summary = ", ".join(f"{c['n']} {c['status']}" for c in counts)
    click.echo(f"run {run_id}: {summary}")
    if any(c["status"] in ("failed", "hung", "timeout") for c in counts):
        set_exit_code(2)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _resolve_run(text: str, run_ids: list[str]) -> str:
    """The run id ``text`` names: the id itself, or a unique prefix of one."""
    from ..errors import QueryError

    if text in run_ids:
        return text
    matches = [r for r in run_ids if r.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise QueryError(f"no run with id {text!r} (see `traceforge runs --all`)")
    raise QueryError(
        f"run id {text!r} is ambiguous: {len(matches)} runs start with it ({', '.join(matches[:5])})"
    )


@click.command("runs")
@click.option("--db", "db", type=click.Path(dir_okay=False), default=None, help="DuckDB store.")
@click.option(
    "--run",
    "run_id",
    default=None,
    metavar="RUN_ID",
    help="Show one run's cells and summary: its id (as `runs` lists it) or a unique prefix "
    "(default: the latest run).",
)
@click.option("--all", "show_all", is_flag=True, help="List every run only.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", help="Output format.")
def runs(db: str | None, run_id: str | None, show_all: bool, fmt: str) -> None:
    """Show stored runs, their cells and the per-N sweep summary."""
    from ..errors import QueryError
    from ..runners.results import ensure_tables, fetch_dicts, sweep_summary
    from ..store import Store

    with Store(db, read_only=True) as store:
        con = store.con
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "runs" not in tables:
            raise QueryError("no runs in this store (run `traceforge run SPEC.toml` first)")
        if "cell_summary" not in tables:
            ensure_tables(con)  # pragma: no cover - read-only stores made by older versions
        run_rows = fetch_dicts(
            con,
            "SELECT run_id, name, backend, model, status, started_at, finished_at, host "
            "FROM runs ORDER BY started_at DESC",
        )
        if not run_rows:
            raise QueryError("no runs in this store")
        if run_id is None:
            run_id = run_rows[0]["run_id"]
        else:
            run_id = _resolve_run(run_id, [str(r["run_id"]) for r in run_rows])
        cells = (
            []
            if show_all
            else fetch_dicts(
                con,
                """
            SELECT cell_id, workload, n, repetition, status, ok_requests, failed_requests, per_agent_tps,
                   aggregate_tps,
                   latency_p50_ms, latency_p95_ms, ttft_p50_ms, ttft_p95_ms, trace_id, reason
            FROM cell_summary WHERE run_id = ? ORDER BY model, workload, n, repetition""",
                [run_id],
            )
        )
        summary = [] if show_all else sweep_summary(con, run_id)
        from ..analysis.idle import idle_by_cell, split

        idle = {} if show_all else idle_by_cell(store, run_id)
        for c in cells:
            c.update(split(idle.get(str(c["cell_id"]))))
    if fmt == "json":
        click.echo(json.dumps({"runs": run_rows, "cells": cells, "summary": summary}, default=str, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="runs")
    # The run id is what `--run` takes: never cut or folded (other columns give way and fold instead).
    longest = max(len(str(r["run_id"])) for r in run_rows)
    table.add_column("run_id", no_wrap=True, min_width=longest, overflow="ignore")
    for col in ("name", "backend", "model", "status", "started_at"):
        table.add_column(col, overflow="fold")
    for r in run_rows:
        table.add_row(*(_fmt(r[c]) for c in ("run_id", "name", "backend", "model", "status", "started_at")))
    console.print(table)
    if show_all:
        return
    ctable = Table(title=f"cells of {run_id}")
    ccols: tuple[str, ...] = (
        "workload",
        "n",
        "repetition",
        "status",
        "ok_requests",
        "failed_requests",
        "per_agent_tps",
        "aggregate_tps",
        "latency_p50_ms",
        "latency_p95_ms",
        "ttft_p50_ms",
        "trace_id",
        "reason",
    )
    if idle:  # the linked traces' idle split (device_metrics.idle_*_ns summed over devices)
        ccols = (*ccols[:-2], "idle_ms", "sync%", "gil_wait%", "os%", "cuda_api%", "other%", *ccols[-2:])
    for col in ccols:
        ctable.add_column(col, overflow="fold")
    for r in cells:
        ctable.add_row(*(_fmt(r[c]) for c in ccols))
    console.print(ctable)
    stable = Table(title="sweep summary (means over ok cells; comparisons against N=1)")
    scols = (
        "model",
        "workload",
        "n",
        "cells",
        "skipped",
        "failed",
        "per_agent_tps",
        "aggregate_tps",
        "parallel_efficiency",
        "degradation",
        "latency_p95_x",
        "ttft_p50_ms",
        "cliff_n",
    )
    for col in scols:
        stable.add_column(col)
    for r in summary:
        stable.add_row(*(_fmt(r[c]) for c in scols))
    console.print(stable)
