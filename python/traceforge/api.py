"""The public Python API: ``traceforge.connect(db)`` returns a :class:`Traceforge` handle."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .store import Store

if TYPE_CHECKING:
    import polars as pl

    from .ingest.trace import IngestOutcome


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
    ) -> list[IngestOutcome]:
        """Ingest nsys exports (``.sqlite``), reports (``.nsys-rep``) and ncu CSV exports.

        Args:
            paths: files, directories or glob patterns.
            force: re-ingest content already stored (replacing its rows).
            raise_on_error: raise the first file's error after the others were ingested; with False,
                failures are only reported in the returned outcomes.

        Returns:
            One outcome per file, in order.
        """
        from .ingest.trace import ingest_paths

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        outcomes = ingest_paths(self.store, [os.fspath(p) for p in paths], force=force)
        if raise_on_error:
            for outcome in outcomes:
                if outcome.error is not None:
                    raise outcome.error
        return outcomes

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
