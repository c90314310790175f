"""The engine: runs as plain data (RunSpec), grouped and trained in lock-step on one device.

- spec.py: RunSpec and TaskSpec; data.py: each run's data on the device and its example order.
- groups.py: runs partitioned into groups, each trained in chunks that fit the device (`train_group`).
- train.py: the loop over a chunk's epochs (GroupTrainer): steps, evaluations, checkpoints, interrupts;
  feed.py hands each evaluation's values to a listener without stalling the device.
- state.py: the chunk's device state (GroupState, with `advance()`) and its host copies (PartialState).
- paths/: the step paths (autograd, compiled, folded) and `choose_path`; fold.py: the folded step's math.
- device.py: device, precision, compiler and CUDA-graph helpers; optim.py, schedules.py, step.py: the
  update rules, the lr and batch-size schedules, the pure pieces of a step shared with the tasks;
  curvature.py: Hessian-vector products of a model's mean loss (forward-over-reverse, torch.func).
"""

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
