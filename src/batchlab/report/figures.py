"""The plot types every study needs, drawn in one style at the size a paper prints them.

Typical use in a study::

    colors = config_colors(f"B = {b}" for b in cfg.batch_sizes)  # once per study: one colour per configuration
    fig, ax = new_figure()                                         # 3.3 in wide: a paper's column
    band(ax, steps, mean_acc, std_acc, label="B = 64", color=colors["B = 64"])
    ax.set(xlabel="step", ylabel="test accuracy (%)", title="...")
    zoom_accuracy(ax, top=100)                                     # where the runs differ, not 0..100
    legend_below(fig)                                              # never over the data
    save_figure(fig, out_dir / "figures", "accuracy_vs_step")  # figure_files: PNG, SVG and PDF

`figure_fit.fit_text` wraps labels to the printed size, `figure_checks.figure_problems` checks a finished
figure for what a reader (or a journal) would miss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np

from .figure_fit import overlap
from .style import (
    COLUMN_WIDTH,
    MIN_FONT_PT,
    MIN_ROW_HEIGHT,
    MISSING_COLOR,
    PAGE_WIDTH,
    PALETTE,
    PANEL_HEIGHT,
    apply_style,
    color_of,
    config_colors,
)

__all__ = [
    "PALETTE",
    "apply_style",
    "config_colors",
    "color_of",
    "new_figure",
    "zoom_accuracy",
    "legend_below",
    "band",
    "heatmap",
    "bars",
    "label_points",
]


def new_figure(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None):
    """Apply the style and return ``(fig, axes)`` at the width a paper prints it.

    ``axes`` follows :func:`matplotlib.pyplot.subplots` (``squeeze=True``): a single ``Axes`` for
    one panel, a 1-D array for one row or column, a 2-D array otherwise. Layout is constrained.

    The figure is one column wide (3.3 in) with one panel and a page wide (7 in) with more. A ``width``
    asks for a shape rather than a size: up to 4.5 in it gives a column, beyond it a page, and ``height``
    (default 2.6 in per row) is scaled by the same factor, but never below 2.6 in per row. So text set
    at 8 pt is 8 pt in the paper, and a study written for a wider screen figure still fits the page.
    """
    apply_style()
    import matplotlib.pyplot as plt

    if ncols < 1 or nrows < 1:
        raise ValueError(f"need at least one panel, got ncols={ncols}, nrows={nrows}")
    asked = float(width) if width is not None else (COLUMN_WIDTH if ncols == 1 else PAGE_WIDTH)
    w = COLUMN_WIDTH if asked <= 4.5 else PAGE_WIDTH
    h = float(height) * w / asked if height is not None else PANEL_HEIGHT * nrows
    h = max(h, MIN_ROW_HEIGHT * nrows)
    fig, axes = plt.subplots(nrows=nrows, ncols=ncols, figsize=(w, h), layout="constrained")
    return fig, axes


def zoom_accuracy(ax, *, tail: float = 0.5, margin: float = 0.15, top: float | None = None) -> tuple[float, float]:
    """Set the y limits of an accuracy panel to where its runs differ; returns them.

    The rule: take every data line of ``ax`` (and its ±std bands) over the last ``tail`` of its x range
    (the part a claim compares: where training ends), find the lowest and highest value there, and add
    ``margin`` of that range on each side (at least 0.5 % of the axis' scale, ``top`` or 1). The values
    that the figure is about (every plotted run's final portion, bands included) are therefore always
    inside the axes; only the early, low part of a curve can leave it at the bottom. ``top`` (100 for
    percent, 1 for fractions) caps the upper limit, as no accuracy exceeds it. Reference lines drawn in
    axes coordinates (``axhline``) are not data. Leaves the limits alone when there is no finite value.
    """
    values = []
    for x, y in _data_xy(ax):
        finite = np.isfinite(x) & np.isfinite(y)
        if not finite.any():
            continue
        x0, x1 = x[finite].min(), x[finite].max()
        keep = finite & (x >= x1 - tail * (x1 - x0))
        values.append(y[keep])
    if not values:
        return ax.get_ylim()
    ys = np.concatenate(values)
    lo, hi = float(ys.min()), float(ys.max())
    pad = max(margin * (hi - lo), 0.005 * (top if top is not None else 1.0))
    lo, hi = lo - pad, hi + pad
    if top is not None:
        hi = min(hi, top + pad / 2)  # room for a line at the top itself
    ax.set_ylim(lo, hi)
    return lo, hi


def _data_xy(ax):
    """(x, y) arrays of the data drawn in data coordinates: lines, and the outlines of filled bands."""
    from matplotlib.collections import PolyCollection

    for line in ax.get_lines():
        if line.get_visible() and line.get_transform() == ax.transData:
            x, y = line.get_data()
            yield np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    for coll in ax.collections:
        if isinstance(coll, PolyCollection) and coll.get_visible() and coll.get_transform() == ax.transData:
            for path in coll.get_paths():
                yield path.vertices[:, 0].astype(float), path.vertices[:, 1].astype(float)


def legend_below(fig, *, ncols: int | None = None, **kw):
    """One legend for the whole figure, below its panels, where it covers no data; returns it (None when
    nothing is labelled). Labels are gathered from every panel, each once, in the order first drawn.

    ``loc="best"`` inside the axes cannot avoid lines that fill them (accuracy curves of several runs do);
    below the panels the legend never covers data, and one legend serves all panels (a configuration has
    one colour in every panel).
    """
    for old in list(fig.legends):  # called again (after another panel is drawn): one legend, not two
        old.remove()
    handles: dict[str, object] = {}
    for ax in fig.axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label and not label.startswith("_"):
                handles.setdefault(label, handle)
    if not handles:
        return None
    if ncols is None:  # as many columns as fit the figure's width (at most 4), the rows as even as can be
        size = kw.get("fontsize", matplotlib.rcParams["legend.fontsize"])
        size = size if isinstance(size, (int, float)) else MIN_FONT_PT
        entry = max(0.55 * size * len(label) / 72 + 0.45 for label in handles)  # inches: text and line sample
        fit = max(1, min(4, int(0.95 * fig.get_figwidth() // entry)))
        ncols = math.ceil(len(handles) / math.ceil(len(handles) / fit))
    return fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=ncols, **kw)


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

    fontsize = MIN_FONT_PT
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
    colors: Mapping[str, str] | None = None,
):
    """Grouped bar chart: one colour per group, one cluster of bars per category.

    ``groups[g][k]`` is the height of group ``g`` in category ``categories[k]``; ``errors`` (same
    keys, optional per group) gives symmetric error bars; ``colors`` (a :func:`config_colors` mapping)
    the group colours, the palette in order by default. Returns ``{group: BarContainer}``.
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
        color = color_of(colors, name) if colors is not None else PALETTE[k % len(PALETTE)]
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


def label_points(ax, xs, ys, labels, *, fontsize: float = MIN_FONT_PT, color: str = "#333333", marker_pt: float = 4.5):
    """Write ``labels[i]`` beside the point ``(xs[i], ys[i])`` so that no two labels overlap; returns the texts.

    Deterministic greedy placement: the most crowded points first, each label goes to the first free
    spot of eight around its point (right, left, above, below and the diagonals), then of the same
    eight farther and farther away (four more rings), with a thin leader line to the point. A spot is
    free when the label stays inside the axes and covers no other label, no marker and not the axes'
    legend; when no spot is free, the one that covers least. Call it after the axes' limits, scales and
    legend are set (it draws the figure once to know where the points land).
    """
    fig = ax.figure
    fig.draw_without_rendering()  # constrained layout done: display coordinates are those of the saved figure
    to_pt = 72.0 / fig.dpi
    pts = [tuple(ax.transData.transform((float(x), float(y))) * to_pt) for x, y in zip(xs, ys)]
    bb = ax.get_window_extent()
    frame = (bb.x0 * to_pt, bb.y0 * to_pt, bb.x1 * to_pt, bb.y1 * to_pt)
    obstacles = [(px - marker_pt, py - marker_pt, px + marker_pt, py + marker_pt) for px, py in pts]
    if ax.get_legend() is not None:
        lb = ax.get_legend().get_window_extent()
        obstacles.append((lb.x0 * to_pt, lb.y0 * to_pt, lb.x1 * to_pt, lb.y1 * to_pt))
    height = 1.2 * fontsize  # a little more than the glyphs: labels keep a gap between them

    def crowd(i: int) -> int:
        return sum(1 for j, q in enumerate(pts) if j != i and abs(q[0] - pts[i][0]) + abs(q[1] - pts[i][1]) < 40)

    order = sorted(range(len(pts)), key=lambda i: (-crowd(i), i))
    placed: list[tuple[float, float, float, float]] = []
    texts = [None] * len(pts)
    for i in order:
        px, py = pts[i]
        width = 0.62 * fontsize * max(len(str(labels[i])), 1) + 1.0
        best = None
        for reach in (1.0, 2.4, 3.8, 5.5, 7.5):
            g = 5.0 * reach
            d = 0.75 * g
            spots = [
                (g, -height / 2),
                (-g - width, -height / 2),
                (-width / 2, g),
                (-width / 2, -g - height),
                (d, d),
                (-d - width, d),
                (d, -d - height),
                (-d - width, -d - height),
            ]
            for dx, dy in spots:
                box = (px + dx, py + dy, px + dx + width, py + dy + height)
                inside = frame[0] <= box[0] and box[2] <= frame[2] and frame[1] <= box[1] and box[3] <= frame[3]
                others = [o for j, o in enumerate(obstacles) if j != i]
                cost = sum(overlap(box, o) for o in placed + others) + (0.0 if inside else 1e6)
                if best is None or cost < best[0]:
                    best = (cost, dx, dy, box, reach)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        _, dx, dy, box, reach = best
        placed.append(box)
        arrow = None
        if reach > 1.0:  # far from its point: a leader line says which point it names
            arrow = {"arrowstyle": "-", "color": "#888888", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 3}
        texts[i] = ax.annotate(
            str(labels[i]),
            (xs[i], ys[i]),
            xytext=(dx, dy),
            textcoords="offset points",
            ha="left",
            va="bottom",
            fontsize=fontsize,
            color=color,
            arrowprops=arrow,
            zorder=4,
        )
    return texts
