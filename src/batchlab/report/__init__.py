"""Figures (matplotlib, PNG + SVG) and self-contained HTML reports."""

from __future__ import annotations

from .figures import PALETTE, apply_style, band, bars, heatmap, new_figure, save_figure
from .html import FigureRef, Table, write_csv, write_index, write_study_report

__all__ = [
    "PALETTE",
    "apply_style",
    "band",
    "bars",
    "heatmap",
    "new_figure",
    "save_figure",
    "FigureRef",
    "Table",
    "write_csv",
    "write_index",
    "write_study_report",
]
