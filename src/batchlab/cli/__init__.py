"""The `batchlab` command: list, show, run, report, reproduce, export, bench, explore, noise-scale, critical-batch,
sharpness.

`run` and `reproduce` compute in this process (`--executor local`) or as Ray tasks (`--executor ray`,
batchlab.executors.ray): every GPU or CPU of this machine, or a Ray cluster.

Bad input (an unknown study, profile or key, an invalid value, an unwritable --out, a missing
device, a report with no results) prints one line on stderr and exits with code 2, before anything
is written. Interrupting (Ctrl-C) exits with 130; every finished run is already in the store, the runs
in training keep their finished epochs, and the same command resumes.

`commands.py` holds the commands and `run_cli`, `answers.py` the two that answer "which batch size?",
`sharpness.py` the one that answers "how sharp is my model?",
`display.py` what is shown while they work (progress, claims), `show.py` a study's description.
"""

from . import answers, sharpness  # noqa: F401  (register noise-scale, critical-batch and sharpness on the app)
from .commands import app, main, run_cli
from .display import TrainingProgress, clocks, describe_metrics

__all__ = ["TrainingProgress", "app", "clocks", "describe_metrics", "main", "run_cli"]
