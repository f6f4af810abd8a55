"""The ingest progress bar on a real terminal (issue 16, item 11): ``traceforge ingest`` runs under a
pseudo-terminal (stdout and stderr both on it, as in an interactive shell), and its output is replayed by a
small terminal emulator (carriage return, newline, cursor up, erase line) into the lines a user sees.

The old bar let outcome lines land after its last frame: ``2/6 0:00:00 1 failedingested 7a1f...``. Now every
outcome line starts a line of its own, and a big single file shows its phase and the rows stored so far.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Callable

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(\x07|\x1b\\)")


def run_in_pty(args: list[str], *, columns: int = 160, timeout: float = 300) -> tuple[int, str]:
    """Run ``python -m traceforge ARGS`` with stdin, stdout and stderr on a new pseudo-terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(columns), LINES="50")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "traceforge", *args], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows (and scrolled past) after ``raw``: enough VT100 for rich's live display."""
    raw = _OSC.sub("", raw)
    lines, row, col, i = [""], 0, 0, 0
    while i < len(raw):
        c = raw[i]
        if c == "\x1b":
            m = _CSI.match(raw, i)
            if m is None:
                i += 1
                continue
            params, cmd = m.groups()
            n = int(params) if params.isdigit() else 1
            if cmd == "A":
                row = max(0, row - n)
            elif cmd == "B":
                row += n
            elif cmd == "G":
                col = n - 1
            elif cmd == "K":
                while len(lines) <= row:
                    lines.append("")
                lines[row] = "" if params == "2" else lines[row][:col]
            i = m.end()
            continue
        if c == "\r":
            col = 0
        elif c == "\n":
            row, col = row + 1, 0
        elif c >= " ":
            while len(lines) <= row:
                lines.append("")
            line = lines[row].ljust(col)
            lines[row] = line[:col] + c + line[col + 1 :]
            col += 1
        i += 1
    return [line.rstrip() for line in lines]


def test_outcome_lines_never_merge_with_the_bar(tmp_path: Path, real_export: Callable[[str], Path]) -> None:
    folder = tmp_path / "captures"
    folder.mkdir()
    # A failure first, so the bar says "1 failed" while the other files land (the garbled case).
    (folder / "a_broken.sqlite").write_bytes(b"not a database at all" * 100)
    for name in (
        "small_matmul_h100_nsys2025.3.sqlite",
        "known_graphmode_h200_nsys2025.3.sqlite",
        "known_nodemode_h200_nsys2025.3.sqlite",
        "cu11_driverapi_h200_nsys2022.4.sqlite",
    ):
        (folder / name).write_bytes(real_export(name).read_bytes())
    rc, raw = run_in_pty(["ingest", "--db", str(tmp_path / "s.duckdb"), str(folder)])
    assert rc == 1, raw
    assert "\x1b[" in raw, "no bar was drawn: the test did not run on a terminal rich recognises"
    shown = screen(raw)
    outcomes = [line for line in shown if re.search(r"\b(ingested|skipped) +[0-9a-f]{16}\b", line)]
    assert len(outcomes) == 4, "\n".join(shown)
    for line in outcomes:
        assert re.match(r"(ingested|skipped) +[0-9a-f]{16}  /", line), f"merged line: {line!r}"
    assert any(line.startswith("traceforge: error: ") and "a_broken.sqlite" in line for line in shown)
    assert any(line.startswith("4 ingested, 0 skipped, 1 failed") for line in shown), "\n".join(shown)


def test_a_big_single_file_shows_its_phase_and_rows(
    tmp_path: Path, real_export: Callable[[str], Path]
) -> None:
    export = real_export("llama1b_n1_h100_nsys2025.3.sqlite")
    rc, raw = run_in_pty(["ingest", "--db", str(tmp_path / "s.duckdb"), str(export)])
    assert rc == 0, raw
    frames = [line for line in _CSI.sub("", raw).replace("\r", "\n").splitlines() if "ingesting" in line]
    phases = [line for line in frames if f"{export.name}: storing" in line]
    assert phases, "no frame showed the file's phase:\n" + "\n".join(frames[-10:])
    rows = [
        int(m.group(1).replace(",", ""))
        for line in phases
        for m in [re.search(r"([\d,]+) rows stored", line)]
        if m
    ]
    assert rows and max(rows) > 100_000, phases[-5:]
    final = screen(raw)
    assert any(line.startswith("ingested ") and export.name in line for line in final)
