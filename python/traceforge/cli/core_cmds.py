"""``traceforge ingest``, ``traceforge sql`` and ``traceforge traces``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import set_exit_code

_db_option = click.option(
    "--db",
    "db",
    default=None,
    metavar="FILE",
    help="DuckDB store (default: $TRACEFORGE_DB or ./traceforge.duckdb).",
)


@click.command()
@click.argument("paths", nargs=-1, required=True)
@_db_option
@click.option("--force", is_flag=True, help="Re-ingest content that is already stored, replacing its rows.")
@click.option("--threads", default=0, show_default=True, help="Reader threads per file (0 = all cores).")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors and the summary.")
def ingest(paths: tuple[str, ...], db: str | None, force: bool, threads: int, quiet: bool) -> None:
    """Ingest nsys exports (.sqlite), reports (.nsys-rep) and ncu CSV exports.

    PATHS may be files, directories (searched recursively) or glob patterns. Each trace lands in one
    transaction; a bad file is reported on one line and the others still land.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ..ingest import expand_paths, ingest_paths
    from ..store import Store

    files = expand_paths(paths)
    err = Console(stderr=True, soft_wrap=True)
    out = Console(soft_wrap=True)
    with Store(db) as store:
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=quiet or not sys.stderr.isatty(),
        )
        with progress:
            task = progress.add_task("ingesting", total=len(files))

            def done(outcome: Any) -> None:
                progress.advance(task)
                if outcome.status == "failed":
                    err.print(f"traceforge: error: {outcome.message}", markup=False, highlight=False)
                elif not quiet:
                    out.print(
                        f"{outcome.status:8} {outcome.trace_id}  {outcome.path}  ({outcome.message}, "
                        f"{outcome.seconds:.2f} s)",
                        markup=False,
                        highlight=False,
                    )

            outcomes = ingest_paths(store, files, force=force, threads=threads, on_done=done)
    failed = sum(o.status == "failed" for o in outcomes)
    if len(outcomes) > 1 or failed:
        ingested = sum(o.status == "ingested" for o in outcomes)
        skipped = sum(o.status == "skipped" for o in outcomes)
        click.echo(f"{ingested} ingested, {skipped} skipped, {failed} failed", err=bool(failed))
    if failed:
        set_exit_code(1)


def _emit(df: Any, fmt: str) -> None:
    if fmt == "csv":
        sys.stdout.write(df.write_csv())
    elif fmt == "json":
        sys.stdout.write(json.dumps(df.to_dicts(), default=str, indent=1) + "\n")
    else:
        import polars as pl

        with pl.Config(tbl_rows=200, tbl_cols=40, fmt_str_lengths=80, tbl_width_chars=200):
            click.echo(df)


@click.command()
@click.argument("query")
@_db_option
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
def sql(query: str, db: str | None, fmt: str) -> None:
    """Run QUERY against the store and print the result."""
    from ..store import Store

    with Store(db, read_only=True) as store:
        _emit(store.sql(query), fmt)


@click.command()
@_db_option
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
def traces(db: str | None, fmt: str) -> None:
    """List the stored traces."""
    from ..store import Store

    with Store(db, read_only=True) as store:
        _emit(store.traces(), fmt)
