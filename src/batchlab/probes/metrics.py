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


# examples whose losses are summed together; the blocks' sums are added one by one, in order, so that a run's
# mean does not depend on the evaluation's chunks, which shrink as its group grows (a test split of 10,000
# examples was one chunk for 1 run and 5 for 16, and its mean loss moved at float32 rounding with the group)
BLOCK = 64


def add_in_order(total: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """total [R] + blocks [R, n], added left to right (a cumulative sum is sequential on the CPU)."""
    return torch.cat([total.unsqueeze(1), blocks.to(total.dtype)], 1).cumsum(1)[:, -1]


@torch.no_grad()
def evaluate(
    forward, x: torch.Tensor, y: torch.Tensor, n_runs: int, task: str, max_elements: int = 1 << 25, loss_fn=None
) -> dict[str, torch.Tensor]:
    """Mean loss and accuracy per run over (x, y); forward(xc) -> [R, C, out] for a shared chunk xc.

    A sequence's accuracy is the fraction of its positions whose argmax is the label, averaged over examples.
    `loss_fn`: the user's (see per_run_loss)."""
    chunk = max(1, max_elements // max(n_runs * 1024, 1) // BLOCK) * BLOCK
    loss_sum = torch.zeros(n_runs, device=x.device, dtype=torch.float64)
    correct = torch.zeros(n_runs, device=x.device, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        xc, yc = x[start : start + chunk], y[start : start + chunk]
        out = forward(xc)
        if task == "classification" and yc.dim() == 1:  # counts: exact in any order
            correct += (out.argmax(-1) == yc).sum(1).double()
        whole = xc.shape[0] - xc.shape[0] % BLOCK  # whole blocks, then the split's last, smaller one
        for lo, hi in ((0, whole), (whole, xc.shape[0])):
            if hi == lo:
                continue
            size = min(BLOCK, hi - lo)
            blocks = (hi - lo) // size
            o = out[:, lo:hi].reshape(n_runs * blocks, size, *out.shape[2:])  # each block as a run of its own
            t = yc[lo:hi].reshape(1, blocks, size, *yc.shape[1:]).expand(n_runs, -1, -1, *yc.shape[1:])
            t = t.reshape(n_runs * blocks, *t.shape[2:])
            loss_sum = add_in_order(loss_sum, per_run_loss(o, t, task, "sum", loss_fn).view(n_runs, blocks))
            if task == "classification" and o.dim() == t.dim() + 1 > 3:  # a sequence: the share of its positions
                hits = (o.argmax(-1) == t).flatten(2).double().mean(2)
                correct = add_in_order(correct, hits.sum(1).view(n_runs, blocks))
    n = x.shape[0]
    result = {"loss": loss_sum / n}
    if task == "classification":
        result["acc"] = correct / n
    return result
