"""Server backends against real loopback servers speaking Ollama's and OpenAI's streaming protocols."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runner_servers import FakeServer  # noqa: E402
from traceforge.runners.results import fetch_dicts, sweep_summary  # noqa: E402
from traceforge.runners.spec import parse_spec  # noqa: E402
from traceforge.runners.sweep import run_sweep  # noqa: E402


def _spec(
    url: str,
    backend: str = "ollama",
    extra: str = "",
    *,
    concurrency: str = "[1, 2]",
    requests: int = 2,
    tokens: int = 6,
) -> str:
    return f"""
name = "t"
backend = "{backend}"
model = "m"
base_url = "{url}"
concurrency = {concurrency}
requests_per_agent = {requests}
max_new_tokens = {tokens}
prompt = "four words of prompt"
timeout_s = 60
heartbeat_timeout_s = 20
request_timeout_s = 20
kill_grace_s = 2
{extra}
"""


def _run(tmp_path: Path, text: str) -> tuple[str, duckdb.DuckDBPyConnection]:
    db = tmp_path / "r.duckdb"
    run_id = run_sweep(parse_spec(text), db, workdir=tmp_path / "w", quiet=True)
    return run_id, duckdb.connect(str(db), read_only=True)


@pytest.mark.parametrize("api", ["generate", "chat"])
def test_ollama_streaming_records_counts(tmp_path: Path, api: str) -> None:
    with FakeServer(token_delay_s=0.002) as srv:
        run_id, con = _run(tmp_path, _spec(srv.url, extra=f'api = "{api}"'))
        bodies = [r["body"] for r in srv.requests]
    cells = fetch_dicts(con, "SELECT n, status, requests_ok FROM cells ORDER BY n")
    assert [(c["n"], c["status"], c["requests_ok"]) for c in cells] == [(1, "ok", 2), (2, "ok", 4)]
    rows = fetch_dicts(con, "SELECT * FROM requests")
    assert len(rows) == 6 and len({r["request_id"] for r in rows}) == 6
    for r in rows:
        assert r["status"] == "ok" and r["error"] is None
        assert r["output_tokens"] == r["eval_count"] == 6
        assert r["prompt_tokens"] == r["prompt_eval_count"] == 4
        assert r["eval_duration_ns"] > 0 and r["prompt_eval_duration_ns"] >= 0
        assert 0 < r["ttft_ms"] < r["wall_ms"]
        assert r["tokens_per_s"] == pytest.approx(r["output_tokens"] / (r["wall_ms"] / 1000.0))
    # What the server received follows Ollama's API: streaming, num_predict = max_new_tokens.
    assert all(b["stream"] is True and b["options"]["num_predict"] == 6 for b in bodies)
    assert all(("messages" in b) == (api == "chat") for b in bodies)


@pytest.mark.parametrize(
    "api, preset, usage",
    [
        ("completions", None, True),
        ("chat", "vllm", True),
        ("chat", "tgi", False),
        ("completions", "llamacpp", False),
    ],
)
def test_openai_sse_streaming(tmp_path: Path, api: str, preset: str | None, usage: bool) -> None:
    extra = f'api = "{api}"' + (f'\npreset = "{preset}"' if preset else "")
    with FakeServer(token_delay_s=0.002, models=("m", "tgi")) as srv:
        _, con = _run(tmp_path, _spec(srv.url, "openai", extra, concurrency="[1]"))
        bodies = [r["body"] for r in srv.requests]
    rows = fetch_dicts(con, "SELECT * FROM requests")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    # With a usage chunk the count is the server's, without it one token per content chunk: both are 6.
    assert all(r["output_tokens"] == 6 and r["finish_reason"] == "length" for r in rows)
    assert all((r["prompt_tokens"] == 4) == usage for r in rows)
    assert all(("stream_options" in b) == usage for b in bodies)
    if preset == "vllm":
        assert all(b["ignore_eos"] is True and b["min_tokens"] == 6 for b in bodies)
    if preset == "tgi":
        assert all(b["model"] == "tgi" for b in bodies)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize(
    "mode, needle",
    [
        ("garbage", "is not JSON"),
        ("error500", "HTTP 500"),
        ("unknown_model", "model 'm' not found"),
    ],
)
def test_per_request_errors_and_sweep_goes_on(tmp_path: Path, mode: str, needle: str) -> None:
    with FakeServer(mode=mode) as srv:
        _, con = _run(tmp_path, _spec(srv.url))
    cells = fetch_dicts(con, "SELECT n, status, reason, requests_failed FROM cells ORDER BY n")
    assert [c["n"] for c in cells] == [1, 2]  # the sweep went on after the first failed cell
    for c in cells:
        assert c["status"] == "failed" and needle in c["reason"] and c["requests_failed"] == 2 * c["n"]
    errors = [r[0] for r in con.execute("SELECT error FROM requests").fetchall()]
    assert len(errors) == 6 and all(needle in e for e in errors)
    assert all("\n" not in e for e in errors)


def test_unreachable_server_fails_every_cell_at_the_preflight(tmp_path: Path) -> None:
    # Nothing listens: one pre-flight request says so, and no cell waits out request timeouts.
    url = f"http://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    _, con = _run(tmp_path, _spec(url))
    assert time.monotonic() - t0 < 15
    cells = fetch_dicts(con, "SELECT n, status, reason, requests_ok FROM cells ORDER BY n")
    assert [c["n"] for c in cells] == [1, 2]
    for c in cells:
        assert c["status"] == "failed" and c["requests_ok"] == 0
        assert "pre-flight" in c["reason"] and url in c["reason"] and "refused" in c["reason"].lower()
    assert con.execute("SELECT count(*) FROM requests").fetchone() == (0,)


def test_openai_garbage_is_named(tmp_path: Path) -> None:
    with FakeServer(mode="garbage") as srv:
        _, con = _run(tmp_path, _spec(srv.url, "openai", concurrency="[1]", requests=1))
    (err,) = con.execute("SELECT error FROM requests").fetchone()
    assert "not an SSE data line" in err and "/v1/completions" in err


def _worker_pids(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> list[int]:
    pids = []
    for events in (tmp_path / "w").rglob("events.jsonl"):
        for line in events.read_text().splitlines():
            ev = json.loads(line)
            if ev["type"] == "start":
                pids.append(ev["pid"])
    return pids


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is dead too (reaped later by its parent, here pytest's init); /proc says which.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def test_watchdog_kills_a_stalled_cell(tmp_path: Path) -> None:
    extra = "heartbeat_timeout_s = 1.5\nrequest_timeout_s = 60"
    text = _spec("X", concurrency="[1]").replace("heartbeat_timeout_s = 20\nrequest_timeout_s = 20\n", "")
    with FakeServer(mode="stall", token_delay_s=0.01) as srv:
        t0 = time.monotonic()
        _, con = _run(tmp_path, text.replace('"X"', f'"{srv.url}"') + extra)
        elapsed = time.monotonic() - t0
    (status, reason) = con.execute("SELECT status, reason FROM cells").fetchone()
    assert status == "hung" and "no progress for 1.5 s" in reason
    assert elapsed < 20  # killed by the watchdog, not by the 60 s request timeout
    pids = _worker_pids(con, tmp_path)
    assert pids and all(_gone(p) for p in pids)


def test_hard_timeout(tmp_path: Path) -> None:
    text = _spec("X", concurrency="[1]", tokens=200).replace("timeout_s = 60\n", "timeout_s = 1.5\n")
    with FakeServer(token_delay_s=0.05) as srv:  # keeps streaming: the heartbeat alone would never fire
        _, con = _run(tmp_path, text.replace('"X"', f'"{srv.url}"'))
    (status, reason) = con.execute("SELECT status, reason FROM cells").fetchone()
    assert status == "timeout" and "timeout_s = 1.5" in reason
    assert all(_gone(p) for p in _worker_pids(con, tmp_path))


def test_hanging_server_fails_requests_after_request_timeout(tmp_path: Path) -> None:
    text = _spec("X", concurrency="[1]", requests=1).replace(
        "request_timeout_s = 20", "request_timeout_s = 1"
    )
    with FakeServer(mode="hang") as srv:
        _, con = _run(tmp_path, text.replace('"X"', f'"{srv.url}"'))
    (status, reason) = con.execute("SELECT status, reason FROM cells").fetchone()
    (err,) = con.execute("SELECT error FROM requests").fetchone()
    assert status == "failed" and ("within 1 s" in err or "stopped sending" in err), (reason, err)
    assert err in reason


@pytest.mark.slow
def test_summaries_on_a_known_answer(tmp_path: Path) -> None:
    """A server with 2 generation slots at 25 tokens/s per stream: N=2 scales, N=6 shares 2 slots 6 ways."""
    delay = 0.04
    with FakeServer(token_delay_s=delay, slots=2) as srv:
        run_id, con = _run(tmp_path, _spec(srv.url, concurrency="[1, 2, 6]", requests=2, tokens=8))
    summary = {r["n"]: r for r in sweep_summary(con, run_id)}
    # Independent computation from the raw request rows.
    for n, row in summary.items():
        reqs = fetch_dicts(con, "SELECT r.* FROM requests r JOIN cells c USING (cell_id) WHERE c.n = ?", [n])
        toks = np.array([r["output_tokens"] for r in reqs], dtype=float)
        walls = np.array([r["wall_ms"] for r in reqs]) / 1000.0
        starts = np.array([r["start_s"] for r in reqs])
        agents = np.array([r["agent"] for r in reqs])
        aggregate = toks.sum() / ((starts + walls).max() - starts.min())
        per_agent = np.mean([toks[agents == a].sum() / walls[agents == a].sum() for a in set(agents)])
        assert row["aggregate_tps"] == pytest.approx(aggregate)
        assert row["per_agent_tps"] == pytest.approx(per_agent)
        assert row["latency_p95_ms"] == pytest.approx(np.percentile(walls * 1000.0, 95))
        assert row["request_tps_p50"] == pytest.approx(np.median(toks / walls))
    base = summary[1]
    for n, row in summary.items():
        assert row["parallel_efficiency"] == pytest.approx(row["aggregate_tps"] / (n * base["aggregate_tps"]))
        assert row["degradation"] == pytest.approx(1 - row["per_agent_tps"] / base["per_agent_tps"])
    # The physics the server was built with (loose bounds: a shared CI machine is noisy).
    assert 0.6 / delay < base["request_tps_p50"] < 1.05 / delay
    assert summary[2]["parallel_efficiency"] > 0.75
    assert 0.2 < summary[6]["parallel_efficiency"] < 0.45
    assert {r["cliff_n"] for r in summary.values()} == {6}


def test_skip_list_records_skipped_cells_without_rows(tmp_path: Path) -> None:
    extra = '[[skip]]\nn = 2\nreason = "hangs deterministically (TR164 SS7)"\n'
    with FakeServer() as srv:
        run_id, con = _run(tmp_path, _spec(srv.url) + extra)
    cells = {r["n"]: r for r in fetch_dicts(con, "SELECT * FROM cells")}
    assert cells[2]["status"] == "skipped" and "TR164 SS7" in cells[2]["reason"]
    assert (
        con.execute("SELECT count(*) FROM requests WHERE cell_id = ?", [cells[2]["cell_id"]]).fetchone()[0]
        == 0
    )
    summary = {r["n"]: r for r in sweep_summary(con, run_id)}
    assert summary[2]["skipped"] == 1 and summary[2]["cells"] == 0 and summary[2]["per_agent_tps"] is None


def test_telemetry_and_manifest(tmp_path: Path) -> None:
    with FakeServer() as srv:
        run_id, con = _run(tmp_path, _spec(srv.url, concurrency="[1]"))
    man = json.loads(con.execute("SELECT manifest_json FROM runs").fetchone()[0])
    assert man["host"] and man["libraries"]["duckdb"] == duckdb.__version__
    rows = fetch_dicts(con, "SELECT * FROM telemetry")
    assert rows and all(r["run_id"] == run_id for r in rows)
    if not man["gpus"]:  # CI: no GPU, recorded as unavailable rather than a crash or zeros
        assert len(rows) == 1 and rows[0]["available"] is False and "unavailable" in rows[0]["note"]
        assert rows[0]["power_w"] is None


def test_agents_as_processes(tmp_path: Path) -> None:
    with FakeServer() as srv:
        _, con = _run(tmp_path, _spec(srv.url, "openai", 'agent_mode = "processes"', concurrency="[3]"))
    assert con.execute("SELECT status, requests_ok FROM cells").fetchone() == ("ok", 6)
    agents = sorted(r[0] for r in con.execute("SELECT DISTINCT agent FROM requests").fetchall())
    assert agents == [0, 1, 2]


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_a_stream_without_done_is_complete_once_it_says_why_it_finished(tmp_path: Path, api: str) -> None:
    # transformers serve ends its streams after the finish_reason chunk, with no "data: [DONE]".
    extra = f'api = "{api}"\npreset = "transformers"'
    with FakeServer(mode="no_done", token_delay_s=0.001) as srv:
        _, con = _run(tmp_path, _spec(srv.url, "openai", extra, concurrency="[1]", requests=2))
        bodies = [r["body"] for r in srv.requests]
    rows = fetch_dicts(con, "SELECT status, error, output_tokens, finish_reason FROM requests")
    assert [(r["status"], r["output_tokens"], r["finish_reason"]) for r in rows] == [("ok", 6, "length")] * 2
    assert all("stream_options" not in b for b in bodies)  # the preset leaves out what the server refuses


def test_a_stream_cut_before_its_finish_reason_fails(tmp_path: Path) -> None:
    with FakeServer(mode="cut", token_delay_s=0.001) as srv:
        _, con = _run(tmp_path, _spec(srv.url, "openai", concurrency="[1]", requests=1))
    (status, error) = con.execute("SELECT status, error FROM requests").fetchone()
    assert status == "error" and "ended without" in error and "finish_reason" in error
