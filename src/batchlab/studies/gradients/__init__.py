"""Study family: gradient statistics across batch sizes (claims G1-G4, V1, N1).

  gradient-competition  summed last-layer gradients over the same examples in batches of B, from
                        an early and a late checkpoint, both loss reductions, lr = 0 control.  G1-G4
  gradient-variance     E||g_B - G||^2 against tr(Sigma)/B, with and without replacement.       V1
  noise-scale           B_simple = tr(Sigma)/|G|^2 by per-example gradients and two batch sizes. N1
  steps-to-target       steps to a target accuracy per B (lr tuned), S = S_min (1 + B_noise/B)
                        against B_simple.                                                     N2

The checkpoints come from one reference run (batch 1024, lr 0.01) that every study of the family
plans identically, so it is trained once; the measurements are tasks (batchlab.tasks.gradients).
"""

from __future__ import annotations

from ..common import Study
from .gradient_competition import CompetitionConfig, GradientCompetition
from .gradient_variance import GradientVariance, VarianceConfig
from .noise_scale import NoiseScaleConfig, NoiseScaleStudy
from .steps_to_target import StepsConfig, StepsToTarget

STUDIES: list[Study] = [GradientCompetition(), GradientVariance(), NoiseScaleStudy(), StepsToTarget()]

__all__ = [
    "STUDIES",
    "GradientCompetition",
    "CompetitionConfig",
    "GradientVariance",
    "VarianceConfig",
    "NoiseScaleStudy",
    "NoiseScaleConfig",
    "StepsToTarget",
    "StepsConfig",
]
