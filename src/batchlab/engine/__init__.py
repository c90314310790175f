"""The engine: runs as plain data (RunSpec), grouped and trained in lock-step on one device."""

from .data import data_order
from .groups import partition
from .spec import LRSchedule, RunSpec, group_key
from .train import RunResult, resolve_device, train_group

__all__ = [
    "RunSpec",
    "LRSchedule",
    "group_key",
    "partition",
    "train_group",
    "RunResult",
    "data_order",
    "resolve_device",
]
