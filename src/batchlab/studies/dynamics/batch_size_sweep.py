"""batch-size-sweep: at a fixed learning rate and number of epochs, what does a larger batch do to accuracy?

SGD is trained for the same number of epochs at the same lr with several batch sizes. A larger batch
takes fewer steps per epoch, so at fixed lr and epochs it is expected to end at a lower accuracy.

Claim tested:
  D1  a larger batch gives a lower final test accuracy: over batch 64 < 256 < 1024 every step is a
      significant decrease (one-sided t, paired by seed, Holm-corrected over the steps).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ...bounds import BatchSize, Epochs, Real
from ...claims import Claim
from ..common import FigureSpec, Results, Study, StudyConfig, StudyOutput
from .claims import D1, d1_batch_sizes, rule_d1
from .common import ACCURACY_CAPTION, QUICK_EPOCHS, QUICK_SETUP, SPEC_EPOCHS, accuracy_curves, final_table


class BatchSizeSweepConfig(StudyConfig):
    batch_sizes: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        (64, 256, 1024), min_length=2, description="Batch sizes to train, one configuration each (e.g. 64,256,1024)."
    )
    lr: Real = Field(0.01, gt=0, description="SGD learning rate, the same for every batch size.")
    epochs: Epochs = Field(SPEC_EPOCHS, ge=1, description="Epochs of training, the same for every batch size.")


class BatchSizeSweep(Study):
    name = "batch-size-sweep"
    accepts_user_model = None
    title = "Accuracy curves vs batch size"
    description = (
        "SGD at a fixed learning rate and number of epochs, for several batch sizes. A larger batch "
        "takes fewer steps per epoch; at fixed lr and epochs it is expected to reach a lower accuracy "
        "(Keskar et al. 2017; Hoffer et al. 2017)."
    )
    Config = BatchSizeSweepConfig
    claims = (D1,)
    profiles = {
        "quick": QUICK_SETUP | {"epochs": QUICK_EPOCHS},
        "full": {"batch_sizes": (2, 64, 256, 1024)},
    }

    def groups(self, cfg: BatchSizeSweepConfig) -> dict[str, list]:
        """label -> the seeds of one batch size."""
        return {f"batch {b}": cfg.seeded(batch_size=b, lr=cfg.lr, epochs=cfg.epochs) for b in cfg.batch_sizes}

    def plan(self, cfg: BatchSizeSweepConfig) -> list:
        return [s for specs in self.groups(cfg).values() for s in specs]

    def analyze(self, cfg: BatchSizeSweepConfig, results: Results) -> StudyOutput:
        groups = self.groups(cfg)
        fig = accuracy_curves(results, groups, f"SGD, lr {cfg.lr}: accuracy vs epoch by batch size")
        table = final_table(results, groups, "final", "Final values after the last epoch (mean and std over seeds)")
        return StudyOutput(
            figures=[
                FigureSpec(
                    "accuracy_vs_epoch",
                    fig,
                    "Look at where the test curves (right) end: at the same lr and number of epochs, each larger "
                    "batch is expected to end lower (claim D1). " + ACCURACY_CAPTION,
                )
            ],
            tables=[table],
            claims=[self.claim_d1(cfg, results)],
        )

    def claim_d1(self, cfg: BatchSizeSweepConfig, results: Results) -> Claim:
        sizes = d1_batch_sizes(cfg.batch_sizes)
        accs = [results.finals(cfg.seeded(batch_size=b, lr=cfg.lr, epochs=cfg.epochs), "test_acc") for b in sizes]
        return rule_d1(sizes, accs)
