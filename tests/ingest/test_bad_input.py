"""Every bad input: one clear line naming the file and the problem, a non-zero exit, the database untouched.

Each CLI case starts from a store that already holds ``small_matmul`` and compares a dump of every table
before and after the failed ingest. ``ingest_failures`` is left out of the comparison: it is the one table
whose purpose is to record failed attempts.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any, Callable

import duckdb
import pytest

from export_builder import Kernel, build_export
from store_dump import dump  # noqa: E402
from traceforge.errors import (
    CorruptExportError,
    InputNotFoundError,
    MissingTableError,
    NotAnExportError,
    TraceforgeError,
    UnsupportedSchemaError,
)


@pytest.fixture(scope="module")
def populated_db(tmp_path_factory: pytest.TempPathFactory, small_matmul_export: Path, run_cli: Any) -> Path:
    """A store holding small_matmul, made once; tests work on copies."""
    db = tmp_path_factory.mktemp("populated") / "store.duckdb"
    result = run_cli("ingest", "--db", db, small_matmul_export)
    assert result.rc == 0, str(result)
    return db


@pytest.fixture
def store_copy(populated_db: Path, tmp_path: Path) -> Path:
    db = tmp_path / "store.duckdb"
    shutil.copyfile(populated_db, db)
    return db


def assert_refused(result: Any, path: Path, *needles: str) -> None:
    """Non-zero exit, no traceback, exactly one error line, naming the file and saying the problem.

    Other stderr lines (a summary such as ``0 ingested, 0 skipped, 1 failed``) are allowed.
    """
    assert result.rc != 0, str(result)
    assert "Traceback" not in result.stderr, str(result)
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, f"expected one error line:\n{result}"
    assert path.name in lines[0], f"the error line does not name {path}:\n{lines[0]}"
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"expected {needle!r} in the error line:\n{lines[0]}"


def _truncated(src: Path, out: Path) -> Path:
    data = src.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def _corrupted(src: Path, out: Path) -> Path:
    """Overwrite the b-tree pages of the kernel and runtime tables with garbage (the header stays valid)."""
    shutil.copyfile(src, out)
    con = sqlite3.connect(out)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    roots = [
        r[0]
        for r in con.execute(
            "SELECT rootpage FROM sqlite_master WHERE name IN "
            "('CUPTI_ACTIVITY_KIND_KERNEL', 'CUPTI_ACTIVITY_KIND_RUNTIME', 'StringIds')"
        )
    ]
    con.close()
    with open(out, "r+b") as f:
        for root in roots:
            f.seek((root - 1) * page_size)
            f.write(bytes([0xA5]) * page_size)
    return out


BAD_FILES: dict[str, tuple[Callable[[Path, Path, Path], Path], tuple[str, ...]]] = {
    # name: (make(tmp, small_matmul, template) -> path, words the error line must contain)
    "missing": (lambda tmp, sm, tpl: tmp / "no_such_export.sqlite", ()),
    "directory": (lambda tmp, sm, tpl: _mkdir(tmp / "empty_dir.sqlite"), ()),
    "not_sqlite": (
        lambda tmp, sm, tpl: _write(tmp / "notes.sqlite", b"hello, this is not SQLite\n" * 100),
        (),
    ),
    "empty_file": (lambda tmp, sm, tpl: _write(tmp / "empty.sqlite", b""), ()),
    "foreign_sqlite": (lambda tmp, sm, tpl: _foreign(tmp / "foreign.sqlite"), ()),
    "truncated": (lambda tmp, sm, tpl: _truncated(sm, tmp / "truncated.sqlite"), ()),
    "corrupted": (lambda tmp, sm, tpl: _corrupted(sm, tmp / "corrupted.sqlite"), ()),
    "no_kernel_table": (
        lambda tmp, sm, tpl: build_export(
            tpl, tmp / "no_kernels.sqlite", omit_tables=["CUPTI_ACTIVITY_KIND_KERNEL"]
        ),
        ("kernel",),
    ),
    "future_schema": (
        lambda tmp, sm, tpl: build_export(
            tpl, tmp / "future.sqlite", kernels=[Kernel(0, 10)], schema_version="9.0.0"
        ),
        ("9.0.0",),
    ),
}

EXPECTED_CLASS = {
    "missing": InputNotFoundError,
    "not_sqlite": NotAnExportError,
    "empty_file": NotAnExportError,
    "foreign_sqlite": NotAnExportError,
    "truncated": CorruptExportError,
    "corrupted": CorruptExportError,
    "no_kernel_table": MissingTableError,
    "future_schema": UnsupportedSchemaError,
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _foreign(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (id INTEGER, text TEXT)")
    con.execute("INSERT INTO notes VALUES (1, 'a SQLite file, but not an nsys export')")
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_cli_refuses_bad_file(
    kind: str,
    tmp_path: Path,
    store_copy: Path,
    small_matmul_export: Path,
    export_template: Path,
    run_cli: Any,
) -> None:
    make, needles = BAD_FILES[kind]
    bad = make(tmp_path, small_matmul_export, export_template)
    before = dump(store_copy)
    result = run_cli("ingest", "--db", store_copy, bad)
    assert_refused(result, bad, *needles)
    assert dump(store_copy) == before, "the failed ingest changed the database"


@pytest.mark.parametrize("kind", sorted(EXPECTED_CLASS))
def test_api_raises_typed_error(
    kind: str, tmp_path: Path, small_matmul_export: Path, export_template: Path, fresh_db: Path
) -> None:
    import traceforge

    make, _ = BAD_FILES[kind]
    bad = make(tmp_path, small_matmul_export, export_template)
    with traceforge.connect(fresh_db) as tf:
        with pytest.raises(EXPECTED_CLASS[kind]) as info:
            tf.ingest([bad])
        assert isinstance(info.value, TraceforgeError)
        assert bad.name in str(info.value)
        assert tf.sql("SELECT count(*) AS n FROM traces")["n"][0] == 0
        assert tf.sql("SELECT count(*) AS n FROM kernels")["n"][0] == 0


def test_unreadable_file(tmp_path: Path, small_matmul_export: Path, store_copy: Path, run_cli: Any) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    bad = tmp_path / "secret.sqlite"
    shutil.copyfile(small_matmul_export, bad)
    bad.chmod(0)
    try:
        before = dump(store_copy)
        assert_refused(run_cli("ingest", "--db", store_copy, bad), bad)
        assert dump(store_copy) == before
    finally:
        bad.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_multi_file_ingest_lands_the_good_files(
    tmp_path: Path, small_matmul_export: Path, edge_export: Any, fresh_db: Path, run_cli: Any
) -> None:
    bad = _write(tmp_path / "broken.sqlite", b"not a database" * 50)
    good2 = edge_export("two_devices")
    result = run_cli("ingest", "--db", fresh_db, small_matmul_export, bad, good2)
    assert result.rc != 0, str(result)
    assert "Traceback" not in result.stderr
    bad_lines = [line for line in result.stderr.splitlines() if bad.name in line]
    assert len(bad_lines) == 1, str(result)
    con = duckdb.connect(str(fresh_db), read_only=True)
    try:
        paths = {os.path.basename(r[0]) for r in con.execute("SELECT source_path FROM traces").fetchall()}
        kernels = con.execute("SELECT count(*) FROM kernels").fetchone()[0]
    finally:
        con.close()
    assert paths == {small_matmul_export.name, good2.name}
    assert kernels == 42 + 41


def _fake_bin(tmp_path: Path, nsys_script: str | None) -> Path:
    """A PATH directory holding only an ``nsys`` that is not usable (or no nsys at all)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if nsys_script is not None:
        nsys = bindir / "nsys"
        nsys.write_text(nsys_script)
        nsys.chmod(0o755)
    return bindir


@pytest.mark.parametrize(
    "script",
    [None, "#!/bin/sh\necho 'nsys: error while loading shared libraries' >&2\nexit 127\n"],
    ids=["no-nsys", "broken-nsys"],
)
def test_nsys_rep_without_usable_nsys(
    script: str | None, tmp_path: Path, cpu_osrt_rep: Path, store_copy: Path, run_cli: Any
) -> None:
    bindir = _fake_bin(tmp_path, script)
    # Debian also installs /usr/lib/nsight-systems/bin/nsys, which traceforge finds without PATH: $NSYS
    # (traceforge.ingest.nsysrep.find_nsys) pins the binary to the missing or broken one.
    env = {"PATH": str(bindir), "NSYS": str(bindir / "nsys")}
    before = dump(store_copy)
    result = run_cli("ingest", "--db", store_copy, cpu_osrt_rep, env=env)
    assert_refused(result, cpu_osrt_rep, "nsys")
    assert dump(store_copy) == before


@pytest.mark.nsys
def test_nsys_rep_newer_than_installed_nsys(small_matmul_rep: Path, store_copy: Path, run_cli: Any) -> None:
    """nsys 2022.4 refuses a 2025.3 report: the error says which nsys wrote it and which is installed."""
    before = dump(store_copy)
    result = run_cli("ingest", "--db", store_copy, small_matmul_rep)
    assert_refused(result, small_matmul_rep, "2025.3", "2022.4")
    assert dump(store_copy) == before


@pytest.mark.nsys
def test_nsys_rep_exported_by_real_nsys_without_cuda(
    cpu_osrt_rep: Path, store_copy: Path, run_cli: Any
) -> None:
    """A CPU-only 2022.4 report goes through a real ``nsys export``; no kernel table, so it is refused."""
    before = dump(store_copy)
    result = run_cli("ingest", "--db", store_copy, cpu_osrt_rep)
    assert_refused(result, cpu_osrt_rep, "kernel")
    assert dump(store_copy) == before
