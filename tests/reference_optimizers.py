"""Reference optimizers for the tests' literal loops: torch.optim where it has the rule, else the papers'
per-layer LARS and LAMB written out (as tests/test_lars.py), each stepping `.grad` like a torch.optim optimizer."""

from __future__ import annotations

import torch

from batchlab.engine import RunSpec


class LARS:
    """You, Gitman & Ginsburg 2017, algorithm 1, per layer (as tests/test_lars.py); 1-D tensors: plain momentum."""

    def __init__(self, params, lr, momentum, weight_decay, eta):
        self.params, self.lr, self.m, self.wd, self.eta = list(params), lr, momentum, weight_decay, eta
        self.buf = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        for i, w in enumerate(self.params):
            g = w.grad
            if w.dim() >= 2:
                wn, gn = float(w.norm()), float(g.norm())
                local = self.eta * wn / (gn + self.wd * wn) if wn > 0 and gn > 0 else self.eta
                self.buf[i] = self.m * self.buf[i] + self.lr * local * (g + self.wd * w)
            else:
                self.buf[i] = self.m * self.buf[i] + self.lr * g
            w.sub_(self.buf[i])

    def zero_grad(self):
        for p in self.params:
            p.grad = None


class LAMB:
    """You et al. 2019, algorithm 2, per layer (as tests/test_lars.py); 1-D tensors: the Adam step, no decay."""

    def __init__(self, params, lr, betas, eps, weight_decay):
        self.params, self.lr, (self.b1, self.b2), self.eps, self.wd = list(params), lr, betas, eps, weight_decay
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2, t = self.b1, self.b2, self.t
        for i, w in enumerate(self.params):
            g = w.grad
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g**2
            r = (self.m[i] / (1 - b1**t)) / ((self.v[i] / (1 - b2**t)).sqrt() + self.eps)
            if w.dim() >= 2:
                u = r + self.wd * w
                wn, un = float(w.norm()), float(u.norm())
                w.sub_(self.lr * (wn / un if wn > 0 and un > 0 else 1.0) * u)
            else:
                w.sub_(self.lr * r)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def optimizer_for(spec: RunSpec, params):
    params = list(params)
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay
        )
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)
    if spec.optimizer == "lars":
        return LARS(params, spec.lr, spec.momentum, spec.weight_decay, spec.trust_coefficient)
    return LAMB(params, spec.lr, spec.betas, spec.eps, spec.weight_decay)
