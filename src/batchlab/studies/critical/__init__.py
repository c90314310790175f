"""Study family: the critical batch size, measured (claims C1-C5).

critical-batch  branches at k B0 from checkpoints of a reference run, each trained for the same examples; the
                largest k B0 not worse than B0 by a margin (paired seeds), against B_simple, the Hessian-weighted
                B_noise and steps-to-target's fit; a batch-size warmup built from the measurement.   C1-C5
"""

from __future__ import annotations

from ..common import Study
from .critical_batch import CriticalBatch, CriticalConfig

STUDIES: list[Study] = [CriticalBatch()]

__all__ = ["STUDIES", "CriticalBatch", "CriticalConfig"]
