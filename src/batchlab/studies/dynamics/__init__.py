"""Study family: batch size and training dynamics on the MNIST MLP (claims D1-D8).

Every study here trains the reference setup (784-1024-1024-10 ReLU MLP, Glorot init, SGD, mean
cross-entropy) and differs only in which runs it plans:

  batch-size-sweep  at a fixed lr and number of epochs, what does a larger batch do to accuracy?  D1
  lr-compensation   can a 10x larger lr make up for a 16x larger batch?                          D2
  schedule-switch   does a large batch get the model stuck, or can it recover later?             D3
  distance-grid     how far do the weights travel from their init, and is farther better?        D4, D5
  adam-vs-sgd       how differently do Adam and SGD move the weights?                            D6, D7, D8

Runs that two studies share have equal RunSpecs, hence equal keys, and are trained once: in one
profile every study uses the same setup (`QUICK_SETUP` in `quick`, the reference setup in `full`)
and the same number of epochs, so e.g. "batch 64, lr 0.01" is one set of runs for all five.

Layout: `common` (what the studies share), `claims` (the rules D1-D8, pure functions of small
arrays, so they can be tested on synthetic numbers), and one module per study.
"""

from __future__ import annotations

from ...analysis.stats import concavity, finite, linear_r2, mean_std, power_law_exponent, within_pp
from ..common import Study
from .adam_vs_sgd import AdamVsSGD, AdamVsSGDConfig
from .batch_size_sweep import BatchSizeSweep, BatchSizeSweepConfig
from .claims import (
    D1,
    D1_BATCH_SIZES,
    D2,
    D3,
    D3_TOL_PP,
    D4,
    D5,
    D6,
    D7,
    D8,
    D8_ADAM_COS_MAX,
    D8_SGD_COS_MIN,
    d1_batch_sizes,
    monotone_decrease_claim,
    rule_d1,
    rule_d2,
    rule_d3,
    rule_d4,
    rule_d5,
    rule_d6,
    rule_d7,
    rule_d8,
)
from .common import (
    CURVE_METRICS,
    HOFFER_2017,
    QUICK_EPOCHS,
    QUICK_SETUP,
    SHEN_2018,
    SPEC_EPOCHS,
    WILSON_2017,
    PairConfig,
    accuracy_curves,
    final_table,
    initial,
    layer_names,
    mean_curve,
    plot_curve,
    present,
    run_label,
)
from .distance_grid import DistanceGrid, DistanceGridConfig
from .lr_compensation import LRCompensation, LRCompensationConfig
from .schedule_switch import Schedule, ScheduleSwitch, ScheduleSwitchConfig

STUDIES: list[Study] = [BatchSizeSweep(), LRCompensation(), ScheduleSwitch(), DistanceGrid(), AdamVsSGD()]

__all__ = [
    "STUDIES",
    # studies and their configs
    "BatchSizeSweep",
    "BatchSizeSweepConfig",
    "LRCompensation",
    "LRCompensationConfig",
    "ScheduleSwitch",
    "ScheduleSwitchConfig",
    "Schedule",
    "DistanceGrid",
    "DistanceGridConfig",
    "AdamVsSGD",
    "AdamVsSGDConfig",
    # shared setup and reading helpers
    "QUICK_SETUP",
    "QUICK_EPOCHS",
    "SPEC_EPOCHS",
    "SHEN_2018",
    "HOFFER_2017",
    "WILSON_2017",
    "CURVE_METRICS",
    "PairConfig",
    "run_label",
    "present",
    "mean_curve",
    "plot_curve",
    "layer_names",
    "initial",
    "accuracy_curves",
    "final_table",
    # claims
    "D1",
    "D2",
    "D3",
    "D4",
    "D5",
    "D6",
    "D7",
    "D8",
    "D1_BATCH_SIZES",
    "D3_TOL_PP",
    "D8_SGD_COS_MIN",
    "D8_ADAM_COS_MAX",
    "d1_batch_sizes",
    "monotone_decrease_claim",
    "rule_d1",
    "rule_d2",
    "rule_d3",
    "rule_d4",
    "rule_d5",
    "rule_d6",
    "rule_d7",
    "rule_d8",
    # statistics (defined in batchlab.analysis.stats; importable from here as before)
    "finite",
    "mean_std",
    "within_pp",
    "concavity",
    "power_law_exponent",
    "linear_r2",
]
