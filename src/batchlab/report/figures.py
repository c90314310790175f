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

__all__ = [
    "PALETTE",
    "apply_style",
    "new_figure",
    "band",
    "heatmap",
    "bars",
    "label_points",
    "save_figure",
    "figure_problems",
]


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


def _overlap(a, b) -> float:
    """Area shared by two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def label_points(ax, xs, ys, labels, *, fontsize: float = 7.5, color: str = "#333333", marker_pt: float = 4.5):
    """Write ``labels[i]`` beside the point ``(xs[i], ys[i])`` so that no two labels overlap; returns the texts.

    Deterministic greedy placement: the most crowded points first, each label goes to the first free
    spot of eight around its point (right, left, above, below and the diagonals), then of the same
    eight farther and farther away (four more rings), with a thin leader line to the point. A spot is
    free when the label stays inside the axes and covers no other label, no marker and not the axes'
    legend; when no spot is free, the one that covers least. Call it after the axes' limits, scales and
    legend are set (it draws the figure once to know where the points land).
    """
    fig = ax.figure
    fig.canvas.draw()  # constrained layout done: display coordinates are those of the saved figure
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
                cost = sum(_overlap(box, o) for o in placed + others) + (0.0 if inside else 1e6)
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


def _is_colorbar(ax) -> bool:
    return ax.get_label() == "<colorbar>" or getattr(ax, "_colorbar", None) is not None


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.images or ax.patches or ax.containers)


def figure_problems(fig) -> list[str]:
    """What a reader would miss in ``fig``, as sentences; empty when it is complete.

    Every figure has a title (``fig.suptitle``, or the title of its only panel); every panel that shows
    data has a title, an x and a y label (a twin axis only its y label); a colour bar has a label; and
    the labels of a panel with two or more labelled series are all in a legend (its own, another
    panel's or the figure's). Units cannot be checked here: write them into the labels.
    """
    problems = []
    axes = [ax for ax in fig.axes if ax.get_visible()]
    panels = [ax for ax in axes if not _is_colorbar(ax) and _has_data(ax)]
    suptitle = fig._suptitle.get_text().strip() if getattr(fig, "_suptitle", None) is not None else ""

    def title(ax) -> str:
        return " ".join(ax.get_title(loc=loc) for loc in ("left", "center", "right")).strip()

    if not suptitle and not (len(panels) == 1 and title(panels[0])):
        problems.append("the figure has no title (fig.suptitle, or a title on its only panel)")
    legends = [*fig.legends, *(ax.get_legend() for ax in axes if ax.get_legend() is not None)]
    in_a_legend = {t.get_text() for leg in legends for t in leg.get_texts()}
    seen: list[tuple] = []
    for i, ax in enumerate(panels):
        name = f"panel {i + 1}" + (f" ({title(ax)!r})" if title(ax) else "")
        twin = tuple(ax.get_position().bounds) in seen  # twinx: a second y axis on an earlier panel
        seen.append(tuple(ax.get_position().bounds))
        if not title(ax) and len(panels) > 1 and not twin:
            problems.append(f"{name} has no title")
        if not ax.get_xlabel().strip() and not twin:
            problems.append(f"{name} has no x label")
        if not ax.get_ylabel().strip():
            problems.append(f"{name} has no y label")
        labelled = [lbl for lbl in ax.get_legend_handles_labels()[1] if lbl and not lbl.startswith("_")]
        missing = [lbl for lbl in labelled if lbl not in in_a_legend]
        if len(labelled) >= 2 and missing:  # a legend shared with another panel is as good as its own
            problems.append(f"{name} has {len(labelled)} labelled series but no legend names {missing[0]!r}")
    for ax in axes:
        if _is_colorbar(ax) and not (ax.get_ylabel().strip() or ax.get_xlabel().strip()):
            problems.append("a colour bar has no label")
    return problems


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
