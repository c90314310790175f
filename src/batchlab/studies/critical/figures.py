"""The critical-batch study's figures: what each branch lost against k = 1, and the measured critical batch size
over training with the proxies beside it."""

from __future__ import annotations

import math

import numpy as np

from ...outputs import FigureSpec
from ...report.figures import PALETTE, legend_below, new_figure


def window_figure(cfg, main: dict) -> FigureSpec:
    """Per checkpoint: the mean over seeds of loss(k B0) / loss(B0) - 1 after the window, with its 90 % CI, against
    the batch; the margin as a band; accepted, rejected and undecided k marked."""
    fig, ax = new_figure(width=7.5, height=4.2)
    for i, (e, m) in enumerate(main.items()):
        ks = sorted(m["decisions"])
        batch = np.array(ks, dtype=float) * cfg.batch_size
        est = np.array([m["decisions"][k].estimate for k in ks])
        lo = np.array([m["decisions"][k].ci[0] for k in ks])
        hi = np.array([m["decisions"][k].ci[1] for k in ks])
        shown = np.isfinite(est) & np.isfinite(lo) & np.isfinite(hi)
        est, lo, hi = est[shown], lo[shown], hi[shown]
        color = PALETTE[i % len(PALETTE)]
        ax.errorbar(
            batch[shown] * (1 + 0.03 * i),
            100 * est,
            yerr=100 * np.abs(np.vstack([est - lo, hi - est])),
            fmt="o-", color=color, markersize=3, linewidth=0.9, capsize=2,
            label=f"epoch {e} ({100 * e / cfg.epochs:g} %): critical [{m['lower']:g}, {m['upper']:g}]",
        )  # fmt: skip
        for k in ks:
            if m["decisions"][k].verdict == "not supported" and not math.isfinite(m["decisions"][k].estimate):
                ax.plot(k * cfg.batch_size * (1 + 0.03 * i), 100 * 2 * cfg.margin * 5, "x", color=color)
    ax.axhspan(-100, 100 * cfg.margin, color="#dddddd", alpha=0.5, zorder=0, label=f"within +{100 * cfg.margin:g} %")
    ax.set(
        xscale="log",
        yscale="symlog",
        xlabel="branch batch size k B0 (log)",
        ylabel="loss after the window vs k = 1 (%; symlog)",
        title=f"Branches of {cfg.window:,} examples (x: diverged)",
    )
    legend_below(fig)
    caption = (
        "For each checkpoint, how much worse each branch's smoothed training loss is after the window than the k = 1 "
        f"branch's (mean of the paired per-seed log ratios, 90 % CI). Inside the grey band (+{100 * cfg.margin:g} %) a "
        "branch can be accepted; the critical batch size is the largest k B0 accepted with every smaller k."
    )
    return FigureSpec("branches", fig, caption)


def critical_figure(cfg, fractions, critical, simple, noise, fit) -> FigureSpec:
    """The measured interval per checkpoint, B_simple and B_noise with their CIs, steps-to-target's B_noise."""
    fig, ax = new_figure(width=7.5, height=4.2)
    x = np.array(fractions, dtype=float) * 100
    top = cfg.batch_size * max(cfg.multipliers) * 2
    for xi, (lo, hi) in zip(x, critical):
        ax.plot(
            [xi, xi],
            [lo, hi if math.isfinite(hi) else top],
            color="black",
            linewidth=4,
            alpha=0.6,
            solid_capstyle="butt",
        )
    ax.plot([], [], color="black", linewidth=4, alpha=0.6, label="measured critical batch (interval)")
    finite = [v for values in (simple, noise) for p, (a, b) in values for v in (p, a, b) if math.isfinite(v) and v > 0]
    ceiling = max([top, *finite]) * 2  # where an open (infinite) end is drawn, with an arrow
    for (name, values), color, shift in (
        (("B_simple", simple), PALETTE[1], -0.8),
        (("B_noise", noise), PALETTE[2], 0.8),
    ):
        for xi, (v, (lo, hi)) in zip(x + shift, values):
            if not (math.isfinite(lo) and lo > 0):
                continue
            top_end = hi if math.isfinite(hi) else ceiling
            ax.plot([xi, xi], [lo, top_end], color=color, linewidth=1.2)
            ax.plot([xi], [lo], "_", color=color, markersize=8)
            ax.plot(
                [xi],
                [top_end],
                "^" if not math.isfinite(hi) else "_",
                color=color,
                markersize=6 if not math.isfinite(hi) else 8,
            )
            ax.plot([xi], [v if math.isfinite(v) else ceiling], "o", color=color, markersize=5)
        ax.plot([], [], "o-", color=color, label=f"{name} (95 % CI; ▲ open end)")
    if fit is not None and math.isfinite(fit.get("b_noise", math.nan)):
        ax.axhspan(
            *fit["ci"], color=PALETTE[3], alpha=0.2, label=f"steps-to-target's B_noise {fit['b_noise']:.3g} (95 % CI)"
        )
    ax.axhline(
        cfg.batch_size * max(cfg.multipliers), color="#888888", linestyle=":", linewidth=1, label="largest branch"
    )
    ax.set(
        yscale="log",
        xlabel="checkpoint (% of the reference run)",
        ylabel="batch size (log)",
        title="Measured against proxies",
    )
    legend_below(fig)
    caption = (
        "Black bars: between the largest batch accepted and the first rejected at each checkpoint (a bar reaching "
        "the dotted line: no branch was rejected). Points: the proxies measured at the same weights, with their 95 % "
        "bootstrap intervals; the band: the B_noise fitted to steps-to-target."
    )
    return FigureSpec("critical_batch", fig, caption)
