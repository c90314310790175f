"""schedule-switch: does a large batch get the model stuck, or can it recover later?

Five schedules, each compared over its last `epochs` epochs:
  (a) batch 64 for `epochs` epochs (the reference);
  (b) batch 1024 for twice as long (the control: only more training);
  (c) batch 1024 for 1 epoch, then batch 64;
  (d) batch 1024 for `epochs` epochs, then batch 64;
  (e) batch 1024 for twice as long, with the lr raised 10x in the second half.

Claim tested:
  D3  a large batch does not get the model stuck: (c), (d) and (e) each end within 0.5 percentage
      points of (a)'s test accuracy, while the control (b), which only trains longer, does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from ...analysis.stats import finite
from ...bounds import Epochs, Real
from ...engine import LRSchedule
from ...report.figures import PALETTE, legend_below, new_figure
from ..common import FigureSpec, Results, Study, StudyOutput
from .claims import D3, D3_TOL_PP, rule_d3
from .common import QUICK_EPOCHS, QUICK_SETUP, PairConfig, final_table, mean_curve, plot_curve


class ScheduleSwitchConfig(PairConfig):
    first_switch: Epochs = Field(
        1, ge=1, description="Schedule (c): epochs at the large batch before switching to the small one."
    )
    lr_factor: Real = Field(10.0, gt=0, description="Schedule (e): factor on the lr for the second half of training.")


@dataclass(frozen=True)
class Schedule:
    """One of the five schedules: its label, runs and total epochs. Each changes (if it does) exactly where its
    last `cfg.epochs` epochs begin, so aligning the schedules on their ends aligns the switches too."""

    label: str
    specs: list
    epochs: int


class ScheduleSwitch(Study):
    name = "schedule-switch"
    accepts_user_model = None
    title = "Switching from a large to a small batch, or raising the lr"
    description = (
        "Does a large batch get the model stuck? Five schedules, compared over the last epochs of each: "
        "(a) batch 64; (b) batch 1024 for twice as long (control); (c) batch 1024 for 1 epoch, then batch "
        "64; (d) batch 1024, then batch 64; (e) batch 1024 twice as long with lr x10 in the second half "
        "(Shen 2018)."
    )
    Config = ScheduleSwitchConfig
    claims = (D3,)
    profiles = {"quick": QUICK_SETUP | {"epochs": QUICK_EPOCHS}, "full": {}}

    def schedules(self, cfg: ScheduleSwitchConfig) -> list[Schedule]:
        e, s, big, k = cfg.epochs, cfg.small_batch, cfg.large_batch, cfg.first_switch
        raised = LRSchedule(kind="step", milestones=(float(e),), gamma=cfg.lr_factor)
        return [
            Schedule(f"(a) batch {s}, {e} ep", cfg.sgd(s), e),
            Schedule(f"(b) batch {big}, {2 * e} ep", cfg.sgd(big, epochs=2 * e), 2 * e),
            Schedule(f"(c) batch {big} {k} ep → {s} {e} ep", cfg.sgd(big, epochs=k + e, batch_switch=((k, s),)), k + e),
            Schedule(f"(d) batch {big} {e} ep → {s} {e} ep", cfg.sgd(big, epochs=2 * e, batch_switch=((e, s),)), 2 * e),
            Schedule(
                f"(e) batch {big}, {2 * e} ep, lr ×{cfg.lr_factor:g} from ep {e + 1}",
                cfg.sgd(big, epochs=2 * e, lr_schedule=raised),
                2 * e,
            ),
        ]

    def plan(self, cfg: ScheduleSwitchConfig) -> list:
        return [s for sch in self.schedules(cfg) for s in sch.specs]

    def figure(self, cfg: ScheduleSwitchConfig, results: Results, schedules: list[Schedule], tol_pp: float):
        """Curves aligned on the last `epochs` epochs of each schedule (x = 0 where that window starts)."""
        e = cfg.epochs
        fig, axes = new_figure(ncols=3, width=13, height=3.8)
        for i, sch in enumerate(schedules):
            style = dict(shift=-(sch.epochs - e), scale=100, label=sch.label, color=PALETTE[i % len(PALETTE)])
            for ax, metric in zip(axes, ("train_acc", "test_acc", "test_acc")):
                plot_curve(ax, results, sch.specs, metric, **style)
        for ax, title in zip(axes, ("train accuracy", "test accuracy", f"test accuracy, last {e} epochs (zoom)")):
            ax.axvspan(-e, 0, color="#000000", alpha=0.04, linewidth=0)
            ax.axvline(0, color="#555555", linestyle="--", linewidth=1)
            ax.set_xlim(-e, e)
            ax.set(xlabel=f"epoch, aligned on the last {e}", ylabel=f"{title.split(',')[0]} (%)", title=title)
        # the zoom: the last epochs only, with the D3 band of ±tol_pp around (a)'s final accuracy
        zoom = axes[2]
        zoom.set_xlim(0.5, e + 0.25)
        finals = [
            100 * finite(results.finals(sch.specs, "test_acc")).mean()
            for sch in schedules
            if finite(results.finals(sch.specs, "test_acc")).size
        ]
        ref = finite(results.finals(schedules[0].specs, "test_acc"))
        if ref.size:
            zoom.axhspan(
                100 * ref.mean() - tol_pp,
                100 * ref.mean() + tol_pp,
                color=PALETTE[0],
                alpha=0.12,
                linewidth=0,
                label=f"(a) ± {tol_pp:g} pp",
            )
        if finals:
            lo = [
                100 * np.nanmin(c[1][c[0] >= sch.epochs - e + 1])
                for sch in schedules
                if (c := mean_curve(results, sch.specs, "test_acc")) is not None
            ]
            zoom.set_ylim(max(min(lo), min(finals) - 5) - 0.5, max(finals) + 1)
        legend_below(fig)
        fig.suptitle(f"Five schedules aligned on their last {e} epochs")
        return fig

    def analyze(self, cfg: ScheduleSwitchConfig, results: Results) -> StudyOutput:
        schedules = self.schedules(cfg)
        groups = {sch.label: sch.specs for sch in schedules}
        accs = [results.finals(sch.specs, "test_acc") for sch in schedules]
        return StudyOutput(
            figures=[
                FigureSpec(
                    "last_epochs",
                    self.figure(cfg, results, schedules, D3_TOL_PP),
                    "Look at the right panel: (c), (d) and (e) should end inside the shaded band around (a), "
                    "and (b), which only trains longer at the large batch, below it (claim D3). "
                    f"Train and test accuracy of each schedule, aligned so that its last {cfg.epochs} "
                    f"epochs lie in [0, {cfg.epochs}]; the dashed line marks where (c), (d) switch to "
                    f"batch {cfg.small_batch} and (e) raises the lr; the shaded part is the schedule's "
                    "earlier training (for (a) there is none). Right: the last epochs enlarged, with the "
                    f"±{D3_TOL_PP:g} pp band around (a)'s final test accuracy that D3 tests. Line = mean, "
                    "band = ±1 std.",
                )
            ],
            tables=[final_table(results, groups, "final", "Final values of each schedule (mean and std over seeds)")],
            claims=[rule_d3(*accs, tol_pp=D3_TOL_PP)],
        )
