"""Text that fits a printed figure: titles and labels wrapped to their room, crowded tick labels thinned.

Studies write labels for a wide screen; at a paper's 3.3 or 7 in they would run into the next panel or off
the page. `figure_checks` uses the same geometry (`overlap`, `clashing_ticks`) to report what still clashes.
"""

from __future__ import annotations

from matplotlib.ticker import FixedLocator, NullFormatter


def fit_text(fig):
    """Wrap every title, axis label and the suptitle that is longer than the room it has (its panel's width,
    a y label its panel's height, the suptitle the figure's width) onto more lines, and thin tick labels
    that overlap (first the minor labels of a log axis, then every other major one); returns ``fig``.

    Studies write labels for a wide screen; at a paper's 3.3 or 7 in they would run into the next panel
    or off the page. Measured after a draw (the constrained layout's sizes), up to three times, since
    wrapping moves the panels. Idempotent: what fits is left as it is.
    """
    import textwrap

    if getattr(fig, "_batchlab_fitted", False):  # fitted already (the driver fits, then save_figure): one layout
        return fig
    fig._batchlab_fitted = True
    for _ in range(3):
        fig.draw_without_rendering()
        changed = False
        sup = getattr(fig, "_suptitle", None)
        if sup is not None and sup.get_text().strip():
            changed |= _wrap(sup, 0.98 * fig.bbox.width, vertical=False, fill=textwrap.fill)
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            box = ax.get_window_extent()
            for t in (ax.title, ax._left_title, ax._right_title, ax.xaxis.label):
                changed |= _wrap(t, box.width, vertical=False, fill=textwrap.fill)
            changed |= _wrap(ax.yaxis.label, box.height, vertical=True, fill=textwrap.fill)
            for axis in (ax.xaxis, ax.yaxis):
                if not clashing_ticks(axis):
                    continue
                if any(t.get_text() for t in axis.get_ticklabels(minor=True)):
                    axis.set_minor_formatter(NullFormatter())  # crowded minor labels (2x10^1 3x10^1 ...)
                    changed = True
                    continue
                lo, hi = sorted(axis.get_view_interval())
                locs = [x for x in axis.get_majorticklocs() if lo <= x <= hi]
                if len(locs) > 2:  # crowded major labels: every other one
                    axis.set_major_locator(FixedLocator(locs[::2]))
                    changed = True
        if not changed:
            break
    return fig


def clashing_ticks(axis) -> bool:
    """Whether two of the tick labels drawn on an axis (major and minor) overlap."""
    ax = axis.axes
    span = ax.get_window_extent()
    lo, hi = (span.x0, span.x1) if axis is ax.xaxis else (span.y0, span.y1)
    boxes = []
    for t in [*axis.get_ticklabels(), *axis.get_ticklabels(minor=True)]:
        if t.get_rotation() % 90:
            return False  # slanted labels: their upright boxes overlap where the words do not
        if t.get_visible() and t.get_text().strip():
            b = t.get_window_extent()
            centre = (b.x0 + b.x1) / 2 if axis is ax.xaxis else (b.y0 + b.y1) / 2
            if lo - 1 <= centre <= hi + 1:  # matplotlib keeps labels of ticks outside the view: not drawn
                boxes.append(b.extents)
    return any(overlap(a, b) > 1.0 for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def _wrap(text, room: float, *, vertical: bool, fill) -> bool:
    """Break ``text`` into lines short enough for ``room`` (display units); whether it changed."""
    content = text.get_text()
    if not text.get_visible() or not content.strip() or room <= 0:
        return False
    box = text.get_window_extent()
    length = box.height if vertical else box.width
    if length <= room + 0.5:
        return False
    chars = max(len(line) for line in content.split("\n"))
    width = max(12, int(chars * room / length * 0.95))
    if width >= chars:
        return False  # no shorter line is possible
    wrapped = fill(" ".join(content.split()), width)
    if wrapped == content:
        return False
    text.set_text(wrapped)
    return True


def overlap(a, b) -> float:
    """Area shared by two boxes (x0, y0, x1, y1)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0
