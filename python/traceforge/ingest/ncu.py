"""Nsight Compute CSV exports into the ``ncu_metrics`` table.

``ncu --import REPORT --csv --page raw`` writes a header row, a units row, then one row per kernel launch with
one column per metric; ``--page details`` writes one row per launch and metric (``Section Name``,
``Metric Name``, ``Metric Unit``, ``Metric Value``). Both become one ``ncu_metrics`` row per launch and
metric.
ncu prints numbers with thousands separators (``1,056``); a value ncu could not read (``n/a``, empty) is
stored as NULL with ``missing = TRUE`` and counted in the outcome, never as zero.

Joining with nsys: ncu prints demangled names slightly differently from nsys (it drops some namespace
qualifiers and the casts on integral template arguments: nsys ``at::native::vectorized_elementwise_kernel<
(int)4, ...>`` is ncu ``at::vectorized_elementwise_kernel<4, ...>``). ``kernel_name_key`` holds the name
reduced by :func:`kernel_name_key`, and the SQL macro ``tf_kernel_key(name)`` reduces nsys names the same
way::

    SELECT m.metric, avg(m.value), ks.total_ns
    FROM ncu_metrics m JOIN kernel_summary ks ON tf_kernel_key(ks.name) = m.kernel_name_key
    GROUP BY ALL
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputNotFoundError, InputPermissionError, NotAnExportError
from ..runners.results import KEY_CAST_RE, KEY_NAMESPACE_RE, ensure_tables, insert_rows
from ..store.sql_params import bind
from .trace import IngestOutcome

#: Columns of the raw page that describe the launch rather than a metric.
_IDENTITY = {
    "ID": "launch_id",
    "Process ID": "process_id",
    "Process Name": "process_name",
    "Host Name": None,
    "Kernel Name": "kernel_name",
    "Context": "context_id",
    "Stream": "stream_id",
    "Block Size": "block_size",
    "Grid Size": "grid_size",
    "Device": "device_id",
    "CC": None,
}
_DETAILS_COLUMNS = ("Section Name", "Metric Name", "Metric Unit", "Metric Value")
_MISSING = {"", "n/a", "N/A", "-", "nan", "NaN"}
_NUMBER = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][+-]?\d+)?$|^[+-]?\.\d+$")


@dataclass
class NcuIngestOutcome(IngestOutcome):
    """:class:`traceforge.ingest.IngestOutcome` of an ncu CSV, with what the ncu pages add.

    Attributes:
        kind: ``ncu-raw`` or ``ncu-details``.
        rows: ``ncu_metrics`` rows written.
        launches: kernel launches in the file.
        missing: metric values ncu could not read (stored as NULL, never zero).
        warnings: human-readable notes, also folded into ``message``.
    """

    kind: str = ""
    rows: int = 0
    launches: int = 0
    missing: int = 0
    warnings: list[str] = field(default_factory=list)


def kernel_name_key(name: str) -> str:
    """Reduce a demangled kernel name to the key on which nsys and ncu agree (same as ``tf_kernel_key``)."""
    name = re.sub(KEY_CAST_RE, r"\1", name)
    name = re.sub(KEY_NAMESPACE_RE, "", name)
    return re.sub(r"\s+", " ", name)


def kernel_short_name(name: str) -> str:
    """Return the base function name (nsys ``shortName``): ``void a::f<T>(int)`` -> ``f``."""
    name = name.replace("<unnamed>", "_unnamed_").replace("(anonymous namespace)", "_anonymous_")
    depth = 0
    end = len(name)
    for i, ch in enumerate(name):
        if ch in "<([":
            if depth == 0 and ch in "<(":
                end = i
                break
            depth += 1
        elif ch in ">)]":
            depth -= 1
    head = name[:end].strip()
    head = head.split(" ")[-1] if " " in head else head
    return re.sub(r"^.*::", "", head) or name


def parse_value(text: str) -> tuple[float | None, bool]:
    """Parse one ncu cell: ``(value, missing)``; text that is not a number gives ``(None, False)``."""
    stripped = text.strip()
    if stripped in _MISSING:
        return None, True
    if _NUMBER.match(stripped):
        return float(stripped.replace(",", "")), False
    return None, False


def _int(text: str) -> int | None:
    value, _ = parse_value(text)
    return None if value is None else int(value)


def _read_regular(path: str) -> bytes:
    """The bytes of a regular file, read to the size it had when opened and no further.

    The open does not block (a FIFO would wait for a writer) and a FIFO, device or socket is refused (a
    ``.csv`` link to ``/dev/zero`` was read into memory without end); a file that grows or shrinks while
    read is refused as changed.
    """
    import stat

    from ..errors import InputChangedError
    from .inputs import not_regular

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError as exc:
        raise InputPermissionError("permission denied", path=path) from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            from ..outputs import kind_of

            raise not_regular(path, kind_of(st.st_mode) or "not a regular file")
        data = fh.read(st.st_size + 1)
        after = os.fstat(fd)
    if len(data) != st.st_size or (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise InputChangedError("changed while it was read; nothing of it was stored", path=path)
    return data


def read_ncu_csv(path: str) -> tuple[str, list[dict[str, Any]], str]:
    """Parse an ncu CSV export.

    Returns:
        ``(page, rows, fingerprint)``: ``raw`` or ``details``, one dict per launch and metric, and the
        SHA-256 of the file's bytes.

    Raises:
        InputNotFoundError, InputPermissionError: the path cannot be read.
        NotAnExportError: the file is not an ncu CSV export of the raw or details page.
    """
    if not os.path.exists(path):
        raise InputNotFoundError("no such file", path=path)
    if os.path.isdir(path):
        raise NotAnExportError("is a directory, not an ncu CSV export", path=path)
    data = _read_regular(path)
    fingerprint = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotAnExportError("not an Nsight Compute CSV export (not UTF-8 text)", path=path) from exc
    # ncu's own log lines (``==PROF==``, ``==WARNING==``) precede the table when stdout was captured.
    lines = [ln for ln in text.splitlines() if not ln.startswith("==")]
    try:
        table = list(csv.reader(io.StringIO("\n".join(lines))))
    except csv.Error as exc:
        raise NotAnExportError(f"not an Nsight Compute CSV export ({exc})", path=path) from exc
    table = [r for r in table if r]
    if not table or "ID" not in table[0] or "Kernel Name" not in table[0]:
        raise NotAnExportError(
            'not an Nsight Compute CSV export (expected the columns "ID" and "Kernel Name" of '
            "`ncu --import REPORT --csv --page raw|details`)",
            path=path,
        )
    header = table[0]
    if all(c in header for c in _DETAILS_COLUMNS):
        return "details", _details_rows(path, header, table[1:]), fingerprint
    if len(table) >= 2 and table[1][header.index("ID")] == "":
        return "raw", _raw_rows(path, header, table[1], table[2:]), fingerprint
    raise NotAnExportError(
        "ncu CSV without a units row or metric columns (export with --page raw or --page details)", path=path
    )


def _identity(path: str, header: list[str], row: list[str], lineno: int) -> dict[str, Any]:
    if len(row) != len(header):
        raise NotAnExportError(
            f"line {lineno}: {len(row)} fields where the header has {len(header)}", path=path
        )
    out: dict[str, Any] = {}
    for col, key in _IDENTITY.items():
        if key is None or col not in header:
            continue
        cell = row[header.index(col)]
        if key in ("launch_id", "process_id", "context_id", "stream_id", "device_id"):
            out[key] = _int(cell)
        else:
            out[key] = cell
    if out.get("launch_id") is None:
        raise NotAnExportError(
            f"line {lineno}: ID {row[header.index('ID')]!r} is not a launch number", path=path
        )
    name = out.get("kernel_name") or ""
    out["kernel_short_name"] = kernel_short_name(name)
    out["kernel_name_key"] = kernel_name_key(name)
    return out


def _metric(base: dict[str, Any], metric: str, unit: str, text: str, section: str | None) -> dict[str, Any]:
    value, missing = parse_value(text)
    row = dict(base)
    row.update(
        metric=metric, unit=unit or None, value=value, value_text=text, missing=missing, section=section
    )
    return row


def _raw_rows(path: str, header: list[str], units: list[str], body: list[list[str]]) -> list[dict[str, Any]]:
    metric_cols = [i for i, name in enumerate(header) if "__" in name]
    rows: list[dict[str, Any]] = []
    for offset, row in enumerate(body):
        base = _identity(path, header, row, offset + 3)
        for i in metric_cols:
            rows.append(_metric(base, header[i], units[i] if i < len(units) else "", row[i], None))
    return rows


def _details_rows(path: str, header: list[str], body: list[list[str]]) -> list[dict[str, Any]]:
    sec, name, unit, val = (header.index(c) for c in _DETAILS_COLUMNS)
    rows: list[dict[str, Any]] = []
    for offset, row in enumerate(body):
        base = _identity(path, header, row, offset + 2)
        rows.append(_metric(base, row[name], row[unit], row[val], row[sec] or None))
    return rows


def ingest_ncu_csv(
    store: Any, path: str, *, force: bool = False, cell_id: str | None = None
) -> NcuIngestOutcome:
    """Ingest one ncu CSV export (raw or details page, detected from its content) into ``ncu_metrics``.

    Args:
        store: a :class:`traceforge.store.Store` (anything with a DuckDB ``con`` and ``transaction()``).
        path: the CSV file.
        force: replace the rows of a file with the same content instead of skipping it.
        cell_id: the runner cell the kernels were profiled for; its ``trace_id`` is copied to the rows.

    Returns:
        The outcome; ``status`` is ``skipped`` when the same content is already stored.

    Raises:
        TraceforgeError: the file cannot be read or is not an ncu export (nothing is written).
    """
    started = time.perf_counter()
    page, rows, fingerprint = read_ncu_csv(path)
    outcome = NcuIngestOutcome(path=os.path.abspath(path), status="ingested", kind=f"ncu-{page}")
    con = store.con
    ensure_tables(con)
    trace_id = None
    if cell_id is not None:
        found = con.execute(bind("SELECT trace_id FROM cells WHERE cell_id = ?", [cell_id])).fetchone()
        trace_id = found[0] if found else None
    outcome.trace_id = trace_id
    already = con.execute(
        bind("SELECT count(*) FROM ncu_metrics WHERE source_fingerprint = ?", [fingerprint])
    ).fetchone()
    if already and already[0] and not force:
        outcome.status = "skipped"
        outcome.message = "ncu CSV already stored (use --force to replace)"
        outcome.seconds = time.perf_counter() - started
        return outcome
    now = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)
    source = os.path.abspath(path)
    for row in rows:
        row.update(
            source_path=source,
            source_fingerprint=fingerprint,
            page=page,
            cell_id=cell_id,
            trace_id=trace_id,
            ingested_at=now,
        )
    with store.transaction():
        con.execute(bind("DELETE FROM ncu_metrics WHERE source_fingerprint = ?", [fingerprint]))
        outcome.rows = insert_rows(con, "ncu_metrics", rows)
    outcome.launches = len({r["launch_id"] for r in rows})
    missing = [r for r in rows if r["missing"]]
    outcome.missing = len(missing)
    if missing:
        names = sorted({r["metric"] for r in missing})
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        outcome.warnings.append(f"{len(missing)} metric values ncu could not read, stored as NULL: {shown}")
    outcome.kernel_count = outcome.launches
    outcome.message = "; ".join(
        [f"ncu {page} page: {outcome.rows} metric values of {outcome.launches} launches", *outcome.warnings]
    )
    outcome.seconds = time.perf_counter() - started
    return outcome
