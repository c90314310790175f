"""The interface every step path implements (the paths themselves: autograd.py, folded.py)."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..spec import RunSpec
from ..state import GroupState


class StepPath:
    """The arithmetic of a group's training step: forward, backward and update of every run at once.

    A path is made once per chunk, on its GroupState, and `step(batch_size)` takes each step: the runs'
    batches (`state.batch_indices`), the divergence check (`state.check_losses`), the update of the weights
    in place, and `state.advance(batch_size)` last. Every path computes the autograd path's numbers up to
    rounding; which one ran is recorded with each run (RunResult.step_path).
    """

    name: ClassVar[str]
    # on CUDA its step may be captured in CUDA graphs and replayed: all its work is on the device, and no
    # Python branch depends on a value computed on it
    graphs: ClassVar[bool] = False

    @staticmethod
    def blocker(specs: list[RunSpec], device: torch.device, task: str) -> str | None:
        """Why this path cannot compute these runs' steps here (None: it can)."""
        return None

    def __init__(self, state: GroupState):
        self.state = state

    def step(self, batch_size: int) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Make `state.stack.params` current. A path that keeps updates aside (the folded one, for tiny batches)
        adds them here; the trainer calls it before anything reads the weights (evaluation, probes,
        checkpoints, state copies, results)."""
