"""One consistent, paper-ready matplotlib style for every batchlab figure.

Figures are made at the size they are printed: one column of a paper (:data:`COLUMN_WIDTH`, 3.3 in) or
the whole page width (:data:`PAGE_WIDTH`, 7 in), with no text smaller than :data:`MIN_FONT_PT` (8 pt) at
that size, so a figure dropped into a paper unscaled stays readable.

The palette is Okabe & Ito's colour-blind-safe set ("Color Universal Design", 2008), reordered so
that the first colours are the most distinct from each other and yellow (hard to see on white) comes
last. :func:`config_colors` gives each configuration of a study one colour for all its figures.
:func:`apply_style` is idempotent and cheap: studies may call it as often as they like.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping

import matplotlib
from cycler import cycler

#: Okabe-Ito colours: blue, orange, bluish green, vermillion, reddish purple, sky blue, black, yellow.
PALETTE: list[str] = [
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#000000",
    "#F0E442",
]

#: Grey used for missing (NaN) cells and other "no data" marks.
MISSING_COLOR = "#d0d0d0"
#: Colour of text and axes: near-black reads better than pure black on screen and in print.
INK = "#222222"
GRID = "#e3e3e3"

#: A paper's column and page widths, in inches: every figure is made at one of them.
COLUMN_WIDTH = 3.3
PAGE_WIDTH = 7.0
#: Default height of one row of panels, and the least a row is given when a wide figure is narrowed.
PANEL_HEIGHT = 2.6
MIN_ROW_HEIGHT = 2.6
#: No text of a figure is smaller than this, at the figure's own (printed) size.
MIN_FONT_PT = 8.0
SAVE_DPI = 200

RC: dict[str, object] = {
    # fonts: a readable sans-serif that exists everywhere matplotlib does
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial", "Liberation Sans", "sans-serif"],
    "font.size": 8.5,
    "axes.titlesize": 9.0,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 8.5,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "legend.fontsize": 8.0,
    "legend.title_fontsize": 8.0,
    "figure.titlesize": 9.5,
    "figure.titleweight": "bold",
    "mathtext.default": "regular",
    # colours
    "axes.prop_cycle": cycler(color=PALETTE),
    "image.cmap": "viridis",
    "text.color": INK,
    "axes.labelcolor": INK,
    "axes.edgecolor": "#555555",
    "xtick.color": "#555555",
    "ytick.color": "#555555",
    "xtick.labelcolor": INK,
    "ytick.labelcolor": INK,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    # axes: no top/right spines, light grid behind the data
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.8,
    "axes.grid": True,
    "axes.grid.which": "major",
    "axes.axisbelow": True,
    "grid.color": GRID,
    "grid.linewidth": 0.7,
    "grid.linestyle": "-",
    "xtick.major.width": 0.8,
    "ytick.major.width": 0.8,
    "xtick.major.size": 3.5,
    "ytick.major.size": 3.5,
    "xtick.direction": "out",
    "ytick.direction": "out",
    # lines and markers
    "lines.linewidth": 1.4,
    "lines.markersize": 4.0,
    "patch.linewidth": 0.5,
    "errorbar.capsize": 3.0,
    # legend
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "legend.borderaxespad": 0.3,
    # figure and output
    "figure.figsize": (COLUMN_WIDTH, PANEL_HEIGHT),
    "figure.dpi": 100,
    "figure.constrained_layout.use": True,
    "savefig.dpi": SAVE_DPI,
    "savefig.bbox": "standard",
    "svg.fonttype": "path",  # SVG looks identical everywhere, no font needed by the reader
    "svg.hashsalt": "batchlab",  # deterministic element ids: the same figure gives the same SVG
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
}


def config_colors(labels: Iterable) -> dict[str, str]:
    """One colour per configuration label (``"batch 64"``, ``"Adam"``, ``256``), the same in every figure.

    Labels are put in natural order (the numbers in them compared as numbers: batch 64 before batch 256,
    then the text) and given the palette in that order, so the mapping depends only on the set of labels:
    build it once from a study's config (all the configurations it has) and use it in each of its
    figures, and a figure that shows only some configurations keeps their colours. Beyond eight labels
    the palette repeats.
    """
    unique = {str(label): None for label in labels}
    ordered = sorted(unique, key=_natural)
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(ordered)}


def color_of(colors: Mapping[str, str], label) -> str:
    """The colour of ``label`` in a :func:`config_colors` mapping (grey when it is not there)."""
    return colors.get(str(label), MISSING_COLOR)


def _natural(label: str) -> tuple:
    parts = re.split(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)", label)
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts) if p)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def apply_style() -> None:
    """Select the Agg backend (unless inside a Jupyter kernel) and install the batchlab rcParams.

    Idempotent: calling it again sets the same values again.
    """
    if not _in_notebook():
        matplotlib.use("Agg")  # a no-op when Agg is already selected
    matplotlib.rcParams.update(RC)
