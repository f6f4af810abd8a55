"""Fuzz the export reader (issue 19): mutated copies of small real exports are refused cleanly or land the
tables SQLite itself reads from them, never something else.

Each mutation (byte flips in b-tree pages, rowid and interior-key edits, swapped pages, truncations, header
field edits; seeded, so a failure names what to replay) is ingested into a fresh store. The oracle is
SQLite's own reading of the same mutated file (``PRAGMA quick_check`` first, then every table read in full):

- SQLite reads the file as it reads the pristine export: the store must hold the pristine export's
  ``kernels`` and ``api_calls`` rows, or the ingest must refuse;
- SQLite reads other rows: they are copied into a clean database, which is ingested; the mutated file must
  land the same rows as that copy, or be refused;
- SQLite cannot read it (or its reading is not an export the ingest accepts): only a refusal is right.

A refusal is a :class:`~traceforge.errors.TraceforgeError` other than an internal error, with the store left
without a trace. Both of the core's readers are fuzzed: the direct b-tree reader and the SQLite scan
(``TRACEFORGE_SQLITE_SCAN=1``). ``TRACEFORGE_FUZZ_MUTATIONS`` sets how many mutations each export gets per
reader (default 60, for 240 in all); each run prints its counts (identical, refused, mismatched,
crashes, hangs: an ingest over ``HANG_S``).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

import traceforge
from traceforge.errors import InternalError, TraceforgeError, WorkerDiedError

EXPORTS = ["small_matmul_h100_nsys2025.3.sqlite", "known_graphmode_h200_nsys2025.3.sqlite"]
MUTATIONS = int(os.environ.get("TRACEFORGE_FUZZ_MUTATIONS", "60"))
SEED = int(os.environ.get("TRACEFORGE_FUZZ_SEED", "19"))
#: An ingest of one mutated small export taking longer than this counts as a hang (they take ~0.1 s).
HANG_S = 30.0
#: The core's readers: the direct b-tree reader, and SQLite for every table (``TRACEFORGE_SQLITE_SCAN``).
READERS = {"direct": None, "sqlite": "1"}

Rows = dict[str, list[tuple[Any, ...]]]

#: Header fields worth editing: (offset, length).
HEADER_FIELDS = [
    (16, 2),
    (18, 1),
    (19, 1),
    (20, 1),
    (24, 4),
    (28, 4),
    (32, 4),
    (36, 4),
    (44, 4),
    (56, 4),
    (92, 4),
]


def _page_size(data: bytes | bytearray) -> int:
    size = int.from_bytes(data[16:18], "big")
    return 65536 if size == 1 else size


def _varint(buf: bytes | bytearray, at: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        b = buf[at + i]
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, i + 1
    return (value << 8) | buf[at + 8], 9


def _table_cells(data: bytearray, page_size: int) -> list[tuple[int, int]]:
    """(offset, length) of every rowid (leaf) and key (interior) varint in the table b-tree pages."""
    out = []
    for page in range(1, len(data) // page_size + 1):
        base = (page - 1) * page_size
        hdr = base + (100 if page == 1 else 0)
        kind = data[hdr]
        if kind not in (0x05, 0x0D):
            continue
        cells = int.from_bytes(data[hdr + 3 : hdr + 5], "big")
        ptrs = hdr + (12 if kind == 0x05 else 8)
        for i in range(cells):
            p = ptrs + 2 * i
            if p + 2 > base + page_size:
                break
            off = base + int.from_bytes(data[p : p + 2], "big")
            try:
                if kind == 0x0D:
                    _, n1 = _varint(data, off)
                    _, n2 = _varint(data, off + n1)
                    out.append((off + n1, n2))
                else:
                    _, n = _varint(data, off + 4)
                    out.append((off + 4, n))
            except IndexError:
                break
    return out


def mutate(pristine: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One seeded mutation of an export: what was done, and the bytes."""
    data = bytearray(pristine)
    ps = _page_size(data)
    pages = len(data) // ps
    kind = rng.choice(["flip", "flip", "key", "key", "swap", "truncate", "header"])
    if kind == "flip":
        what = []
        for _ in range(rng.randint(1, 8)):
            page = rng.randint(2, pages)
            # Half land in page headers and cell pointer arrays, where damage steers the walk.
            offset = rng.randrange(40) if rng.random() < 0.5 else rng.randrange(ps)
            pos = (page - 1) * ps + offset
            data[pos] = rng.choice([0, 0xFF, rng.randrange(256), data[pos] ^ (1 << rng.randrange(8))])
            what.append(f"{pos}={data[pos]:#04x}")
        return f"flip {' '.join(what)}", bytes(data)
    if kind == "key":
        cells = _table_cells(data, ps)
        what = []
        for _ in range(rng.randint(1, 2)):
            at, n = rng.choice(cells)
            if n == 9:
                value = rng.getrandbits(64)
                enc = bytes([0xFF] * 8 + [value & 0xFF])
            else:
                value = rng.getrandbits(7 * n)
                enc = bytes(
                    ((value >> (7 * (n - 1 - i))) & 0x7F) | (0x80 if i + 1 < n else 0) for i in range(n)
                )
            data[at : at + n] = enc
            what.append(f"{at}:{n}={value}")
        return f"key {' '.join(what)}", bytes(data)
    if kind == "swap":
        a, b = rng.sample(range(2, pages + 1), 2)
        pa, pb = bytes(data[(a - 1) * ps : a * ps]), bytes(data[(b - 1) * ps : b * ps])
        data[(a - 1) * ps : a * ps], data[(b - 1) * ps : b * ps] = pb, pa
        return f"swap pages {a} {b}", bytes(data)
    if kind == "truncate":
        cut = rng.randrange(100, len(data))
        if rng.random() < 0.5:
            # Page-aligned, with the header's page count made to agree: only the b-tree walk can tell.
            cut = max(1, cut // ps) * ps
            data[28:32] = (cut // ps).to_bytes(4, "big")
            return f"truncate to {cut} (header agrees)", bytes(data[:cut])
        return f"truncate to {cut}", bytes(data[:cut])
    offset, length = rng.choice(HEADER_FIELDS)
    value = rng.choice([0, (1 << (8 * length)) - 1, rng.getrandbits(8 * length)])
    data[offset : offset + length] = value.to_bytes(length, "big")
    return f"header [{offset}:{offset + length}] = {value}", bytes(data)


def sqlite_reading(path: Path) -> tuple[bool, Optional[dict[str, Optional[list[tuple[Any, ...]]]]]]:
    """quick_check's verdict, and every table's rows as SQLite reads them: None for a table it cannot read
    (or reads with a rowid twice), None for all when it cannot read the schema."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error:
        return False, None
    # Invalid UTF-8 reads as the ingest reads it (replacement characters), not as an error.
    con.text_factory = lambda b: b.decode("utf-8", "replace")
    try:
        try:
            quick_ok = con.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        except (sqlite3.Error, UnicodeDecodeError):
            quick_ok = False
        try:
            tables = con.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            ).fetchall()
        except (sqlite3.Error, UnicodeDecodeError):
            return quick_ok, None
        rows: dict[str, Optional[list[tuple[Any, ...]]]] = {}
        for name, sql in tables:
            has_rowid = "WITHOUT ROWID" not in " ".join((sql or "").upper().split())
            try:
                got = con.execute(f'SELECT {"rowid, " if has_rowid else ""}* FROM "{name}"').fetchall()
            except (sqlite3.Error, UnicodeDecodeError):  # (column names of invalid UTF-8 too)
                rows[name] = None
                continue
            rows[name] = got if not has_rowid or len({r[0] for r in got}) == len(got) else None
        return quick_ok, rows
    finally:
        con.close()


def clean_copy(src: Path, rows: Rows, out: Path) -> None:
    """A database holding exactly `rows` in the tables of `src`: its tables with their columns' declared
    types (constraints left out: a damaged record may break them) and rowids, and its views."""
    con = sqlite3.connect(f"file:{src}?mode=ro&immutable=1", uri=True)
    con.text_factory = lambda b: b.decode("utf-8", "replace")
    schema = con.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
    ).fetchall()
    columns = {
        name: con.execute(f'PRAGMA table_info("{name}")').fetchall()
        for kind, name, _ in schema
        if kind == "table"
    }
    con.close()
    dst = sqlite3.connect(out)
    for kind, name, sql in schema:
        if kind != "table" or name.startswith("sqlite_"):
            continue
        cols = columns[name]
        pks = [c for c in cols if c[5]]
        alias = pks[0][1] if len(pks) == 1 and pks[0][2].upper() == "INTEGER" else None
        decl = ", ".join(f'"{c[1]}" {c[2]}' + (" PRIMARY KEY" if c[1] == alias else "") for c in cols)
        without = " WITHOUT ROWID" if "WITHOUT ROWID" in " ".join(sql.upper().split()) else ""
        if without and alias is None:
            decl += ", PRIMARY KEY (" + ", ".join(f'"{c[1]}"' for c in sorted(pks, key=lambda c: c[5])) + ")"
        dst.execute(f'CREATE TABLE "{name}" ({decl}){without}')
        if rows.get(name):
            width = len(rows[name][0])
            names = (["rowid"] if width > len(cols) else []) + [f'"{c[1]}"' for c in cols]
            marks = ", ".join("?" * width)
            dst.executemany(f'INSERT INTO "{name}" ({", ".join(names)}) VALUES ({marks})', rows[name])
    for kind, _name, sql in schema:
        if kind == "view":
            dst.execute(sql)
    dst.commit()
    dst.close()


def landed(db: Path, path: Path) -> Optional[Rows]:
    """The `kernels` and `api_calls` rows `path` lands in the fresh store `db`, or None when refused (the
    store then holds no trace); any other failure fails the test."""
    with traceforge.connect(db) as tf:
        try:
            tf.ingest([path])
        except (InternalError, WorkerDiedError):
            raise
        except TraceforgeError as e:
            assert "\n" not in str(e).strip(), f"a refusal is one line: {e}"
            assert tf.sql("SELECT count(*) AS n FROM traces")["n"][0] == 0, "a refused file left a trace"
            return None
        return {
            t: sorted(tf.store.con.execute(f"SELECT * EXCLUDE (trace_id) FROM {t}").fetchall(), key=repr)
            for t in ("kernels", "api_calls")
        }


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", EXPORTS)
def test_mutated_exports_are_refused_or_read_as_sqlite_reads_them(
    name: str,
    reader: str,
    real_export: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if READERS[reader] is None:
        monkeypatch.delenv("TRACEFORGE_SQLITE_SCAN", raising=False)
    else:
        monkeypatch.setenv("TRACEFORGE_SQLITE_SCAN", READERS[reader])
    src = real_export(name)
    pristine = src.read_bytes()
    quick_ok, read = sqlite_reading(src)
    assert quick_ok and read is not None and all(r is not None for r in read.values())
    pristine_rows: Rows = {t: r for t, r in read.items() if r is not None}
    expected_pristine = landed(tmp_path / "pristine.duckdb", src)
    assert expected_pristine is not None and expected_pristine["kernels"]

    relevance: dict[str, bool] = {}

    def relevant(table: str) -> bool:
        """Whether `table`'s rows count for the stored kernels and API calls: emptied, they change."""
        if table not in relevance:
            probe = tmp_path / f"without_{len(relevance)}"
            probe.mkdir()
            clean_copy(src, {t: r for t, r in pristine_rows.items() if t != table}, probe / name)
            relevance[table] = landed(probe / "store.duckdb", probe / name) != expected_pristine
        return relevance[table]

    outcomes: Counter[str] = Counter()
    counts: Counter[str] = Counter({k: 0 for k in ("identical", "refused", "mismatched", "crashes", "hangs")})
    failures = []
    for i in range(MUTATIONS):
        seed = SEED * 1_000_003 + i
        what, data = mutate(pristine, random.Random(seed))
        case = tmp_path / f"m{i}"
        case.mkdir()
        path = case / name
        path.write_bytes(data)
        quick_ok, read = sqlite_reading(path)
        verdict = "quick_check ok" if quick_ok else "quick_check failed"
        expected: Optional[Rows]
        unreadable = [] if read is None else [t for t, r in read.items() if r is None]
        if read is None or any(t not in pristine_rows or relevant(t) for t in unreadable):
            expected, oracle = None, "SQLite cannot read a table that counts"
        else:
            # Tables SQLite cannot read but that do not count are left empty.
            rows: Rows = {t: r for t, r in read.items() if r is not None}
            if all(rows.get(t) == r for t, r in pristine_rows.items() if t not in unreadable) and set(
                rows
            ) | set(unreadable) == set(pristine_rows):
                expected, oracle = expected_pristine, "SQLite reads the pristine rows"
            else:
                clean_copy(path, rows, case / "clean.sqlite")
                expected, oracle = (
                    landed(case / "clean.duckdb", case / "clean.sqlite"),
                    "SQLite reads other rows",
                )
        started = time.perf_counter()
        try:
            got = landed(case / "store.duckdb", path)
        except Exception as e:  # noqa: BLE001 - every other failure is reported with its seed
            counts["crashes"] += 1
            failures.append(f"seed {seed} ({what}; {verdict}; {oracle}): ingest failed with {e!r}")
            continue
        finally:
            took = time.perf_counter() - started
            if took > HANG_S:
                counts["hangs"] += 1
                failures.append(f"seed {seed} ({what}): the ingest took {took:.1f} s")
        if got is None:
            counts["refused"] += 1
            outcomes[f"refused ({verdict})"] += 1
        elif got == expected:
            counts["identical"] += 1
            outcomes[f"same rows as SQLite ({verdict}; {oracle})"] += 1
        else:
            counts["mismatched"] += 1
            outcomes["WRONG"] += 1
            failures.append(
                f"seed {seed} ({what}; {verdict}; {oracle}): landed "
                f"{ {t: len(r) for t, r in got.items()} } rows, expected "
                f"{'a refusal' if expected is None else {t: len(r) for t, r in expected.items()}}"
            )
    print(f"{name} ({reader} reader): {MUTATIONS} mutations: {dict(outcomes)}")
    print(f"FUZZ-COUNTS {name} {reader} " + " ".join(f"{k}={v}" for k, v in counts.items()))
    assert not failures, "\n".join(failures)
