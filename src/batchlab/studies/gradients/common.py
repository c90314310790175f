"""What the gradient-statistics studies share: the reference run whose checkpoints they measure.

The reference MLP trained at batch 1024, lr 0.01; its weights after `early_epoch` epochs ("early")
and after `late_epoch` ("late") are the regimes. Every study of the family builds the same RunSpec,
so the run is trained once per store and its checkpoints are shared.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ...bounds import BatchSize, Epochs, Real, Seed
from ...engine import RunSpec
from ...engine.spec import Checkpoint
from ..common import StudyConfig

REGIMES = ("early", "late")


class GradientConfig(StudyConfig):
    """The reference run and its two checkpoints."""

    checkpoint_batch: BatchSize = Field(1024, ge=1, description="Batch size of the reference run.")
    checkpoint_lr: Real = Field(0.01, gt=0, description="SGD learning rate of the reference run.")
    early_epoch: Epochs = Field(2, ge=0, description="The 'early' regime: weights after this many epochs.")
    late_epoch: Epochs = Field(30, ge=1, description="The 'late' regime: weights after this many epochs (its length).")
    seed: Seed = Field(0, ge=0, description="Seed of the reference run, and of every draw of examples.")

    @model_validator(mode="after")
    def _order(self) -> "GradientConfig":
        if self.early_epoch >= self.late_epoch:
            raise ValueError(f"early_epoch ({self.early_epoch}) must come before late_epoch ({self.late_epoch})")
        return self

    def reference_run(self) -> RunSpec:
        return self.run(
            self.seed,
            batch_size=self.checkpoint_batch,
            lr=self.checkpoint_lr,
            epochs=self.late_epoch,
            probes=("metrics", "noise"),  # the noise probe: |G|^2 and tr(Sigma) after every epoch
        )

    def checkpoint(self, regime: str) -> Checkpoint:
        epoch = self.early_epoch if regime == "early" else self.late_epoch
        return Checkpoint(run=self.reference_run(), epoch=epoch)


# The quick miniature of the reference run: 10k examples, a 256-wide MLP. A 10k-example epoch at batch
# 1024 is 10 steps (60k: 59), so the early checkpoint at 12 epochs keeps the full protocol's ~120 steps;
# the late one at 60 epochs is 600 steps (a third of the full 1770, which would cost ~50 s on 2 cores).
# Measured on the CPU: train accuracy 86.4 % early and 93.1 % late (test 80.9 % and 88.4 %).
QUICK_REFERENCE = {
    "train_subset": 10_000,
    "test_subset": 2_000,
    "widths": (256, 256),
    "early_epoch": 12,
    "late_epoch": 60,
}


def regime_info(results, cfg: GradientConfig) -> dict[str, dict]:
    """Train and test accuracy of the reference run at each checkpoint (NaN when it is not stored)."""
    run = cfg.reference_run()
    out = {}
    for regime in REGIMES:
        epoch = cfg.early_epoch if regime == "early" else cfg.late_epoch
        info = {"epoch": epoch}
        if results.has(run):
            epochs = list(results.epochs(run))
            at = epochs.index(epoch) if epoch in epochs else None
            for metric in ("train_acc", "test_acc", "train_loss"):
                info[metric] = float(results.series(run, metric)[at]) if at is not None else float("nan")
        out[regime] = info
    return out
