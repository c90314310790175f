"""The study catalogue: one module per family; `REGISTRY` maps a study name to its Study."""

from __future__ import annotations

from .common import Results, Study, StudyConfig, StudyOutput
from .dynamics import STUDIES as DYNAMICS
from .equivalence import STUDIES as EQUIVALENCE
from .gradients import STUDIES as GRADIENTS
from .variants import STUDIES as VARIANTS

REGISTRY: dict[str, Study] = {s.name: s for s in [*DYNAMICS, *EQUIVALENCE, *GRADIENTS, *VARIANTS]}


def get_study(name: str) -> Study:
    if name not in REGISTRY:
        raise KeyError(f"unknown study {name!r}; known studies: {', '.join(REGISTRY)}")
    return REGISTRY[name]


__all__ = ["REGISTRY", "get_study", "Study", "StudyConfig", "StudyOutput", "Results"]
