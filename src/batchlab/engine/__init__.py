"""The engine: runs as plain data (RunSpec), grouped and trained in lock-step on one device."""

from .data import data_order
from .device import resolve_device
from .groups import partition, train_group
from .paths import choose_path
from .spec import LRSchedule, RunSpec, group_key
from .train import RunResult

__all__ = [
    "RunSpec",
    "LRSchedule",
    "group_key",
    "partition",
    "train_group",
    "RunResult",
    "data_order",
    "resolve_device",
    "choose_path",
]
