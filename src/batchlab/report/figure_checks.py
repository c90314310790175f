"""What a reader or a journal would miss in a finished figure, as sentences (`figure_problems`): titles,
labels and legends, print size and text size, text that does not fit or overlaps, legends over data."""

from __future__ import annotations

import numpy as np

from .figure_fit import clashing_ticks, overlap
from .style import MIN_FONT_PT, PAGE_WIDTH

#: A panel smaller than this (in inches, either way) has been squeezed by its labels: the layout failed.
MIN_PANEL_IN = 0.6


def _title(ax) -> str:
    return " ".join(ax.get_title(loc=loc) for loc in ("left", "center", "right")).strip()


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

    For print: the figure is at most a page (7 in) wide; no text is smaller than 8 pt at that size; every
    title, label and axis fits inside the figure, none overlaps another, and no two tick labels of an axis
    overlap (:func:`fit_text` wraps and thins what it can); no panel is squeezed below 0.6 in; and no
    legend inside a panel covers its lines, points or bars (a legend below the panels, see
    :func:`legend_below`, never does). Whether the PDF was written beside the PNG is
    :func:`missing_formats`' question.
    """
    problems = []
    axes = [ax for ax in fig.axes if ax.get_visible()]
    panels = [ax for ax in axes if not _is_colorbar(ax) and _has_data(ax)]
    suptitle = fig._suptitle.get_text().strip() if getattr(fig, "_suptitle", None) is not None else ""
    title = _title

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
    if fig.get_figwidth() > PAGE_WIDTH + 0.01:
        problems.append(f"the figure is {fig.get_figwidth():.3g} in wide, more than a page ({PAGE_WIDTH:g} in)")
    small = sorted(
        {(t.get_fontsize(), t.get_text()) for t in _texts(fig) if t.get_fontsize() < MIN_FONT_PT - 1e-9},
        key=lambda x: x[0],
    )
    if small:
        size, text = small[0]
        problems.append(f"{len(small)} texts are smaller than {MIN_FONT_PT:g} pt (e.g. {text!r} at {size:g} pt)")
    problems += text_clashes(fig, draw=False)  # _texts drew it
    for i, ax in enumerate(panels):
        box = ax.get_window_extent()  # drawn by _texts: the constrained layout's final size
        w, h = box.width / fig.dpi, box.height / fig.dpi
        if min(w, h) < MIN_PANEL_IN:
            problems.append(f"panel {i + 1} is only {w:.2g} x {h:.2g} in: its labels and legends leave no room")
    problems += legend_overlaps(fig, draw=False)
    return problems


def _texts(fig):
    """The visible, non-empty texts of a figure (tick labels, titles, legends, annotations)."""
    from matplotlib.text import Text

    fig.draw_without_rendering()  # tick labels exist once drawn
    return [
        t
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.get_figure() is not None and _shown(t)
    ]


def _shown(artist) -> bool:
    """Whether an artist is drawn: it and every parent visible (an invisible axes hides its texts)."""
    axes = getattr(artist, "axes", None)
    return artist.get_visible() and (axes is None or axes.get_visible())


def text_clashes(fig, *, draw: bool = True) -> list[str]:
    """Texts cut off at the figure's edge, and titles, axis labels and legends that overlap one another
    (a long y label running into the next panel's title): what a cramped layout does, as sentences.
    ``draw=False`` when the figure was just drawn (its layout is final)."""
    if draw:
        fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    problems = []

    def outside(b) -> bool:
        return b.x0 < frame.x0 - 1 or b.y0 < frame.y0 - 1 or b.x1 > frame.x1 + 1 or b.y1 > frame.y1 + 1

    named = []  # (what, box)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for t in (ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label):
            if t.get_visible() and t.get_text().strip():
                named.append((repr(t.get_text()), t.get_window_extent()))
        for axis, name in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            box = axis.get_tightbbox(renderer)  # the tick labels drawn (inside the view) and the label
            where = f"the {name} axis of {_title(ax) or 'a panel'!r}"
            if axis.get_visible() and box is not None and outside(box):
                problems.append(f"{where} does not fit in the figure")
            if axis.get_visible() and clashing_ticks(axis):
                problems.append(f"tick labels of {where} overlap")
        if ax.get_legend() is not None and ax.get_legend().get_visible():
            named.append(("a legend", ax.get_legend().get_window_extent()))
    for leg in fig.legends:
        named.append(("the figure's legend", leg.get_window_extent()))
    if getattr(fig, "_suptitle", None) is not None and fig._suptitle.get_text().strip():
        named.append((repr(fig._suptitle.get_text()), fig._suptitle.get_window_extent()))
    problems += [f"{what} does not fit in the figure" for what, box in named if outside(box)]
    for i, (a, box_a) in enumerate(named):
        for b, box_b in named[i + 1 :]:
            if overlap(box_a.extents, box_b.extents) > 1.0:  # more than a pixel's worth of area
                problems.append(f"{a} overlaps {b}")
    return problems


def legend_overlaps(fig, *, draw: bool = True) -> list[str]:
    """Legends inside a panel that cover some of its data: a line passing through the legend's box, a
    marker (of a line or a scatter) or a bar inside it. Each line is followed at 1-pixel steps in display
    space, so a line that crosses the box between two of its points counts too. Reference lines and spans
    in axes coordinates (``axhline``, ``axvspan``) are not data. ``draw=False`` when the figure was just drawn."""
    if draw:
        fig.draw_without_rendering()
    problems = []
    panels = [ax for ax in fig.axes if ax.get_visible() and not _is_colorbar(ax)]
    for i, ax in enumerate(panels):
        leg = ax.get_legend()
        if leg is None or not leg.get_visible():
            continue
        box = leg.get_window_extent()
        # a twin axis shares the panel's area: its data lie under this legend too
        same = [a for a in panels if a.get_position().bounds == ax.get_position().bounds]
        covered = next((label for a in same for label in _covered(a, box)), None)
        if covered is not None:
            name = covered if covered and not covered.startswith("_") else "a data series"
            problems.append(f"panel {i + 1}'s legend covers data ({name!r})")
    return problems


def _covered(ax, box):
    """The labels of the data series of ``ax`` that reach into ``box`` (display coordinates), lazily."""
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer

    for line in ax.get_lines():
        if line.get_visible() and line.get_transform() == ax.transData:
            xy = ax.transData.transform(np.column_stack(line.get_data()).astype(float))
            if _enters(xy, box, joined=line.get_linestyle() not in ("None", "", " ")):
                yield line.get_label()
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and coll.get_visible() and len(coll.get_offsets()):
            xy = coll.get_offset_transform().transform(np.asarray(coll.get_offsets(), dtype=float))
            if _enters(xy, box, joined=False):
                yield coll.get_label()
    for container in ax.containers:
        if isinstance(container, BarContainer):
            if any(overlap(bar.get_window_extent().extents, box.extents) > 1.0 for bar in container):
                yield container.get_label()


def _enters(points: np.ndarray, box, joined: bool) -> bool:
    """Whether a series (display coordinates; a NaN breaks a line) has a point, or with ``joined`` a
    segment, strictly inside the box."""
    if len(points) == 0:
        return False
    parts = [points]
    if joined and len(points) > 1:
        a, b = points[:-1], points[1:]
        ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
        a, b = a[ok], b[ok]
        n = np.minimum(np.hypot(*(b - a).T), 5000).astype(int) + 1  # about one point per pixel
        seg = np.repeat(np.arange(len(a)), n)
        t = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n, n)  # 0 .. (n-1)/n per segment
        parts.append(a[seg] + (b[seg] - a[seg]) * t[:, None])
    p = np.concatenate(parts)
    p = p[np.isfinite(p).all(axis=1)]
    return bool(((p[:, 0] > box.x0) & (p[:, 0] < box.x1) & (p[:, 1] > box.y0) & (p[:, 1] < box.y1)).any())
