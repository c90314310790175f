"""Study family: is one step on a batch the same as averaging single-example steps? (claims E1-E8, A1-A2)

  equivalence            one step from the same weights: batch step (A), average of single-example
                         steps (B), mean per-example gradient as one step (C), per optimizer, model
                         (with and without BatchNorm) and precision.                          E1-E5
  equivalence-multistep  K momentum steps: batch steps, single-example steps, averaged gradients
                         without and with momentum.                                            E6-E8
  accumulation           the engine's gradient accumulation (micro_batch) vs the direct batch. A1, A2

Every computation is a task (batchlab.tasks.equivalence) from a seeded init; `claims` holds the
rules as pure functions of a few numbers, so they can be tested on synthetic input.
"""

from __future__ import annotations

from ..common import Study
from .accumulation import Accumulation, AccumulationConfig
from .equivalence import Equivalence, EquivalenceConfig
from .equivalence_multistep import EquivalenceMultistep, MultistepConfig

STUDIES: list[Study] = [Equivalence(), EquivalenceMultistep(), Accumulation()]

__all__ = [
    "STUDIES",
    "Equivalence",
    "EquivalenceConfig",
    "EquivalenceMultistep",
    "MultistepConfig",
    "Accumulation",
    "AccumulationConfig",
]
