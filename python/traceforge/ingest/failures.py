"""The one failure recorder: ``ingest_failures`` holds the last failure of every file that has not landed.

A failed file's row replaces its previous one; a file that lands (or is found already stored) has its row
cleared, so the table always lists what is still to fix. Exceptions raised while ingesting a file become
the traceforge error recorded for it (:func:`as_error`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .. import errors
from ..errors import InputIOError, InputNotFoundError, InputPermissionError, InternalError, TraceforgeError
from ..store import Store
from ..store.sql_params import bind


def record_failure(store: Store, path: str, fingerprint: str | None, error: TraceforgeError) -> None:
    """Record (or replace) the failure of one file, in its own transaction.

    Args:
        store: the writable store.
        path: the file, as the ingest names it (absolute for expanded files).
        fingerprint: its content fingerprint, when it could be computed.
        error: why it failed.
    """
    with store.transaction() as con:
        con.execute(bind("DELETE FROM ingest_failures WHERE path = ?", [path]))
        con.execute(
            bind(
                "INSERT INTO ingest_failures (path, fingerprint, error_code, message, failed_at) "
                "VALUES (?, ?, ?, ?, now()::TIMESTAMP)",
                [path, fingerprint, error.code, error.message],
            ),
        )


def clear_failures(store: Store, paths: Sequence[str]) -> None:
    """Forget the recorded failures of files that are now stored."""
    if len(paths) == 1:
        store.con.execute(bind("DELETE FROM ingest_failures WHERE path = ?", [paths[0]]))
    elif paths:
        store.con.execute(
            bind("DELETE FROM ingest_failures WHERE path IN (SELECT unnest($paths))", {"paths": list(paths)})
        )


def as_error(exc: Exception, path: str, *, listed: bool = True) -> TraceforgeError:
    """The traceforge error to report and record for ``exc`` raised while ingesting ``path``.

    Args:
        exc: what ingesting the file raised.
        path: the file.
        listed: the file was found by the input expansion, so a missing file vanished meanwhile.

    Raises:
        KeyboardInterrupt: ``exc`` is DuckDB saying Ctrl-C stopped its query.
    """
    if errors.is_interruption(exc):
        raise KeyboardInterrupt from exc
    error: TraceforgeError
    if isinstance(exc, TraceforgeError):
        error = exc
    elif isinstance(exc, FileNotFoundError):
        error = InputNotFoundError(exc.strerror or str(exc), path=path)
    elif isinstance(exc, PermissionError):
        error = InputPermissionError(exc.strerror or str(exc), path=path)
    elif isinstance(exc, OSError):
        error = InputIOError(exc.strerror or str(exc), path=path)
    else:  # a bug must cost one file, not the batch
        error = InternalError(f"{type(exc).__name__}: {exc}", path=path)
    if error.path is None:
        error.path = path
    if listed and error.code == "not_found" and not os.path.lexists(path):
        error.message = f"vanished during the batch ({error.message})"
    return error


def for_report(
    error: TraceforgeError, report: str, export: str | None, *, temporary: bool
) -> TraceforgeError:
    """Make an error raised while ingesting a ``.nsys-rep`` name the user's report.

    ``export`` is the SQLite export that was read: a temporary one (``nsys export`` into a private
    directory, deleted since) is replaced by the report wherever the message names it; the user's own
    ``.sqlite`` beside the report is named as what was read.
    """
    error.path = report
    if export is not None and export != report:
        if temporary:
            error.message = error.message.replace(export, report)
        elif export not in error.message:
            error.message = f"{error.message} (read from {os.path.basename(export)}, its export beside it)"
    return error


def beside_note(export: str) -> str:
    """The outcome note of a report whose export beside it was read instead of running ``nsys export``."""
    name = os.path.basename(export)
    return f"read {name}, the report's export beside it (newer than the report; no nsys needed)"
