"""The device a group trains on: which one, its precision settings, whether it compiles, CUDA graph replay."""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Callable

import torch

_warned_no_compiler = False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device


def can_compile(device: torch.device) -> bool:
    """Whether torch.compile can build kernels here: on the CPU, inductor needs a C++ compiler ($CXX, g++ or
    clang++). Without one the step runs eagerly (the same results), and a warning says so once."""
    global _warned_no_compiler
    if device.type != "cpu" or any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c):
        return True
    if not _warned_no_compiler:
        _warned_no_compiler = True
        warnings.warn(
            "no C++ compiler found (torch.compile needs one on the CPU): the step runs uncompiled", stacklevel=3
        )
    return False


@contextlib.contextmanager
def tf32_mode(precision: str):
    """TF32 matmuls off unless asked (results are for science); held over forward, backward and update."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def autocast_mode(precision: str, device: torch.device):
    """bf16 mixed precision for the forward pass (the loss is computed in float32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class CudaGraphs:
    """A step function replayed from CUDA graphs: each batch size's whole step is captured once, so the
    per-step launch overhead goes.

    The first steps of each batch size run eagerly on a side stream (the warm-up capture needs); they are
    real training steps. Capture records without executing, so the captured step is then replayed once for
    the current step. `captured`: batch size -> its graph.
    """

    WARMUP_STEPS = 3

    def __init__(self, step: Callable[[int], None], device: torch.device):
        self.step, self.device = step, device
        self.captured: dict[int, torch.cuda.CUDAGraph] = {}
        self.eager_steps: dict[int, int] = {}
        self.pool = None

    def __call__(self, batch_size: int) -> None:
        graph = self.captured.get(batch_size)
        if graph is None:
            done = self.eager_steps.get(batch_size, 0)
            if done < self.WARMUP_STEPS:
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    self.step(batch_size)
                torch.cuda.current_stream(self.device).wait_stream(side)
                self.eager_steps[batch_size] = done + 1
                return
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.step(batch_size)
            self.pool = graph.pool()
            self.captured[batch_size] = graph
        graph.replay()
