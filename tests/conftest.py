"""Shared pytest fixtures: real nsys exports from ``tests/data`` (and ``../shared/fixtures``), DuckDB paths, the CLI.

Fixture files are read-only and shared: every fixture here hands out a private copy (or a decompressed
file) in pytest's temporary directory, once per session.
"""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("TRACEFORGE_FIXTURES", REPO.parent / "shared" / "fixtures"))
if not FIXTURES.exists():
    FIXTURES = Path("/work/shared/fixtures")

LLAMA_XZ = FIXTURES / "llama1b_n1_h100_nsys2025.3.sqlite.xz"
SMALL_MATMUL = FIXTURES / "small_matmul_h100_nsys2025.3.sqlite"
SMALL_MATMUL_REP = FIXTURES / "small_matmul_h100_nsys2025.3.nsys-rep"
CPU_OSRT_REP = FIXTURES / "cpu_osrt_nsys2022.4.nsys-rep"

#: Real captures the suite needs, kept in the repository (``.sqlite`` files xz-compressed), with checksums.
DATA = REPO / "tests" / "data"


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


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"fixture {path} not present")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The shared fixtures directory (read-only)."""
    return _need(FIXTURES)


@pytest.fixture(scope="session")
def llama_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``llama1b_n1`` (nsys 2025.3, 183,594 kernels) decompressed into a session temp dir."""
    src = _need(LLAMA_XZ)
    out = tmp_path_factory.mktemp("llama") / "llama1b_n1_h100_nsys2025.3.sqlite"
    with lzma.open(src) as fin, open(out, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return out


@pytest.fixture(scope="session")
def small_matmul_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private, writable copy of ``small_matmul`` (nsys 2025.3, 42 kernels on 2 streams)."""
    out = tmp_path_factory.mktemp("small_matmul") / SMALL_MATMUL.name
    if SMALL_MATMUL.exists():
        shutil.copyfile(SMALL_MATMUL, out)
    else:  # the same real export ships inside the package for `traceforge demo`
        from traceforge.cli.demo_cmd import bundled_trace

        assert Path(bundled_trace(str(out.parent))) == out
    return out


@pytest.fixture(scope="session")
def small_matmul_rep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the ``.nsys-rep`` written by nsys 2025.3 (nsys 2022.4 refuses it)."""
    out = tmp_path_factory.mktemp("small_matmul_rep") / SMALL_MATMUL_REP.name
    shutil.copyfile(_need(SMALL_MATMUL_REP), out)
    return out


@pytest.fixture(scope="session")
def cpu_osrt_rep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the CPU-only ``.nsys-rep`` written by nsys 2022.4 (no CUDA tables once exported)."""
    out = tmp_path_factory.mktemp("cpu_osrt_rep") / CPU_OSRT_REP.name
    shutil.copyfile(_need(CPU_OSRT_REP), out)
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
