"""Each evaluation's values handed to `on_metrics` once they are on the host, without stalling the device."""

from __future__ import annotations

import math
from typing import Callable

import torch

# (epoch, step, run key -> metric name -> value): each evaluation's numbers, None where not finite
MetricsCallback = Callable[[float, int, dict[str, dict]], None]


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


class MetricsFeed:
    """Hands each evaluation's values to `on_metrics` once they are on the host. On CUDA they are copied
    without waiting and delivered when an event says they have arrived, so reporting never stalls the device."""

    def __init__(self, keys: list[str], fn: MetricsCallback):
        self.keys, self.fn, self.queue = keys, fn, []

    def add(self, record: dict) -> None:
        values = {k: v for k, v in record.items() if k not in ("epoch", "step")}
        cuda = any(torch.is_tensor(v) and v.is_cuda for v in values.values())
        host = {
            k: (v.detach().to("cpu", non_blocking=cuda, copy=True) if torch.is_tensor(v) else v)
            for k, v in values.items()
        }
        event = None
        if cuda:
            event = torch.cuda.Event()
            event.record()
        self.queue.append((record["epoch"], record["step"], host, event))
        self.flush()

    def flush(self, wait: bool = False) -> None:
        while self.queue and (wait or self.queue[0][3] is None or self.queue[0][3].query()):
            epoch, step, host, event = self.queue.pop(0)
            if event is not None:
                event.synchronize()
            values = {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in host.items()}
            per_run = {
                key: {k: _finite(v[r] if isinstance(v, list) else v) for k, v in values.items()}
                for r, key in enumerate(self.keys)
            }
            self.fn(epoch, step, per_run)
