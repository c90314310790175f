"""Study family: gradient-descent variants, learning rate and large batches (claims V2, L1, S1, S2).

gd-variants     batch GD, SGD and mini-batch SGD on linear regression, every step measured;
                paths over the loss contours of a 2-parameter version.                    V2
lr-sensitivity  converge / oscillate / period-2 / diverge / stall on the quadratic (trajectory
                against the closed form), and the MNIST MLP's loss curves.                L1
linear-scaling  linear and square-root lr scaling, with and without warmup, B 64..8192.   S1
lars            LARS and LAMB (lr tuned on other seeds) against linearly scaled SGD.      S2

`claims` declares V2, L1, S1, S2 and holds their rules, pure functions of the numbers a study gathers.
"""

from __future__ import annotations

from ..common import Study
from .gd_variants import GDVariants, VariantsConfig
from .lars import Lars, LarsConfig
from .linear_scaling import LinearScaling, ScalingConfig
from .lr_sensitivity import LRSensitivity, SensitivityConfig
from .tradeoffs import Tradeoffs, TradeoffsConfig

STUDIES: list[Study] = [GDVariants(), LRSensitivity(), LinearScaling(), Lars(), Tradeoffs()]

__all__ = [
    "STUDIES",
    "GDVariants",
    "VariantsConfig",
    "LRSensitivity",
    "SensitivityConfig",
    "LinearScaling",
    "ScalingConfig",
    "Lars",
    "LarsConfig",
    "Tradeoffs",
    "TradeoffsConfig",
]
