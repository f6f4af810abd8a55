"""Degradation analysis of a load sweep from runner results (tables ``runs``, ``cells``, ``requests``).

For every configuration (``CONFIG_COLUMNS`` of ``cells``: backend, model, server, workload, api,
max_new_tokens, prompt_tokens, base_url; cells of different configurations are never pooled into one
curve) and every concurrency ``N`` (``cells.n``), using cells with status ``ok`` and requests with status
``ok`` (a cell's failed requests are counted in ``requests_error``, not held against its successful ones):

* per-agent throughput: the mean of the requests' ``tokens_per_s``, described over requests (t interval);
* aggregate throughput of a repetition (cell): its output tokens divided by the span of its requests
  (``max(start_s + wall_ms/1000) - min(start_s)``), described over repetitions;
* parallel efficiency: ``aggregate(N) / (N/N0 * aggregate(N0))``, N0 the smallest N (normally 1);
* p95 latency multiplier: p95 of ``wall_ms`` at N divided by p95 at N0;
* TTFT mean and p95 per N;
* idle attribution per N: ``device_metrics.idle_*_ns`` summed over the ok cells' linked traces
  (``analysis.idle``), as total idle ms and each state's share in %.

Then the breakdown boundary (smallest N > N0 with efficiency < ``efficiency_threshold``, default 0.65, or p95
multiplier > ``latency_threshold``, default 2), the cliff (smallest N whose mean per-request speed is below
``cliff_ratio`` (0.5) of N0's), the throughput peak (N with the highest mean aggregate throughput), and an
Amdahl fit of the speedup ``S(N) = aggregate(N)/aggregate(N0)`` to ``1 / (s + (1 - s) / (N/N0))`` with
``scipy.optimize.curve_fit`` (serial fraction ``s`` in [0, 1], its standard error and R²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import QueryError
from ..runners.results import CONFIG_COLUMNS
from ..store.sql_params import bind
from . import stats

if TYPE_CHECKING:
    import polars as pl

    from ..store import Store

EFFICIENCY_THRESHOLD = 0.65
LATENCY_THRESHOLD = 2.0
CLIFF_RATIO = 0.5


@dataclass(frozen=True)
class SweepPoint:
    """Everything measured at one N of one (backend, model, workload)."""

    n: int
    cells_ok: int
    cells_failed: int
    requests_ok: int
    requests_error: int
    per_agent_tps: stats.Description
    aggregate_tps: stats.Description
    efficiency: float | None
    p95_latency_ms: float | None
    p95_multiplier: float | None
    ttft_ms: stats.Description
    #: idle attribution summed over the ok cells' linked traces (``{state: ns}``), None without any
    idle: dict[str, int] | None = None

    def row(self) -> dict[str, Any]:
        """Flat row for tables and CSV."""
        from .idle import split

        pa, ag, tt = self.per_agent_tps, self.aggregate_tps, self.ttft_ms
        return {
            "n": self.n,
            "cells_ok": self.cells_ok,
            "cells_failed": self.cells_failed,
            "requests_ok": self.requests_ok,
            "requests_error": self.requests_error,
            "per_agent_tps": pa.mean,
            "per_agent_tps_ci_low": pa.ci_low,
            "per_agent_tps_ci_high": pa.ci_high,
            "aggregate_tps": ag.mean,
            "aggregate_tps_ci_low": ag.ci_low,
            "aggregate_tps_ci_high": ag.ci_high,
            "efficiency": self.efficiency,
            "p95_latency_ms": self.p95_latency_ms,
            "p95_multiplier": self.p95_multiplier,
            "ttft_ms": tt.mean,
            "ttft_ms_ci_low": tt.ci_low,
            "ttft_ms_ci_high": tt.ci_high,
            "ttft_p95_ms": tt.p95,
            **split(self.idle),
        }


@dataclass(frozen=True)
class SweepAnalysis:
    """The degradation analysis of one (backend, model, workload)."""

    backend: str | None
    model: str | None
    workload: str | None
    run_ids: tuple[str, ...]
    baseline_n: int
    points: tuple[SweepPoint, ...]
    boundary_n: int | None
    boundary_reason: str | None
    cliff_n: int | None
    peak_n: int | None
    peak_tps: float | None
    amdahl_serial_fraction: float | None
    amdahl_serial_fraction_se: float | None
    amdahl_r2: float | None
    efficiency_threshold: float
    latency_threshold: float
    cliff_ratio: float
    notes: tuple[str, ...] = field(default=())
    #: The whole configuration (every ``CONFIG_COLUMNS`` value, None where the cells have none).
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``backend / model / workload``, then what else sets this configuration apart."""
        head = " / ".join(str(x) for x in (self.backend, self.model, self.workload))
        rest = [
            f"{k}={v}"
            for k, v in self.config.items()
            if k not in ("backend", "model", "workload") and v is not None
        ]
        return head + (f" [{', '.join(rest)}]" if rest else "")

    def frame(self) -> pl.DataFrame:
        """Return the points as a polars frame."""
        import polars as pl

        return pl.DataFrame([p.row() for p in self.points], infer_schema_length=None)

    def summary(self) -> dict[str, Any]:
        """Headline numbers."""
        return {
            "backend": self.backend,
            "model": self.model,
            "workload": self.workload,
            "config": dict(self.config),
            "runs": list(self.run_ids),
            "baseline_n": self.baseline_n,
            "boundary_n": self.boundary_n,
            "boundary_reason": self.boundary_reason,
            "cliff_n": self.cliff_n,
            "peak_n": self.peak_n,
            "peak_tps": self.peak_tps,
            "amdahl_serial_fraction": self.amdahl_serial_fraction,
            "amdahl_serial_fraction_se": self.amdahl_serial_fraction_se,
            "amdahl_r2": self.amdahl_r2,
            "efficiency_threshold": self.efficiency_threshold,
            "latency_threshold": self.latency_threshold,
            "cliff_ratio": self.cliff_ratio,
            "notes": list(self.notes),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = self.summary()
        out["points"] = [p.row() for p in self.points]
        return out


def amdahl_speedup(n: Any, s: float) -> Any:
    """Amdahl's speedup on ``n`` workers with serial fraction ``s``."""
    return 1.0 / (s + (1.0 - s) / n)


def fit_amdahl(ns: list[float], speedups: list[float]) -> tuple[float | None, float | None, float | None]:
    """Fit Amdahl's serial fraction by least squares: (s, its standard error, R²); Nones when not fittable."""
    import numpy as np
    from scipy.optimize import curve_fit

    x = np.asarray(ns, dtype=float)
    y = np.asarray(speedups, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or np.unique(x).size < 2:
        return None, None, None
    try:
        popt, pcov = curve_fit(amdahl_speedup, x, y, p0=[0.1], bounds=([0.0], [1.0]))
    except (RuntimeError, ValueError):
        return None, None, None
    s = float(popt[0])
    se = float(np.sqrt(pcov[0, 0])) if np.isfinite(pcov[0, 0]) else None
    resid = y - amdahl_speedup(x, s)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else None
    return s, se, r2


def _has_table(store: Store, name: str) -> bool:
    row = store.con.execute(
        bind(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
            [name],
        ),
    ).fetchone()
    return bool(row and row[0])


def analyze_sweeps(
    store: Store,
    *,
    run_ids: list[str] | None = None,
    efficiency_threshold: float = EFFICIENCY_THRESHOLD,
    latency_threshold: float = LATENCY_THRESHOLD,
    cliff_ratio: float = CLIFF_RATIO,
) -> list[SweepAnalysis]:
    """Analyse the stored sweeps, one :class:`SweepAnalysis` per configuration (``CONFIG_COLUMNS``).

    Args:
        store: an open store with runner results.
        run_ids: restrict to these runs (default: all).
        efficiency_threshold: efficiency below which N is past the breakdown boundary.
        latency_threshold: p95 latency multiplier above which N is past the boundary.
        cliff_ratio: per-request speed ratio to N0 below which N is past the cliff.

    Raises:
        QueryError: no runner tables, unknown run id, or no cells.
    """
    for table in ("cells", "requests"):
        if not _has_table(store, table):
            raise QueryError(f"no '{table}' table in the store: run a sweep first (`traceforge run`)")
    where = ""
    params: list[Any] = []
    if run_ids:
        known = {r[0] for r in store.con.execute("SELECT DISTINCT run_id FROM cells").fetchall()}
        missing = [r for r in run_ids if r not in known]
        if missing:
            raise QueryError(
                f"no run '{missing[0]}' in the store (runs: {', '.join(sorted(map(str, known))) or 'none'})"
            )
        where = f"WHERE c.run_id IN ({', '.join('?' for _ in run_ids)})"
        params = list(run_ids)
    present = {str(r[0]) for r in store.con.execute("SELECT column_name FROM (DESCRIBE cells)").fetchall()}
    # Stores written before a configuration column existed have none: NULL, one configuration.
    config_sql = ", ".join(f"c.{c}" if c in present else f"NULL AS {c}" for c in CONFIG_COLUMNS)
    cells = store.sql(
        f"SELECT c.cell_id, c.run_id, {config_sql}, c.n, c.repetition, c.status FROM cells c {where}",
        params,
    )
    if cells.is_empty():
        raise QueryError("no cells in the store" + (" for the given run(s)" if run_ids else ""))
    reqs = store.sql(
        f"SELECT r.cell_id, r.status, r.start_s, r.wall_ms, r.ttft_ms, r.output_tokens, r.tokens_per_s "
        f"FROM requests r JOIN cells c USING (cell_id) {where}",
        params,
    )
    out = []
    keys = cells.select(list(CONFIG_COLUMNS)).unique().sort(list(CONFIG_COLUMNS), nulls_last=True)
    from dataclasses import replace

    from .idle import idle_by_n

    for key in keys.iter_rows():
        a = _analyze_one(cells, reqs, key, efficiency_threshold, latency_threshold, cliff_ratio)
        idle = {n: v for n, _, v in idle_by_n(store, a.config, a.run_ids)}
        if idle:
            a = replace(a, points=tuple(replace(p, idle=idle.get(p.n)) for p in a.points))
        out.append(a)
    return out


def _eq(col: str, value: Any) -> Any:
    import polars as pl

    return pl.col(col).is_null() if value is None else pl.col(col) == value


def _analyze_one(
    cells: pl.DataFrame,
    reqs: pl.DataFrame,
    key: tuple[Any, ...],
    eff_thr: float,
    lat_thr: float,
    cliff_ratio: float,
) -> SweepAnalysis:
    import numpy as np
    import polars as pl

    config = dict(zip(CONFIG_COLUMNS, key))
    backend, model, workload = config["backend"], config["model"], config["workload"]
    mine = cells
    for col, value in config.items():
        mine = mine.filter(_eq(col, value))
    notes: list[str] = []
    ns = sorted(int(n) for n in mine["n"].drop_nulls().unique().to_list())
    raw: list[dict[str, Any]] = []
    for n in ns:
        at_n = mine.filter(pl.col("n") == n)
        ok_cells = at_n.filter(pl.col("status") == "ok")
        r = reqs.filter(pl.col("cell_id").is_in(ok_cells["cell_id"].to_list()))
        r_ok = r.filter(pl.col("status") == "ok")
        per_cell = []
        for cell_id in ok_cells["cell_id"].to_list():
            rc = r_ok.filter(pl.col("cell_id") == cell_id)
            if rc.is_empty():
                continue
            start = rc["start_s"].min()
            end = (rc["start_s"] + rc["wall_ms"] / 1000.0).max()
            tokens = rc["output_tokens"].sum()
            if start is not None and end is not None and end > start:
                per_cell.append(float(tokens) / (float(end) - float(start)))  # type: ignore[arg-type]
        lat = r_ok["wall_ms"].drop_nulls().to_numpy()
        raw.append(
            {
                "n": n,
                "cells_ok": ok_cells.height,
                "cells_failed": at_n.height - ok_cells.height,
                "requests_ok": r_ok.height,
                "requests_error": r.height - r_ok.height,
                # Throughputs and latencies are positive: their intervals must stay above zero.
                "per_agent": stats.describe(r_ok["tokens_per_s"].to_list(), positive=True),
                "aggregate": stats.describe(per_cell, positive=True),
                "p95": float(np.percentile(lat, 95)) if lat.size else None,
                "ttft": stats.describe(r_ok["ttft_ms"].to_list(), positive=True),
            }
        )
    usable = [p for p in raw if p["aggregate"].n > 0]
    base = usable[0] if usable else None
    if base is None:
        notes.append("no N with successful requests")
    elif base["n"] != 1:
        notes.append(f"no successful N=1 cells: efficiency and multipliers are relative to N={base['n']}")
    points = []
    for p in raw:
        eff = mult = None
        if base is not None and p["aggregate"].mean is not None and base["aggregate"].mean:
            eff = p["aggregate"].mean / ((p["n"] / base["n"]) * base["aggregate"].mean)
        if base is not None and p["p95"] is not None and base["p95"]:
            mult = p["p95"] / base["p95"]
        points.append(
            SweepPoint(
                p["n"],
                p["cells_ok"],
                p["cells_failed"],
                p["requests_ok"],
                p["requests_error"],
                p["per_agent"],
                p["aggregate"],
                eff,
                p["p95"],
                mult,
                p["ttft"],
            )
        )
    boundary_n = boundary_reason = cliff_n = peak_n = None
    peak_tps = None
    s = se = r2 = None
    if base is not None:
        for pt in points:
            if pt.n <= base["n"]:
                continue
            reasons = []
            if pt.efficiency is not None and pt.efficiency < eff_thr:
                reasons.append(f"efficiency {pt.efficiency:.2f} < {eff_thr:g}")
            if pt.p95_multiplier is not None and pt.p95_multiplier > lat_thr:
                reasons.append(f"p95 latency x{pt.p95_multiplier:.2f} > {lat_thr:g}")
            if reasons:
                boundary_n, boundary_reason = pt.n, "; ".join(reasons)
                break
        base_speed = base["per_agent"].mean
        if base_speed:
            for pt in points:
                if pt.per_agent_tps.mean is not None and pt.per_agent_tps.mean < cliff_ratio * base_speed:
                    cliff_n = pt.n
                    break
        with_agg = [pt for pt in points if pt.aggregate_tps.mean is not None]
        if with_agg:
            best = max(with_agg, key=lambda pt: pt.aggregate_tps.mean or 0.0)
            peak_n, peak_tps = best.n, best.aggregate_tps.mean
        s, se, r2 = fit_amdahl(
            [pt.n / base["n"] for pt in with_agg],
            [(pt.aggregate_tps.mean or math.nan) / base["aggregate"].mean for pt in with_agg],
        )
        if s is None:
            notes.append("Amdahl fit needs at least two distinct N with aggregate throughput")
    return SweepAnalysis(
        backend=backend,
        model=model,
        workload=workload,
        run_ids=tuple(sorted(str(r) for r in mine["run_id"].unique().to_list())),
        baseline_n=base["n"] if base is not None else (ns[0] if ns else 1),
        points=tuple(points),
        boundary_n=boundary_n,
        boundary_reason=boundary_reason,
        cliff_n=cliff_n,
        peak_n=peak_n,
        peak_tps=peak_tps,
        amdahl_serial_fraction=s,
        amdahl_serial_fraction_se=se,
        amdahl_r2=r2,
        efficiency_threshold=eff_thr,
        latency_threshold=lat_thr,
        cliff_ratio=cliff_ratio,
        notes=tuple(notes),
        config=config,
    )


def render(analyses: list[SweepAnalysis], fmt: str = "table") -> str:
    """Render analyses as ``table``, ``csv`` or ``json`` text."""
    import csv
    import io
    import json

    from .compare import render_text_table

    if fmt == "json":
        return json.dumps([a.to_dict() for a in analyses], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        header: list[str] | None = None
        for a in analyses:
            for p in a.points:
                row = {**{c: a.config.get(c) for c in CONFIG_COLUMNS}, **p.row()}
                if header is None:
                    header = list(row)
                    w.writerow(header)
                w.writerow(["" if row[k] is None else row[k] for k in header])
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise QueryError(f"unknown --format '{fmt}' (table, csv, json)")
    parts = []
    cols = [
        "n",
        "cells_ok",
        "cells_failed",
        "requests_ok",
        "per_agent_tps",
        "per_agent_tps_ci_low",
        "per_agent_tps_ci_high",
        "aggregate_tps",
        "efficiency",
        "p95_latency_ms",
        "p95_multiplier",
        "ttft_ms",
    ]
    if any(p.idle is not None for a in analyses for p in a.points):
        cols += ["idle_ms", "sync%", "gil_wait%", "os%", "cuda_api%", "other%"]
    for a in analyses:
        parts.append(f"== {a.label} (runs: {', '.join(a.run_ids)}) ==")
        parts.append(render_text_table([p.row() for p in a.points], cols))
        parts.append(
            f"breakdown boundary: {_n(a.boundary_n)}"
            + (f" ({a.boundary_reason})" if a.boundary_reason else "")
            + f"; cliff: {_n(a.cliff_n)}; throughput peak: {_n(a.peak_n)}"
            + (f" ({a.peak_tps:.4g} tok/s)" if a.peak_tps is not None else "")
        )
        if a.amdahl_serial_fraction is not None:
            se = f" ± {a.amdahl_serial_fraction_se:.3f}" if a.amdahl_serial_fraction_se is not None else ""
            r2 = f", R²={a.amdahl_r2:.3f}" if a.amdahl_r2 is not None else ""
            parts.append(f"Amdahl serial fraction: {a.amdahl_serial_fraction:.3f}{se}{r2}")
        for note in a.notes:
            parts.append(f"note: {note}")
        parts.append("")
    return "\n".join(parts).rstrip()


def _n(n: int | None) -> str:
    return "none" if n is None else f"N={n}"
