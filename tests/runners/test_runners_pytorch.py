"""pytorch_direct with a tiny random-weight Llama on the CPU (skipped where torch/transformers are absent,
as in CI); the real GPU run is recorded in docs/runners.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from traceforge.runners.results import fetch_dicts
from traceforge.runners.spec import parse_spec
from traceforge.runners.sweep import run_sweep

TINY = """
name = "tiny"
backend = "pytorch_direct"
model = "tiny-llama-random"
dtype = "float32"
device = "cpu"
concurrency = [1, 2]
requests_per_agent = 2
max_new_tokens = 5
prompt_tokens = 7
timeout_s = 300
heartbeat_timeout_s = 120
{extra}
[model_config]
model_type = "llama"
hidden_size = 64
intermediate_size = 128
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 2
vocab_size = 256
"""


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_tiny_model_on_cpu(tmp_path: Path, mode: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    spec = parse_spec(TINY.format(extra=f'agent_mode = "{mode}"'))
    run_id = run_sweep(spec, tmp_path / "t.duckdb", workdir=tmp_path / "w", quiet=True)
    con = duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True)
    assert [r[0] for r in con.execute("SELECT status FROM cells ORDER BY n").fetchall()] == ["ok", "ok"]
    rows = fetch_dicts(con, "SELECT * FROM requests")
    assert len(rows) == 6
    # min_new_tokens = max_new_tokens: random weights never stop early.
    assert all(r["output_tokens"] == 5 and r["prompt_tokens"] == 7 for r in rows)
    assert all(0 < r["ttft_ms"] < r["wall_ms"] for r in rows)
    man = json.loads(con.execute("SELECT manifest_json FROM runs WHERE run_id = ?", [run_id]).fetchone()[0])
    assert "torch" in man["worker"]


def test_runs_cli_json(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from runner_servers import FakeServer

    spec = tmp_path / "s.toml"
    db = tmp_path / "r.duckdb"
    with FakeServer() as srv:
        spec.write_text(f"""
name = "cli"
backend = "ollama"
model = "m"
base_url = "{srv.url}"
concurrency = [1, 2]
requests_per_agent = 2
max_new_tokens = 4
prompt = "x"
""")
        proc = subprocess.run(
            [sys.executable, "-m", "traceforge", "run", str(spec), "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr
    assert "2 ok" in proc.stdout
    out = subprocess.run(
        [sys.executable, "-m", "traceforge", "runs", "--db", str(db), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    data = json.loads(out.stdout)
    assert [c["n"] for c in data["cells"]] == [1, 2]
    assert [s["parallel_efficiency"] is not None for s in data["summary"]] == [True, True]
    table = subprocess.run(
        [sys.executable, "-m", "traceforge", "runs", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin"},
    )
    assert table.returncode == 0 and "sweep summary" in table.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "traceforge", "runs", "--db", str(db), "--run", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "no run with id 'nope'" in missing.stderr
