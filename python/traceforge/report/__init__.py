"""Figures and the self-contained HTML report (matplotlib is imported only inside this package's functions).

``write_report(store, output, trace_ids=...)`` writes one HTML file with every figure embedded as inline SVG;
``plots`` holds the single figures that ``traceforge plot`` saves as PNG or SVG.
"""

from __future__ import annotations

from .html import build_report, write_report

__all__ = ["build_report", "write_report"]
