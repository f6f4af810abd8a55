"""``traceforge runs`` lists run ids whole, so the id ``--run`` needs can be copied (issue 16, item 14).

Rich cut a long id to ``tr131-ollama-llama3.2-1…`` in an 80-column table (a pipe, a narrow terminal).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

#: As ``traceforge run`` makes them: spec name, UTC time, 6 hex digits.
LONG = "tr131-ollama-llama3.2-1b-chat-sweep-20261202T061500-a1b2c3"


def _store(path: Path) -> Path:
    from traceforge.runners.results import ensure_tables, insert_rows
    from traceforge.store import Store

    with Store(path) as store:
        ensure_tables(store.con)
        runs = [
            {"run_id": LONG, "name": "tr131-ollama-llama3.2-1b-chat-sweep", "backend": "ollama",
             "model": "llama3.2:1b-instruct-q4_K_M", "status": "ok"},
            {"run_id": "short-1", "name": "short", "backend": "openai", "model": "m", "status": "ok"},
        ]  # fmt: skip
        insert_rows(store.con, "runs", runs)
    return path


def test_runs_prints_every_run_id_whole_and_run_takes_it(tmp_path: Path, run_cli: Any) -> None:
    db = _store(tmp_path / "runs.duckdb")
    for columns in ("80", "60"):
        listed = run_cli("runs", "--db", db, "--all", env={"COLUMNS": columns})
        assert listed.rc == 0, str(listed)
        assert LONG in listed.stdout, listed.stdout
    # The id copied from the listing selects the run; so does a unique prefix.
    ids = re.findall(r"tr131-[\w.-]+-[0-9a-f]{6}", listed.stdout)
    assert ids == [LONG]
    for arg in (ids[0], "tr131"):
        shown = run_cli("runs", "--db", db, "--run", arg, env={"COLUMNS": "80"})
        assert shown.rc == 0, str(shown)
        assert f"cells of {LONG}" in " ".join(shown.stdout.split()), shown.stdout
    bad = run_cli("runs", "--db", db, "--run", "nope")
    assert bad.rc == 1 and bad.stderr.strip() == (
        "traceforge: error: no run with id 'nope' (see `traceforge runs --all`)"
    ), str(bad)
