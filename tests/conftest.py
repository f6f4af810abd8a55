"""Shared pytest fixtures: the real nsys exports of ``tests/data``, DuckDB paths, the CLI, the test oracles.

Fixture files are read-only and shared: every fixture here hands out a private copy (or a decompressed
file) in pytest's temporary directory, once per session. A missing data file is an error; a missing test tool
(nsys 2022.4, Chromium, xxh128sum) fails the test with what to install, unless ``TRACEFORGE_ALLOW_SKIPS=1``
turns those failures into skips for a quick local run.
"""

from __future__ import annotations

import atexit
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Real captures the suite needs, kept in the repository (``.sqlite`` files xz-compressed), with checksums.
DATA = REPO / "tests" / "data"

LLAMA = "llama1b_n1_h100_nsys2025.3.sqlite"
SMALL_MATMUL_NAME = "small_matmul_h100_nsys2025.3.sqlite"
SMALL_MATMUL_REP = DATA / "small_matmul_h100_nsys2025.3.nsys-rep"
CPU_OSRT_REP = DATA / "cpu_osrt_nsys2022.4.nsys-rep"
CU11_REP = DATA / "cu11_driverapi_h200_nsys2022.4.nsys-rep"

#: Set to 1 to skip (rather than fail) tests whose tool is not installed: a local convenience, never in CI.
ALLOW_SKIPS = os.environ.get("TRACEFORGE_ALLOW_SKIPS") == "1"


def _data_checksums() -> dict[str, str]:
    sums = {}
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        sums[name.lstrip("*")] = digest
    return sums


def data_file(name: str) -> Path:
    """The repository copy of a real capture, checked against ``tests/data/SHA256SUMS``.

    A missing or altered file is an error, never a skip: a fresh clone carries every file the suite needs.
    """
    import hashlib

    path = DATA / name
    if not path.exists():
        raise FileNotFoundError(f"test data {path} is missing (it is part of the repository)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = _data_checksums().get(name)
    if digest != expected:
        raise AssertionError(f"test data {path}: sha256 {digest} does not match SHA256SUMS ({expected})")
    return path


@pytest.fixture(scope="session")
def real_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A factory: ``real_export("known_graphmode_h200_nsys2025.3.sqlite")`` -> a private, writable copy.

    ``name`` is the export's name without ``.xz``; compressed files are decompressed once per session.
    """
    root = tmp_path_factory.mktemp("real_exports")
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            out = root / name
            if (DATA / name).exists():
                shutil.copyfile(data_file(name), out)
            else:
                with lzma.open(data_file(name + ".xz")) as fin, open(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
            made[name] = out
        return made[name]

    return get


_shared_exports: dict[str, Path] = {}


def data_export(name: str) -> Path:
    """A read-only decompressed copy of ``tests/data/<name>.xz`` (or the file itself when not compressed).

    For module-level constants, where no pytest fixture is available: decompressed once per process into a
    temporary directory removed at exit. Tests that write to the file take ``real_export`` instead.
    """
    if name not in _shared_exports:
        if (DATA / name).exists():
            _shared_exports[name] = data_file(name)
        else:
            root = Path(tempfile.mkdtemp(prefix="traceforge-data-"))
            atexit.register(shutil.rmtree, root, True)
            out = root / name
            with lzma.open(data_file(name + ".xz")) as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            out.chmod(0o444)
            _shared_exports[name] = out
    return _shared_exports[name]


def missing_tool(what: str, install: str) -> None:
    """Fail (or, with ``TRACEFORGE_ALLOW_SKIPS=1``, skip) a test whose tool is not installed."""
    message = f"{what} is not installed: {install} (TRACEFORGE_ALLOW_SKIPS=1 skips instead)"
    if ALLOW_SKIPS:
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


def chromium_bin() -> Optional[str]:
    """A headless-capable Chromium on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``nsys`` or ``browser`` need that tool: fail with what to install when it is missing."""
    if item.get_closest_marker("nsys") is not None:
        from nsys_oracle import find_nsys

        if find_nsys() is None:
            missing_tool("Debian's nsys 2022.4", "run scripts/install-nsys.sh")
    if item.get_closest_marker("browser") is not None and chromium_bin() is None:
        missing_tool("a headless Chromium", "run scripts/install-chromium.sh")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The repository's test data directory (read-only; exports there are ``.xz``)."""
    return DATA


@pytest.fixture(scope="session")
def llama_export(real_export: Callable[[str], Path]) -> Path:
    """``llama1b_n1`` (nsys 2025.3, 183,594 kernels) decompressed into a session temp dir."""
    return real_export(LLAMA)


@pytest.fixture(scope="session")
def small_matmul_export(real_export: Callable[[str], Path]) -> Path:
    """A private, writable copy of ``small_matmul`` (nsys 2025.3, 42 kernels on 2 streams)."""
    return real_export(SMALL_MATMUL_NAME)


@pytest.fixture(scope="session")
def small_matmul_rep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ``.nsys-rep`` written by nsys 2025.3 (nsys 2022.4 refuses it)."""
    out = tmp_path_factory.mktemp("small_matmul_rep") / SMALL_MATMUL_REP.name
    shutil.copyfile(data_file(SMALL_MATMUL_REP.name), out)
    return out


@pytest.fixture(scope="session")
def cpu_osrt_rep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the CPU-only ``.nsys-rep`` written by nsys 2022.4 (no CUDA tables once exported)."""
    out = tmp_path_factory.mktemp("cpu_osrt_rep") / CPU_OSRT_REP.name
    shutil.copyfile(data_file(CPU_OSRT_REP.name), out)
    return out


@pytest.fixture(scope="session")
def cu11_rep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the GPU ``.nsys-rep`` nsys 2022.4 wrote (90 driver-API kernels; nsys 2022.4 exports it)."""
    out = tmp_path_factory.mktemp("cu11_rep") / CU11_REP.name
    shutil.copyfile(data_file(CU11_REP.name), out)
    return out


@pytest.fixture(scope="session")
def export_template(llama_export: Path) -> Path:
    """The real export whose schema ``export_builder`` copies (the llama one has the MEMSET table too)."""
    return llama_export


@pytest.fixture(scope="session")
def edge_export(export_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``edge_export(name)``: the export of ``export_builder.EDGE_CASES[name]``, built once per session."""
    from export_builder import EDGE_CASES, build_export

    root = tmp_path_factory.mktemp("edge")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_export(export_template, root / f"edge_{name}.sqlite", **EDGE_CASES[name]())
        return built[name]

    return get


@pytest.fixture(scope="session")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], tuple[Path, str]]:
    """``ingested(export)``: ingest an export once per session into its own DuckDB file (Python API).

    Returns the DuckDB path and the trace id (the file's only trace).
    """
    import traceforge

    root = tmp_path_factory.mktemp("ingested")
    done: dict[Path, tuple[Path, str]] = {}

    def get(export: Path) -> tuple[Path, str]:
        if export not in done:
            db = root / f"{len(done)}-{export.stem}.duckdb"
            with traceforge.connect(db) as tf:
                tf.ingest([export])
                trace_id = tf.sql("SELECT trace_id FROM traces")["trace_id"].to_list()
            assert len(trace_id) == 1, f"{export}: expected one trace, got {trace_id}"
            done[export] = (db, trace_id[0])
        return done[export]

    return get


@pytest.fixture(scope="session")
def nsys_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where ``nsys_oracle.run_stats`` keeps its CSVs for the session."""
    return tmp_path_factory.mktemp("nsys-stats")


@pytest.fixture(scope="session")
def nsys_bin() -> Optional[str]:
    """Debian's nsys 2022.4, or None when it is not installed."""
    from nsys_oracle import find_nsys

    return find_nsys()


@pytest.fixture
def fresh_db(tmp_path: Path) -> Path:
    """Path of a DuckDB file that does not exist yet."""
    return tmp_path / "store.duckdb"


@dataclass
class CliResult:
    """What a CLI subprocess did."""

    rc: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@pytest.fixture(scope="session")
def run_cli() -> Iterator[Callable[..., CliResult]]:
    """Run ``python -m traceforge ARGS`` as a real subprocess; returns rc, stdout, stderr.

    Usage: ``run_cli("ingest", "--db", db, path, env={"PATH": ...}, timeout=300)``.
    """

    def run(
        *args: object, env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None, timeout: float = 600
    ) -> CliResult:
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        proc = subprocess.run(
            [sys.executable, "-m", "traceforge", *map(str, args)],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd,
            timeout=timeout,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    yield run
