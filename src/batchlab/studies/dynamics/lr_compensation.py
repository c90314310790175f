"""lr-compensation: can a 10x larger learning rate make up for a 16x larger batch?

Batch 1024 takes 16x fewer steps per epoch than batch 64, and at the same lr and number of epochs
it ends at a lower accuracy. Three configurations are trained for the same epochs: batch 64 at lr
0.01, batch 1024 at lr 0.01 (the gap), and batch 1024 at lr 0.1 (the compensation).

Claim tested:
  D2  raising the lr 10x at batch 1024 recovers the test accuracy of batch 64: the mean final test
      accuracies end within 0.5 percentage points of each other.
"""

from __future__ import annotations

from pydantic import Field

from ...bounds import Real
from ..common import FigureSpec, Results, Study, StudyOutput
from .claims import D2, rule_d2
from .common import ACCURACY_CAPTION, QUICK_EPOCHS, QUICK_SETUP, PairConfig, accuracy_curves, final_table, run_label


class LRCompensationConfig(PairConfig):
    raised_lr: Real = Field(0.1, gt=0, description="The raised learning rate of the large batch (the compensation).")


class LRCompensation(Study):
    name = "lr-compensation"
    accepts_user_model = None
    title = "Compensating a large batch with a larger learning rate"
    description = (
        "Batch 1024 takes 16x fewer steps per epoch than batch 64. Raising its lr 10x (0.01 -> 0.1) "
        "is expected to recover the small-batch accuracy in the same number of epochs (Shen 2018; the "
        "linear scaling rule of Goyal et al. 2017 would suggest 16x)."
    )
    Config = LRCompensationConfig
    claims = (D2,)
    profiles = {"quick": QUICK_SETUP | {"epochs": QUICK_EPOCHS}, "full": {}}

    def groups(self, cfg: LRCompensationConfig) -> dict[str, list]:
        """Small batch, large batch, large batch at the raised lr: label -> seeds."""
        return {
            run_label(cfg.small_batch, cfg.lr): cfg.sgd(cfg.small_batch),
            run_label(cfg.large_batch, cfg.lr): cfg.sgd(cfg.large_batch),
            run_label(cfg.large_batch, cfg.raised_lr): cfg.sgd(cfg.large_batch, cfg.raised_lr),
        }

    def plan(self, cfg: LRCompensationConfig) -> list:
        return [s for specs in self.groups(cfg).values() for s in specs]

    def analyze(self, cfg: LRCompensationConfig, results: Results) -> StudyOutput:
        groups = self.groups(cfg)
        labels = list(groups)
        fig = accuracy_curves(results, groups, f"Raising the lr of batch {cfg.large_batch} (SGD, {cfg.epochs} epochs)")
        small, large, comp = (results.finals(groups[k], "test_acc") for k in labels)
        claim = rule_d2(small, comp, large, labels=(labels[0], labels[2], labels[1]))
        return StudyOutput(
            figures=[
                FigureSpec(
                    "accuracy_vs_epoch",
                    fig,
                    f"Look at the end of the test curves (right): batch {cfg.large_batch} at lr {cfg.raised_lr:g} "
                    f"should close the gap that batch {cfg.large_batch} at lr {cfg.lr:g} leaves below batch "
                    f"{cfg.small_batch} (claim D2: within 0.5 percentage points). " + ACCURACY_CAPTION,
                )
            ],
            tables=[
                final_table(results, groups, "final", "Final values after the last epoch (mean and std over seeds)")
            ],
            claims=[claim],
        )
