"""``traceforge ingest``, ``traceforge sql`` and ``traceforge traces``."""

from __future__ import annotations

import click

from . import skip_teardown
from .output import emit, format_option, limit_option

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
@click.option(
    "--jobs",
    "-j",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Files processed at once (worker processes or Dask workers).",
)
@click.option(
    "--mode",
    type=click.Choice(["none", "concurrent", "dask-futures"]),
    default=None,
    help="Where per-file jobs run: this process, a local process pool, or Dask "
    "(default: concurrent when --jobs > 1, else none).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Dask scheduler for --mode dask-futures (default: $DASK_SCHEDULER_ADDRESS, else a local "
    "cluster of --jobs workers).",
)
@click.option(
    "--output",
    default=None,
    metavar="DIR",
    help="Also keep each trace as a hive-partitioned Parquet partition in DIR (see `export`).",
)
@click.option(
    "--exclude",
    "exclude",
    multiple=True,
    metavar="GLOB",
    help="Leave out files of directories and patterns whose path relative to the directory, or file name, "
    "matches GLOB (repeatable; a matching directory is not searched).",
)
def ingest(
    paths: tuple[str, ...],
    db: str | None,
    force: bool,
    threads: int,
    quiet: bool,
    jobs: int,
    mode: str | None,
    scheduler: str | None,
    output: str | None,
    exclude: tuple[str, ...],
) -> None:
    """Ingest nsys exports (.sqlite), reports (.nsys-rep) and ncu CSV exports.

    PATHS may be files, directories (searched recursively) or glob patterns. Each trace lands in one
    transaction; a bad file is reported on one line and the others still land. Content already stored is
    skipped, so an interrupted batch is finished by running the same command again (docs/batch.md).

    In directories and patterns, files matching --exclude are left out, and so are `nsys stats` CSVs (a
    "skipped FILE" note line, not a failure); a file named explicitly is always read.

    Example: traceforge ingest runs/ --exclude 'stats/*' --exclude '*.nsys-rep'
    """
    from .batch_cmd import ingest_batch

    ingest_batch(
        db,
        paths,
        force=force,
        threads=threads,
        quiet=quiet,
        jobs=jobs,
        mode=mode,
        scheduler=scheduler,
        output=output,
        exclude=exclude,
    )
    skip_teardown()


@click.command()
@click.argument("query")
@_db_option
@format_option
@limit_option
def sql(query: str, db: str | None, fmt: str, limit: int | None) -> None:
    """Run QUERY against the store and print the result.

    A table too wide for the terminal is shown one column per line (as `--format line`); rows beyond
    --limit are left out with a line saying how many.
    """
    from ..store import Store

    with Store(db, read_only=True) as store:
        emit(store.sql(query), fmt, limit)
    skip_teardown()


@click.command()
@_db_option
@format_option
@limit_option
def traces(db: str | None, fmt: str, limit: int | None) -> None:
    """List the stored traces."""
    from ..store import Store

    with Store(db, read_only=True) as store:
        emit(store.traces(), fmt, limit)
    skip_teardown()


@click.command()
@click.argument("traces", nargs=-1, required=True)
@_db_option
def rm(traces: tuple[str, ...], db: str | None) -> None:
    """Remove TRACES from the store, with every row that belongs to them, in one transaction.

    Each TRACE is a trace id, a unique prefix of one, or the trace's file name or path (matched
    literally). Its rows go from every table (the storage schema's included) and its ingest_failures
    rows too; runner tables keep their rows, with the link to the trace (cells.trace_id) set to NULL.
    Ingesting the file again then stores it as into a fresh store. A name matching no trace, or more than
    one, is refused and nothing is removed.

    Example: traceforge rm --db runs.duckdb small_matmul.sqlite 3f2a9c
    """
    from ..api import Traceforge
    from ..store import Store

    with Store(db, read_only=True) as store:
        paths = dict(store.con.execute("SELECT trace_id, source_path FROM traces").fetchall())
    with Traceforge(db) as tf:
        removed = tf.rm(*traces)
    for trace_id in removed:
        click.echo(f"removed  {trace_id}  {paths.get(trace_id) or ''}".rstrip())
    skip_teardown()
