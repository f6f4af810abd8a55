"""The DuckDB store: opening it, creating the schema, transactions, and queries returning polars frames."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import QueryError, StoreBusyError, StoreError, is_interruption
from .result import to_polars
from .schema import DDL, STORAGE_DDL, STORAGE_SCHEMA, VIEW_DDL
from .sql_params import bind
from .storage import LAYOUT_TABLE, LAYOUT_VERSION, layout_digest, upgrade_layout

if TYPE_CHECKING:
    import duckdb
    import polars as pl

DEFAULT_DB = "traceforge.duckdb"

#: Environment variables sizing DuckDB while a trace lands (see ``Store.ingest_memory``).
INGEST_THREADS_ENV = "TRACEFORGE_INGEST_THREADS"
INGEST_MEMORY_LIMIT_ENV = "TRACEFORGE_INGEST_MEMORY_LIMIT"
DEFAULT_INGEST_THREADS = 4
DEFAULT_INGEST_MEMORY_LIMIT = "64MB"
#: Pool each inserting thread needs at least: a partly filled row group pins a 256 KiB block per column.
INGEST_MEMORY_PER_THREAD = 8 * 1024 * 1024
#: Pool an ingest adds per byte of the trace's long strings (``long_string_bytes``: 4 KiB or more), which
#: DuckDB keeps pinned, outside its column segments, until the rows are written: 88 MB of NVTX text needed
#: 100-130 MB of pool, so one and a half times the bytes, over the usual pool.
INGEST_MEMORY_PER_LONG_STRING_BYTE = 1.5
#: The first bytes of a SQLite database file (an nsys export), never of a DuckDB one.
_SQLITE_MAGIC = b"SQLite format 3\x00"


#: Seconds a reader waits for another process's lock on the store (a writer's transaction) to go away,
#: and seconds a writer waits (readers and other writers hold it briefly; an ingest must outlast them).
LOCK_WAIT_ENV = "TRACEFORGE_LOCK_WAIT"
DEFAULT_READ_WAIT_S = 5.0
DEFAULT_WRITE_WAIT_S = 120.0

#: A writer working between short transactions (an ingest, trace by trace) frees the file between two of
#: them when a reader waits for it, or when it has held the file this many seconds
#: (``$TRACEFORGE_SHARE_AFTER``; 0: after every transaction). Freeing it costs a checkpoint (closing the
#: file writes the log into it: ~0.1-0.8 s here, whatever the trace's size), so small traces share one.
SHARE_AFTER_ENV = "TRACEFORGE_SHARE_AFTER"
DEFAULT_SHARE_AFTER_S = 5.0


def connect(
    path: str | os.PathLike[str], *, read_only: bool = False, wait_s: float | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file of a store, waiting while another process holds its lock.

    DuckDB lets one process write a file (an exclusive lock) or several read it (shared locks), never
    both. traceforge's writers hold the file only for each short transaction (an ingest per trace, a
    runner per cell), so a reader that finds it locked retries for a few seconds rather than failing with
    DuckDB's ``Could not set lock on file``; a writer waits longer for readers to finish. Every opening of
    a store goes through here: ``Store`` and the runners alike.

    Args:
        path: the DuckDB file (``:memory:`` opens an in-memory database at once).
        read_only: open with a shared lock, without the right to write.
        wait_s: how long to keep retrying; None: ``$TRACEFORGE_LOCK_WAIT``, else 5 s for readers and
            120 s for writers.

    Raises:
        StoreBusyError: still locked after ``wait_s``: one line naming the store and the lock holder's pid.
        StoreError: DuckDB cannot open the file for another reason.
    """
    import duckdb

    path = os.fspath(path)
    if wait_s is None:
        wait_s = _env_seconds(LOCK_WAIT_ENV, DEFAULT_READ_WAIT_S if read_only else DEFAULT_WRITE_WAIT_S, path)
    deadline = time.monotonic() + wait_s
    waiting = _ReaderWaiting(path)
    if not read_only:
        waiting.let_readers_in()
    delay = 0.005
    try:
        while True:
            try:
                return duckdb.connect(path, read_only=read_only)
            except duckdb.Error as exc:
                text = str(exc)
                if "Could not set lock" not in text and "Conflicting lock" not in text:
                    raise StoreError(f"cannot open the database: {_first_line(exc)}", path=path) from exc
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _busy(path, text, read_only) from None
            if read_only:
                waiting.announce()
            # Retry often: a writer frees the file between transactions for a moment only.
            time.sleep(min(delay, max(left, 0.0)))
            delay = min(delay * 2, 0.05)
    finally:
        if read_only:
            waiting.done()


class _ReaderWaiting:
    """A reader waiting for the store's lock says so in a file beside it, so a writer lets it in.

    DuckDB's file lock has no queue: a writer that frees the file after a transaction and takes it again
    for the next one a few milliseconds later would keep a polling reader out for a whole batch. A reader
    refused the lock touches ``STORE.tf-readers-waiting``; a writer about to open the file waits (at most
    ``WRITER_YIELD_S``) while that file is fresh, and the reader removes it once in.
    """

    WRITER_YIELD_S = 0.5
    FRESH_S = 0.25

    def __init__(self, path: str) -> None:
        self.marker = None if path == ":memory:" else f"{path}.tf-readers-waiting"
        self.announced = False

    def announce(self) -> None:
        if self.marker is None:
            return
        try:
            Path(self.marker).touch()
            self.announced = True
        except OSError:  # a read-only directory: readers just poll
            self.marker = None

    def done(self) -> None:
        if self.announced and self.marker is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.marker)

    def waiting(self) -> bool:
        """Whether a reader is waiting for the file now (its mark is fresh)."""
        if self.marker is None:
            return False
        try:
            return time.time() - os.stat(self.marker).st_mtime <= self.FRESH_S
        except OSError:
            return False

    def let_readers_in(self) -> None:
        if self.marker is None:
            return
        until = time.monotonic() + self.WRITER_YIELD_S
        while time.monotonic() < until:
            try:
                age = time.time() - os.stat(self.marker).st_mtime
            except OSError:
                return
            if age > self.FRESH_S:
                return
            time.sleep(0.005)


def _busy(path: str, duckdb_message: str, read_only: bool) -> StoreBusyError:
    """The one-line error for a store still locked by another process (its pid when DuckDB names it)."""
    match = re.search(r"\(PID (\d+)\)", duckdb_message)
    pid = f" (pid {match.group(1)})" if match else ""
    doing = "being written by" if read_only else "in use by"
    return StoreBusyError(f"store {path} is {doing} another traceforge process{pid}; retry")


def _env_seconds(variable: str, default: float, path: str) -> float:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise StoreError(f"{variable}={text!r} is not a number of seconds", path=path)
    return value


def default_db_path() -> str:
    """The store used when ``--db`` is not given: ``$TRACEFORGE_DB`` or ``./traceforge.duckdb``."""
    return os.environ.get("TRACEFORGE_DB", DEFAULT_DB)


class Store:
    """One DuckDB file holding traces, their metrics, and runner results.

    The file is opened through :func:`connect`, which waits while another process holds it. A writer that
    works long between short transactions (an ingest reading exports) calls :meth:`share` after each: the
    file is freed if another process wants it, until the next use of :attr:`con` opens it again.

    Args:
        path: the DuckDB file; created with the full schema when absent.
        read_only: open without the right to write (for ``sql``/``traces`` on a shared store).
        wait_s: how long to wait for another process's lock (:func:`connect`; None: its default).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        read_only: bool = False,
        wait_s: float | None = None,
    ) -> None:
        self.path = str(Path(path if path is not None else default_db_path()))
        #: ``(trace id, source path)`` of each trace committed through this store since it was opened, in
        #: order (what the Ctrl-C message reports).
        self.committed: list[tuple[str, str]] = []
        if read_only and not os.path.exists(self.path):
            raise StoreError("no such traceforge database (ingest something first)", path=self.path)
        self.read_only, self.wait_s = read_only, wait_s
        self._checkpoint_each_commit = False
        #: Whether the one writer using this store (an ingest that opened it) releases it between traces.
        self.release_between_traces = False
        existed = os.path.exists(self.path)
        _refuse_non_duckdb(self.path)
        self._con: duckdb.DuckDBPyConnection | None = connect(self.path, read_only=read_only, wait_s=wait_s)
        self._opened_at = time.monotonic()
        self._configure()
        if not read_only:
            self._create_schema(new=not existed)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection, opened again (waiting for the file's lock) after :meth:`release`."""
        if self._con is None:
            self._con = connect(self.path, read_only=self.read_only, wait_s=self.wait_s)
            self._opened_at = time.monotonic()
            self._configure()
        return self._con

    def share(self) -> None:
        """Between two transactions of a long writer: free the file if another process wants it.

        It is freed (:meth:`release`) when a reader waits for it (``connect`` leaves a mark beside the
        store while it retries) or when this store has held it ``$TRACEFORGE_SHARE_AFTER`` seconds
        (default 5; for readers that leave no mark, e.g. DuckDB's own CLI); otherwise it is kept, since each
        freeing costs a checkpoint.
        """
        if self._con is None:
            return
        after = _env_seconds(SHARE_AFTER_ENV, DEFAULT_SHARE_AFTER_S, self.path)
        if time.monotonic() - self._opened_at >= after or _ReaderWaiting(self.path).waiting():
            self.release()

    def release(self) -> None:
        """Close the file until :attr:`con` is next used, so that other processes can open it meanwhile.

        Committed rows are in the file (closing checkpoints the write-ahead log). Nothing is done for an
        in-memory store, whose data lives in the connection, or inside a transaction.
        """
        if self._con is None or self.path == ":memory:" or self._in_transaction:
            return
        self._con.close()
        self._con = None

    _in_transaction = False

    def _configure(self) -> None:
        # Rows of a table have no meaningful order (every query says ORDER BY), and letting DuckDB insert
        # out of order parallelises bulk loads. The memory limit bounds the buffer pool (DuckDB spills
        # beyond it); an ingest holds it lower still while its trace lands (`ingest_memory`).
        self.con.execute("SET preserve_insertion_order = false")
        # The store's strings are names repeated across rows (kernels, API calls, NVTX ranges), which
        # dictionary compression stores as small or smaller; FSST's analysis cost ~10 ms a trace at commit.
        self.con.execute("SET disabled_compression_methods = 'fsst'")
        # DuckDB draws its own progress bar on the terminal for a query over 2 s (a large trace's insert),
        # over traceforge's bar and output lines.
        self.con.execute("SET enable_progress_bar = false")
        self.memory_limit = os.environ.get("TRACEFORGE_MEMORY_LIMIT", "512MB")
        if self.memory_limit:
            self.con.execute(f"SET memory_limit = '{self.memory_limit}'")
        if self._checkpoint_each_commit:
            # A writer that closes the file after each trace checkpoints then anyway: write each commit
            # straight into the file rather than into the log first and the file at close.
            self.con.execute("SET checkpoint_threshold = '0b'")

    def _create_schema(self, *, new: bool) -> None:
        """Create the trace schema: plain tables, the storage tables, and the views over them.

        A store already holding this version's layout (``LAYOUT_VERSION`` and the DDL's digest are recorded
        in the store) is left alone, so opening it costs one small query; a store of an earlier layout is
        upgraded in place by the steps of ``LAYOUT_UPGRADES`` above its recorded version.
        ``new``: the file did not exist, so there is nothing to look up or upgrade.
        """
        import duckdb

        digest = layout_digest()
        if not new:
            self._refuse_foreign()
        version = LAYOUT_VERSION if new else self._recorded_layout(digest)
        if version is None:
            return
        tables = [statement for table, statement in DDL.items() if table not in VIEW_DDL]
        try:
            with self.transaction() as con:
                # One script: DuckDB parses and runs it in one call instead of ~30 round trips.
                con.execute(
                    ";\n".join(
                        [f"CREATE SCHEMA IF NOT EXISTS {STORAGE_SCHEMA}", *STORAGE_DDL.values(), *tables]
                    )
                )
                upgrade_layout(con, version)
                con.execute(
                    ";\n".join(
                        [
                            *VIEW_DDL.values(),
                            f"CREATE OR REPLACE TABLE {STORAGE_SCHEMA}.{LAYOUT_TABLE} "
                            "(version INTEGER, digest VARCHAR)",
                            f"INSERT INTO {STORAGE_SCHEMA}.{LAYOUT_TABLE} "
                            f"VALUES ({LAYOUT_VERSION}, '{digest}')",
                        ]
                    )
                )
        except duckdb.Error as exc:
            if is_interruption(exc):
                raise KeyboardInterrupt from exc
            message = f"cannot create the traceforge schema: {_first_line(exc)}"
            raise StoreError(message, path=self.path) from exc

    def _refuse_foreign(self) -> None:
        """Refuse a DuckDB file that holds tables but is not a traceforge store (no ``traces`` table).

        traceforge would otherwise add its two dozen tables to someone else's database. An empty file (no
        table, no view) becomes a store.
        """
        rows = self.con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database()"
        ).fetchall()
        names = {(str(schema), str(name)) for schema, name in rows}
        if not names or ("main", "traces") in names:
            return
        listed = ", ".join(sorted(f"{schema}.{name}" if schema != "main" else name for schema, name in names))
        if len(listed) > 120:
            listed = listed[:117] + "..."
        raise StoreError(
            f"is a DuckDB database but not a traceforge store (it holds {len(names)} other table(s): "
            f"{listed}); name a new file or a traceforge store with --db",
            path=self.path,
        )

    def _recorded_layout(self, digest: str) -> int | None:
        """The layout version recorded in this store, or None when it is this build's layout exactly.

        Stores written before layout versions were recorded hold only a digest (or no layout table at
        all): they count as version 0, and every upgrade step runs (each finds what it has to change).
        """
        import duckdb

        try:
            rows = self.con.execute(f"SELECT * FROM {STORAGE_SCHEMA}.{LAYOUT_TABLE}").fetchall()
            columns = [d[0] for d in self.con.description or []]
        except duckdb.CatalogException:
            return 0
        if "version" not in columns or len(rows) != 1:
            return 0
        recorded = dict(zip(columns, rows[0]))
        version = int(recorded["version"] or 0)
        if version == LAYOUT_VERSION and recorded.get("digest") == digest:
            return None
        if version > LAYOUT_VERSION:
            raise StoreError(
                f"this store has layout version {version}, newer than this traceforge understands "
                f"({LAYOUT_VERSION}); upgrade traceforge",
                path=self.path,
            )
        return version

    def ensure_schema(self, ddl: dict[str, str]) -> None:
        """Create the tables in ``ddl`` that do not exist yet (idempotent)."""
        for statement in ddl.values():
            self.con.execute(statement)

    @contextlib.contextmanager
    def checkpoint_each_commit(self) -> Iterator[None]:
        """Write each committed transaction straight into the database file while the block runs.

        By default a commit goes to the write-ahead log and reaches the file at the next checkpoint (when
        the log has grown, or the store closes), so a lone trace's rows are written twice. An ingest of one
        trace checkpoints at its commit instead: 11 ms less on llama1b_n1 x6, and no log left behind. Many
        traces keep the log, since a checkpoint per small trace would cost more than it saves.
        """
        if self.path == ":memory:":
            yield
            return
        # Kept across `release` (set again when the file is opened again).
        self._checkpoint_each_commit = True
        self.con.execute("SET checkpoint_threshold = '0b'")
        try:
            yield
        finally:
            self._checkpoint_each_commit = False
            if self._con is not None:
                self._con.execute("RESET checkpoint_threshold")

    @contextlib.contextmanager
    def ingest_memory(self, *, long_strings: int = 0) -> Iterator[None]:
        """Size DuckDB for an ingest while the block runs: few threads, a small buffer pool.

        ``long_strings``: the trace's ``long_string_bytes`` (strings of 4 KiB or more one table may hold);
        the pool grows by ``INGEST_MEMORY_PER_LONG_STRING_BYTE`` times them, since DuckDB keeps such
        strings pinned until their rows are written (88 MB of NVTX text ran the 64MB pool out of memory).

        Threads: at most ``TRACEFORGE_INGEST_THREADS`` (default 4). Each inserting thread fills its own row
        group, pinning a block per column, so DuckDB's default of a thread per core ran a 64MB pool out of
        memory on hosts of 24 cores or more (llama1b_n1 x6), and beyond a few threads more of them add
        memory, not speed: the rows come from one stream.

        Pool: ``TRACEFORGE_INGEST_MEMORY_LIMIT`` (default 64MB), raised to leave every inserting thread
        ``INGEST_MEMORY_PER_THREAD``. DuckDB keeps the rows of the open transaction in that pool and
        writes them out beyond it, so the smaller pool keeps them from adding to the core's own peak (25M
        kernels: 2.63 -> 2.41 GB) at no measured cost in time. Queries keep the larger limit. An in-memory
        store keeps its pool, since its data lives there.
        """
        threads = int(self.con.execute("SELECT current_setting('threads')").fetchone()[0])  # type: ignore[index]
        ingest_threads = max(1, min(threads, _env_int(INGEST_THREADS_ENV, DEFAULT_INGEST_THREADS, self.path)))
        limit = os.environ.get(INGEST_MEMORY_LIMIT_ENV, DEFAULT_INGEST_MEMORY_LIMIT)
        lower_pool = bool(limit) and self.path != ":memory:"
        if lower_pool:
            floor = ingest_threads * INGEST_MEMORY_PER_THREAD
            pool = max(_size_bytes(limit, INGEST_MEMORY_LIMIT_ENV, self.path), floor)
            pool += int(INGEST_MEMORY_PER_LONG_STRING_BYTE * max(0, long_strings))
            self.con.execute(f"SET memory_limit = '{pool}B'")
        self.con.execute(f"SET threads = {ingest_threads}")
        try:
            yield
        finally:
            self.con.execute(f"SET threads = {threads}")
            if lower_pool:
                if self.memory_limit:
                    self.con.execute(f"SET memory_limit = '{self.memory_limit}'")
                else:
                    self.con.execute("RESET memory_limit")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block in one transaction: everything lands, or nothing does."""
        con = self.con
        con.execute("BEGIN TRANSACTION")
        self._in_transaction = True
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            self._in_transaction = False
        con.execute("COMMIT")

    def sql(self, query: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Run a query and return its result as a polars DataFrame."""
        import duckdb

        text = bind(query, params) if params else query
        try:
            relation = self.con.sql(text)
        except duckdb.Error as exc:
            if is_interruption(exc):
                raise KeyboardInterrupt from exc
            raise QueryError(_query_error(self.con, text, exc)) from exc
        try:
            return _to_polars(relation)
        except duckdb.Error as exc:
            if is_interruption(exc):
                raise KeyboardInterrupt from exc
            raise QueryError(str(exc).strip() or type(exc).__name__) from exc

    def traces(self) -> pl.DataFrame:
        """The stored traces, newest first."""
        return self.sql(
            "SELECT trace_id, source_path, nsys_version, schema_version, gpus, kernel_count, "
            "api_call_count, ingested_at FROM traces ORDER BY ingested_at DESC"
        )

    def has_fingerprint(self, fingerprint: str) -> str | None:
        """The trace id stored for this content fingerprint, or None."""
        row = self.con.execute(
            bind("SELECT trace_id FROM traces WHERE fingerprint = ?", [fingerprint])
        ).fetchone()
        return None if row is None else str(row[0])

    def has_file_size(self, size: int) -> bool:
        """Whether a stored trace was read from a file of exactly ``size`` bytes."""
        row = self.con.execute(
            bind("SELECT 1 FROM traces WHERE file_size_bytes = ? LIMIT 1", [size])
        ).fetchone()
        return row is not None

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _query_error(con: duckdb.DuckDBPyConnection, query: str, exc: BaseException) -> str:
    """DuckDB's whole message for a query it refused: its hints ("Did you mean", candidates, position).

    The relation API leaves out the position (``LINE 1: ...``) that ``execute`` gives; a lone SELECT that
    failed to bind fails again at once, without running, so it is asked again for the full text.
    """
    import duckdb

    message = str(exc).strip() or type(exc).__name__
    try:
        statements = con.extract_statements(query)
        if len(statements) == 1 and str(statements[0].type).rsplit(".", 1)[-1] == "SELECT":
            con.execute(query)
    except duckdb.Error as again:
        if str(again).strip().startswith(message.splitlines()[0]):
            return str(again).strip()
    except Exception:  # noqa: BLE001 - the first message stands
        pass
    return message


def _to_polars(relation: Any) -> pl.DataFrame:
    """Convert a DuckDB relation to polars: unique column names, every type (see ``result.to_polars``)."""
    return to_polars(relation)


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def _size_bytes(text: str, variable: str, path: str) -> int:
    """Bytes of a DuckDB-style size (``64MB``, ``1.5GiB``; MB = 1000**2 as in DuckDB)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise StoreError(f"{variable}={text!r} is not a size such as 64MB or 1GiB", path=path)
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _env_int(variable: str, default: int, path: str) -> int:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise StoreError(f"{variable}={text!r} is not a whole number", path=path) from None


def _refuse_non_duckdb(path: str) -> None:
    """Refuse a ``--db`` that is a SQLite file (an nsys export, most likely) before DuckDB sees it.

    DuckDB would take it for a database to attach through its sqlite extension and try to download that.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError:
        return  # absent (created) or unreadable: DuckDB's own message says which
    if head == _SQLITE_MAGIC:
        raise StoreError(
            "is a SQLite database (an nsys export?), not a traceforge store: ingest it with "
            "`traceforge ingest FILE`, and give --db a DuckDB file (e.g. traceforge.duckdb)",
            path=path,
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
