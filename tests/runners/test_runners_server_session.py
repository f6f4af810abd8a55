"""A ``[server]`` captured through a real nsys session: launched once, one ``start``/``stop`` per cell.

The server is the loopback OpenAI-compatible server of ``runner_servers.py`` run as a real process by
Debian's nsys 2022.4 (``nsys launch``); nsys traces its OS runtime calls (``-t osrt``: there is no GPU here).
What is checked against the exports themselves (sqlite3, not traceforge's tables): each cell has its own
report, recorded only while that cell ran, holding the server's OS calls; the server started once per
sweep (or once per cell with ``scope = "cell"``); a capture without GPU activity fails its cell when the
spec requires GPU work (the default).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
from pathlib import Path

import duckdb
import pytest

from traceforge.runners.results import fetch_dicts
from traceforge.runners.spec import parse_spec
from traceforge.runners.sweep import run_sweep

SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "runner_servers.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spec(port: int, pid_file: Path, *, scope: str = "sweep", require_gpu: bool = False) -> str:
    return f"""
name = "session"
backend = "openai"
model = "m"
base_url = "http://127.0.0.1:{port}"
concurrency = [1, 2]
requests_per_agent = 2
max_new_tokens = 5
prompt = "a short prompt"
warmup_requests = 1
timeout_s = 120
heartbeat_timeout_s = 60
kill_grace_s = 5
telemetry = false

[server]
command = ["{sys.executable}", "{SERVER_SCRIPT}", "{port}", "--pid-file", "{pid_file}"]
ready_url = "http://127.0.0.1:{port}/v1/models"
ready_timeout_s = 90
scope = "{scope}"

[capture]
nsys = true
nsys_trace = "osrt"
require_gpu = {str(require_gpu).lower()}
"""


def _capture_span_s(sqlite_path: str) -> float:
    con = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        lo, hi = con.execute("SELECT min(start), max(end) FROM OSRT_API").fetchone()
    finally:
        con.close()
    return (hi - lo) / 1e9


def _osrt_calls(sqlite_path: str) -> int:
    con = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT count(*) FROM OSRT_API").fetchone()[0])
    finally:
        con.close()


@pytest.mark.nsys
@pytest.mark.slow
@pytest.mark.parametrize("scope", ["sweep", "cell"])
def test_each_cell_gets_its_own_report_of_a_server_launched_once(tmp_path: Path, scope: str) -> None:
    pid_file = tmp_path / "pids"
    db = tmp_path / "s.duckdb"
    spec = parse_spec(_spec(_free_port(), pid_file, scope=scope))
    run_sweep(spec, db, workdir=tmp_path / "w", quiet=True)
    con = duckdb.connect(str(db), read_only=True)
    cells = fetch_dicts(con, "SELECT n, status, reason, trace_id, trace_path, wall_s FROM cells ORDER BY n")
    assert [c["n"] for c in cells] == [1, 2]
    for c in cells:
        assert c["status"] == "ok", c["reason"]
        assert c["trace_path"].endswith(".sqlite")
        # A CPU-only export is exported but not ingested (traceforge stores GPU traces), and says so.
        assert c["trace_id"] is None and "no CUDA kernels" in c["reason"]
        # The report holds the server's OS calls of this cell only: nsys recorded from `start` to `stop`.
        assert _osrt_calls(c["trace_path"]) > 0
        assert _capture_span_s(c["trace_path"]) < c["wall_s"] + 5.0
    assert len({c["trace_path"] for c in cells}) == 2
    starts = pid_file.read_text().split()
    assert len(starts) == (1 if scope == "sweep" else 2)
    requests = con.execute("SELECT count(*), count(*) FILTER (WHERE status = 'ok') FROM requests").fetchone()
    assert requests == (6, 6)  # warm-up requests are not recorded


@pytest.mark.nsys
@pytest.mark.slow
def test_a_capture_without_gpu_work_fails_its_cell(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    spec = parse_spec(_spec(_free_port(), tmp_path / "pids", require_gpu=True))
    run_sweep(spec, db, workdir=tmp_path / "w", quiet=True)
    con = duckdb.connect(str(db), read_only=True)
    cells = fetch_dicts(con, "SELECT status, reason, trace_path, requests_ok FROM cells ORDER BY n")
    assert len(cells) == 2
    for c in cells:
        assert c["status"] == "failed" and "no GPU activity" in c["reason"]
        assert Path(c["trace_path"]).exists() and c["requests_ok"] > 0  # what was captured stays linked


def test_a_server_that_dies_at_start_fails_with_its_log_line(tmp_path: Path) -> None:
    port = _free_port()
    dies = "import sys; print('model folder /nope not found'); sys.exit(3)"
    text = _spec(port, tmp_path / "pids").replace(
        f'command = ["{sys.executable}", "{SERVER_SCRIPT}", "{port}", "--pid-file", "{tmp_path / "pids"}"]',
        f'command = ["{sys.executable}", "-c", "{dies}"]',
    )
    text = text.replace("nsys = true", "nsys = false")
    db = tmp_path / "s.duckdb"
    run_sweep(parse_spec(text), db, workdir=tmp_path / "w", quiet=True)
    con = duckdb.connect(str(db), read_only=True)
    cells = fetch_dicts(con, "SELECT status, reason FROM cells ORDER BY n")
    assert [c["status"] for c in cells] == ["failed", "failed"]
    assert "exited with status 3" in cells[0]["reason"]
    assert "model folder /nope not found" in cells[0]["reason"]
    # The second cell is not made to wait out ready_timeout_s again: it says the server failed earlier.
    assert "not retried" in cells[1]["reason"]


@pytest.mark.nsys
@pytest.mark.slow
def test_a_hung_server_is_killed_recorded_hung_with_its_capture_and_restarted(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    port = _free_port()
    text = _spec(port, pid_file).replace('"--pid-file"', '"--mode", "stall", "--pid-file"')
    text = text.replace("heartbeat_timeout_s = 60", "heartbeat_timeout_s = 2").replace(
        "warmup_requests = 1", "warmup_requests = 0"
    )
    db = tmp_path / "s.duckdb"
    run_sweep(parse_spec(text), db, workdir=tmp_path / "w", quiet=True)
    con = duckdb.connect(str(db), read_only=True)
    cells = fetch_dicts(con, "SELECT n, status, reason, trace_path FROM cells ORDER BY n")
    assert [c["status"] for c in cells] == ["hung", "hung"]
    for c in cells:
        assert "no progress for 2 s" in c["reason"]
        # What nsys recorded up to the kill was kept: the report of the stalled requests, exported.
        assert c["trace_path"] and c["trace_path"].endswith(".sqlite") and _osrt_calls(c["trace_path"]) > 0
    # The hung server was not trusted with the second cell: it was started again, and every start is gone.
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
        assert stat == "Z", f"server {pid} still running"
