"""The native extension's surface: its error codes and their exception classes, core errors arriving as
the right class with the right code and path, and ``TraceHandle.tables()`` in write order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pytest

from traceforge import _core, errors

#: Codes the core can return that had no exception class of their own when this test was written, so that
#: ``class_for_code`` gives ``TraceforgeError`` (whose ``code`` is "error"): ``io`` (a read failing after
#: the export was opened) and ``invalid`` (a misuse of the binding, or a stored table it cannot read
#: back). Either that, or a class of their own with that code, is accepted; every other code needs its own.
WITHOUT_OWN_CLASS = {"io", "invalid"}


def test_every_core_error_code_maps_to_its_class() -> None:
    codes = _core.error_codes()
    assert len(codes) == len(set(codes)), "each code once"
    assert WITHOUT_OWN_CLASS <= set(codes), "the exceptions are codes the core can return"
    for code in codes:
        cls = errors.class_for_code(code)
        assert issubclass(cls, errors.TraceforgeError)
        if code in WITHOUT_OWN_CLASS and cls is errors.TraceforgeError:
            continue
        assert cls.code == code, f"{code} maps to {cls.__name__} (code {cls.code})"
        holders = [c.__name__ for c in _all_error_classes() if c.__dict__.get("code") == code]
        assert holders == [cls.__name__], f"core code {code} is claimed by {holders}"


def _all_error_classes() -> list[type[errors.TraceforgeError]]:
    found: list[type[errors.TraceforgeError]] = []
    pending = [errors.TraceforgeError]
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return found


def _raised(path: Path) -> errors.TraceforgeError:
    with pytest.raises(errors.TraceforgeError) as info:
        _core.open_trace(path)
    return info.value


def _export(path: Path, schema_major: int) -> Path:
    """A minimal nsys export without any event table, of the given export schema major version."""
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE StringIds (id INTEGER NOT NULL PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE META_DATA_EXPORT (name TEXT NOT NULL, value TEXT);"
    )
    con.executemany(
        "INSERT INTO META_DATA_EXPORT VALUES (?, ?)",
        [
            ("EXPORT_SCHEMA_VERSION_MAJOR", str(schema_major)),
            ("EXPORT_SCHEMA_VERSION", f"{schema_major}.20.3"),
            ("EXPORT_PRODUCT_VERSION", "2025.3.2.0"),
        ],
    )
    con.commit()
    con.close()
    return path


def test_a_missing_file_is_input_not_found(tmp_path: Path) -> None:
    path = tmp_path / "absent.sqlite"
    err = _raised(path)
    assert type(err) is errors.InputNotFoundError
    assert isinstance(err, FileNotFoundError)
    assert (err.code, err.path) == ("not_found", str(path))


def test_a_file_that_is_not_sqlite_is_not_an_export(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("hello, not a database at all, just text padding " * 4)
    err = _raised(path)
    assert type(err) is errors.NotAnExportError
    assert isinstance(err, ValueError)
    assert (err.code, err.path) == ("not_an_export", str(path))


def test_a_foreign_sqlite_database_is_not_an_export(tmp_path: Path) -> None:
    path = tmp_path / "foreign.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.commit()
    con.close()
    err = _raised(path)
    assert (type(err), err.code, err.path) == (errors.NotAnExportError, "not_an_export", str(path))


def test_a_newer_schema_is_unsupported(tmp_path: Path) -> None:
    path = _export(tmp_path / "future.sqlite", schema_major=9)
    err = _raised(path)
    assert (type(err), err.code, err.path) == (errors.UnsupportedSchemaError, "unsupported_schema", str(path))
    assert "9.20.3" in err.message


def test_an_export_without_kernels_misses_a_table(tmp_path: Path) -> None:
    path = _export(tmp_path / "no_kernels.sqlite", schema_major=3)
    err = _raised(path)
    assert (type(err), err.code, err.path) == (errors.MissingTableError, "missing_table", str(path))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("surface") / "synthetic.sqlite"
    _core.synthesize(path, kernels=3_000, devices=2, streams=2, seed=11, requests=5)
    return path


def test_tables_yields_every_table_in_write_order(synthetic: Path) -> None:
    handle = _core.open_trace(synthetic, 2)
    seen = []
    for name, stream in handle.tables():
        assert isinstance(name, str) and isinstance(stream, _core.ArrowStream)
        seen.append((name, len(duckdb.from_arrow(stream).fetchall())))
    names = [name for name, _ in seen]
    assert names == _core.write_order()
    assert names[0] == "api_call_rows"  # streaming the API calls completes the launch matching
    rows = dict(seen)
    info = handle.info()
    assert rows["kernel_rows"] == info["kernel_count"] == 3_000
    assert rows["api_call_rows"] == info["api_call_count"] > 0
    assert rows["nvtx_ranges"] == info["nvtx_count"]


def test_an_error_during_tables_arrives_as_its_class_and_ends_the_iteration(synthetic: Path) -> None:
    handle = _core.open_trace(synthetic, 2)
    name, stream = next(handle.tables())
    assert name == "api_call_rows"
    duckdb.from_arrow(stream).fetchall()
    tables = handle.tables()  # a second pass: the API calls cannot be streamed twice
    with pytest.raises(errors.TraceforgeError) as info:
        next(tables)  # the API calls were streamed already
    assert type(info.value) is errors.class_for_code("invalid")
    assert "already streamed" in info.value.message
    assert list(tables) == []


def test_a_cancelled_trace_stops_its_tables_with_ingest_interrupted(synthetic: Path) -> None:
    handle = _core.open_trace(synthetic, 2)
    handle.cancel()
    tables = handle.tables()
    name, _ = next(tables)  # the API call stream, not read
    assert name == "api_call_rows"
    # BaseException: a wrong class deriving from KeyboardInterrupt must fail this test, not stop the run.
    with pytest.raises(BaseException) as info:
        next(tables)  # deriving the metrics notices the cancellation
    assert type(info.value) is errors.IngestInterrupted, repr(info.value)
    assert info.value.code == "interrupted"
