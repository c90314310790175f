"""What the large-batch studies share: learning-rate scaling rules and Goyal et al.'s gradual warmup."""

from __future__ import annotations

import math

import numpy as np

from ...analysis.decisions import diverged_as_worst
from ...engine.spec import LRSchedule
from .claims import DIVERGED_ACC

# the quick miniature of the reference setup: 10240 examples (a whole number of batches up to 2048, so no
# epoch ends with a tiny last batch: with 10000, batch 256 ended every epoch with 16 examples at lr 0.04,
# and its final accuracy fell 2.6 pp below both neighbours), 256-wide
QUICK_SETUP = {"train_subset": 10_240, "test_subset": 2_000, "widths": (256, 256)}


def scaled_lr(rule: str, lr_base: float, batch_size: int, batch_base: int) -> float:
    """lr for batch B under a scaling rule: linear lr_base B / B_base (Goyal et al. 2017; Krizhevsky 2014
    for the square root), square root lr_base sqrt(B / B_base), or none."""
    ratio = batch_size / batch_base
    return lr_base * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[rule]


def warmup(lr_base: float, lr: float, epochs: float) -> LRSchedule:
    """Gradual warmup (Goyal et al. 2017): the lr rises linearly from lr_base to lr over `epochs`, then
    stays; no warmup when lr <= lr_base or epochs == 0."""
    if epochs <= 0 or lr <= lr_base:
        return LRSchedule()
    return LRSchedule(kind="warmup", warmup_epochs=epochs, warmup_start=lr_base / lr)


def scored_accuracy(results, specs) -> np.ndarray:
    """The final test accuracy of each of `specs`, in their order (NaN where a run is missing), a diverged run
    counted at DIVERGED_ACC: the worst outcome, not a seed left out (`decisions.diverged_as_worst`)."""
    values = [results.final(s, "test_acc") if results.has(s) else np.nan for s in specs]
    diverged = [results.has(s) and results.status(s) == "diverged" for s in specs]
    return diverged_as_worst(values, diverged, DIVERGED_ACC)
