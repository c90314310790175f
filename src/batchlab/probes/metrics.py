"""Loss and accuracy of every run of a stack over a whole data split, in memory-bounded chunks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_run_loss(outputs: torch.Tensor, targets: torch.Tensor, task: str, reduction: str = "mean") -> torch.Tensor:
    """Loss of each run: outputs [R, B, C], targets [R, B] (or [R, B, 1] for regression) -> [R].

    Classification: cross-entropy (log-softmax + NLL). Regression: squared error. `mean` averages
    over the batch, `sum` adds (then the gradient, and so the step, grows with the batch).
    """
    r, b = outputs.shape[:2]
    if outputs.dtype in (torch.float16, torch.bfloat16):  # mixed precision: the loss in float32
        outputs = outputs.float()
    if task == "classification":
        losses = F.cross_entropy(outputs.reshape(r * b, -1), targets.reshape(r * b), reduction="none").view(r, b)
    else:
        losses = (outputs - targets.to(outputs.dtype)).pow(2).flatten(2).mean(2)
    return losses.mean(1) if reduction == "mean" else losses.sum(1)


@torch.no_grad()
def evaluate(
    forward, x: torch.Tensor, y: torch.Tensor, n_runs: int, task: str, max_elements: int = 1 << 25
) -> dict[str, torch.Tensor]:
    """Mean loss and accuracy per run over (x, y); forward(xc) -> [R, C, out] for a shared chunk xc."""
    chunk = max(64, max_elements // max(n_runs * 1024, 1))
    loss_sum = torch.zeros(n_runs, device=x.device, dtype=torch.float64)
    correct = torch.zeros(n_runs, device=x.device, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        xc, yc = x[start : start + chunk], y[start : start + chunk]
        out = forward(xc)
        loss_sum += per_run_loss(out, yc.expand(n_runs, *yc.shape), task, "sum").double()
        if task == "classification":
            correct += (out.argmax(-1) == yc).sum(1).double()
    n = x.shape[0]
    result = {"loss": loss_sum / n}
    if task == "classification":
        result["acc"] = correct / n
    return result
