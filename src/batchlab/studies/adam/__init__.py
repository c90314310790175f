"""Study family: Adam and batch size (claims AS1-AS6).

lr-surge         the optimal lr at each batch size for SGD, Adam and sign-Adam, against the two fitted forms
                 (Li et al. 2024, "Surge phenomenon").                                         AS1, AS2
sqrt-scaling     Adam at B and kB with the square-root rule, with rescaled betas, and batch-size-invariant Adam
                 (Malladi et al. 2022; Wang & Aitchison 2024).                                  AS3
beta2-halflife   beta2 and lr swept at each batch size (Marek et al. 2025).                     AS4-AS6
"""

from __future__ import annotations

from ..common import Study
from .beta2_halflife import Beta2HalfLife
from .lr_surge import LrSurge, SurgeConfig
from .sqrt_scaling import SqrtScaling

STUDIES: list[Study] = [LrSurge(), SqrtScaling(), Beta2HalfLife()]

__all__ = ["STUDIES", "Beta2HalfLife", "LrSurge", "SqrtScaling", "SurgeConfig"]
