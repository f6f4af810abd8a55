"""Runner honesty (issue 16, items 2, 3 and 10) against real loopback servers and real processes.

- Sweeps of different configurations are never pooled into one curve.
- ``--resume`` with a changed spec refuses with the difference, unless ``--force-new-run``.
- A failed request is counted, not fatal to its cell's summary.
- The store is readable while a sweep runs (the sweep holds the file only for short writes).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runner_servers import FakeServer  # noqa: E402
from traceforge.analysis.sweep_analysis import analyze_sweeps  # noqa: E402
from traceforge.errors import SpecError  # noqa: E402
from traceforge.runners.results import fetch_dicts, sweep_summary  # noqa: E402
from traceforge.runners.spec import parse_spec  # noqa: E402
from traceforge.runners.sweep import run_sweep  # noqa: E402
from traceforge.store import Store  # noqa: E402


def _spec(
    url: str, *, api: str = "completions", tokens: int = 6, conc: str = "[1, 2]", name: str = "h"
) -> str:
    return f"""
name = "{name}"
backend = "openai"
model = "m"
base_url = "{url}"
api = "{api}"
concurrency = {conc}
requests_per_agent = 2
max_new_tokens = {tokens}
prompt = "four words of prompt"
timeout_s = 60
heartbeat_timeout_s = 20
request_timeout_s = 20
telemetry = false
"""


def test_configurations_are_not_pooled(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    with FakeServer(token_delay_s=0.002) as srv:
        # Two sweeps whose workload has the same name ("default") but another endpoint and length.
        run_sweep(
            parse_spec(_spec(srv.url, api="completions", tokens=20)), db, workdir=tmp_path / "w", quiet=True
        )
        run_sweep(parse_spec(_spec(srv.url, api="chat", tokens=10)), db, workdir=tmp_path / "w", quiet=True)
    with Store(db, read_only=True) as store:
        analyses = analyze_sweeps(store)
        assert sorted((a.config["api"], a.config["max_new_tokens"]) for a in analyses) == [
            ("chat", 10),
            ("completions", 20),
        ]
        for a in analyses:
            # Each curve's N=1 point holds only its own configuration's cells and requests.
            assert [p.n for p in a.points] == [1, 2] and a.points[0].requests_ok == 2
            assert f"api={a.config['api']}" in a.label
        rows = sweep_summary(store.con)
    assert sorted({(r["api"], r["max_new_tokens"]) for r in rows}) == [("chat", 10), ("completions", 20)]
    assert all(r["cells"] == 1 for r in rows)


def test_workloads_may_use_different_endpoints(tmp_path: Path) -> None:
    text = _spec("http://127.0.0.1:1", conc="[1]").replace('prompt = "four words of prompt"\n', "")
    text += """
[[workloads]]
name = "chat"
api = "chat"
prompt = "hello there"

[[workloads]]
name = "completion"
prompt = "hello there"
"""
    with FakeServer(token_delay_s=0.001) as srv:
        spec = parse_spec(text.replace("http://127.0.0.1:1", srv.url))
        run_sweep(spec, tmp_path / "r.duckdb", workdir=tmp_path / "w", quiet=True)
        paths = sorted({r["path"] for r in srv.requests})
    assert paths == ["/v1/chat/completions", "/v1/completions"]
    con = duckdb.connect(str(tmp_path / "r.duckdb"), read_only=True)
    assert sorted(con.execute("SELECT workload, api FROM cells").fetchall()) == [
        ("chat", "chat"),
        ("completion", "completions"),
    ]


def test_a_bad_workload_api_names_the_field() -> None:
    text = _spec("http://127.0.0.1:8000").replace('prompt = "four words of prompt"\n', "")
    text += '[[workloads]]\nname = "x"\napi = "generate"\nprompt = "p"\n'
    with pytest.raises(SpecError, match=r"workloads\[0\]\.api.*completions.*chat"):
        parse_spec(text)


def test_resume_with_a_changed_spec_refuses_with_the_difference(tmp_path: Path) -> None:
    spec_path = tmp_path / "s.toml"
    db = tmp_path / "r.duckdb"
    with FakeServer(token_delay_s=0.001) as srv:
        spec_path.write_text(_spec(srv.url))
        first = subprocess.run(
            [sys.executable, "-m", "traceforge", "run", str(spec_path), "--db", str(db), "-q"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.returncode == 0, first.stderr
        spec_path.write_text(_spec(srv.url, tokens=12, conc="[1, 2, 4]"))
        refused = subprocess.run(
            [sys.executable, "-m", "traceforge", "run", str(spec_path), "--db", str(db), "--resume", "-q"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode != 0
        err = refused.stderr.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert "concurrency: [1, 2] -> [1, 2, 4]" in err and "--force-new-run" in err
        assert "max_new_tokens" in err
        sent_before = len(srv.requests)
        forced = subprocess.run(
            [sys.executable, "-m", "traceforge", "run", str(spec_path), "--db", str(db), "--resume",
             "--force-new-run", "-q"],
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
        assert forced.returncode == 0, forced.stderr
        assert len(srv.requests) - sent_before == 2 * (1 + 2 + 4)
    con = duckdb.connect(str(db), read_only=True)
    runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    tokens = sorted(r[0] for r in con.execute("SELECT DISTINCT max_new_tokens FROM cells").fetchall())
    assert runs == 2 and tokens == [6, 12]  # the old run kept its cells, the new one has its own


def test_a_failed_request_is_counted_not_fatal(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    text = _spec("X", conc="[4]").replace("requests_per_agent = 2", "requests_per_agent = 3")
    with FakeServer(token_delay_s=0.001, fail_every=4) as srv:  # 3 of the 12 requests fail
        run_sweep(parse_spec(text.replace('"X"', f'"{srv.url}"')), db, workdir=tmp_path / "w", quiet=True)
    con = duckdb.connect(str(db), read_only=True)
    cell = fetch_dicts(con, "SELECT status, reason, requests_ok, requests_failed FROM cells")[0]
    assert cell["status"] == "ok" and cell["requests_ok"] == 9 and cell["requests_failed"] == 3
    assert "3 of 12 requests failed" in cell["reason"] and "HTTP 500" in cell["reason"]
    ok_walls = [r[0] for r in con.execute("SELECT wall_ms FROM requests WHERE status = 'ok'").fetchall()]
    summary = fetch_dicts(con, "SELECT ok_requests, failed_requests, latency_p50_ms FROM cell_summary")[0]
    assert summary["ok_requests"] == 9 and summary["failed_requests"] == 3
    assert summary["latency_p50_ms"] == pytest.approx(statistics.median(ok_walls))
    con.close()
    with Store(db, read_only=True) as store:
        (analysis,) = analyze_sweeps(store)
    (point,) = analysis.points
    assert point.cells_ok == 1 and point.requests_ok == 9 and point.requests_error == 3
    assert point.aggregate_tps.mean is not None  # the summary of N=4 is not blanked


@pytest.mark.slow
def test_the_store_is_readable_while_a_sweep_runs(tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    spec_path = tmp_path / "s.toml"
    with FakeServer(token_delay_s=0.05) as srv:  # each cell streams for ~1 s
        spec_path.write_text(_spec(srv.url, tokens=20, conc="[1, 2, 3]"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "traceforge", "run", str(spec_path), "--db", str(db), "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        reads = 0
        seen_running = False
        try:
            while proc.poll() is None:
                if db.exists():
                    with Store(db, read_only=True, wait_s=10) as store:
                        statuses = [r[0] for r in store.con.execute("SELECT status FROM cells").fetchall()]
                    reads += 1
                    seen_running = seen_running or "running" in statuses
                time.sleep(0.2)
        finally:
            _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    # Reads went through during the sweep (a cell was seen running), none failed on the lock.
    assert reads >= 5 and seen_running
