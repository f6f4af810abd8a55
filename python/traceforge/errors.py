"""Exception hierarchy of traceforge.

Every error a user can cause carries a stable machine-readable ``code`` beside its one-line message, and
subclasses the built-in exception an ``except`` clause would expect (``FileNotFoundError`` for a missing
path, ``ValueError`` for bad input). The Rust core raises these same classes (``class_for_code``). Every
exception class of the package is declared here, each with a code of its own; the modules that raise
them re-export them under their old names (``traceforge.ingest.batch.BatchError``, ...).
"""

from __future__ import annotations


class TraceforgeError(Exception):
    """Base class of every traceforge error."""

    code = "error"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InputNotFoundError(TraceforgeError, FileNotFoundError):
    """A path given by the user does not exist."""

    code = "not_found"


class InputPermissionError(TraceforgeError, PermissionError):
    """A path exists but cannot be read."""

    code = "permission"


class NotAnExportError(TraceforgeError, ValueError):
    """The file is not an nsys SQLite export (not SQLite at all, a directory, or a foreign database)."""

    code = "not_an_export"


class CorruptExportError(TraceforgeError, ValueError):
    """The SQLite file is truncated or corrupted."""

    code = "corrupt"


class MissingTableError(TraceforgeError, ValueError):
    """A table traceforge needs is absent (e.g. a capture without CUDA kernels)."""

    code = "missing_table"


class UnsupportedSchemaError(TraceforgeError, ValueError):
    """The export's schema version or columns are not understood."""

    code = "unsupported_schema"


class NsysNotFoundError(TraceforgeError, RuntimeError):
    """A ``.nsys-rep`` needs ``nsys export`` and no usable nsys was found or it refused the report."""

    code = "nsys_unavailable"


class StoreError(TraceforgeError, RuntimeError):
    """The DuckDB store cannot be opened or written."""

    code = "store"


class StoreBusyError(StoreError):
    """Another process holds the store's file lock (a writer's transaction) for longer than we wait."""

    code = "store_busy"


class QueryError(TraceforgeError, ValueError):
    """A SQL query, column or trace id given by the user is invalid."""

    code = "query"


class SpecError(TraceforgeError, ValueError):
    """A sweep specification is invalid."""

    code = "spec"


class IngestInterrupted(TraceforgeError, KeyboardInterrupt):
    """Ctrl-C during an ingest; nothing of the interrupted trace was written."""

    code = "interrupted"


class InputIOError(TraceforgeError, OSError):
    """An input file exists but reading it failed (an I/O error of the system)."""

    code = "io"


class InvalidArgumentError(TraceforgeError, ValueError):
    """An argument given to the core is invalid (for example a thread count out of range)."""

    code = "invalid"


class InternalError(TraceforgeError, RuntimeError):
    """A bug: an unexpected exception while ingesting one file (it cost that file, not the batch)."""

    code = "internal"


class BatchError(TraceforgeError, RuntimeError):
    """The batch as a whole cannot run (its workers cannot start)."""

    code = "batch"


class WorkerDiedError(TraceforgeError, RuntimeError):
    """The worker process (or Dask worker) processing a file died: a crash or out of memory."""

    code = "worker_died"


class SchedulerUnavailableError(TraceforgeError, ConnectionError):
    """The Dask scheduler given by ``--scheduler`` or ``DASK_SCHEDULER_ADDRESS`` cannot be reached."""

    code = "scheduler_unavailable"


class DatasetError(TraceforgeError, OSError):
    """A Parquet dataset directory cannot be written or read."""

    code = "dataset"


class SynthArgumentError(TraceforgeError, ValueError):
    """A generator parameter (``kernels``, ``devices``, ``streams``, ``seed``, ``requests``) is invalid."""

    code = "synth_argument"


class SynthOutputError(TraceforgeError, OSError):
    """The output file of ``synth`` cannot be created or written."""

    code = "synth_output"


class SynthExistsError(SynthOutputError, FileExistsError):
    """The output file of ``synth`` exists and overwriting was not requested."""

    code = "synth_exists"


class SynthModelError(TraceforgeError, RuntimeError):
    """The synthetic-export generator failed inside (its timing model; please report it)."""

    code = "synth_model"


class SynthInterrupted(TraceforgeError, KeyboardInterrupt):
    """Generation was interrupted; no output was left behind."""

    code = "synth_interrupted"


class RequestFailed(TraceforgeError, RuntimeError):
    """One runner request failed; the message is the one-line reason recorded in ``requests.error``."""

    code = "request_failed"


class ServerFailed(TraceforgeError, RuntimeError):
    """The inference server of a sweep cell exited or never became ready."""

    code = "server_failed"


class InputChangedError(TraceforgeError, OSError):
    """An input file changed (size, modification or change time) while it was read: nothing was stored."""

    code = "changed"


class OutputError(TraceforgeError, OSError):
    """An output path (``report``, ``plot``, ``export``) cannot be written, or is not a file to replace."""

    code = "output"


def is_interruption(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckDB reporting that Ctrl-C stopped its query (to be treated as Ctrl-C)."""
    if type(exc).__name__ == "InterruptException":
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).strip().lower()
    if "duckdb" in type(exc).__module__:
        return "interrupted" in text
    # DuckDB's Python client raises a plain RuntimeError("Query interrupted") when Ctrl-C stops a query.
    return text == "query interrupted"


def error_classes() -> dict[str, type[TraceforgeError]]:
    """The one code table: each error ``code`` (the core's and Python's) -> its exception class.

    The Rust binding looks its classes up here (``class_for_code``), so a core error code and the
    Python class raised for it are declared in one place; a test checks every code the core can
    return (``_core.error_codes()``) has its own class.
    """
    table: dict[str, type[TraceforgeError]] = {}
    pending: list[type[TraceforgeError]] = [TraceforgeError]
    while pending:
        cls = pending.pop()
        table.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return table


def class_for_code(code: str) -> type[TraceforgeError]:
    """The exception class of an error code; ``TraceforgeError`` for a code without its own class."""
    return error_classes().get(code, TraceforgeError)
