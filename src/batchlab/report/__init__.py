"""Figures (matplotlib: PNG, SVG and PDF) and self-contained HTML reports of what studies produce.

The data they draw (`Table`, `FigureRef`, `StudyOutput`) lives in `batchlab.outputs`.
"""

from __future__ import annotations

from .figure_files import save_figure
from .figures import PALETTE, apply_style, band, bars, heatmap, new_figure
from .html import write_index, write_study_report

__all__ = [
    "PALETTE",
    "apply_style",
    "band",
    "bars",
    "heatmap",
    "new_figure",
    "save_figure",
    "write_index",
    "write_study_report",
]
