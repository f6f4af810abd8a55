"""The HTML report and single figures, opened in a real headless Chromium.

The store holds a real ingested nsys export (``small_matmul``) and the constructed sweep of
``test_compare_diff`` (runner tables written with the runners' ``insert_rows``). Chromium comes from Debian's
packages (``scripts/install-chromium.sh``); the browser tests are marked ``browser``.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import traceforge
from sweep_store import build_sweep_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.attrs: list[tuple[str, str, str]] = []
        self.table_classes: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for k, v in attrs:
            self.attrs.append((tag, k, v or ""))
            if tag == "table" and k == "class":
                self.table_classes.append(v or "")

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    return p


@pytest.fixture(scope="module")
def report_db(tmp_path_factory, small_matmul_export):
    db = tmp_path_factory.mktemp("report") / "report.duckdb"
    build_sweep_store(db, with_traces=False)
    with traceforge.connect(db) as tf:
        tf.ingest([small_matmul_export])
        [trace_id] = tf.sql("SELECT trace_id FROM traces")["trace_id"].to_list()
    return db, trace_id


@pytest.fixture(scope="module")
def report_html(report_db, run_cli, tmp_path_factory):
    db, _ = report_db
    out = tmp_path_factory.mktemp("html") / "report.html"
    r = run_cli("report", "--db", db, "--output", out)
    assert r.rc == 0, r
    return out


def test_report_is_self_contained(report_html, report_db, small_matmul_export):
    text = report_html.read_text(encoding="utf-8")
    doc = parse(text)
    # 3 figures per trace (timeline, gaps, kernel time) + 1 per sweep, all inline SVG
    assert doc.tags.get("svg") == 4 and doc.tags.get("figure") == 4
    assert doc.tags.get("script") is None and doc.tags.get("link") is None and doc.tags.get("img") is None
    for tag, key, value in doc.attrs:
        if key in ("src", "href") or key.endswith(":href"):
            assert not value.startswith(("http:", "https:", "//")), (tag, key, value)
    assert {"metrics", "kernels", "points", "comparison"} <= set(doc.table_classes)
    # numbers in the tables match the export itself
    con = sqlite3.connect(f"file:{small_matmul_export}?mode=ro", uri=True)
    n_kernels = con.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0]
    con.close()
    assert f"{n_kernels:,} kernels" in text
    assert "breakdown boundary: N=4" in text and "Amdahl serial fraction s = 0.300" in text


def _chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.browser
def test_report_in_headless_chromium(report_html, tmp_path):
    proc = _chromium("--dump-dom", report_html.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = parse(proc.stdout)
    # the browser built the same document: every figure is an SVG element with drawn content
    assert dom.tags.get("svg") == 4
    assert dom.tags.get("path", 0) > 100
    assert {"metrics", "kernels", "points", "comparison"} <= set(dom.table_classes)
    assert dom.tags.get("tr", 0) > 30
    text = " ".join(dom.text)
    for title in (
        "GPU timeline",
        "Idle gaps",
        "Kernel time",
        "Sweep ollama / m1 / chat",
        "Comparisons against N=1",
    ):
        assert title in text
    shot = tmp_path / "report.png"
    proc = _chromium("--window-size=1280,2400", f"--screenshot={shot}", report_html.as_uri())
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.shape[0] == 2400 and pixels.shape[1] == 1280
    # not a blank page: many distinct colours (figures, tables, text)
    flat = (pixels[..., :3].reshape(-1, 3) * 255).astype(np.uint8)
    assert len(np.unique(flat[::7], axis=0)) > 50
    keep = Path("/tmp/traceforge-report-screenshot.png")
    shutil.copyfile(shot, keep)  # left for a person to look at


@pytest.mark.parametrize("kind", ["timeline", "gaps", "kernels", "sweep"])
@pytest.mark.parametrize("ext", ["png", "svg"])
def test_plot_writes_each_figure(report_db, run_cli, tmp_path, kind, ext):
    db, trace_id = report_db
    out = tmp_path / f"{kind}.{ext}"
    args = ["plot", kind, "--db", db, "--output", out]
    if kind != "sweep":
        args += ["--trace", trace_id]
    r = run_cli(*args)
    assert r.rc == 0, r
    if ext == "png":
        from matplotlib.image import imread

        img = imread(str(out))
        assert img.shape[0] > 200 and img.shape[1] > 400 and img[..., :3].std() > 0.01
    else:
        assert "<svg" in out.read_text(encoding="utf-8")


def test_timeline_window_and_concurrency(report_db):
    from traceforge.report import plots
    from traceforge.store import Store

    db, trace_id = report_db
    with Store(db, read_only=True) as store:
        win = plots.choose_window(store, trace_id, window_ms=(0.0, 5.0))
        assert win.end_ns - win.start_ns == 5_000_000
        fig = plots.timeline_figure(store, trace_id, window_ms=(0.0, 5.0))
        assert "zoom 0.000–5.000 ms" in fig.axes[1].get_title()  # [0]: the whole capture
    # half-open intervals: touching kernels do not overlap; nested ones do
    times, level = plots.concurrency_steps([0, 10, 12], [10, 20, 15])
    assert times.tolist() == [0, 10, 12, 15, 20] and level.tolist() == [1, 1, 2, 1, 0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["report", "--trace", "ffffffffffffffff", "--output", "{out}/r.html"],
            "no trace 'ffffffffffffffff'",
        ),
        (["report", "--run", "nope", "--output", "{out}/r.html"], "no run 'nope'"),
        (["report", "--window", "5:1", "--output", "{out}/r.html"], "--window '5:1'"),
        (["report", "--output", "{out}/missing-dir/r.html"], "output directory does not exist"),
        (["plot", "timeline", "--output", "{out}/x.png"], "plot timeline needs --trace"),
        (["plot", "gaps", "--trace", "zz", "--output", "{out}/x.pdf"], "must end in .png or .svg"),
        (["plot", "kernels", "--trace", "ffffffffffffffff", "--output", "{out}/x.png"], "no trace"),
    ],
)
def test_report_and_plot_errors(report_db, run_cli, tmp_path, args, message):
    db, _ = report_db
    r = run_cli(*[a.replace("{out}", str(tmp_path)) for a in args], "--db", db)
    assert r.rc == 1, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("traceforge: error: ") and message in lines[0], r
    assert not list(tmp_path.rglob("*.html")) and not list(tmp_path.rglob("*.png"))  # nothing half-written


def test_report_on_an_empty_store(run_cli, tmp_path):
    from traceforge.store import Store

    db = tmp_path / "empty.duckdb"
    Store(db).close()
    r = run_cli("report", "--db", db, "--output", tmp_path / "r.html")
    assert r.rc == 1 and "nothing to report" in r.stderr and not (tmp_path / "r.html").exists()
