"""Output files of ``report`` and ``plot`` (issue 19, item 9): written beside the target and renamed in,
never replacing a directory, FIFO, device or socket, keeping a regular file's mode, writing through a
symbolic link (the link stays a link); and :func:`traceforge.outputs.atomic_output` itself."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

import traceforge
from traceforge.errors import OutputError
from traceforge.outputs import atomic_output

COMMANDS = {
    "report": lambda out, tid: ["report", "--output", out],
    "plot": lambda out, tid: ["plot", "kernels", "--trace", tid, "--output", out],
}
SUFFIX = {"report": ".html", "plot": ".svg"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_matmul_export: Path) -> tuple[Path, str]:
    db = tmp_path_factory.mktemp("outputs") / "store.duckdb"
    with traceforge.connect(db) as tf:
        tf.ingest([small_matmul_export])
        [trace_id] = tf.sql("SELECT trace_id FROM traces")["trace_id"].to_list()
    return db, trace_id


def _run(run_cli: Any, store: tuple[Path, str], command: str, out: Path) -> Any:
    db, tid = store
    return run_cli(*COMMANDS[command](out, tid), "--db", db, timeout=120)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_regular_file_is_replaced_whole_keeping_its_mode(
    tmp_path: Path, run_cli: Any, store: tuple[Path, str], command: str
) -> None:
    out = tmp_path / f"out{SUFFIX[command]}"
    out.write_text("old")
    os.chmod(out, 0o640)
    inode = out.stat().st_ino
    r = _run(run_cli, store, command, out)
    assert r.rc == 0, r
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert out.stat().st_ino != inode  # a new file renamed in, not the old one truncated and rewritten
    assert out.read_text().lstrip().startswith("<")
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


@pytest.mark.parametrize("command", COMMANDS)
def test_a_symlink_target_is_written_through_and_the_link_kept(
    tmp_path: Path, run_cli: Any, store: tuple[Path, str], command: str
) -> None:
    real = tmp_path / "real" / f"target{SUFFIX[command]}"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / f"link{SUFFIX[command]}"
    link.symlink_to(real)
    r = _run(run_cli, store, command, link)
    assert r.rc == 0, r
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text().lstrip().startswith("<")
    assert sorted(p.name for p in real.parent.iterdir()) == [real.name]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", ["directory", "fifo", "socket", "device", "link to a fifo"])
def test_a_directory_fifo_socket_or_device_is_refused_and_left_alone(
    tmp_path: Path, run_cli: Any, store: tuple[Path, str], command: str, kind: str
) -> None:
    out = tmp_path / f"out{SUFFIX[command]}"
    sock = None
    if kind == "directory":
        out.mkdir()
        expected = "is a directory"
    elif kind in ("fifo", "link to a fifo"):
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        if kind == "fifo":
            fifo.rename(out)
        else:
            out.symlink_to(fifo)
        expected = "is a FIFO (named pipe)"
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(out))
        expected = "is a socket"
    else:
        # A link to a device node (as root, the old code replaced /dev/full named directly).
        out.symlink_to("/dev/null")
        expected = "is a character device"
    before = os.lstat(out)
    device_before = os.stat("/dev/null")
    try:
        r = _run(run_cli, store, command, out)
    finally:
        if sock is not None:
            sock.close()
    assert r.rc == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("traceforge: error: ") and expected in lines[0], r
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert (os.stat("/dev/null").st_ino, os.stat("/dev/null").st_rdev) == (
        device_before.st_ino,
        device_before.st_rdev,
    )
    if kind != "device":
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left"


def test_atomic_output_leaves_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    out = tmp_path / "data.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        Path(tmp).write_text("half")
        raise RuntimeError("writer failed")
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["data.txt"]


def test_atomic_output_new_file_gets_the_umask_mode_and_readers_never_see_half(tmp_path: Path) -> None:
    out = tmp_path / "new.txt"
    umask = os.umask(0o027)
    try:
        with atomic_output(out, suffix=".txt") as tmp:
            assert tmp.endswith(".txt") and os.path.dirname(tmp) == str(tmp_path)
            seen = []
            Path(tmp).write_text("x" * 100_000)
            reader = threading.Thread(target=lambda: seen.append(out.exists()))
            reader.start()
            reader.join()
            assert seen == [False]  # not there until the rename
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_text() == "x" * 100_000


def test_atomic_output_refuses_a_missing_directory(tmp_path: Path) -> None:
    with (
        pytest.raises(OutputError, match="the output directory does not exist"),
        atomic_output(tmp_path / "no" / "x.txt"),
    ):
        pass
