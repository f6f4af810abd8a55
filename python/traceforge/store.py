"""The DuckDB store: opening it, creating the schema, transactions, and queries returning polars frames."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import QueryError, StoreError
from .schema import DDL

if TYPE_CHECKING:
    import duckdb
    import polars as pl

DEFAULT_DB = "traceforge.duckdb"


def default_db_path() -> str:
    """The store used when ``--db`` is not given: ``$TRACEFORGE_DB`` or ``./traceforge.duckdb``."""
    return os.environ.get("TRACEFORGE_DB", DEFAULT_DB)


class Store:
    """One DuckDB file holding traces, their metrics, and runner results.

    Args:
        path: the DuckDB file; created with the full schema when absent.
        read_only: open without the right to write (for ``sql``/``traces`` on a shared store).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> None:
        import duckdb

        self.path = str(Path(path if path is not None else default_db_path()))
        if read_only and not os.path.exists(self.path):
            raise StoreError("no such traceforge database (ingest something first)", path=self.path)
        try:
            self.con: duckdb.DuckDBPyConnection = duckdb.connect(self.path, read_only=read_only)
        except duckdb.Error as exc:
            raise StoreError(f"cannot open the database: {_first_line(exc)}", path=self.path) from exc
        self._configure()
        if not read_only:
            self.ensure_schema(DDL)

    def _configure(self) -> None:
        # Rows of a table have no meaningful order (every query says ORDER BY), and letting DuckDB insert
        # out of order parallelises bulk loads. The memory limit bounds the buffer pool during large
        # ingests (DuckDB spills beyond it) so peak RSS does not grow with the export's size.
        self.con.execute("SET preserve_insertion_order = false")
        limit = os.environ.get("TRACEFORGE_MEMORY_LIMIT", "512MB")
        if limit:
            self.con.execute(f"SET memory_limit = '{limit}'")

    def ensure_schema(self, ddl: dict[str, str]) -> None:
        """Create the tables in ``ddl`` that do not exist yet (idempotent)."""
        for statement in ddl.values():
            self.con.execute(statement)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block in one transaction: everything lands, or nothing does."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def sql(self, query: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Run a query and return its result as a polars DataFrame."""
        import duckdb

        try:
            relation = self.con.sql(query, params=params) if params else self.con.sql(query)
            return _to_polars(relation)
        except duckdb.Error as exc:
            raise QueryError(_first_line(exc)) from exc

    def traces(self) -> pl.DataFrame:
        """The stored traces, newest first."""
        return self.sql(
            "SELECT trace_id, source_path, nsys_version, schema_version, gpus, kernel_count, "
            "api_call_count, ingested_at FROM traces ORDER BY ingested_at DESC"
        )

    def has_fingerprint(self, fingerprint: str) -> str | None:
        """The trace id stored for this content fingerprint, or None."""
        row = self.con.execute("SELECT trace_id FROM traces WHERE fingerprint = ?", [fingerprint]).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_polars(relation: Any) -> pl.DataFrame:
    """Convert a DuckDB relation to polars through the Arrow C stream (no pyarrow needed)."""
    import polars as pl

    if relation is None:  # a statement without a result (CREATE, INSERT...)
        return pl.DataFrame()
    return pl.DataFrame(relation)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
