"""One consistent, paper-ready matplotlib style for every batchlab figure.

The palette is Okabe & Ito's colour-blind-safe set ("Color Universal Design", 2008), reordered so
that the first colours are the most distinct from each other and yellow (hard to see on white) comes
last. :func:`apply_style` is idempotent and cheap: studies may call it as often as they like.
"""

from __future__ import annotations

import sys

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

#: Default size of one panel, in inches (a 3-panel row is a full-width paper figure).
PANEL_WIDTH = 4.0
PANEL_HEIGHT = 3.0
SAVE_DPI = 150

RC: dict[str, object] = {
    # fonts: a readable sans-serif that exists everywhere matplotlib does
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial", "Liberation Sans", "sans-serif"],
    "font.size": 10.0,
    "axes.titlesize": 11.0,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 10.0,
    "xtick.labelsize": 9.0,
    "ytick.labelsize": 9.0,
    "legend.fontsize": 9.0,
    "legend.title_fontsize": 9.0,
    "figure.titlesize": 12.0,
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
    "lines.linewidth": 1.8,
    "lines.markersize": 5.0,
    "patch.linewidth": 0.5,
    "errorbar.capsize": 3.0,
    # legend
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "legend.borderaxespad": 0.3,
    # figure and output
    "figure.figsize": (PANEL_WIDTH, PANEL_HEIGHT),
    "figure.dpi": 100,
    "figure.constrained_layout.use": True,
    "savefig.dpi": SAVE_DPI,
    "savefig.bbox": "standard",
    "svg.fonttype": "path",  # SVG looks identical everywhere, no font needed by the reader
    "svg.hashsalt": "batchlab",  # deterministic element ids: the same figure gives the same SVG
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
}


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def apply_style() -> None:
    """Select the Agg backend (unless inside a Jupyter kernel) and install the batchlab rcParams.

    Idempotent: calling it again sets the same values again.
    """
    if not _in_notebook():
        matplotlib.use("Agg")  # a no-op when Agg is already selected
    matplotlib.rcParams.update(RC)
