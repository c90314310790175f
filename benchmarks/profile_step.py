"""Kernel-level profile of one engine step on CUDA (where the time of P1 and P2 goes)."""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from batchlab.engine import RunSpec
from batchlab.engine.data import load_for
from batchlab.engine.train import GroupTrainer


def profile_step(runs: int, batch_size: int, precision: str = "float32", steps: int = 50) -> None:
    specs = [RunSpec(batch_size=batch_size, epochs=1, seed=s, precision=precision) for s in range(runs)]
    device = torch.device("cuda")
    tr = GroupTrainer(specs, load_for(specs[0], device), device)
    tr.state.start_epoch(0)
    for _ in range(10):
        tr.step(batch_size)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            tr.step(batch_size)
        torch.cuda.synchronize()
    print(f"=== {runs} runs, batch {batch_size}, {precision}: per step")
    events = prof.key_averages()
    total = sum(e.device_time_total for e in events if e.device_time_total > 0) / steps
    n_kernels = sum(e.count for e in events if e.device_time_total > 0 and e.device_type.name == "CUDA") / steps
    print(f"kernel time per step {total:.1f} us, kernels per step {n_kernels:.1f}")
    print(events.table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


if __name__ == "__main__":
    for runs, batch_size in ((32, 64), (1, 2), (3, 2)):
        profile_step(runs, batch_size)
