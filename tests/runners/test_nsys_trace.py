"""Which APIs a sweep's nsys traces: the default adds ``python-gil`` only where the nsys in use has it.

The oracles are real nsys help texts: the installed nsys 2022.4 (no ``python-gil``) run as a subprocess,
and ``nsys profile --help`` of nsys 2025.3.1 captured on the GPU host (``tests/data``).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import data_file
from traceforge.runners import nsys_trace
from traceforge.runners.spec import parse_spec
from traceforge.runners.sweep import _nsys_wrapper, manifest

pytestmark = pytest.mark.nsys

NSYS_2025_HELP = "nsys2025.3.1_profile_help.txt"


def _nsys_2022() -> str:
    nsys = shutil.which("nsys")
    assert nsys, "nsys 2022.4 is needed (scripts/install-nsys.sh)"
    version = subprocess.run([nsys, "--version"], capture_output=True, text=True).stdout
    assert "2022.4" in version, version
    return nsys


def test_trace_options_are_read_from_each_release_help() -> None:
    new = nsys_trace.trace_options(data_file(NSYS_2025_HELP).read_text())
    old = nsys_trace.supported_trace_options(_nsys_2022())
    assert {"cuda", "nvtx", "osrt", "python-gil", "cuda-hw"} <= new
    assert {"cuda", "nvtx", "osrt", "cudnn"} <= old
    assert "python-gil" not in old
    assert nsys_trace.trace_options("no trace switch here") == frozenset()


def test_default_traces_the_gil_where_nsys_has_it() -> None:
    supported = nsys_trace.trace_options(data_file(NSYS_2025_HELP).read_text())
    choice = nsys_trace.choose_from(None, supported, "/opt/nsys-2025.3/nsys")
    assert choice == nsys_trace.TraceChoice("cuda,nvtx,osrt,python-gil")


def test_default_on_nsys_2022_leaves_the_gil_out_and_says_so() -> None:
    nsys = _nsys_2022()
    choice = nsys_trace.choose_trace(None, nsys)
    assert choice.trace == "cuda,nvtx,osrt"
    assert choice.note and choice.note.startswith(f"python-gil not traced: {nsys} does not support it")


def test_an_explicit_trace_is_kept_except_an_unsupported_gil() -> None:
    nsys = _nsys_2022()
    assert nsys_trace.choose_trace("cuda,nvtx", nsys) == nsys_trace.TraceChoice("cuda,nvtx")
    choice = nsys_trace.choose_trace("cuda,python-gil,nvtx", nsys)
    assert choice.trace == "cuda,nvtx" and choice.note
    # A help that cannot be read leaves the value to nsys itself.
    assert nsys_trace.choose_from("cuda,python-gil", frozenset(), "x") == nsys_trace.TraceChoice(
        "cuda,python-gil"
    )


SPEC = """
name = "trace-choice"
backend = "ollama"
model = "m"
base_url = "http://127.0.0.1:11434"
concurrency = [1]
requests_per_agent = 1
max_new_tokens = 4
prompt = "hello"
[server]
command = ["sleep", "60"]
[capture]
nsys = true
"""


def test_the_run_manifest_and_the_nsys_command_use_the_choice() -> None:
    nsys = _nsys_2022()
    spec = parse_spec(SPEC)
    assert spec.capture.nsys_trace is None
    man = manifest(spec, nsys, None)
    assert man["nsys_trace"] == "cuda,nvtx,osrt"
    assert "python-gil not traced" in man["nsys_trace_note"]
    command = _nsys_wrapper(spec, nsys, "/tmp/report")
    assert command[command.index("-t") + 1] == "cuda,nvtx,osrt"
