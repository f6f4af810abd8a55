"""Query parameters written as SQL literals (``traceforge.store.sql_params``).

DuckDB's Python client imports pandas to convert the first bound parameter when pandas is installed (a cost
of its own on every command: docs/performance.md), so traceforge never binds parameters: it writes them into
the SQL. Each literal must come back from DuckDB exactly as DuckDB's own binding of the same Python value
does, and no command may make DuckDB import pandas.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from traceforge.store.sql_params import bind, literal

VALUES: list[Any] = [
    0,
    -5,
    2**62,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    1e-300,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "it's",
    "a'b?c$1--x /* not a comment */",
    "'; DROP TABLE traces; --",
    "ünïcødé\n\ttab\\back\\x41",
    b"\x00\xffab'",
    True,
    False,
    None,
    dt.datetime(2026, 11, 24, 6, 30, 1, 123456),
    dt.date(2026, 11, 24),
    dt.time(1, 2, 3, 4),
    dt.timedelta(days=2, seconds=7, microseconds=5),
    [1, 2, 3],
    ["a", None, "b'c"],
    decimal.Decimal("12.345"),
    decimal.Decimal("-7"),
    {"a": 1, "b": "x"},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_literal_reads_back_as_duckdb_binds_the_value(value: Any) -> None:
    con = duckdb.connect()
    bound, bound_type = con.execute("SELECT ?, typeof(?)", [value, value]).fetchone() or (None, None)
    written, written_type = con.execute(f"SELECT {literal(value)}, typeof({literal(value)})").fetchone() or (
        None,
        None,
    )
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(written)
    else:
        assert written == bound
    assert written_type == bound_type


def test_a_timezone_aware_datetime_keeps_its_instant() -> None:
    value = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    row = con.execute(f"SELECT epoch_us({literal(value)}), typeof({literal(value)})").fetchone()
    assert row == (int(value.timestamp() * 1_000_000), "TIMESTAMP WITH TIME ZONE")


def test_bind_fills_placeholders_outside_quotes_and_comments() -> None:
    query = "SELECT ?, '?', \"x?\" /* ? */, ? -- ?\n, 'it''s ?'"
    assert bind(query, [1, "o'k"]) == "SELECT 1, '?', \"x?\" /* ? */, 'o''k' -- ?\n, 'it''s ?'"
    assert bind("SELECT $2, $1, $2", ["a", 3]) == "SELECT 3, 'a', 3"
    assert bind("SELECT $src || $src, '$src'", {"src": "p"}) == "SELECT 'p' || 'p', '$src'"
    assert bind("SELECT 1", None) == "SELECT 1"
    con = duckdb.connect()
    tricky = "'; DROP TABLE t; --"
    con.execute("CREATE TABLE t (s VARCHAR)")
    con.execute(bind("INSERT INTO t VALUES (?)", [tricky]))
    assert con.execute("SELECT s FROM t").fetchall() == [(tricky,)]


@pytest.mark.parametrize(
    ("query", "params", "message"),
    [
        ("SELECT ?, ?", [1], "more placeholders"),
        ("SELECT ?", [1, 2], "uses 1 of the 2"),
        ("SELECT $3", [1], "$3 has no parameter"),
        ("SELECT $a", {"b": 1}, "no parameter named 'a'"),
    ],
)
def test_bind_rejects_mismatched_parameters(query: str, params: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("$", r"\$")):
        bind(query, params)


def test_literal_rejects_what_it_cannot_write() -> None:
    with pytest.raises(TypeError, match="object"):
        literal(object())


@pytest.mark.slow
def test_no_command_makes_duckdb_import_pandas(
    tmp_path: Path, small_matmul_export: Path, llama_export: Path, run_cli: Any
) -> None:
    """With pandas importable, ingest/traces/sql/diff/report must not import it (a stand-in records it)."""
    fake = tmp_path / "site" / "pandas"
    fake.mkdir(parents=True)
    marker = tmp_path / "pandas-imported"
    (fake / "__init__.py").write_text(
        "import traceback\n"
        f"with open({str(marker)!r}, 'a') as f:\n"
        "    f.write(''.join(traceback.format_stack()) + '\\n')\n"
        "raise ImportError('stand-in for pandas')\n"
    )
    env = {"PYTHONPATH": str(tmp_path / "site")}
    # The stand-in works: DuckDB's binding of a parameter reaches for pandas.
    probe = run_cli_python(env, "import duckdb; duckdb.connect().execute('SELECT ?', [1]).fetchall()")
    assert probe == 0 and marker.exists()
    marker.unlink()

    db = tmp_path / "s.duckdb"
    ingest = run_cli("ingest", "--db", db, small_matmul_export, llama_export, env=env)
    assert ingest.rc == 0, str(ingest)
    query = "SELECT trace_id FROM traces ORDER BY kernel_count"
    traces = run_cli("sql", "--db", db, query, "--format", "csv")
    first, second = traces.stdout.split()[1:3]
    for args in (
        ("traces", "--db", db),
        ("sql", "--db", db, "SELECT count(*) AS n FROM kernels"),
        ("diff", "--db", db, first, second),
        ("report", "--db", db, "--trace", second, "-o", tmp_path / "r.html"),
        ("ingest", "--db", db, small_matmul_export),
    ):
        result = run_cli(*args, env=env)
        assert result.rc == 0, str(result)
    assert not marker.exists(), marker.read_text()


def run_cli_python(env: dict[str, str], code: str) -> int:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=False).returncode


def test_the_package_never_hands_duckdb_parameters() -> None:
    """Every query with parameters goes through ``bind`` (commands the test above does not run included)."""
    import ast

    import traceforge

    root = Path(traceforge.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in ("execute", "executemany", "sql"):
                continue
            receiver = ast.unparse(node.func.value)
            ours = node.func.attr == "sql" and (receiver.endswith(("store", "self")) or receiver == "tf")
            if not ours and (len(node.args) > 1 or any(k.arg == "params" for k in node.keywords)):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
