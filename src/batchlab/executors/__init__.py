"""Executors: where work units run. The contract (`contract.py`: units, results, the `Executor` protocol,
`Capabilities`, `UnitFailure`) and two implementations: `local.py` (this process, every hook) and `ray.py`
(Ray tasks on every GPU or CPU of a machine or a cluster; `import ray` only when one is made).

A new executor is a class with the attributes and methods of `Executor`; `ray.py` is the one to copy (it ships
units and brings results back, the shape any remote executor has).
"""

from .contract import (
    Capabilities,
    Executor,
    Result,
    TaskUnit,
    TrainUnit,
    Unit,
    UnitFailure,
    UnitsFailed,
    failure_message,
)
from .local import LocalExecutor, execute

__all__ = [
    "Capabilities",
    "Executor",
    "LocalExecutor",
    "Result",
    "TaskUnit",
    "TrainUnit",
    "Unit",
    "UnitFailure",
    "UnitsFailed",
    "execute",
    "failure_message",
]
