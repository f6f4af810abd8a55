"""Kill a real `traceforge run` mid-sweep, then --resume: nothing recorded is lost, nothing is duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runner_servers import FakeServer  # noqa: E402


def _spec(url: str) -> str:
    return f"""
name = "resume"
backend = "ollama"
model = "m"
base_url = "{url}"
concurrency = [1, 2, 3]
requests_per_agent = 3
repetitions = 2
max_new_tokens = 10
prompt = "resume me"
timeout_s = 60
heartbeat_timeout_s = 20
"""


def _run(spec: Path, db: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "traceforge", "run", str(spec), "--db", str(db), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_kill_then_resume(tmp_path: Path) -> None:
    spec = tmp_path / "resume.toml"
    db = tmp_path / "r.duckdb"
    with FakeServer(token_delay_s=0.03) as srv:
        spec.write_text(_spec(srv.url))
        proc = _run(spec, db)
        assert proc.stderr is not None
        lines = []
        while True:  # wait until two cells are done, then kill the sweep while the third runs
            line = proc.stderr.readline()
            assert line, f"sweep ended early: {lines}"
            lines.append(line)
            if line.startswith("[2/6]"):
                break
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        con = duckdb.connect(str(db), read_only=True)
        cells = dict(con.execute("SELECT cell_id, status FROM cells").fetchall())
        partial = con.execute("SELECT count(*) FROM requests").fetchone()[0]
        worker_pids = []
        con.close()
        for ev in (tmp_path / "r.duckdb.runs").rglob("events.jsonl"):
            worker_pids += [
                int(x.split('"pid": ')[1].split(",")[0])
                for x in ev.read_text().splitlines()
                if '"type": "start"' in x
            ]
        assert list(cells.values()).count("ok") == 2 and "running" in cells.values()
        assert partial >= 2 * 3  # rows of finished cells (and of the killed one so far) survived the kill
        # The orphaned cell worker notices its sweep is gone and exits by itself.
        deadline = time.monotonic() + 10
        while any(_pid_alive(p) for p in worker_pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_pid_alive(p) for p in worker_pids)

        again = _run(spec, db, "--resume")
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        assert "ok earlier, kept" in err
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    rows = con.execute(
        "SELECT n, repetition, status, requests_ok FROM cells ORDER BY n, repetition"
    ).fetchall()
    assert rows == [(n, r, "ok", 3 * n) for n in (1, 2, 3) for r in (0, 1)]
    total, distinct = con.execute("SELECT count(*), count(DISTINCT request_id) FROM requests").fetchone()
    assert total == distinct == 3 * 3 * (1 + 2 + 3) // 3 * 2
    # Each finished cell kept its original rows: the resumed run did not touch them.
    per_cell = con.execute("SELECT cell_id, count(*) FROM requests GROUP BY 1").fetchall()
    assert all(c == 3 * int(cid.split("/n")[1].split("/")[0]) for cid, c in per_cell)


@pytest.mark.parametrize("flag", [[], ["--resume"]])
def test_resume_of_a_finished_run_runs_nothing_new(tmp_path: Path, flag: list[str]) -> None:
    spec = tmp_path / "s.toml"
    db = tmp_path / "r.duckdb"
    with FakeServer() as srv:
        spec.write_text(
            _spec(srv.url).replace("[1, 2, 3]", "[1]").replace("repetitions = 2", "repetitions = 1")
        )
        first = _run(spec, db)
        first.communicate(timeout=60)
        n_requests = len(srv.requests)
        second = _run(spec, db, *flag)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
        sent = len(srv.requests) - n_requests
    con = duckdb.connect(str(db), read_only=True)
    runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    if flag:
        assert runs == 1 and sent == 0
    else:
        assert runs == 2 and sent == 3
