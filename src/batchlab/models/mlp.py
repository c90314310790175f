"""Multi-layer perceptron, the reference model of spec 02 (784-1024-1024-10, ReLU)."""
from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    """Linear layers with an activation between them; `sizes` includes input and output."""

    def __init__(self, sizes: tuple[int, ...] = (784, 1024, 1024, 10), activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.flatten(-(x.dim() - 1)) if x.dim() > 2 else x)
