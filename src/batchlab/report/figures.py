"""Figure helpers: one style, a few plot types every study needs, and atomic PNG + SVG output.

Typical use in a study::

    fig, ax = new_figure()
    band(ax, steps, mean_acc, std_acc, label="B = 64")
    ax.set(xlabel="step", ylabel="test accuracy")
    ax.legend()
    save_figure(fig, out_dir / "figures", "accuracy_vs_step")
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

from .html import atomic_write_bytes
from .style import MISSING_COLOR, PALETTE, PANEL_HEIGHT, PANEL_WIDTH, SAVE_DPI, apply_style

__all__ = ["PALETTE", "apply_style", "new_figure", "band", "heatmap", "bars", "save_figure"]


def new_figure(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None):
    """Apply the style and return ``(fig, axes)`` with a sensible default size per panel.

    ``axes`` follows :func:`matplotlib.pyplot.subplots` (``squeeze=True``): a single ``Axes`` for
    one panel, a 1-D array for one row or column, a 2-D array otherwise. ``width``/``height`` are
    the whole figure's size in inches (default 4 x 3 inches per panel). Layout is constrained.
    """
    apply_style()
    import matplotlib.pyplot as plt

    if ncols < 1 or nrows < 1:
        raise ValueError(f"need at least one panel, got ncols={ncols}, nrows={nrows}")
    w = float(width) if width is not None else PANEL_WIDTH * ncols
    h = float(height) if height is not None else PANEL_HEIGHT * nrows
    fig, axes = plt.subplots(nrows=nrows, ncols=ncols, figsize=(w, h), layout="constrained")
    return fig, axes


def legend(ax, **kw) -> None:
    """ax.legend(**kw) when the axes has labelled artists (every run diverged: nothing to label, no warning)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


def _as_1d(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


def band(ax, x, mean, std, *, label=None, color=None, linestyle="-"):
    """Plot ``mean`` against ``x`` with a shaded ±1 std band; returns the line.

    ``std`` may be None, or all zeros / NaN (a single seed): then only the line is drawn. NaN in
    ``mean`` (a diverged run) leaves a gap in the line rather than an error.
    """
    x_arr = _as_1d(x, "x")
    m = _as_1d(mean, "mean")
    if x_arr.shape != m.shape:
        raise ValueError(f"band: x has {x_arr.size} points but mean has {m.size}")
    kwargs = {"linestyle": linestyle, "label": label}
    if color is not None:
        kwargs["color"] = color
    (line,) = ax.plot(x_arr, m, **kwargs)
    if std is None:
        return line
    s = _as_1d(std, "std")
    if s.shape != m.shape:
        raise ValueError(f"band: std has {s.size} points but mean has {m.size}")
    finite = np.isfinite(s) & np.isfinite(m)
    if not finite.any() or not np.any(s[finite] != 0):
        return line
    ax.fill_between(
        x_arr,
        m - s,
        m + s,
        where=finite,
        color=line.get_color(),
        alpha=0.2,
        linewidth=0,
        interpolate=False,
    )
    return line


def _text_color_for(rgba) -> str:
    """Black or white text, whichever reads better on the cell colour (WCAG relative luminance)."""

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgba[:3])
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#111111" if luminance > 0.179 else "white"


def _default_cell_text(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    return f"{v:.3g}"


def heatmap(ax, values2d, row_labels, col_labels, *, cell_text=None, cmap="viridis", colorbar_label=None):
    """Annotated heatmap of a 2-D array; returns the image.

    Rows are drawn top to bottom in the order given. ``cell_text`` is an optional 2-D list of strings
    (may contain newlines) shown in the cells; by default each value is shown to 3 significant
    digits. NaN (or infinite) cells are drawn grey with "—" whatever ``cell_text`` says.
    """
    values = np.asarray(values2d, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"heatmap: values must be 2-D, got shape {values.shape}")
    n_rows, n_cols = values.shape
    if len(row_labels) != n_rows or len(col_labels) != n_cols:
        raise ValueError(
            f"heatmap: {n_rows}x{n_cols} values but {len(row_labels)} row and {len(col_labels)} column labels"
        )
    if cell_text is not None:
        if len(cell_text) != n_rows or any(len(r) != n_cols for r in cell_text):
            raise ValueError("heatmap: cell_text must have the same shape as values")

    bad = ~np.isfinite(values)
    masked = np.ma.masked_array(values, mask=bad)
    base = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    cmap_obj = base.with_extremes(bad=MISSING_COLOR)
    if bad.all():
        vmin, vmax = 0.0, 1.0
    else:
        vmin, vmax = float(masked.min()), float(masked.max())
        if vmin == vmax:
            vmin, vmax = vmin - 0.5, vmax + 0.5
    im = ax.imshow(masked, cmap=cmap_obj, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")

    ax.set_xticks(np.arange(n_cols), labels=[str(c) for c in col_labels])
    ax.set_yticks(np.arange(n_rows), labels=[str(r) for r in row_labels])
    ax.tick_params(which="both", length=0)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    # thin white lines between cells
    ax.set_xticks(np.arange(n_cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", bottom=False, left=False)
    if max((len(str(c)) for c in col_labels), default=0) * n_cols > 60:
        ax.tick_params(axis="x", labelrotation=30)
        for lbl in ax.get_xticklabels():
            lbl.set_horizontalalignment("right")

    fontsize = 8.5 if max(n_rows, n_cols) <= 8 else 7
    for i in range(n_rows):
        for j in range(n_cols):
            if bad[i, j]:
                text, color = "—", "#555555"
            else:
                text = str(cell_text[i][j]) if cell_text is not None else _default_cell_text(values[i, j])
                color = _text_color_for(cmap_obj(im.norm(values[i, j])))
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize, linespacing=1.15)

    cbar = ax.figure.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cbar.outline.set_visible(False)
    cbar.ax.grid(False)
    if colorbar_label:
        cbar.set_label(colorbar_label)
    return im


def bars(
    ax,
    groups: Mapping[str, Sequence[float]],
    categories: Sequence[str],
    *,
    errors: Mapping[str, Sequence[float]] | None = None,
):
    """Grouped bar chart: one colour per group, one cluster of bars per category.

    ``groups[g][k]`` is the height of group ``g`` in category ``categories[k]``; ``errors`` (same
    keys, optional per group) gives symmetric error bars. Returns ``{group: BarContainer}``.
    A legend is added when there is more than one group.
    """
    names = list(groups)
    n_groups = max(len(names), 1)
    n_cat = len(categories)
    x = np.arange(n_cat, dtype=float)
    total = 0.8
    width = total / n_groups
    containers = {}
    for k, name in enumerate(names):
        heights = np.asarray(groups[name], dtype=float)
        if heights.shape != (n_cat,):
            raise ValueError(f"bars: group {name!r} has {heights.size} values for {n_cat} categories")
        err = None
        if errors is not None and name in errors and errors[name] is not None:
            err = np.asarray(errors[name], dtype=float)
            if err.shape != (n_cat,):
                raise ValueError(f"bars: errors for {name!r} have {err.size} values for {n_cat} categories")
        offset = (k - (n_groups - 1) / 2) * width
        color = PALETTE[k % len(PALETTE)]
        containers[name] = ax.bar(
            x + offset,
            heights,
            width * 0.92,
            yerr=err,
            label=str(name),
            color=color,
            edgecolor="white",
            linewidth=0.5,
            error_kw={"ecolor": "#333333", "elinewidth": 1.0, "capsize": 3},
        )
    ax.set_xticks(x, labels=[str(c) for c in categories])
    ax.grid(False, axis="x")
    ax.tick_params(axis="x", length=0)
    if max((len(str(c)) for c in categories), default=0) * n_cat > 50:
        ax.tick_params(axis="x", labelrotation=30)
        for lbl in ax.get_xticklabels():
            lbl.set_horizontalalignment("right")
    if len(names) > 1:
        ax.legend()
    return containers


def save_figure(fig, directory: Path, name: str) -> dict[str, Path]:
    """Write ``directory/name.png`` (150 dpi) and ``directory/name.svg``, each atomically; close ``fig``.

    Creates ``directory``. Returns ``{"png": path, "svg": path}``. The figure is closed even when
    saving fails, so a long study never accumulates open figures.
    """
    import matplotlib.pyplot as plt

    directory = Path(directory)
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"save_figure: bad figure name {name!r}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}
        for fmt, metadata in (
            ("png", {"Software": None}),
            ("svg", {"Date": None, "Creator": None}),
        ):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=SAVE_DPI, metadata=metadata)
            path = directory / f"{name}.{fmt}"
            atomic_write_bytes(path, buf.getvalue())
            out[fmt] = path
        return out
    finally:
        plt.close(fig)
