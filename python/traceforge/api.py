"""The public Python API: ``traceforge.connect(db)`` returns a :class:`Traceforge` handle."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .store import Store

if TYPE_CHECKING:
    import polars as pl

    from .ingest import IngestOutcome


class Traceforge:
    """A traceforge store: ingest captures into it and query it with SQL.

    Args:
        db: path of the DuckDB file (created when absent); ``None`` means ``./traceforge.duckdb``.
        read_only: open for queries only.
    """

    def __init__(self, db: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> None:
        self.store = Store(db, read_only=read_only)

    @property
    def path(self) -> str:
        """Path of the DuckDB file."""
        return self.store.path

    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
        *,
        force: bool = False,
        raise_on_error: bool = True,
        jobs: int = 1,
        mode: str | None = None,
        scheduler: str | None = None,
        output: str | os.PathLike[str] | None = None,
        exclude: Iterable[str] = (),
    ) -> list[IngestOutcome]:
        """Ingest nsys exports (``.sqlite``), reports (``.nsys-rep``) and ncu CSV exports.

        The same ingest as ``traceforge ingest`` (:func:`traceforge.ingest.run`): the same files picked
        from a directory, the same failures recorded in ``ingest_failures``.

        Args:
            paths: files, directories (searched recursively) or glob patterns.
            force: re-ingest content already stored (replacing its rows).
            raise_on_error: raise the first failed file's error after the others were ingested; with
                False, failures are only reported in the returned outcomes.
            jobs: files processed at once (worker processes, or Dask workers).
            mode: ``none``, ``concurrent`` or ``dask-futures`` (None: ``concurrent`` when ``jobs`` > 1).
            scheduler: Dask scheduler address for ``dask-futures``.
            output: a Parquet dataset directory that also keeps every trace's partition.
            exclude: glob patterns of files to leave out of directories and patterns, matched against the
                path relative to the directory searched and the file name (``--exclude``). ``nsys stats``
                CSVs found there are left out too (no outcome, no failure), named explicitly they fail.

        Returns:
            One outcome per file (and per input that named no file), in the order they landed.
        """
        from .ingest import run

        report = run(
            self.store,
            paths,
            force=force,
            jobs=jobs,
            mode=mode,
            scheduler=scheduler,
            output=output,
            exclude=exclude,
        )
        if raise_on_error:
            for outcome in report.outcomes:
                if outcome.error is not None:
                    raise outcome.error
        return report.outcomes

    def rm(self, *traces: str) -> list[str]:
        """Remove traces from the store, with every row that belongs to them, in one transaction.

        Each trace is named as ``traceforge rm`` takes it: a trace id, a unique prefix of one, or its file
        name or path (:func:`traceforge.analysis.diff.resolve_trace`). All names are resolved first, so an
        unknown or ambiguous one leaves the store untouched. Rows go from every table holding a
        ``trace_id`` or ``trace_key`` (found in the catalog, the storage schema included), and the trace's
        ``ingest_failures`` rows too; runner tables keep their rows, with their ``trace_id`` link (e.g.
        ``cells.trace_id``) set to NULL. Ingesting the file again then stores it as a fresh store would.

        Returns:
            The ids removed, in the order named (each once).

        Raises:
            QueryError: a name matching no trace, or more than one.
        """
        from .analysis.diff import resolve_trace
        from .store.storage import remove_trace

        ids = list(dict.fromkeys(resolve_trace(self.store, t) for t in traces))
        with self.store.transaction() as con:
            for trace_id in ids:
                remove_trace(con, trace_id)
        return ids

    remove = rm

    def sql(self, query: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Run SQL against the store; the result is a polars DataFrame."""
        return self.store.sql(query, params)

    def traces(self) -> pl.DataFrame:
        """The stored traces."""
        return self.store.traces()

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> Traceforge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(db: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> Traceforge:
    """Open (or create) a traceforge store.

    Args:
        db: path of the DuckDB file; ``None`` means ``$TRACEFORGE_DB`` or ``./traceforge.duckdb``.
        read_only: open for queries only.
    """
    return Traceforge(db, read_only=read_only)
