"""``traceforge sql`` output as real subprocesses: DuckDB's whole error, unique names, every type, wide and
long results (issue 16, items 4 and 5).

The store is made by ingesting the real ``small_matmul`` export; every expected value is what DuckDB itself
returns for the same query on that store (``duckdb.connect(db).execute(...)``), never traceforge.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

import traceforge

JOIN_USING = "SELECT * FROM kernel_summary JOIN traces USING (trace_id)"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, small_matmul_export: Path, run_cli: Any) -> Path:
    db = tmp_path_factory.mktemp("sql_output") / "sql.duckdb"
    result = run_cli("ingest", "--db", db, small_matmul_export)
    assert result.rc == 0, str(result)
    return db


def _duck(db: Path, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cursor = con.execute(query)
        names = [d[0] for d in cursor.description or []]
        return names, cursor.fetchall()
    finally:
        con.close()


def _duck_error(db: Path, query: str) -> str:
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute(query)
    except duckdb.Error as exc:
        return str(exc)
    finally:
        con.close()
    raise AssertionError(f"DuckDB ran {query!r} without an error")


def _sql(run_cli: Any, db: Path, query: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = run_cli("sql", "--db", db, query, *args, env=env)
    assert result.rc == 0, str(result)
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("query", "hint"),
    [
        ("SELECT nme FROM kernels", "Candidate bindings"),
        ("SELECT * FROM kernel_sumary", "Did you mean"),
        ("SELEC 1", "LINE 1"),
    ],
)
def test_sql_error_keeps_duckdbs_hints(store: Path, run_cli: Any, query: str, hint: str) -> None:
    expected = _duck_error(store, query)
    assert hint in expected  # what DuckDB itself says, beyond its first line
    result = run_cli("sql", "--db", store, query)
    assert result.rc == 1, str(result)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("traceforge: error: ")
    assert expected.strip() in result.stderr, str(result)


def test_duplicate_names_are_made_unique(store: Path, run_cli: Any) -> None:
    names, rows = _duck(store, JOIN_USING)
    assert len(names) != len(set(names))  # DuckDB's result repeats a name (metric_version)
    repeated = sorted({n for n in names if names.count(n) > 1})
    expected = list(names)
    for name in repeated:
        positions = [i for i, n in enumerate(names) if n == name]
        for k, i in enumerate(positions[1:], start=1):
            expected[i] = f"{name}_{k}"
    assert len(set(expected)) == len(expected)

    header = next(csv.reader(io.StringIO(_sql(run_cli, store, JOIN_USING, "--format", "csv"))))
    assert header == expected
    records = json.loads(_sql(run_cli, store, JOIN_USING, "--format", "json"))
    assert len(records) == len(rows)
    assert list(records[0]) == expected
    for name in repeated:
        first, second = names.index(name), expected.index(f"{name}_1")
        assert records[0][name] == rows[0][first]
        assert records[0][f"{name}_1"] == rows[0][second]
    table = _sql(run_cli, store, JOIN_USING, "--format", "table")
    for name in expected:
        assert re.search(rf"\b{re.escape(name)}\b", table), name

    with traceforge.connect(store, read_only=True) as tf:
        assert tf.sql(JOIN_USING).columns == expected


def test_csv_and_json_of_lists_and_structs(store: Path, run_cli: Any) -> None:
    query = (
        "SELECT device_id, list(name ORDER BY name) AS names, {'a': 1, 'b': 'x'} AS s "
        "FROM kernel_summary GROUP BY device_id ORDER BY device_id"
    )
    _, rows = _duck(store, query)
    assert rows and isinstance(rows[0][1], list) and isinstance(rows[0][2], dict)

    parsed = list(csv.DictReader(io.StringIO(_sql(run_cli, store, query, "--format", "csv"))))
    assert [(int(r["device_id"]), json.loads(r["names"]), json.loads(r["s"])) for r in parsed] == rows

    records = json.loads(_sql(run_cli, store, query, "--format", "json"))
    assert [(r["device_id"], r["names"], r["s"]) for r in records] == rows


def test_json_sum_is_a_number(store: Path, run_cli: Any) -> None:
    query = "SELECT sum(total_ns) AS total, sum(count) AS n FROM kernel_summary"
    _, rows = _duck(store, query)
    records = json.loads(_sql(run_cli, store, query, "--format", "json"))
    assert records == [{"total": rows[0][0], "n": rows[0][1]}]
    assert isinstance(records[0]["total"], int) and isinstance(records[0]["n"], int)


def _line_records(text: str) -> list[dict[str, str]]:
    records = []
    for block in text.strip("\n").split("\n\n"):
        record = {}
        for line in block.splitlines():
            name, _, value = line.partition(" = ")
            record[name.strip()] = value
        records.append(record)
    return records


def _same(text: str, value: Any) -> bool:
    if value is None:
        return text == "NULL"
    if isinstance(value, float):
        return float(text) == value
    return text == str(value)


def test_line_format_prints_every_column_in_full(store: Path, run_cli: Any) -> None:
    names, rows = _duck(store, "SELECT * FROM device_metrics ORDER BY trace_id, device_id")
    records = _line_records(
        _sql(run_cli, store, "SELECT * FROM device_metrics ORDER BY trace_id, device_id", "--format", "line")
    )
    assert len(records) == len(rows)
    for record, row in zip(records, rows):
        assert list(record) == names
        for name, value in zip(names, row):
            assert _same(record[name], value), (name, record[name], value)


def test_wide_table_switches_to_the_line_layout(store: Path, run_cli: Any) -> None:
    names, rows = _duck(store, "SELECT * FROM device_metrics")
    result = run_cli("sql", "--db", store, "SELECT * FROM device_metrics", env={"COLUMNS": "100"})
    assert result.rc == 0 and "Traceback" not in result.stderr, str(result)
    assert "--format line" in result.stderr
    records = _line_records(result.stdout)
    assert [list(r) for r in records] == [names] * len(rows)
    assert all(len(line) <= 100 for line in result.stdout.splitlines() if len(line) > 60 and "=" not in line)


def test_table_does_not_cut_names(store: Path, run_cli: Any) -> None:
    _, rows = _duck(store, "SELECT name FROM kernel_summary ORDER BY length(name) DESC LIMIT 1")
    longest = rows[0][0]
    assert len(longest) > 100
    assert longest in _sql(run_cli, store, "SELECT name FROM kernel_summary")


def test_long_table_prints_all_rows_or_says_how_many_are_left_out(store: Path, run_cli: Any) -> None:
    query = "SELECT range AS i FROM range(5000)"
    text = _sql(run_cli, store, query)
    shown = {int(m) for m in re.findall(r"^│\s*(\d+)\s*│$", text, flags=re.MULTILINE)}
    note = re.search(r"([\d,]+) of 5,000 rows not shown", text)
    if note is None:
        assert shown == set(range(5000))
    else:
        assert len(shown) + int(note.group(1).replace(",", "")) == 5000
        assert "--limit" in text
    everything = _sql(run_cli, store, query, "--limit", "0")
    assert {int(m) for m in re.findall(r"^│\s*(\d+)\s*│$", everything, flags=re.MULTILINE)} == set(
        range(5000)
    )


def test_types_polars_cannot_hold_are_printed(store: Path, run_cli: Any) -> None:
    query = (
        "SELECT INTERVAL 3 DAY AS i, 12::UHUGEINT AS u, [INTERVAL 1 DAY] AS li, "
        "'\\xAA'::BLOB AS b, 1.25::DECIMAL(10, 2) AS d"
    )
    records = json.loads(_sql(run_cli, store, query, "--format", "json"))
    assert records[0]["u"] == 12 and records[0]["d"] == 1.25
    assert records[0]["i"] == "3 days"
    for fmt in ("csv", "table", "line"):
        _sql(run_cli, store, query, "--format", fmt)
