"""A durable columnar copy of the store: hive-partitioned Parquet, one partition per trace.

Layout of a dataset directory ``DIR``::

    DIR/traces/trace_id=<id>/data.parquet    # the trace's ``traces`` row: written last, the commit mark
    DIR/kernels/trace_id=<id>/data.parquet   # one directory per table of docs/schema.md
    ...
    DIR/_tmp/                                 # partitions being written (ignored by readers)

Every file keeps its ``trace_id`` column as well as the ``trace_id=<id>`` directory name, so a reader gets a
VARCHAR id even when hive type inference would have turned an all-digit id into a number. Column types are
those of the store's DDL: files are written by DuckDB's ``COPY ... TO ... (FORMAT parquet)`` from tables
created with :data:`traceforge.store.schema.DDL`, never through pyarrow.

A partition is written into ``DIR/_tmp/`` and then renamed into place table by table, ``traces`` last, so a
partition counts as present only once its ``traces`` directory exists; a job killed half-way leaves at most
orphan table directories without a ``traces`` one, which :func:`repair` removes and the next write replaces.

**Two forms.** The *public* form above (the tables of docs/schema.md) is what ``ingest --output`` keeps and
``traceforge export --format parquet`` writes: readable by anything that reads Parquet. The *storage*
form (:func:`stage_trace`, :func:`load_staged`) holds the store's own base tables as they are stored
(class tables, packed row STRUCTs; directories ``<schema>.<table>`` for the private schema), so loading it
is a plain copy. A batch's coordinator, the one writer, would otherwise re-derive the class ids of every
row (1.7 s against 0.4 s for the llama1b_n1 capture): the bottleneck of a batch on 16 cores. It is
private to one build (a staging dataset is named for the store's layout digest) and lives only in a
batch's staging dataset.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DatasetError
from .schema import DDL, TRACE_TABLES
from .sql_params import bind, literal
from .storage import delete_trace_rows, load_public_rows

if TYPE_CHECKING:
    import duckdb

    from .store import Store

#: Tables of one trace's partition, in publication order: ``traces`` last marks the partition complete.
PARTITION_TABLES: tuple[str, ...] = (*TRACE_TABLES, "traces")

#: Tables added to partitions after the dataset format was first released (CUDA graphs, issue 21; GPU metrics,
#: issue 15): a partition written by an earlier traceforge has none, and loads without them.
LATER_PARTITION_TABLES: tuple[str, ...] = (
    "graph_launches",
    "graph_summary",
    "gpu_metrics",
    "gpu_metric_summary",
    "nvtx_gpu_metrics",
)

#: Name of the directory holding partitions being written.
TMP_DIR = "_tmp"

_PARQUET_OPTIONS = "(FORMAT parquet, COMPRESSION zstd)"


def partition_dir(root: str | os.PathLike[str], table: str, trace_id: str) -> Path:
    """Return the directory holding ``table``'s rows of one trace."""
    _check_id(trace_id)
    return Path(root) / table / f"trace_id={trace_id}"


def partition_file(root: str | os.PathLike[str], table: str, trace_id: str) -> Path:
    """Return the Parquet file holding ``table``'s rows of one trace."""
    return partition_dir(root, table, trace_id) / "data.parquet"


def has_partition(root: str | os.PathLike[str], trace_id: str) -> bool:
    """Whether the dataset holds a complete partition of this trace."""
    return partition_file(root, "traces", trace_id).is_file()


def list_partitions(root: str | os.PathLike[str]) -> list[str]:
    """Trace ids of the complete partitions of a dataset, sorted."""
    traces_dir = Path(root) / "traces"
    if not traces_dir.is_dir():
        return []
    ids = []
    for entry in traces_dir.iterdir():
        if entry.name.startswith("trace_id=") and (entry / "data.parquet").is_file():
            ids.append(entry.name.split("=", 1)[1])
    return sorted(ids)


def repair(root: str | os.PathLike[str]) -> list[str]:
    """Remove what killed writers left behind: temporary directories and orphan table partitions.

    Temporary directories are named after the writing process; those of a process still alive on this host
    are kept (another batch may be writing into the same dataset).

    Returns:
        The paths removed.
    """
    root = Path(root)
    removed: list[str] = []
    tmp = root / TMP_DIR
    if tmp.is_dir():
        for entry in tmp.iterdir():
            if entry.name.startswith(".") or _writer_alive(entry.name):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(str(entry))
    complete = set(list_partitions(root))
    for table_dir in _table_dirs(root):
        if table_dir.name == "traces":
            continue
        for entry in table_dir.iterdir():
            if entry.name.startswith("trace_id=") and entry.name.split("=", 1)[1] not in complete:
                if _partition_being_written(root, entry.name.split("=", 1)[1]):
                    continue
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(str(entry))
    return removed


def write_partition(
    root: str | os.PathLike[str],
    trace_row: Mapping[str, Any],
    tables: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> bool:
    """Write one trace's partition from the reader's output.

    The rows go through an in-memory DuckDB database whose tables have the store's DDL, so the files carry
    exactly the store's column names and types whatever the producer's Arrow types were.

    Args:
        root: the dataset directory (created when absent).
        trace_row: the trace's row of ``traces`` (column name -> value); must hold ``trace_id``.
        tables: table name -> object with ``__arrow_c_stream__`` (read once); tables of
            :data:`~traceforge.store.schema.TRACE_TABLES` that are absent are written empty.
        overwrite: replace an existing partition of the same trace instead of keeping it.

    Returns:
        True when the partition was written, False when a complete one was already there.
    """
    import duckdb

    trace_id = str(trace_row["trace_id"])
    if not overwrite and has_partition(root, trace_id):
        return False
    unknown = sorted(set(tables) - set(TRACE_TABLES))
    if unknown:
        raise DatasetError(f"unknown table(s) for a trace partition: {', '.join(unknown)}", path=str(root))
    con = duckdb.connect(":memory:")
    try:
        for table in PARTITION_TABLES:
            con.execute(DDL[table])
        columns = [row[0] for row in con.execute("DESCRIBE traces").fetchall()]
        values = [trace_row.get(name) for name in columns]
        con.execute(
            bind(
                f"INSERT INTO traces ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                values,
            )
        )
        for table, source in tables.items():
            # A view over the Arrow stream lets DuckDB match columns by name and cast to the DDL types.
            con.register("_tf_source", _ArrowStream(source))
            try:
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _tf_source")
            finally:
                con.unregister("_tf_source")
            con.execute(bind(f"UPDATE {table} SET trace_id = ? WHERE trace_id IS NULL", [trace_id]))
        with _staging(root, trace_id) as stage:
            for table in PARTITION_TABLES:
                target = partition_file(stage, table, trace_id)
                target.parent.mkdir(parents=True, exist_ok=True)
                con.execute(f"COPY {table} TO {literal(str(target))} {_PARQUET_OPTIONS}")
            _publish(stage, root, trace_id)
    except duckdb.Error as exc:
        raise DatasetError(
            f"cannot write the partition of trace {trace_id}: {_first_line(exc)}", path=str(root)
        ) from exc
    finally:
        con.close()
    return True


def export_trace(
    con: duckdb.DuckDBPyConnection, root: str | os.PathLike[str], trace_id: str, *, overwrite: bool = False
) -> bool:
    """Write one stored trace's partition straight from the store's tables.

    Args:
        con: a connection to the store (read-only is enough).
        root: the dataset directory.
        trace_id: the trace to export.
        overwrite: replace an existing partition instead of keeping it.

    Returns:
        True when written, False when a complete partition was already there.
    """
    import duckdb

    if not overwrite and has_partition(root, trace_id):
        return False
    queries = [(table, f"SELECT * FROM {table} WHERE trace_id = ?") for table in PARTITION_TABLES]
    try:
        _copy_out(con, root, trace_id, queries, _PARQUET_OPTIONS, overwrite=True)
    except duckdb.Error as exc:
        raise DatasetError(f"cannot export trace {trace_id}: {_first_line(exc)}", path=str(root)) from exc
    return True


def _copy_out(
    con: duckdb.DuckDBPyConnection,
    root: str | os.PathLike[str],
    trace_id: str,
    queries: Sequence[tuple[str, str]],
    options: str,
    *,
    overwrite: bool,
) -> bool:
    """Write one partition: each ``(directory, query with one ? for the trace id)`` copied to its file.

    The files go into a private staging directory and are published together (:func:`_publish`, the last
    directory being ``traces``). Returns what :func:`_publish` returns.
    """
    with _staging(root, trace_id) as stage:
        for name, query in queries:
            target = partition_file(stage, name, trace_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            con.execute(bind(f"COPY ({query}) TO {literal(str(target))} {options}", [trace_id]))
        return _publish(stage, root, trace_id, [name for name, _ in queries], overwrite=overwrite)


def _check_group(root: str | os.PathLike[str], items: Sequence[tuple[str, str | None, bool]]) -> str:
    """Refuse a load naming a trace twice; return how to name the group in messages."""
    ids = [item[0] for item in items]
    if len(set(ids)) != len(ids):
        raise DatasetError("the same trace twice in one load", path=str(root))
    return f"trace {ids[0]}" if len(ids) == 1 else f"{len(ids)} traces"


def _clear_for_load(
    con: duckdb.DuckDBPyConnection,
    root: str | os.PathLike[str],
    items: Sequence[tuple[str, str | None, bool]],
) -> None:
    """Inside the load's transaction: every partition must be complete; replaced traces' rows go first."""
    for trace_id, _source, replace in items:
        if not has_partition(root, trace_id):
            raise DatasetError(f"no complete partition of trace {trace_id}", path=str(root))
        if replace:
            delete_trace_rows(con, trace_id)


def load_partition(
    store: Store,
    root: str | os.PathLike[str],
    trace_id: str,
    *,
    replace: bool = False,
    source_path: str | None = None,
) -> int:
    """Copy one trace's partition into the store, in one transaction.

    Args:
        store: the writable store.
        root: the dataset directory.
        trace_id: the trace whose partition to load.
        replace: delete the trace's rows already in the store first (a forced re-ingest).
        source_path: the file this content was read from now (the partition may have been written from
            another name of the same content, or by an earlier run).

    Returns:
        The number of kernel rows loaded.

    Raises:
        DatasetError: the partition is incomplete or unreadable; nothing was written.
    """
    return load_partitions(store, root, [(trace_id, source_path, replace)])[trace_id]


def load_partitions(
    store: Store, root: str | os.PathLike[str], items: Sequence[tuple[str, str | None, bool]]
) -> dict[str, int]:
    """Copy several traces' partitions into the store in one transaction: all of them land, or none.

    One ``INSERT ... SELECT * FROM read_parquet([...])`` per table for the whole group: loading many small
    traces costs a few statements instead of a few per trace.

    Args:
        store: the writable store.
        root: the dataset directory.
        items: ``(trace_id, source_path, replace)`` per trace, as for :func:`load_partition`.

    Returns:
        Kernel rows loaded per trace id.

    Raises:
        DatasetError: a partition is incomplete or unreadable; nothing was written.
    """
    import duckdb

    what = _check_group(root, items)
    ids = [item[0] for item in items]
    try:
        with dataset_lock(root), store.transaction() as con:
            _clear_for_load(con, root, items)
            for table in PARTITION_TABLES:
                files = [partition_file(root, table, trace_id) for trace_id in ids]
                if table in LATER_PARTITION_TABLES:
                    files = [path for path in files if path.is_file()]
                    if not files:
                        continue
                for path in files:
                    if not path.is_file():
                        raise DatasetError(f"partition lacks table {table}", path=str(path))
                load_public_rows(
                    con,
                    table,
                    "SELECT * FROM read_parquet($files, union_by_name = true)",
                    {"files": [str(path) for path in files]},
                )
            counts = _stamp_loaded(con, items, count_rows=True)
    except duckdb.Error as exc:
        raise DatasetError(
            f"cannot load the partition of {what}: {_first_line(exc)}", path=str(root)
        ) from exc
    return counts


#: Parquet options of the storage form: staged partitions live seconds to minutes, so speed beats size.
#: Uncompressed, a worker writes the llama1b_n1 capture's partition in 0.16 s against 0.24 s with lz4 and
#: 0.32 s with zstd (22.7 / 13.8 / 6.4 MB), and the coordinator loads it as fast as lz4.
_STAGING_OPTIONS = "(FORMAT parquet, COMPRESSION uncompressed)"


def storage_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """The store's base tables holding a trace's rows: ``(schema, table, directory name)``, ``traces`` last.

    Found in the catalog (:func:`traceforge.store.storage.trace_keyed_tables`), runner tables excluded:
    their rows are not part of a trace. Tables of the main schema are named as they are; the others
    ``<schema>.<table>``.
    """
    from .storage import runner_tables, trace_keyed_tables

    runners = runner_tables()
    found = [
        (schema, table, table if schema == "main" else f"{schema}.{table}")
        for schema, table in trace_keyed_tables(con)
        if not (schema == "main" and table in runners)
    ]
    return sorted(found, key=lambda item: (item[2] == "traces", item[2]))


def stage_trace(
    con: duckdb.DuckDBPyConnection, root: str | os.PathLike[str], trace_id: str, *, overwrite: bool = False
) -> bool:
    """Write one stored trace's partition in the storage form (its rows exactly as the store holds them).

    Tables without rows of the trace get no file (most of a trace's ~30 tables are empty or tiny, and a
    statement costs ~2 ms); :func:`load_staged` reads a missing file as no rows. Nothing is lost that way:
    a partition counts only once its ``traces`` file is published, after every table's.

    Args:
        con: a connection to a store holding the trace (a worker's private in-memory store).
        root: the staging dataset directory.
        trace_id: the trace to write.
        overwrite: replace an existing partition instead of keeping it.

    Returns:
        True when written, False when a complete partition was already there.
    """
    import duckdb

    from .storage import trace_keyed_tables

    if not overwrite and has_partition(root, trace_id):
        return False
    where = trace_keyed_tables(con)
    try:
        tables = storage_tables(con)
        counts = con.execute(
            bind(
                " UNION ALL ".join(
                    f'SELECT {literal(name)}, count(*) FROM "{schema}"."{table}" '
                    f"WHERE {where[(schema, table)]}"
                    for schema, table, name in tables
                ),
                [trace_id] * len(tables),
            )
        ).fetchall()
        present = {str(name) for name, count in counts if count}
        queries = [
            (name, f'SELECT * FROM "{schema}"."{table}" WHERE {where[(schema, table)]}')
            for schema, table, name in tables
            if name in present or name == "traces"
        ]
        return _copy_out(con, root, trace_id, queries, _STAGING_OPTIONS, overwrite=overwrite)
    except duckdb.Error as exc:
        raise DatasetError(f"cannot stage trace {trace_id}: {_first_line(exc)}", path=str(root)) from exc


def load_staged(
    store: Store,
    root: str | os.PathLike[str],
    items: Sequence[tuple[str, str | None, bool]],
    *,
    con: duckdb.DuckDBPyConnection | None = None,
) -> dict[str, int]:
    """Copy several traces' storage-form partitions into the store in one transaction: all land, or none.

    The same contract as :func:`load_partitions`, for partitions written by :func:`stage_trace` of this
    build: one ``INSERT ... SELECT * FROM read_parquet([...])`` per table for the whole group, no per-row
    work (DuckDB spreads each over its threads). ``con``: a connection of its own to the store (a cursor of
    ``store.con``) for a load on another thread, in a transaction of its own; None uses ``store.con``.

    Unlike :func:`load_partitions` it does not take the dataset's lock, so that loads of several groups
    run side by side: a staged partition is published once (:func:`stage_trace` replaces one only when
    forced) and removed only by the loader, after its load.

    Raises:
        DatasetError: a partition is incomplete or unreadable; nothing was written.
    """
    import duckdb

    what = _check_group(root, items)
    ids = [item[0] for item in items]
    try:
        with _transaction(store, con) as con:
            _clear_for_load(con, root, items)
            for schema, table, name in storage_tables(con):
                # No file: the trace has no rows in that table (stage_trace writes none).
                files = [path for path in (partition_file(root, name, t) for t in ids) if path.is_file()]
                if not files:
                    continue
                # BY NAME: a store upgraded in place may order its columns differently from a new one.
                con.execute(
                    bind(
                        f'INSERT INTO "{schema}"."{table}" BY NAME '
                        "SELECT * FROM read_parquet($files, hive_partitioning = false)",
                        {"files": [str(path) for path in files]},
                    )
                )
            counts = _stamp_loaded(con, items, count_rows=False)
    except duckdb.Error as exc:
        raise DatasetError(
            f"cannot load the staged partition of {what}: {_first_line(exc)}", path=str(root)
        ) from exc
    return counts


@contextlib.contextmanager
def _transaction(store: Store, con: duckdb.DuckDBPyConnection | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """``store.transaction()``, or the same on a connection of the caller's."""
    if con is None:
        with store.transaction() as own:
            yield own
        return
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _stamp_loaded(
    con: duckdb.DuckDBPyConnection, items: Sequence[tuple[str, str | None, bool]], *, count_rows: bool
) -> dict[str, int]:
    """Stamp loaded traces' ``ingested_at`` and source path; return their kernel counts.

    ``count_rows``: count the loaded ``kernels`` rows (a public partition may come from any producer)
    rather than read ``traces.kernel_count`` (which the core wrote with the rows of a staged one).
    """
    ids = [item[0] for item in items]
    con.execute(
        bind(
            "UPDATE traces SET ingested_at = now()::TIMESTAMP WHERE trace_id IN (SELECT unnest($ids))",
            {"ids": ids},
        ),
    )
    for trace_id, source_path, _replace in items:
        if source_path is not None:
            con.execute(
                bind(
                    "UPDATE traces SET source_path = $src, export_path = CASE WHEN export_path = "
                    "source_path THEN $src ELSE export_path END WHERE trace_id = $tid",
                    {"src": source_path, "tid": trace_id},
                ),
            )
    query = (
        "SELECT trace_id, count(*) FROM kernels WHERE trace_id IN (SELECT unnest($ids)) GROUP BY 1"
        if count_rows
        else "SELECT trace_id, kernel_count FROM traces WHERE trace_id IN (SELECT unnest($ids))"
    )
    rows = con.execute(bind(query, {"ids": ids})).fetchall()
    counts = {str(r[0]): int(r[1] or 0) for r in rows}
    return {trace_id: counts.get(trace_id, 0) for trace_id in ids}


def remove_partition(root: str | os.PathLike[str], trace_id: str) -> None:
    """Delete one trace's partition (the ``traces`` mark first, so a half-removed one reads as absent)."""
    with dataset_lock(root):
        shutil.rmtree(partition_dir(root, "traces", trace_id), ignore_errors=True)
        for table_dir in _table_dirs(root):
            shutil.rmtree(partition_dir(root, table_dir.name, trace_id), ignore_errors=True)


def _table_dirs(root: str | os.PathLike[str]) -> list[Path]:
    """The table directories of a dataset, of either form (everything but ``_tmp`` and hidden entries)."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(
        entry
        for entry in base.iterdir()
        if entry.is_dir() and entry.name != TMP_DIR and not entry.name.startswith(".")
    )


def export_store(
    store: Store,
    root: str | os.PathLike[str],
    *,
    trace_ids: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Iterator[tuple[str, bool]]:
    """Export stored traces as partitions, one at a time.

    Args:
        store: the store to read.
        root: the dataset directory (created when absent).
        trace_ids: the traces to export; None means all.
        overwrite: rewrite partitions already present.

    Yields:
        ``(trace_id, written)`` for each trace, ``written`` False when its partition was kept.
    """
    from ..errors import QueryError

    rows = store.con.execute("SELECT trace_id FROM traces ORDER BY trace_id").fetchall()
    stored = [str(r[0]) for r in rows]
    if trace_ids is not None:
        missing = sorted(set(trace_ids) - set(stored))
        if missing:
            raise QueryError(f"no such trace in the store: {', '.join(missing)}", path=store.path)
        wanted = set(trace_ids)
        stored = [t for t in stored if t in wanted]
    ensure_writable(root)
    repair(root)
    for trace_id in stored:
        yield trace_id, export_trace(store.con, root, trace_id, overwrite=overwrite)


def ensure_writable(root: str | os.PathLike[str]) -> None:
    """Create the dataset directory, failing with one clear line when it cannot be."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError("exists and is not a directory", path=str(root))
    try:
        (root / TMP_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"cannot create the dataset directory: {exc.strerror or exc}", path=str(root)
        ) from exc
    if not os.access(root, os.W_OK):
        raise DatasetError("the dataset directory is not writable", path=str(root))


@contextlib.contextmanager
def _staging(root: str | os.PathLike[str], trace_id: str) -> Iterator[Path]:
    """Make a private temporary directory inside the dataset (same file system: renames are atomic)."""
    stage = Path(root) / TMP_DIR / f"{trace_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir(parents=True)
    except OSError as exc:
        raise DatasetError(f"cannot write into the dataset: {exc.strerror or exc}", path=str(root)) from exc
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def dataset_lock(root: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the dataset's lock: publishing, removing and loading partitions never interleave.

    Two jobs given the same content under two names publish the same trace id; without the lock, a loader
    could see one job's ``traces`` mark while the other is swapping a table directory. The lock is
    ``flock`` on ``DIR/_tmp/.lock`` (works across processes and hosts sharing the directory over NFSv4).
    """
    import fcntl

    lock_path = Path(root) / TMP_DIR / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _publish(
    stage: Path,
    root: str | os.PathLike[str],
    trace_id: str,
    tables: Sequence[str] = PARTITION_TABLES,
    *,
    overwrite: bool = True,
) -> bool:
    """Move a staged partition (its table directories ``tables``, ``traces`` last) into the dataset.

    Returns False, leaving the dataset alone, when a complete partition of the trace is there and
    ``overwrite`` is False (two jobs given the same content: the second keeps the first's partition, which
    a loader may be reading).
    """
    assert tables[-1] == "traces"
    with dataset_lock(root):
        if not overwrite and has_partition(root, trace_id):
            return False
        # An existing complete partition is unpublished first (mark first), so no reader ever sees a
        # ``traces`` row whose other tables are a mix of the old and new partition.
        shutil.rmtree(partition_dir(root, "traces", trace_id), ignore_errors=True)
        for table in tables:
            source = partition_dir(stage, table, trace_id)
            dest = partition_dir(root, table, trace_id)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                os.rename(dest, stage / f"old-{table}")
            os.rename(source, dest)
        return True


class _ArrowStream:
    """Expose only ``__arrow_c_stream__``, so DuckDB takes the zero-copy C stream path.

    Handed a polars DataFrame or a DuckDB relation directly, DuckDB recognises the type and converts it
    through pyarrow, which traceforge does not depend on.
    """

    def __init__(self, source: Any) -> None:
        if not hasattr(source, "__arrow_c_stream__"):
            raise DatasetError(f"not an Arrow stream: {type(source).__name__}")
        self._source = source

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._source.__arrow_c_stream__(requested_schema)


def _writer_alive(tmp_name: str) -> bool:
    """Whether the process that named a temporary directory ``<id>.<pid>.<rand>`` still runs here."""
    parts = tmp_name.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A killed worker whose parent died too can linger as a zombie nobody reaps (PID 1 in a container).
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _partition_being_written(root: Path, trace_id: str) -> bool:
    tmp = root / TMP_DIR
    if not tmp.is_dir():
        return False
    return any(e.name.startswith(f"{trace_id}.") and _writer_alive(e.name) for e in tmp.iterdir())


def _check_id(trace_id: str) -> None:
    # Ids become directory names: anything but the documented 16 hex digits could escape the dataset.
    if len(trace_id) != 16 or any(c not in "0123456789abcdef" for c in trace_id):
        raise DatasetError(f"not a trace id (16 lowercase hex digits): {trace_id!r}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "PARTITION_TABLES",
    "DatasetError",
    "ensure_writable",
    "export_store",
    "export_trace",
    "has_partition",
    "list_partitions",
    "load_partition",
    "load_partitions",
    "load_staged",
    "partition_dir",
    "partition_file",
    "remove_partition",
    "dataset_lock",
    "repair",
    "stage_trace",
    "storage_tables",
    "write_partition",
]
