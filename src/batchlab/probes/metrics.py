"""Loss and accuracy of every run of a stack over a whole data split, in memory-bounded chunks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_run_loss(
    outputs: torch.Tensor, targets: torch.Tensor, task: str, reduction: str = "mean", loss_fn=None
) -> torch.Tensor:
    """Loss of each run: outputs [R, B, ...], targets [R, B, ...] -> [R].

    Classification: cross-entropy (log-softmax + NLL) over the last dimension: logits [R, B, C] against labels
    [R, B], or a sequence's [R, B, T, C] against [R, B, T], an example's loss the mean over its positions.
    Regression: squared error, averaged over an example's outputs. `mean` averages over the batch, `sum` adds
    (then the gradient, and so the step, grows with the batch). `loss_fn` (the user's, fn(output, target) ->
    the mean over the examples) replaces both, run by run.
    """
    r, b = outputs.shape[:2]
    if outputs.dtype in (torch.float16, torch.bfloat16):  # mixed precision: the loss in float32
        outputs = outputs.float()
    if loss_fn is not None:
        losses = torch.stack([loss_fn(outputs[i], targets[i]).reshape(()) for i in range(r)])
        return losses if reduction == "mean" else losses * b
    if task == "classification":
        if outputs.dim() == 3:
            losses = F.cross_entropy(outputs.reshape(r * b, -1), targets.reshape(r * b), reduction="none").view(r, b)
        else:  # a label per position: [R, B, T..., C] against [R, B, T...]
            c = outputs.shape[-1]
            flat = F.cross_entropy(outputs.reshape(-1, c), targets.reshape(-1), reduction="none")
            losses = flat.view(r, b, -1).mean(2)
    else:
        if targets.shape != outputs.shape and targets.numel() == outputs.numel():  # e.g. [R, B] against [R, B, 1]
            targets = targets.reshape(outputs.shape)
        losses = (outputs - targets.to(outputs.dtype)).pow(2).flatten(2).mean(2)
    return losses.mean(1) if reduction == "mean" else losses.sum(1)


def square_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The square loss against one-hot labels, ½‖output − e_label‖² summed over the classes and averaged over the
    examples: output [B, C], integer labels [B] (Cohen et al. 2021 train their networks at the edge of stability
    with it; cross-entropy's sharpness falls once the margins grow)."""
    onehot = F.one_hot(target.long(), output.shape[-1]).to(output.dtype)
    return 0.5 * (output - onehot).pow(2).sum(-1).mean()


@torch.no_grad()
def evaluate(
    forward, x: torch.Tensor, y: torch.Tensor, n_runs: int, task: str, max_elements: int = 1 << 25, loss_fn=None
) -> dict[str, torch.Tensor]:
    """Mean loss and accuracy per run over (x, y); forward(xc) -> [R, C, out] for a shared chunk xc.

    A sequence's accuracy is the fraction of its positions whose argmax is the label, averaged over examples.
    `loss_fn`: the user's (see per_run_loss)."""
    chunk = max(64, max_elements // max(n_runs * 1024, 1))
    loss_sum = torch.zeros(n_runs, device=x.device, dtype=torch.float64)
    correct = torch.zeros(n_runs, device=x.device, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        xc, yc = x[start : start + chunk], y[start : start + chunk]
        out = forward(xc)
        loss_sum += per_run_loss(out, yc.expand(n_runs, *yc.shape), task, "sum", loss_fn).double()
        if task == "classification":
            if yc.dim() == 1:
                correct += (out.argmax(-1) == yc).sum(1).double()
            elif out.dim() == yc.dim() + 2:  # [R, C, T..., classes] against [C, T...]
                correct += (out.argmax(-1) == yc).flatten(2).double().mean(2).sum(1)
    n = x.shape[0]
    result = {"loss": loss_sum / n}
    if task == "classification":
        result["acc"] = correct / n
    return result
