"""Multi-layer perceptron, the reference model of the batch-size studies (784-1024-1024-10, ReLU)."""

from __future__ import annotations

import torch
from torch import nn

from .traits import ModelTraits

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}
# the same nonlinearities as functions, for the stacked and per-example paths that bypass the modules
ACTIVATION_FNS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": nn.functional.gelu}


class MLP(nn.Module):
    """Linear layers with an activation between them; `sizes` includes input and output."""

    TRAITS = ModelTraits(folds=True)

    def __init__(self, sizes: tuple[int, ...] = (784, 1024, 1024, 10), activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.activation = activation
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(-(x.dim() - 1)) if x.dim() > 2 else x)


def stacked_mlp_forward(
    params: dict, x, activation: str = "relu", n_layers: int | None = None, matvec_max_batch: int = 0
):
    """Forward of R stacked MLPs with batched matmuls, the same math as vmap over `MLP.forward`.

    params: `net.{2i}.weight` [R, out, in] and `net.{2i}.bias` [R, out]; x: [R, B, in] (each run
    its own batch) or [B, in] (one batch shared by every run, as in evaluation).

    Activations are kept feature-major, z = W h + b with h [R, in, B]: then the weight gradient
    dW = dz h^T comes out of the backward matmul already in W's [R, out, in] layout, so the
    optimizer's elementwise update reads W and dW with the same, coalesced strides (with batch-major
    h W^T the gradient is a transposed view and the update ran at half speed on an H100).
    `baddbmm` fuses the bias into the matmul.

    For a tiny batch (B <= `matvec_max_batch`) each layer is written as a broadcast multiply-sum
    instead: cuBLAS's batched kernels for [out, in] x [in, 2] use 32x32 tiles at a few percent of
    the bandwidth, while under torch.compile the multiply-sum becomes one reduction kernel that
    streams W once (forward) and an outer product (backward). Only worth it when compiled.
    """
    act = ACTIVATION_FNS[activation]
    n_layers = n_layers or sum(1 for k in params if k.endswith(".weight"))
    h = x.transpose(-1, -2)  # [R, in, B], or [in, B] when shared
    for i in range(n_layers):
        w, b = params[f"net.{2 * i}.weight"], params[f"net.{2 * i}.bias"]
        if h.dim() == 2:  # shared input: every run's weights against the same batch
            h = torch.matmul(w, h) + b.unsqueeze(2)
        elif h.shape[-1] <= matvec_max_batch:
            h = (w.unsqueeze(-1) * h.unsqueeze(1)).sum(2) + b.unsqueeze(2)
        else:
            h = torch.baddbmm(b.unsqueeze(2), w, h)
        if i < n_layers - 1:
            h = act(h)
    return h.transpose(-1, -2)
