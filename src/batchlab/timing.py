"""Timing on a device, shared by `batchlab bench` and the tasks that measure cost (`step-cost`).

A CUDA kernel returns before it has run: every timing synchronises the device before it starts and
after it ends, and takes the best of a few repeats (the least disturbed by other work).
"""

from __future__ import annotations

import math
import time

import torch

from .engine import RunSpec
from .engine.data import load_for
from .engine.train import GroupTrainer


def clock(seconds: float) -> str:
    """Seconds as H:MM:SS, as progress lines and estimates print them."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int = 1) -> float:
    """Best wall time of `repeat` calls of fn, synchronised."""
    best = math.inf
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def peak_memory(fn, device: torch.device) -> int | None:
    """Peak bytes the CUDA allocator held while fn ran; None on other devices (PyTorch keeps no peak of
    its CPU allocations)."""
    if device.type != "cuda":
        fn()
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return int(torch.cuda.max_memory_allocated(device))


def engine_steps_time(
    specs: list[RunSpec],
    device: torch.device,
    steps: int,
    path: str = "auto",
    data_dir: str | None = None,
    setup=None,
    repeat: int = 1,
) -> float:
    """Seconds per lock-step step of the engine for a group of runs (training only, no evaluation).

    `path`: the step path asked for (engine/paths, `choose_path`). `setup(trainer)`, if given, may switch one
    of the path's tricks off before the timing (an ablation); `repeat`: the best of that many timings of
    `steps` steps."""
    trainer = GroupTrainer(specs, load_for(specs[0], device, data_dir), device, path)
    if setup is not None:
        setup(trainer)
    bs = specs[0].batch_size
    per_epoch = trainer.data.n_train // bs
    state = trainer.state
    if repeat * steps + 10 > len(state.lrs):
        raise ValueError(f"{repeat} x {steps} steps exceed the {len(state.lrs)} steps the runs' lr table covers")
    state.start_epoch(0)

    def loop(n):
        done = 0
        while done < n:
            k = min(n - done, per_epoch)
            state.offset.zero_()
            for _ in range(k):
                trainer.step(bs)
            done += k

    loop(min(10, steps))  # warm-up, graph capture
    return timed(lambda: loop(steps), device, repeat) / steps
