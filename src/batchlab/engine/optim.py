"""Functional optimizers over stacked parameters [R, ...]: a registry of per-tensor update rules.

Like optax, an optimizer is a small rule applied to one parameter tensor at a time: `init` makes
its state, `update` changes the parameter in place. Here every tensor carries a leading run
dimension and every hyperparameter is a per-run tensor, so one kernel updates all runs of a group;
a rule also receives the parameter's name, so a layer-wise rule (LARS, LAMB) can tell weights
from biases and norm parameters. The formulas follow torch.optim exactly (same operation order),
which the tests check to 1e-12 in float64:

- SGD (Robbins & Monro 1951) with L2 weight decay, heavy-ball momentum (Polyak 1964) and Nesterov
  momentum as formulated by Sutskever et al. (2013) / torch.optim.SGD:
      g <- g + wd p;  buf <- mu buf + g;  d <- g + mu buf (nesterov) or buf;  p <- p - lr d
- Adam (Kingma & Ba 2015) and AdamW's decoupled decay (Loshchilov & Hutter 2019):
      p <- p (1 - lr wd) [AdamW] | g <- g + wd p [Adam];  m <- lerp(m, g, 1 - b1);
      v <- b2 v + (1 - b2) g^2;  p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
- LARS and LAMB (You et al. 2017, 2019): layer-wise trust ratios, one per layer and per run (a norm
  never mixes two runs of a group), tested against a literal per-layer loop of the papers' algorithms.

A run whose `alive` flag is False is frozen: its parameters are left exactly as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .spec import RunSpec

# per-run hyperparameters every rule may read, each a [R] tensor (besides lr and alive, per step, and
# beta1_t, beta2_t: beta ** t at this step, for a rule with `bias_correction`)
HYPERPARAMETERS = ("wd", "momentum", "nesterov", "decoupled", "beta1", "beta2", "eps", "trust_coefficient")


@dataclass
class RuleOptions:
    """What a rule may skip for a whole group: a term whose hyperparameter is 0 in every run."""

    momentum: bool
    weight_decay: bool
    # every run is alive at this step, known without a device sync (on the CPU, where reading a flag is
    # free), and the gradients are the step's own: a rule may skip the mask that keeps frozen runs exactly
    # as they are, and overwrite the gradient
    all_alive: bool = False


class UpdateRule:
    """One optimizer family: its state per parameter tensor and its in-place update."""

    bias_correction = False  # reads hp["beta1_t"] and hp["beta2_t"] (Adam's 1 - beta^t)

    def init(self, name: str, p: torch.Tensor, opts: RuleOptions) -> dict[str, torch.Tensor]:
        return {}

    def update(
        self,
        name: str,
        p: torch.Tensor,
        g: torch.Tensor,
        state: dict[str, torch.Tensor],
        hp: dict[str, torch.Tensor],
        t: torch.Tensor,
        opts: RuleOptions,
    ) -> None:
        raise NotImplementedError


def per_run(x: torch.Tensor, dim: int) -> torch.Tensor:
    """A [R] hyperparameter shaped to broadcast against a [R, ...] tensor of `dim` dimensions."""
    return x.view(-1, *([1] * (dim - 1)))


class SGD(UpdateRule):
    def init(self, name, p, opts):
        return {"buf": torch.zeros_like(p)} if opts.momentum else {}

    def update(self, name, p, g, state, hp, t, opts):
        v = lambda k: per_run(hp[k], p.dim())  # noqa: E731
        if opts.weight_decay:
            g = g + v("wd") * p
        if opts.momentum:
            buf = state["buf"]
            buf.mul_(v("momentum")).add_(g)
            g = torch.where(v("nesterov"), g + v("momentum") * buf, buf)
        if opts.all_alive:
            # no frozen run: p - lr g in place, the same bits as the masked form without its two temporaries
            # of the size of the weights (2 CPU cores, 784-256-256-10, batch 64, one epoch of 10k examples
            # for 32 runs: 7.3 s -> 3.2 s; 1 run: 0.29 -> 0.26 s; batch 2: 1340 -> 1220 us per step)
            p.sub_(g.mul_(v("lr")))
        else:
            p.sub_(torch.where(v("alive"), v("lr") * g, 0))


class Adam(UpdateRule):
    """Adam, and AdamW where a run's `decoupled` flag is 1."""

    bias_correction = True

    def init(self, name, p, opts):
        return {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}

    def update(self, name, p, g, state, hp, t, opts, squares=None):
        v = lambda k: per_run(hp[k], p.dim())  # noqa: E731
        lr = v("lr") * v("alive")
        if opts.weight_decay:
            p.mul_(1 - lr * v("wd") * v("decoupled"))
            g = g + (v("wd") * (1 - v("decoupled"))) * p
        b1, b2 = v("beta1"), v("beta2")
        state["m"].lerp_(g, 1 - b1)
        if squares is None:
            state["v"].mul_(b2).addcmul_(g, g * (1 - b2))
        else:  # batch-size-invariant Adam: the mean of the micro-batches' squared gradients (no weight decay term)
            state["v"].mul_(b2).add_(squares * (1 - b2))
        bc1 = 1 - v("beta1_t")
        bc2_sqrt = (1 - v("beta2_t")).sqrt()
        denom = (state["v"].sqrt() / bc2_sqrt).add_(v("eps"))
        p.sub_(torch.where(v("alive"), (lr / bc1) * state["m"] / denom, 0))


def layer_wise(name: str, p: torch.Tensor) -> bool:
    """Whether a layer-wise rule adapts this tensor: weight matrices and kernels ([R, out, in, ...]), not
    biases or norm scales ([R, n]), which LARS and LAMB leave to the plain update without weight decay
    (You et al. 2017, 2019; the usual exclusion of 1-D parameters)."""
    return p.dim() >= 3


def trust_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den per run, and 1 where either is 0 (a zero-initialised layer, a zero gradient), as optax's
    `scale_by_trust_ratio` does."""
    return torch.where((num > 0) & (den > 0), num / den.clamp_min(torch.finfo(den.dtype).tiny), 1.0)


def run_norm(t: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each run's slice of a [R, ...] tensor: [R]; never mixes two runs."""
    return t.flatten(1).norm(dim=1)


class LARS(UpdateRule):
    """LARS (You, Gitman & Ginsburg 2017, algorithm 1), per layer and per run:

        local_lr = trust_coefficient * ||w|| / (||g|| + wd ||w||)
        v <- momentum v + lr * local_lr * (g + wd w);   w <- w - v

    The learning rate sits inside the momentum buffer, as in the paper. Biases and norm parameters
    take the plain momentum step v <- momentum v + lr g, without decay. The last local_lr of each
    adapted layer is kept in the state (`trust`) for the trust-ratio probe.
    """

    def init(self, name, p, opts):
        state = {"buf": torch.zeros_like(p)}
        if layer_wise(name, p):
            # NaN until the rule updates it: runs of another optimizer in a mixed group never have one
            state["trust"] = torch.full((p.shape[0],), float("nan"), dtype=p.dtype, device=p.device)
        return state

    def update(self, name, p, g, state, hp, t, opts):
        v = lambda k: per_run(hp[k], p.dim())  # noqa: E731
        if layer_wise(name, p):
            w_norm, g_norm = run_norm(p), run_norm(g)
            local = hp["trust_coefficient"] * trust_ratio(w_norm, g_norm + hp["wd"] * w_norm)
            state["trust"].copy_(torch.where(hp["alive"], local, state["trust"]))
            step = v("lr") * per_run(local, p.dim()) * (g + v("wd") * p)
        else:
            step = v("lr") * g
        buf = state["buf"]
        buf.copy_(torch.where(v("alive"), v("momentum") * buf + step, buf))
        p.sub_(torch.where(v("alive"), buf, 0))


class LAMB(UpdateRule):
    """LAMB (You et al. 2019, algorithm 2), per layer and per run:

        m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  r = m_hat / (sqrt(v_hat) + eps)
        u = r + wd w;  w <- w - lr * (||w|| / ||u||) * u

    with Adam's bias corrections m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t). Biases and norm
    parameters take the Adam step r without decay or trust ratio. The last ratio is kept (`trust`).
    """

    bias_correction = True

    def init(self, name, p, opts):
        state = {"m": torch.zeros_like(p), "v": torch.zeros_like(p)}
        if layer_wise(name, p):
            # NaN until the rule updates it: runs of another optimizer in a mixed group never have one
            state["trust"] = torch.full((p.shape[0],), float("nan"), dtype=p.dtype, device=p.device)
        return state

    def update(self, name, p, g, state, hp, t, opts):
        v = lambda k: per_run(hp[k], p.dim())  # noqa: E731
        b1, b2 = v("beta1"), v("beta2")
        alive = v("alive")
        state["m"].copy_(torch.where(alive, b1 * state["m"] + (1 - b1) * g, state["m"]))
        state["v"].copy_(torch.where(alive, b2 * state["v"] + (1 - b2) * g * g, state["v"]))
        r = (state["m"] / (1 - v("beta1_t"))) / ((state["v"] / (1 - v("beta2_t"))).sqrt() + v("eps"))
        if layer_wise(name, p):
            u = r + v("wd") * p
            ratio = trust_ratio(run_norm(p), run_norm(u))
            state["trust"].copy_(torch.where(hp["alive"], ratio, state["trust"]))
            r = per_run(ratio, p.dim()) * u
        p.sub_(torch.where(alive, v("lr") * r, 0))


# optimizer name (RunSpec.optimizer) -> the rule that updates it; runs of one rule share kernels
RULES: dict[str, UpdateRule] = {"sgd": SGD(), "adam": Adam(), "adamw": Adam(), "lars": LARS(), "lamb": LAMB()}
FAMILY = {"sgd": "sgd", "adam": "adam", "adamw": "adam", "lars": "lars", "lamb": "lamb"}


def register_rule(optimizer: str, rule: UpdateRule, family: str | None = None) -> None:
    """Replace the rule of `optimizer` (one of the names `RunSpec.optimizer` allows): its runs use `rule`."""
    RULES[optimizer] = rule
    FAMILY[optimizer] = family or optimizer


def _col(values, ref: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, device=ref.device, dtype=ref.dtype)


def _elementwise(col: torch.Tensor) -> torch.Tensor:
    """`col` [R] as a view with stride 2, whose elementwise results do not depend on R or a run's place.

    ATen's CPU kernels compute pow of a contiguous tensor with SLEEF's vector code on whole vectors and std::pow
    on the rest, so `beta ** t` of a [R] column depended on the group: from 16 runs in float64 (32 in float32)
    75 of 6,000 (beta, t) pairs differed by an ulp, and Adam's weights in a group of 40 by 1e-16 after 64
    steps. A strided operand takes the element-by-element loop, std::pow for every run: Python's `beta ** t`,
    as torch.optim computes it."""
    return torch.stack([col, col], 1)[:, 0]


class StackedOptimizer:
    """Optimizer state and update for a group of runs; the group may mix optimizer kinds."""

    def __init__(self, specs: list[RunSpec], params: dict[str, torch.Tensor]):
        ref = next(iter(params.values()))
        self.families: dict[str, torch.Tensor | None] = {}
        kinds = [FAMILY[s.optimizer] for s in specs]
        self.rules = {FAMILY[s.optimizer]: RULES[s.optimizer] for s in specs}
        for fam in dict.fromkeys(kinds):
            idx = [i for i, k in enumerate(kinds) if k == fam]
            self.families[fam] = None if len(idx) == len(specs) else torch.tensor(idx, device=ref.device)
        self.hp = {
            "wd": _col([s.weight_decay for s in specs], ref),
            "momentum": _col([s.momentum for s in specs], ref),
            "nesterov": torch.tensor([s.nesterov for s in specs], device=ref.device),
            "decoupled": _col([float(s.optimizer == "adamw") for s in specs], ref),
            "beta1": _col([s.betas[0] for s in specs], ref),
            "beta2": _col([s.betas[1] for s in specs], ref),
            "eps": _col([s.eps for s in specs], ref),
            "trust_coefficient": _col([s.trust_coefficient for s in specs], ref),
        }
        self.opts = {
            fam: RuleOptions(
                momentum=any(s.momentum > 0 for s, k in zip(specs, kinds) if k == fam),
                weight_decay=any(s.weight_decay > 0 for s in specs),
            )
            for fam in self.families
        }
        self.opts_all_alive = {fam: dataclasses.replace(o, all_alive=True) for fam, o in self.opts.items()}
        bias_correction = any(rule.bias_correction for rule in self.rules.values())
        self.betas = {k: _elementwise(self.hp[k]) for k in ("beta1", "beta2")} if bias_correction else {}
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        for name, p in params.items():
            st: dict[str, torch.Tensor] = {}
            for fam, rule in self.rules.items():  # a mixed group keeps each family's state for all runs
                st |= rule.init(name, p, self.opts[fam])
            self.state[name] = st
        self.t = torch.zeros((), device=ref.device, dtype=ref.dtype)  # the step count, on the device

    @torch.no_grad()
    def step(
        self,
        params: dict[str, torch.Tensor],
        grads: dict[str, torch.Tensor],
        lr: torch.Tensor,
        alive: torch.Tensor,
        *,
        consume_grads: bool = False,
        squares: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Update `params` in place. lr: [R] for this step; alive: [R] bool. `consume_grads`: the caller
        reads `grads` no more, so a rule may overwrite them (a training step; not a task that compares).
        `squares`: Adam's second-moment input per tensor in place of g^2 (RunSpec.adam_second_moment)."""
        self.t += 1
        hp = self.hp | {"lr": lr, "alive": alive} | {f"{k}_t": b.pow(self.t) for k, b in self.betas.items()}
        # never a sync on CUDA, where the step is graph-captured
        all_alive = consume_grads and alive.device.type == "cpu" and bool(alive.all())
        for fam, idx in self.families.items():
            rule, opts = self.rules[fam], (self.opts_all_alive if all_alive else self.opts)[fam]
            if idx is None:  # every run of the group has this rule: update the stacked tensors directly
                for name, p in params.items():
                    # `squares` only for Adam: its runs are a group of their own (adam_second_moment is in the key)
                    extra = {} if squares is None else {"squares": squares[name]}
                    rule.update(name, p, grads[name], self.state[name], hp, self.t, opts, **extra)
                continue
            sub_hp = {k: v.index_select(0, idx) for k, v in hp.items()}
            for name, p in params.items():  # a mixed group: each family on its runs' slice
                st = self.state[name]
                sub_p, sub_st = p.index_select(0, idx), {k: v.index_select(0, idx) for k, v in st.items()}
                rule.update(name, sub_p, grads[name].index_select(0, idx), sub_st, sub_hp, self.t, opts)
                p.index_copy_(0, idx, sub_p)
                for k, v in sub_st.items():
                    st[k].index_copy_(0, idx, v)
