"""``traceforge reanalyze`` and ``traceforge export``, and the batch side of ``traceforge ingest``.

Thin wrappers over :func:`traceforge.ingest.run`, :mod:`traceforge.ingest.reanalyze` and
:mod:`traceforge.store.dataset`: one rich progress bar on stderr (when it is a terminal), a summary line,
one line per failure, and a non-zero exit when anything failed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..ingest import IngestOutcome, IngestReport

_DB_HELP = "DuckDB store (default $TRACEFORGE_DB or ./traceforge.duckdb)."


@contextlib.contextmanager
def _progress(description: str, *, quiet: bool = False) -> Iterator[Any]:
    """One progress bar on stderr, or a silent stand-in when stderr is not a terminal.

    The bar shows files done of all, the time, failures so far, and the current file's phase with the rows
    stored so far (a single big file would otherwise show ``0/1`` and a clock). Lines meant for stdout
    are printed through :func:`_printer`, never straight to a terminal the bar is drawn on.
    """
    if quiet or not sys.stderr.isatty():
        # Scripts and pipelines see no bar; they should not pay rich's import either.
        yield _NoProgress(), 0
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, soft_wrap=False)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        TextColumn("{task.fields[phase]}", markup=False),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
        # rich's own stdout/stderr redirection does not see click.echo; lines go through `_printer`.
        redirect_stdout=False,
        redirect_stderr=False,
    )
    with progress:
        task = progress.add_task(description, total=None, note="", phase="")
        yield progress, task


class _NoProgress:
    """Stands in for a rich ``Progress`` when no bar is shown."""

    def update(self, task: Any, **fields: Any) -> None:
        """Ignore a progress update."""


def _printer(progress: Any) -> Any:
    """How to print a stdout line while ``progress`` may be drawn.

    When stdout is the terminal the bar is drawn on, a line written straight to it lands after the bar's
    last frame (``2/6 0:00:00 1 failedingested 7a1f...``): rich must clear the bar, print the line and
    draw the bar again below it, so the line goes through the bar's console. Otherwise (stdout a file or
    a pipe, or no bar) it goes to stdout as is.
    """
    console = getattr(progress, "console", None)
    if console is None or not sys.stdout.isatty():
        return click.echo

    def echo(line: str) -> None:
        console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

    return echo


def ingest_batch(
    db: str | None,
    paths: Sequence[str],
    *,
    force: bool = False,
    threads: int = 0,
    quiet: bool = False,
    jobs: int = 1,
    mode: str | None = None,
    scheduler: str | None = None,
    output: str | None = None,
    exclude: Sequence[str] = (),
) -> IngestReport:
    """Run ``traceforge ingest`` over files, directories and globs; print the summary; set the exit code.

    Output: one line per stored or skipped file on stdout as it lands (unless ``quiet``), one progress bar
    on stderr when it is a terminal, and at the end one ``traceforge: error:`` line per failed file and a
    summary line.

    Args:
        db: the store path (None: the default store).
        paths: what the user typed.
        force: re-ingest content already stored.
        threads: Rust core threads per file; 0 sizes them so jobs x threads = the cores.
        quiet: print only errors and the summary.
        jobs: files processed at once.
        mode: ``none``, ``concurrent`` or ``dask-futures`` (None: by ``jobs``).
        scheduler: Dask scheduler address.
        output: a Parquet dataset directory that keeps every trace's partition.
        exclude: glob patterns of files to leave out of directories and patterns.

    Returns:
        The batch report.
    """
    from ..ingest import run
    from . import set_exit_code

    seen: list[IngestOutcome] = []
    with _progress("ingesting", quiet=quiet) as (progress, task):
        echo = _printer(progress)

        def on_outcome(outcome: IngestOutcome) -> None:
            failed = sum(o.status == "failed" for o in seen) + (outcome.status == "failed")
            seen.append(outcome)
            progress.update(task, advance=1, note=f"{failed} failed" if failed else "", phase="")
            if outcome.status != "failed" and not quiet:
                echo(
                    f"{outcome.status:8} {outcome.trace_id or '-':16}  {outcome.path}  ({outcome.message}, "
                    f"{outcome.seconds:.2f} s)"
                )
                for note in outcome.notes:
                    echo(f"{'':8} {'':16}  {note}")

        def on_phase(path: str, phase: str, rows: int) -> None:
            stored = f", {rows:,} rows stored" if rows else ""
            progress.update(task, phase=f"{os.path.basename(path)}: {phase}{stored}")

        # The store is opened by `run`, so the first export is read while DuckDB loads (its read-ahead).
        report = run(
            db,
            paths,
            jobs=jobs,
            mode=mode,
            scheduler=scheduler,
            output=output,
            force=force,
            threads=threads or None,
            on_start=lambda total: progress.update(task, total=total),
            on_outcome=on_outcome,
            exclude=exclude,
            on_phase=on_phase,
        )
    if not quiet:
        for path, why in report.not_captures:
            click.echo(f"skipped {path}: {why}")
    failed = report.count("failed")
    # Failures are listed once, together at the end, where a long batch's user will look for them.
    for outcome in report.failures:
        click.echo(f"traceforge: error: {_describe(outcome)}", err=True)
    if len(report.outcomes) > 1 or failed:
        ingested, skipped = report.count("ingested"), report.count("skipped")
        rate = len(report.outcomes) / report.seconds if report.seconds > 0 else 0.0
        left_out = len(report.not_captures)
        not_captures = f", {left_out} left out (not captures)" if left_out else ""
        click.echo(
            f"{ingested} ingested, {skipped} skipped, {failed} failed{not_captures} "
            f"in {report.seconds:.1f} s "
            f"({rate:.1f} files/s; mode {report.mode}, {report.workers} worker(s))",
            err=bool(failed),
        )
    if failed and len(report.outcomes) > 1:
        click.echo(
            "the failures are in the ingest_failures table; fix them and run the same command again "
            "(stored files are skipped)",
            err=True,
        )
    if failed:
        set_exit_code(1)
    return report


def _describe(outcome: Any) -> str:
    """Format a failed outcome as ``path: message [code]``."""
    error = outcome.error
    text = str(error) if error is not None else f"{outcome.path}: {outcome.message}"
    code = getattr(error, "code", None)
    return f"{text} [{code}]" if code else text


def _resolve_traces(store: Any, traces: tuple[str, ...]) -> list[str] | None:
    """The ids of ``--trace`` values (ids, file names or paths, or unique prefixes); None when none given."""
    from ..analysis.diff import resolve_trace

    if not traces:
        return None
    return list(dict.fromkeys(resolve_trace(store, t) for t in traces))


@click.command("reanalyze")
@click.option("--db", "db", default=None, metavar="FILE", help=_DB_HELP)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Recompute every trace, not only those whose metric version is older than this traceforge's.",
)
@click.option(
    "--trace",
    "trace_ids",
    multiple=True,
    metavar="ID",
    help="Recompute only this trace: id, file name or path, or a unique prefix (repeatable).",
)
def reanalyze(db: str | None, everything: bool, trace_ids: tuple[str, ...]) -> None:
    """Recompute derived metrics from the stored events (the export files are not needed).

    Each trace is replaced in one transaction and stamped with the current metric version; run it again after
    an interruption to finish the rest.
    """
    from ..ingest.reanalyze import reanalyze as run_reanalyze
    from ..ingest.reanalyze import stale_traces
    from ..store import Store
    from ..store.schema import METRIC_VERSION
    from . import set_exit_code

    with Store(db) as store:
        wanted = _resolve_traces(store, trace_ids)
        todo = stale_traces(store, everything=everything, trace_ids=wanted)
        if not todo:
            click.echo(f"nothing to do: every stored trace has metric version {METRIC_VERSION}")
            return
        with _progress("reanalyze") as (progress, task):
            progress.update(task, total=len(todo))
            outcomes = run_reanalyze(
                store, todo, on_outcome=lambda o: progress.update(task, advance=1, note=o.trace_id)
            )
    failed = [o for o in outcomes if o.status == "failed"]
    click.echo(
        f"{len(outcomes) - len(failed)} trace(s) recomputed at metric version {METRIC_VERSION}, "
        f"{len(failed)} failed"
    )
    for outcome in failed:
        click.echo(f"traceforge: error: trace {outcome.trace_id}: {outcome.message}", err=True)
    if failed:
        set_exit_code(1)


@click.command("export")
@click.option("--db", "db", default=None, metavar="FILE", help=_DB_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet"]),
    default="parquet",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--output",
    "-o",
    "output",
    required=True,
    metavar="DIR",
    help="Dataset directory (hive-partitioned: DIR/<table>/trace_id=<id>/data.parquet).",
)
@click.option(
    "--trace",
    "trace_ids",
    multiple=True,
    metavar="ID",
    help="Export only this trace: id, file name or path, or a unique prefix (repeatable).",
)
@click.option(
    "--force-overwrite",
    "overwrite",
    is_flag=True,
    help="Rewrite partitions already in DIR (default: keep them).",
)
def export(db: str | None, fmt: str, output: str, trace_ids: tuple[str, ...], overwrite: bool) -> None:
    """Export stored traces as a hive-partitioned Parquet dataset, one partition per trace.

    Query it in place with DuckDB:
    SELECT * FROM read_parquet('DIR/kernels/*/*.parquet', hive_partitioning=true)
    """
    from ..store import Store
    from ..store.dataset import export_store

    if os.path.exists(output) and not os.path.isdir(output):
        from ..store.dataset import DatasetError

        raise DatasetError("exists and is not a directory", path=output)
    with Store(db, read_only=True) as store:
        wanted = _resolve_traces(store, trace_ids)
        count = store.con.execute("SELECT count(*) FROM traces").fetchone()
        total = len(wanted) if wanted else int(count[0]) if count else 0
        written = kept = 0
        with _progress("export") as (progress, task):
            progress.update(task, total=total)
            for trace_id, was_written in export_store(store, output, trace_ids=wanted, overwrite=overwrite):
                written += was_written
                kept += not was_written
                progress.update(task, advance=1, note=trace_id)
    click.echo(
        f"{written} partition(s) written, {kept} kept (already present) in {os.path.abspath(output)}",
        file=sys.stdout,
    )
