"""Figures for papers: printed size and text, one colour per configuration, accuracy axes zoomed to where
runs differ, legends off the data, and a vector PDF beside every PNG; `figure_problems` finds what breaks
these rules."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from batchlab.report.figure_checks import figure_problems
from batchlab.report.figure_files import missing_formats, save_figure
from batchlab.report.figure_fit import fit_text
from batchlab.report.figures import band, config_colors, legend_below, new_figure, zoom_accuracy
from batchlab.report.style import COLUMN_WIDTH, MIN_FONT_PT, MIN_ROW_HEIGHT, PAGE_WIDTH, PALETTE, RC


def curves(n: int = 3, epochs: int = 30):
    """Test accuracy (%) curves as training gives them: a fast rise from 10 %, then ending at 96-98 % with
    epoch-to-epoch wiggles of ±0.6 pp, close enough to cross."""
    x = np.arange(epochs + 1, dtype=float)
    return x, [10 + (86 + k) * (1 - np.exp(-x / 1.5)) + 0.6 * np.sin(1.3 * x + 2 * k) for k in range(n)]


def accuracy_figure(*, legend: str):
    fig, ax = new_figure()
    x, ys = curves()
    for k, y in enumerate(ys):
        band(ax, x, y, np.full_like(y, 0.5), label=f"batch {64 * 4**k}")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    zoom_accuracy(ax, top=100)
    if legend == "best":
        ax.legend(loc="best")
    else:
        legend_below(fig)
    return fig, ax


def test_config_colors_give_each_label_one_colour_whatever_the_order():
    colors = config_colors(["batch 1024", "batch 64", "batch 256"])
    assert colors == {"batch 64": PALETTE[0], "batch 256": PALETTE[1], "batch 1024": PALETTE[2]}  # 64 < 256 < 1024
    assert config_colors(["batch 256", "batch 1024", "batch 64"]) == colors
    assert config_colors(["SGD", "Adam"]) == {"Adam": PALETTE[0], "SGD": PALETTE[1]}
    assert config_colors([64, 256]) == {"64": PALETTE[0], "256": PALETTE[1]}


def test_new_figure_is_a_column_or_a_page_wide_and_text_is_at_least_8_pt():
    fig, _ = new_figure()
    assert fig.get_size_inches().tolist() == pytest.approx([COLUMN_WIDTH, 2.6])
    fig2, _ = new_figure(ncols=3)
    assert fig2.get_figwidth() == pytest.approx(PAGE_WIDTH)
    fig3, _ = new_figure(ncols=3, width=13, height=5.2)  # a screen-sized request: narrowed to the page
    assert fig3.get_size_inches().tolist() == pytest.approx([PAGE_WIDTH, 5.2 * 7 / 13])
    fig4, _ = new_figure(ncols=3, width=13, height=3.8)  # never flatter than 2.6 in per row
    assert fig4.get_figheight() == pytest.approx(MIN_ROW_HEIGHT) == 2.6
    sizes = {k: v for k, v in RC.items() if k == "font.size" or k.endswith(("labelsize", "titlesize", "fontsize"))}
    assert sizes and min(sizes.values()) >= MIN_FONT_PT
    for f in (fig, fig2, fig3, fig4):
        plt.close(f)


def test_zoom_accuracy_shows_every_final_value_with_a_margin_and_not_0_to_100():
    fig, ax = accuracy_figure(legend="below")
    ax.axhline(0, color="grey")  # a reference line in axes coordinates is not data
    lo, hi = zoom_accuracy(ax, top=100)
    x, ys = curves()
    tail = x >= 15  # the last half of the x range
    finals = np.concatenate([np.concatenate([y[tail] - 0.5, y[tail] + 0.5]) for y in ys])  # the bands included
    spread = finals.max() - finals.min()
    assert lo == pytest.approx(finals.min() - 0.15 * spread)
    assert hi == pytest.approx(finals.max() + 0.15 * spread)
    assert ax.get_ylim() == pytest.approx((lo, hi))
    assert 90 < lo < finals.min() and finals.max() < hi <= 100 + 0.15 * spread / 2
    plt.close(fig)


def test_zoom_accuracy_keeps_a_least_margin_and_ends_half_of_it_above_the_top():
    fig, ax = new_figure()
    ax.plot([0, 1, 2, 3, 4], [50, 90, 99, 100, 100])  # the last half (x >= 2): 99 to 100
    lo, hi = zoom_accuracy(ax, top=100)
    assert lo == pytest.approx(99 - 0.5) and hi == pytest.approx(100 + 0.5 / 2)  # 0.5 % of 100, not 15 % of 1
    plt.close(fig)


def test_a_legend_over_curves_that_fill_the_axes_is_a_problem_and_one_below_is_not():
    fig, _ = accuracy_figure(legend="best")  # zoomed, the curves leave no free corner: "best" still covers one
    assert [p for p in figure_problems(fig) if "legend" in p] == ["panel 1's legend covers data ('batch 1024')"]
    plt.close(fig)
    fig, _ = accuracy_figure(legend="below")
    assert figure_problems(fig) == []
    assert len(fig.legends) == 1 and [t.get_text() for t in fig.legends[0].get_texts()] == [
        "batch 64",
        "batch 256",
        "batch 1024",
    ]
    plt.close(fig)


def test_a_legend_in_a_free_corner_is_not_a_problem():
    fig, ax = new_figure()
    ax.plot([0, 1, 2], [0, 0.1, 0.2], label="a")
    ax.plot([0, 1, 2], [0, 0.2, 0.1], label="b")
    ax.set(xlabel="x", ylabel="y", title="t", ylim=(0, 1))
    ax.legend(loc="upper left")
    assert figure_problems(fig) == []
    plt.close(fig)


def test_small_text_and_a_figure_wider_than_a_page_are_problems():
    fig, ax = new_figure()
    ax.plot([0, 1], [0, 1])
    ax.set(xlabel="x", ylabel="y", title="t")
    ax.text(0.5, 0.5, "tiny", fontsize=6)
    assert figure_problems(fig) == ["1 texts are smaller than 8 pt (e.g. 'tiny' at 6 pt)"]
    fig.set_size_inches(13, 4)
    assert "the figure is 13 in wide, more than a page (7 in)" in figure_problems(fig)
    plt.close(fig)


def test_save_figure_writes_png_svg_and_a_pdf_with_embedded_truetype_fonts(tmp_path):
    fig, _ = accuracy_figure(legend="below")
    paths = save_figure(fig, tmp_path, "acc")
    assert sorted(paths) == ["pdf", "png", "svg"] and missing_formats(tmp_path) == []
    pdf = paths["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF") and b"/FontFile2" in pdf and b"/Type3" not in pdf  # fonttype 42
    assert matplotlib.rcParams["pdf.fonttype"] == 42
    fig2, _ = accuracy_figure(legend="below")
    assert save_figure(fig2, tmp_path / "again", "acc")["pdf"].read_bytes() == pdf  # no date: same bytes
    paths["pdf"].unlink()
    assert missing_formats(tmp_path) == ["acc.png has no acc.pdf beside it"]


def labelled_panels(ncols: int = 3):
    fig, axes = new_figure(ncols=ncols)
    for k, ax in enumerate(axes):
        ax.plot([1, 2, 3], [1, 3, 2])
        ax.set(xlabel="epoch", ylabel="y", title=f"panel {k}")
    fig.suptitle("t")
    return fig, axes


def test_fit_text_wraps_labels_longer_than_their_panel_until_nothing_clashes():
    fig, axes = labelled_panels()
    long = "W = ‖w_t − w_0‖, the L2 distance of all weights from their initial values"
    axes[1].set_ylabel(long)
    fig.suptitle("A suptitle far longer than the seven inches of a page can hold on one line of bold type: " * 2)
    before = figure_problems(fig)
    assert f"{long!r} does not fit in the figure" in before and any("overlaps" in p for p in before)
    fit_text(fig)
    assert figure_problems(fig) == []
    assert axes[1].get_ylabel().count("\n") >= 2 and " ".join(axes[1].get_ylabel().split()) == long
    assert fig._suptitle.get_text().count("\n") == 1
    text = axes[0].get_ylabel()
    assert fit_text(fig) is fig and axes[0].get_ylabel() == text == "y"  # what fits is left as it is
    plt.close(fig)


def test_crowded_tick_labels_are_a_problem_and_fit_text_keeps_the_major_ones():
    fig, axes = labelled_panels()
    axes[2].set_xscale("log")
    axes[2].set_xlim(15, 300)  # less than two decades: matplotlib labels the minor ticks 2x10^1, 3x10^1, ...
    assert "tick labels of the x axis of 'panel 2' overlap" in figure_problems(fig)
    fit_text(fig)
    assert figure_problems(fig) == []
    shown = [t.get_text() for t in axes[2].xaxis.get_ticklabels() if t.get_text()]
    assert "$\\mathdefault{10^{2}}$" in shown  # the decade stays labelled
    assert not any(t.get_text() for t in axes[2].xaxis.get_ticklabels(minor=True))
    plt.close(fig)
