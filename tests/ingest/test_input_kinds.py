"""Inputs that are not regular files, and files that are not exports (issue 19, items 7 and 8).

Only regular files (after links are followed) are read: a FIFO, a device or a socket is refused with a line
saying what it is, whether it is named directly or found in a directory, and nothing blocks or reads without
end (a FIFO named ``*.sqlite`` blocked forever on open, a link to ``/dev/zero`` was hashed forever, a
``*.csv`` link to it was read into memory until MemoryError). A file's header is checked before any byte is
hashed: a large file of zeros is refused at once, and Ctrl-C stops the hashing of a large file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

KINDS = {
    "fifo.sqlite": "is a FIFO (named pipe), not a regular file",
    "zero.sqlite": "is a character device, not a regular file",
    "zero.csv": "is a character device, not a regular file",
    "sock.sqlite": "is a socket, not a regular file",
}


def _specials(root: Path) -> socket.socket:
    """A FIFO, links to /dev/zero named as an export and as a CSV, and a bound UNIX socket, in ``root``."""
    os.mkfifo(root / "fifo.sqlite")
    os.symlink("/dev/zero", root / "zero.sqlite")
    os.symlink("/dev/zero", root / "zero.csv")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(root / "sock.sqlite"))
    return sock


def _traces(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM traces").fetchone()[0])
    finally:
        con.close()


@pytest.mark.parametrize("how", ["named", "in a directory"])
def test_fifos_devices_and_sockets_are_refused_saying_what_they_are(
    tmp_path: Path, small_matmul_export: Path, run_cli: Any, how: str
) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    sock = _specials(folder)
    shutil.copyfile(small_matmul_export, folder / "good.sqlite")
    db = tmp_path / "store.duckdb"
    try:
        args = [folder / n for n in (*KINDS, "good.sqlite")] if how == "named" else [folder]
        started = time.perf_counter()
        r = run_cli("ingest", *args, "--db", db, timeout=60)  # the old code never returned (the FIFO)
        took = time.perf_counter() - started
    finally:
        sock.close()
    assert r.rc == 1, r
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("traceforge: error: ")]
    for name, message in KINDS.items():
        line = [ln for ln in errors if f"{name}:" in ln]
        assert len(line) == 1 and message in line[0] and "[not_an_export]" in line[0], (name, r.stderr)
    assert len(errors) == len(KINDS), r.stderr  # no "no such file", no "nothing in this directory"
    assert "Traceback" not in r.stderr and took < 30, (took, r.stderr)
    assert _traces(db) == 1  # the regular export beside them landed


def test_an_export_name_matched_by_a_pattern_that_is_a_fifo_is_refused(tmp_path: Path, run_cli: Any) -> None:
    os.mkfifo(tmp_path / "run.sqlite")
    r = run_cli("ingest", f"{tmp_path}/*.sqlite", "--db", tmp_path / "s.duckdb", timeout=60)
    assert r.rc == 1 and "run.sqlite: is a FIFO (named pipe), not a regular file" in r.stderr, r


def test_the_core_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """The core's own check (a FIFO swapped in after the Python check) neither blocks nor reads."""
    from traceforge import _core
    from traceforge.errors import NotAnExportError

    fifo = tmp_path / "late.sqlite"
    os.mkfifo(fifo)
    outcome: dict[str, BaseException] = {}

    def attempt() -> None:
        for call in (_core.check_export, _core.fingerprint, _core.open_trace):
            try:
                call(str(fifo))
            except BaseException as exc:  # noqa: BLE001 - each must raise, and say what it met
                outcome[call.__name__] = exc

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "the core blocked opening a FIFO"
    for name in ("check_export", "fingerprint", "open_trace"):
        assert isinstance(outcome.get(name), NotAnExportError), outcome
        assert "is a FIFO (named pipe), not a regular file" in str(outcome[name])


def test_a_large_file_of_zeros_is_refused_from_its_header_before_hashing(
    tmp_path: Path, small_matmul_export: Path, run_cli: Any
) -> None:
    """A 256 GiB sparse file of zeros is refused from its first 100 bytes, in well under the tens of seconds
    hashing it takes (the old code hashed it whole before the reader's refusal could end the ingest)."""
    db = tmp_path / "store.duckdb"
    assert run_cli("ingest", small_matmul_export, "--db", db).rc == 0
    zeros = tmp_path / "zeros.sqlite"
    with open(zeros, "wb") as fh:
        fh.truncate(256 * 1024**3)  # sparse: no disk used, but every byte reads as zero
    started = time.perf_counter()
    r = run_cli("ingest", zeros, "--db", db, timeout=120)
    took = time.perf_counter() - started
    assert r.rc == 1 and "is not a SQLite database (wrong header)" in r.stderr, r
    assert took < 10, f"{took:.1f} s: the file was hashed before its header was checked"
    assert _traces(db) == 1


def test_ctrl_c_stops_hashing_a_large_file(tmp_path: Path, small_matmul_export: Path) -> None:
    """A large file with a SQLite header whose size matches a stored trace is hashed (to see whether it
    is stored); SIGINT a moment into the hashing ends the ingest at once with exit 130, store unchanged."""
    db = tmp_path / "store.duckdb"
    big = tmp_path / "big.sqlite"
    header = bytearray(small_matmul_export.read_bytes()[:100])
    size = 256 * 1024**3
    with open(big, "wb") as fh:
        fh.write(header)
        fh.truncate(size)  # sparse: hashing it reads 256 GiB of zeros (a minute or more)
    cmd = [sys.executable, "-m", "traceforge", "ingest", "--db", str(db)]
    assert subprocess.run([*cmd, str(small_matmul_export)], capture_output=True).returncode == 0
    con = duckdb.connect(str(db))
    con.execute("UPDATE traces SET file_size_bytes = ?", [size])  # the size lookup now finds a match
    con.close()
    proc = subprocess.Popen([*cmd, str(big)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    started = time.perf_counter()
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.perf_counter() - started < 5, "Ctrl-C waited for the hashing to finish"
    assert "Traceback" not in err and "nothing was stored" in err.strip().splitlines()[-1], err
    assert _traces(db) == 1
