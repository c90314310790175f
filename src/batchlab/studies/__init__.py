"""The study catalogue: a package per family, a module per study named after it (`noise-scale` in
`gradients/noise_scale.py`); `REGISTRY` maps a study name to its Study."""

from __future__ import annotations

import inspect
from pathlib import Path

from .adam import STUDIES as ADAM
from .common import Results, Study, StudyConfig, StudyOutput
from .critical import STUDIES as CRITICAL
from .curvature import STUDIES as CURVATURE
from .dynamics import STUDIES as DYNAMICS
from .equivalence import STUDIES as EQUIVALENCE
from .gradients import STUDIES as GRADIENTS
from .variants import STUDIES as VARIANTS

REGISTRY: dict[str, Study] = {
    s.name: s for s in [*DYNAMICS, *EQUIVALENCE, *GRADIENTS, *CRITICAL, *VARIANTS, *CURVATURE, *ADAM]
}


def get_study(name: str) -> Study:
    if name not in REGISTRY:
        raise KeyError(f"unknown study {name!r}; known studies: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def study_file(name: str) -> Path:
    """The file that defines a study (what `batchlab show STUDY` points a reader to)."""
    return Path(inspect.getfile(type(get_study(name))))


__all__ = ["REGISTRY", "get_study", "study_file", "Study", "StudyConfig", "StudyOutput", "Results"]
