"""Upper bounds of every number a user can set, as annotated types shared by study configs, RunSpec and task args.

Each bound keeps the work finite and every derived number representable, and is generous for real use on a big
GPU. Without them `--set epochs=1e12 --dry-run` grew to 23.8 GB, and widths of 2^63 or 1e8 ended in tracebacks.
A type carries only the upper bound: a field keeps its own lower bound in its `Field(...)`, because pydantic
lets the later of two lower bounds on one field win (`Annotated[int, Field(ge=0)] = Field(ge=2)` accepts 1).
Infinity and NaN are refused by the models' `allow_inf_nan=False`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_WIDTH = 1 << 20  # units of a layer, or an input dimension
MAX_EPOCHS = 10**6
MAX_BATCH = 1 << 24  # examples in a batch or micro-batch
MAX_EXAMPLES = 1 << 24  # examples of a subset or a sample, 16.7 million (MNIST has 70,000)
MAX_COUNT = 1 << 24  # repetitions: draws, trials, resamples, evaluations, examples computed together
MAX_STEPS = 10**8  # steps of a run (100 us each: 3 hours)
MAX_SEED = (1 << 31) - 1  # any seed plus a small offset stays a valid torch and numpy seed
MAX_REAL = 1e6  # learning rates, their factors, weight decays, epsilons, noise levels
MAX_ELEMENTS = 1 << 22  # of a synthetic data set, examples x dimensions: 32 MB per split in float64

Width = Annotated[int, Field(le=MAX_WIDTH)]
Epochs = Annotated[int, Field(le=MAX_EPOCHS)]
EpochTime = Annotated[float, Field(le=MAX_EPOCHS)]  # a point in training, in (fractional) epochs
BatchSize = Annotated[int, Field(le=MAX_BATCH)]
Examples = Annotated[int, Field(le=MAX_EXAMPLES)]
Count = Annotated[int, Field(le=MAX_COUNT)]
Steps = Annotated[int, Field(le=MAX_STEPS)]
Seed = Annotated[int, Field(le=MAX_SEED)]
Real = Annotated[float, Field(le=MAX_REAL)]


def check_elements(n: int, d: int, what: str) -> None:
    """Refuse a synthetic data set of more than MAX_ELEMENTS numbers: each bound alone allows 2^24 x 2^20, and a
    dry run generates the data to check it (n = 2^24 at d = 10 took 4.2 GB)."""
    if n * d > MAX_ELEMENTS:
        raise ValueError(f"{what}: {n} examples x {d} dimensions exceed {MAX_ELEMENTS} numbers")


__all__ = [
    "MAX_BATCH",
    "MAX_COUNT",
    "MAX_ELEMENTS",
    "MAX_EPOCHS",
    "MAX_EXAMPLES",
    "MAX_REAL",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_WIDTH",
    "BatchSize",
    "Count",
    "EpochTime",
    "Epochs",
    "Examples",
    "Real",
    "Seed",
    "Steps",
    "Width",
    "check_elements",
]
