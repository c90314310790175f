"""Linear regression y = Xw + b: a convex model whose gradient statistics are known in closed form."""

from __future__ import annotations

from torch import nn


class LinearRegression(nn.Module):
    def __init__(self, in_features: int = 10, out_features: int = 1, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, x):
        return self.linear(x)
