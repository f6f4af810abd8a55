"""Sweep spec validation: bad specs are rejected before anything starts, naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from traceforge.errors import InputNotFoundError, SpecError
from traceforge.runners.spec import load_spec, parse_spec
from traceforge.runners.sweep import plan

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
name = "t"
backend = "ollama"
model = "m"
base_url = "http://127.0.0.1:11434"
concurrency = [1, 2, 4]
requests_per_agent = 3
repetitions = 2
max_new_tokens = 16
prompt = "hello"
"""


def test_good_spec_and_plan() -> None:
    spec = parse_spec(GOOD)
    assert spec.concurrency == (1, 2, 4) and spec.repetitions == 2 and spec.workloads[0].max_new_tokens == 16
    cells = plan(spec)
    assert len(cells) == 3 * 2
    assert len({c.cell_id("r") for c in cells}) == 6


def _without(key: str) -> str:
    return "\n".join(ln for ln in GOOD.splitlines() if not ln.startswith(f"{key} "))


@pytest.mark.parametrize(
    "text, field",
    [
        (GOOD.replace('"ollama"', '"vllm"'), "backend: unknown backend 'vllm'"),
        (_without("name"), "name: missing"),
        (_without("model"), "model: missing"),
        (_without("concurrency"), "concurrency: missing"),
        (_without("requests_per_agent"), "requests_per_agent: missing"),
        (_without("base_url"), "base_url: missing"),
        (_without("prompt"), "prompt: missing"),
        (_without("max_new_tokens"), "max_new_tokens: missing"),
        (GOOD.replace("[1, 2, 4]", "[1, 0, 4]"), "concurrency[1]: must be >= 1, got 0"),
        (GOOD.replace("[1, 2, 4]", "[1, 2, 2]"), "concurrency: repeats a value"),
        (GOOD.replace("[1, 2, 4]", "[]"), "concurrency: must be a non-empty list"),
        (GOOD.replace("[1, 2, 4]", '[1, "8"]'), "concurrency[1]: must be an integer"),
        (GOOD.replace("repetitions = 2", "repetitions = 0"), "repetitions: must be >= 1"),
        (GOOD.replace("max_new_tokens = 16", "max_new_tokens = -5"), "max_new_tokens: must be >= 1"),
        (GOOD + "timeout_s = 0\n", "timeout_s: must be > 0"),
        (GOOD + "warmup_requests = -1\n", "warmup_requests: must be >= 0"),
        (GOOD + "concurency = [1]\n", "concurency: unknown key"),
        (GOOD.replace("http://127.0.0.1:11434", "localhost:11434"), "base_url: must be an http(s) URL"),
        (GOOD + 'api = "completions"\n', 'api: must be "generate" or "chat" for ollama'),
        (GOOD + "[capture]\nncu = true\nnsys = true\n", "capture.nsys: a server backend is captured through"),
        (GOOD + "[capture]\nnsys = false\nncu = true\n", "capture.ncu: needs capture.nsys = true"),
        (GOOD + "[capture]\nncu_top_k = 0\n", "capture.ncu_top_k: must be >= 1"),
        (GOOD + "[capture]\nbogus = 1\n", "capture.bogus: unknown key"),
        (GOOD + "[[skip]]\nn = 2\n", "skip[0].reason: missing"),
        (GOOD + '[[skip]]\nworkload = "nope"\nreason = "x"\n', "skip[0].workload: no workload named 'nope'"),
        (GOOD + 'agent_mode = "fibers"\n', 'agent_mode: must be "threads" or "processes"'),
        ("name = [", "not valid TOML"),
    ],
)
def test_rejected_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(text, source="sweep.toml")
    assert str(err.value).startswith("sweep.toml: ")
    assert field in str(err.value)


def test_workloads_list() -> None:
    text = (
        _without("prompt").replace("max_new_tokens = 16", "max_new_tokens = 8")
        + """
[[workloads]]
name = "short"
prompt_tokens = 256
max_new_tokens = 128
[[workloads]]
name = "default_tokens"
prompt = "hi"
"""
    )
    spec = parse_spec(text)
    assert [(w.name, w.max_new_tokens, w.prompt_tokens) for w in spec.workloads] == [
        ("short", 128, 256),
        ("default_tokens", 8, None),
    ]
    dup = text.replace('name = "default_tokens"', 'name = "short"')
    with pytest.raises(SpecError, match="duplicate workload name"):
        parse_spec(dup)
    with pytest.raises(SpecError, match=r"workloads\[0\].max_new_tokens: must be >= 1"):
        parse_spec(text.replace("max_new_tokens = 128", "max_new_tokens = 0"))


def test_openai_presets_and_pytorch_rules() -> None:
    spec = parse_spec(GOOD.replace('"ollama"', '"openai"') + 'preset = "vllm"\napi = "chat"\n')
    assert spec.preset == "vllm" and spec.api == "chat"
    with pytest.raises(SpecError, match="preset: unknown preset 'trt'"):
        parse_spec(GOOD.replace('"ollama"', '"openai"') + 'preset = "trt"\n')
    with pytest.raises(SpecError, match="base_url: pytorch_direct runs in-process"):
        parse_spec(GOOD.replace('"ollama"', '"pytorch_direct"'))


def test_repo_specs_are_valid() -> None:
    specs = sorted((ROOT / "runners").glob("*.toml"))
    assert len(specs) >= 4
    for path in specs:
        spec = load_spec(path)
        assert plan(spec), path


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        load_spec(tmp_path / "nope.toml")


def test_cli_rejects_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('"ollama"', '"vllm"'))
    db = tmp_path / "s.duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "traceforge", "run", str(bad), "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("traceforge: error: ") and "backend" in lines[0]
    assert str(bad) in lines[0]
    assert not db.exists()  # nothing started, nothing written


SERVERS = (
    GOOD.replace('backend = "ollama"', 'backend = "openai"')
    + """
[[server]]
name = "plain"
command = ["transformers", "serve", "/tmp/model"]

[[server]]
name = "cb"
command = ["transformers", "serve", "/tmp/model", "--continuous-batching"]
scope = "cell"

[[skip]]
server = "cb"
n = 4
reason = "known hang"
"""
)


def test_several_servers_are_configurations_of_one_sweep() -> None:
    spec = parse_spec(SERVERS)
    assert [s.name for s in spec.servers] == ["plain", "cb"] and spec.servers[1].scope == "cell"
    cells = plan(spec)
    assert len(cells) == 2 * 3 * 2
    # A server's cells are consecutive (it is started once for them), and its name is in the cell id.
    order = [c.server for c in cells]
    assert order == ["plain"] * 6 + ["cb"] * 6
    assert all(f"/{c.server}/" in c.cell_id("r") for c in cells)
    assert len({c.cell_id("r") for c in cells}) == 12
    (rule,) = spec.skip
    assert rule.matches("m", "default", 4, 0, "cb") and not rule.matches("m", "default", 4, 0, "plain")
    # The spec survives the trip to a cell worker.
    assert type(spec).from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda t: t.replace('name = "cb"\n', ""), "server[1].name"),
        (lambda t: t.replace('name = "cb"', 'name = "plain"'), "duplicate server name(s): plain"),
        (lambda t: t.replace('scope = "cell"', 'scope = "run"'), "server[1].scope"),
        (lambda t: t.replace('server = "cb"', 'server = "nope"'), "skip[0].server"),
    ],
)
def test_bad_servers_name_the_field(edit: object, field: str) -> None:
    import re

    with pytest.raises(SpecError, match=re.escape(field)):
        parse_spec(edit(SERVERS))  # type: ignore[operator]
