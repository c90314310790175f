"""Functional optimizers over stacked parameters [R, ...], each run with its own hyperparameters.

Per-run hyperparameters are tensors with a leading run dimension, so one kernel updates every run
of a group. The update formulas follow torch.optim exactly (same operation order), which the tests
check to 1e-12 in float64:

- SGD (Robbins & Monro 1951) with L2 weight decay, heavy-ball momentum (Polyak 1964) and Nesterov
  momentum as formulated by Sutskever et al. (2013) / torch.optim.SGD:
      g <- g + wd p;  buf <- mu buf + g;  d <- g + mu buf (nesterov) or buf;  p <- p - lr d
- Adam (Kingma & Ba 2015) and AdamW's decoupled decay (Loshchilov & Hutter 2019):
      p <- p (1 - lr wd) [AdamW] | g <- g + wd p [Adam];  m <- lerp(m, g, 1 - b1);
      v <- b2 v + (1 - b2) g^2;  p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

A run whose `alive` flag is False is frozen: its parameters are left exactly as they are.
"""
from __future__ import annotations

import torch

from .spec import RunSpec

FAMILY = {"sgd": "sgd", "adam": "adam", "adamw": "adam"}


def _col(values, ref: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, device=ref.device, dtype=ref.dtype)


class StackedOptimizer:
    """Optimizer state and update for a group of runs; the group may mix optimizer kinds."""

    def __init__(self, specs: list[RunSpec], params: dict[str, torch.Tensor]):
        ref = next(iter(params.values()))
        self.families: dict[str, torch.Tensor | None] = {}
        kinds = [FAMILY[s.optimizer] for s in specs]
        for fam in dict.fromkeys(kinds):
            idx = [i for i, k in enumerate(kinds) if k == fam]
            self.families[fam] = None if len(idx) == len(specs) else torch.tensor(idx, device=ref.device)
        self.wd = _col([s.weight_decay for s in specs], ref)
        self.momentum = _col([s.momentum for s in specs], ref)
        self.nesterov = torch.tensor([s.nesterov for s in specs], device=ref.device)
        self.decoupled = _col([float(s.optimizer == "adamw") for s in specs], ref)
        self.beta1 = _col([s.betas[0] for s in specs], ref)
        self.beta2 = _col([s.betas[1] for s in specs], ref)
        self.eps = _col([s.eps for s in specs], ref)
        self.use_momentum = any(s.momentum > 0 for s in specs if FAMILY[s.optimizer] == "sgd")
        self.use_wd = any(s.weight_decay > 0 for s in specs)
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        for name, p in params.items():
            st = {}
            if "sgd" in self.families and self.use_momentum:
                st["buf"] = torch.zeros_like(p)
            if "adam" in self.families:
                st["m"] = torch.zeros_like(p)
                st["v"] = torch.zeros_like(p)
            self.state[name] = st
        self.t = torch.zeros((), device=ref.device, dtype=ref.dtype)  # Adam's step count, on device

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
             lr: torch.Tensor, alive: torch.Tensor) -> None:
        """Update `params` in place. lr: [R] for this step; alive: [R] bool."""
        self.t += 1
        if len(self.families) == 1:
            (fam,) = self.families
            return self._update_family(fam, list(params.values()), [grads[n] for n in params],
                                    [self.state[n] for n in params], self._hp(lr, alive, None))
        for fam, idx in self.families.items():  # a mixed group: each family on its runs' slice
            update = self._sgd if fam == "sgd" else self._adam
            for name, p in params.items():
                st = self.state[name]
                sub_p, sub_st = p.index_select(0, idx), {k: v.index_select(0, idx) for k, v in st.items()}
                update(sub_p, grads[name].index_select(0, idx), sub_st, self._hp(lr, alive, idx), p.dim())
                p.index_copy_(0, idx, sub_p)
                for k, v in sub_st.items():
                    st[k].index_copy_(0, idx, v)

    def _update_family(self, fam, params, grads, states, hp):
        update = self._sgd if fam == "sgd" else self._adam
        for p, g, st in zip(params, grads, states):
            update(p, g, st, hp, p.dim())

    def _hp(self, lr, alive, idx):
        names = ("wd", "momentum", "nesterov", "decoupled", "beta1", "beta2", "eps")
        hp = {n: getattr(self, n) for n in names} | {"lr": lr, "alive": alive}
        return hp if idx is None else {k: v.index_select(0, idx) for k, v in hp.items()}

    @staticmethod
    def _view(x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.view(-1, *([1] * (dim - 1)))

    def _sgd(self, p, g, st, hp, dim):
        v = lambda k: self._view(hp[k], dim)  # noqa: E731
        if self.use_wd:
            g = g + v("wd") * p
        if self.use_momentum:
            buf = st["buf"]
            buf.mul_(v("momentum")).add_(g)
            g = torch.where(v("nesterov"), g + v("momentum") * buf, buf)
        p.sub_(torch.where(v("alive"), v("lr") * g, 0))

    def _adam(self, p, g, st, hp, dim):
        v = lambda k: self._view(hp[k], dim)  # noqa: E731
        lr = v("lr") * v("alive")
        if self.use_wd:
            p.mul_(1 - lr * v("wd") * v("decoupled"))
            g = g + (v("wd") * (1 - v("decoupled"))) * p
        b1, b2 = v("beta1"), v("beta2")
        st["m"].lerp_(g, 1 - b1)
        st["v"].mul_(b2).addcmul_(g, g * (1 - b2))
        bc1 = 1 - b1 ** self.t
        bc2_sqrt = (1 - b2 ** self.t).sqrt()
        denom = (st["v"].sqrt() / bc2_sqrt).add_(v("eps"))
        p.sub_(torch.where(v("alive"), (lr / bc1) * st["m"] / denom, 0))
