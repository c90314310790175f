"""Study family: curvature (claims K1-K3, ES1-ES3).

sharpness           final weights at several batch sizes (runs to a training-accuracy target): lambda_max per run,
                    test accuracy, the loss on the line between a small- and a large-batch solution and on planes
                    around them, and a rescaled solution (Dinh et al. 2017).                         K1-K3
edge-of-stability   full-batch GD at several lrs, SGD at several batch sizes and full-batch Adam on a fixed subset,
                    lambda_max, batch sharpness and Adam's preconditioned sharpness every few steps
                    against 2/lr and 38/lr.                                                          ES1-ES3
"""

from __future__ import annotations

from ..common import Study
from .edge_of_stability import EdgeConfig, EdgeOfStability
from .sharpness import Sharpness, SharpnessConfig

STUDIES: list[Study] = [Sharpness(), EdgeOfStability()]

__all__ = ["STUDIES", "EdgeConfig", "EdgeOfStability", "Sharpness", "SharpnessConfig"]
