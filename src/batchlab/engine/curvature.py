"""Mean losses at fixed weights, their gradients and Hessian-vector products, by torch.func, for every run of a stack
at once (one model is a stack of one); and the curvature measurements built on them.

H v = ∇_θ (∇L(θ) · v), the gradient of the gradient's dot product with v (Pearlmutter 1994's trick, as PyHessian
and Cohen et al. 2021 compute it): reverse over reverse, 2-3 gradients' time on the quick MLP, with H never formed.
The other two orders are worse in torch 2.13: forward over reverse (`jvp` of `grad`) raises "ZeroTensors are
immutable" on F.mse_loss, and reverse over forward (`grad` of `jvp`) returns products 10 % off finite differences
on a transformer block (tests/test_curvature.py checks the products against finite differences there).

The runs of a stack are independent, so the Hessian of the sum of their losses is block-diagonal: one product with
the sum Σ_r L_r(θ_r) gives every run's own H_r v_r, the ensembling recipe that trains the stack applied to
curvature. `vmap` over vectors batches the products a chunk of vectors at a time, so that memory stays bounded; the
examples can be split too (each part's Hessian weighted by its share of the mean).

- `MeanLoss`: the operator (losses, gradients, Hessian-vector products, flat vectors for `analysis.spectrum`).
- `hessian_vector_products`, `iter_hessian_vector_products`: H V for one model's vectors (B_noise's ingredient).
- `batch_sharpness_ratios`: g_Bᵀ H_B g_B / ‖g_B‖² of random mini-batches (Andreyev & Beneventano 2024).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..probes import per_run_loss

Params = dict[str, torch.Tensor]


class MeanLoss:
    """L_r(θ_r), the mean loss of each run r of a stack over the examples (x, y), as a function of the runs' weights.

    `params` and `buffers` are stacked, {name: [R, ...]} (buffers None or {} when the model has none); `base` is the
    model's template, on any device (the meta device included: only its code is used). x is [n, ...], the same
    examples for every run (`shared_input`), or [R, n, ...], each run's own. The loss is `loss_fn(output, target)`
    (the user's, a mean over the examples) or the task's (cross-entropy over the last dimension, or squared error:
    `per_run_loss`). `eval_mode` runs the template in evaluation mode (BatchNorm on its running statistics) and
    restores its modes after each call. `example_chunk` splits the examples (memory grows with it); `chunk_size`
    vectors are vmapped at once.
    """

    def __init__(
        self,
        base: nn.Module,
        params: Params,
        buffers: Params | None,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        task: str = "classification",
        loss_fn: Callable | None = None,
        shared_input: bool = True,
        eval_mode: bool = True,
        example_chunk: int | None = None,
        chunk_size: int = 32,
    ):
        self.base, self.task, self.loss_fn = base, task, loss_fn
        self.params = {k: v.detach() for k, v in params.items()}
        self.buffers = {k: v.detach() for k, v in (buffers or {}).items()}
        self.names = list(self.params)
        ref = self.params[self.names[0]]
        self.runs, self.dtype, self.device = ref.shape[0], ref.dtype, ref.device
        self.shapes = {k: v.shape[1:] for k, v in self.params.items()}
        self.size = sum(math.prod(s) for s in self.shapes.values())
        self.shared, self.eval_mode, self.chunk_size = shared_input, eval_mode, chunk_size
        axis = 0 if shared_input else 1
        n = x.shape[axis]
        self.x, self.y, self.examples = x, y, n
        step = example_chunk or n
        self.parts = [
            (x.narrow(axis, s, min(step, n - s)), y.narrow(axis, s, min(step, n - s)), min(step, n - s) / n)
            for s in range(0, n, step)
        ]

    # --- the function and its derivatives ----------------------------------------------------------------------

    def _losses(self, p: Params, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """[R] mean losses of the runs at weights p on one part of the examples."""
        if self.runs == 1:  # no vmap over runs: models with data-dependent Python work as they are
            out = functional_call(
                self.base,
                ({k: v[0] for k, v in p.items()}, {k: b[0] for k, b in self.buffers.items()}),
                (xb if self.shared else xb[0],),
            )
            return per_run_loss(out[None], (yb if self.shared else yb[0])[None], self.task, "mean", self.loss_fn)

        def one(pr, br, xr):
            return functional_call(self.base, (pr, br), (xr,))

        out = vmap(one, in_dims=(0, 0, None if self.shared else 0))(p, self.buffers, xb)
        targets = yb.expand(self.runs, *yb.shape) if self.shared else yb
        return per_run_loss(out, targets, self.task, "mean", self.loss_fn)

    def _total(self, p: Params, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return self._losses(p, xb, yb).sum()

    def _mode(self):
        """The template's modes, to restore; evaluation mode meanwhile when asked."""
        modes = [(m, m.training) for m in self.base.modules()]
        if self.eval_mode:
            self.base.eval()
        return modes

    @staticmethod
    def _restore(modes) -> None:
        for module, training in modes:
            module.training = training

    def losses(self, params: Params | None = None) -> torch.Tensor:
        """[R] the runs' mean losses at `params` (default: the operator's own weights), without gradients."""
        p = self.params if params is None else params
        modes = self._mode()
        try:
            with torch.no_grad():
                return sum(self._losses(p, xb, yb).double() * w for xb, yb, w in self.parts)
        finally:
            self._restore(modes)

    def value_and_grad(self, params: Params | None = None) -> tuple[torch.Tensor, Params]:
        """([R] mean losses, {name: [R, ...]} each run's gradient) at `params` (default: the operator's weights)."""
        p = {k: v.detach() for k, v in (self.params if params is None else params).items()}
        modes = self._mode()
        try:
            total_loss, total = None, None
            for xb, yb, w in self.parts:

                def f(q, xb=xb, yb=yb):
                    losses = self._losses(q, xb, yb)
                    return losses.sum(), losses.detach()

                g, losses = grad(f, has_aux=True)(p)
                total_loss = losses * w if total_loss is None else total_loss + losses * w
                total = {k: g[k] * w for k in self.names} if total is None else {k: total[k] + g[k] * w for k in g}
            return total_loss, total
        finally:
            self._restore(modes)

    def products(self, vectors: Params) -> Params:
        """{name: [R, m, ...]}: H_r v for each run's m vectors {name: [R, m, ...]}, H_r the Hessian of L_r."""

        def hvp(v):
            total = None
            for xb, yb, w in self.parts:
                hv = grad(lambda q: _dot(grad(self._total)(q, xb, yb), v))(self.params)
                total = {k: hv[k] * w for k in self.names} if total is None else {k: total[k] + hv[k] * w for k in hv}
            return total

        m = next(iter(vectors.values())).shape[1]
        out: dict[str, list[torch.Tensor]] = {k: [] for k in self.names}
        modes = self._mode()
        try:
            for s in range(0, m, self.chunk_size):
                v = {k: vectors[k][:, s : s + self.chunk_size].to(self.device, self.dtype) for k in self.names}
                for k, t in vmap(hvp, in_dims=1, out_dims=1)(v).items():
                    out[k].append(t.detach())
        finally:
            self._restore(modes)
        return {k: torch.cat(v, 1) for k, v in out.items()}

    # --- flat vectors, for the eigensolvers -----------------------------------------------------------------------

    def flatten(self, tree: Params) -> torch.Tensor:
        """{name: [R, *lead, *shape]} -> [R, *lead, P], in the order of the parameters."""
        lead = next(iter(tree.values())).dim() - 1 - len(self.shapes[self.names[0]])
        return torch.cat([tree[k].flatten(1 + lead) for k in self.names], -1)

    def unflatten(self, flat: torch.Tensor) -> Params:
        """[R, *lead, P] -> {name: [R, *lead, *shape]}."""
        out, at = {}, 0
        for k in self.names:
            size = math.prod(self.shapes[k])
            out[k] = flat[..., at : at + size].reshape(*flat.shape[:-1], *self.shapes[k])
            at += size
        return out

    def matvec(self, vectors: torch.Tensor) -> torch.Tensor:
        """[R, m, P] -> [R, m, P]: the flat Hessian-vector products, as `analysis.spectrum` takes them."""
        return self.flatten(self.products(self.unflatten(vectors)))

    def flat_params(self) -> torch.Tensor:
        return self.flatten(self.params)


def _dot(a: Params, b: Params) -> torch.Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


# --- one model's vectors (B_noise) ---------------------------------------------------------------------------------


def iter_hessian_vector_products(
    base: nn.Module,
    params: Params,
    buffers: Params | None,
    x: torch.Tensor,
    y: torch.Tensor,
    vectors: Params,
    *,
    task: str = "classification",
    loss_fn: Callable | None = None,
    chunk_size: int = 32,
    example_chunk: int | None = None,
    eval_mode: bool = True,
) -> Iterator[tuple[int, Params]]:
    """(start, {name: [c, ...]}): H v for consecutive chunks of one model's vectors {name: [m, ...]}, H the Hessian
    (with respect to `params`, unstacked) of the mean loss over the examples (x, y); see `hessian_vector_products`."""
    op = MeanLoss(
        base, {k: v[None] for k, v in params.items()}, {k: b[None] for k, b in (buffers or {}).items()}, x, y,
        task=task, loss_fn=loss_fn, example_chunk=example_chunk, eval_mode=eval_mode, chunk_size=chunk_size,
    )  # fmt: skip
    m = next(iter(vectors.values())).shape[0]
    for start in range(0, m, chunk_size):
        hv = op.products({k: vectors[k][None, start : start + chunk_size] for k in op.names})
        yield start, {k: t[0] for k, t in hv.items()}


def hessian_vector_products(
    base: nn.Module,
    params: Params,
    buffers: Params | None,
    x: torch.Tensor,
    y: torch.Tensor,
    vectors: Params,
    *,
    task: str = "classification",
    loss_fn: Callable | None = None,
    chunk_size: int = 32,
    example_chunk: int | None = None,
    eval_mode: bool = True,
) -> Params:
    """H V {name: [n, ...]} for a batch of vectors V {name: [n, ...]}, H the Hessian of one model's mean loss over
    (x, y): `MeanLoss` for a stack of one. `base` is the model's template (its weights are `params` and `buffers`,
    unstacked); `eval_mode` puts it in evaluation mode meanwhile (BatchNorm on its running statistics, as
    `per_example_grads` with bn_mode="eval"); `chunk_size` vectors are vmapped at once; `example_chunk` splits the
    examples, so memory grows with chunk_size x example_chunk activations."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in params}
    for _, hv in iter_hessian_vector_products(
        base, params, buffers, x, y, vectors, task=task, loss_fn=loss_fn, chunk_size=chunk_size,
        example_chunk=example_chunk, eval_mode=eval_mode,
    ):  # fmt: skip
        for k, t in hv.items():
            out[k].append(t)
    return {k: torch.cat(v) for k, v in out.items()}


# --- batch sharpness -----------------------------------------------------------------------------------------------


def batch_sharpness_ratios(
    base: nn.Module,
    params: Params,
    buffers: Params | None,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    draws: int,
    generator: torch.Generator,
    *,
    task: str = "classification",
    loss_fn: Callable | None = None,
    eval_mode: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """([R, draws] g_Bᵀ H_B g_B / ‖g_B‖², [R, draws] ‖g_B‖²) for `draws` mini-batches B of `batch_size` examples of
    (x, y) (drawn without replacement inside a batch, independently across draws, the same batches for every run of
    the stack), g_B and H_B the gradient and Hessian of the batch's mean loss: the curvature of each mini-batch's own
    loss along its own gradient, whose mean over B is Andreyev & Beneventano's batch sharpness (arXiv:2412.20553).
    Per draw one gradient and one Hessian-vector product of the batch, for all runs at once."""
    n = x.shape[0]
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be between 1 and the {n} examples (got {batch_size})")
    ratios, sq = [], []
    for _ in range(draws):
        idx = torch.randperm(n, generator=generator)[:batch_size].to(x.device)
        op = MeanLoss(base, params, buffers, x[idx], y[idx], task=task, loss_fn=loss_fn, eval_mode=eval_mode)
        _, g = op.value_and_grad()
        hg = op.products({k: t[:, None] for k, t in g.items()})
        ghg = sum((g[k].double() * hg[k][:, 0].double()).flatten(1).sum(1) for k in op.names)
        gg = sum(g[k].double().flatten(1).square().sum(1) for k in op.names)
        ratios.append(ghg / gg.clamp_min(torch.finfo(torch.float64).tiny))
        sq.append(gg)
    return torch.stack(ratios, 1), torch.stack(sq, 1)


class StackCurvature:
    """The curvature of a training group's stack at its current weights, for the probes (`ProbeContext.curvature`):
    BatchNorm on its running statistics, the run's own loss."""

    def __init__(self, stack, task: str, loss_fn: Callable | None = None, example_chunk: int | None = 1024):
        self.stack, self.task, self.loss_fn, self.example_chunk = stack, task, loss_fn, example_chunk

    def operator(self, x: torch.Tensor, y: torch.Tensor) -> MeanLoss:
        """Every run's mean loss over the shared examples (x, y), for Hessian-vector products."""
        s = self.stack
        return MeanLoss(s.base, s.params, s.buffers, x, y, task=self.task, loss_fn=self.loss_fn,
                        example_chunk=self.example_chunk)  # fmt: skip

    def batch_sharpness(self, x, y, batch_size: int, draws: int, generator: torch.Generator):
        """`batch_sharpness_ratios` of every run on shared random batches of (x, y)."""
        s = self.stack
        return batch_sharpness_ratios(s.base, s.params, s.buffers, x, y, batch_size, draws, generator,
                                      task=self.task, loss_fn=self.loss_fn)  # fmt: skip


POINT_BUDGET = 2**25  # parameter entries of the weight copies evaluated at once (128 MiB in float32)


def losses_at(
    base: nn.Module,
    fixed: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    at: Callable[[torch.Tensor], Params],
    coords: torch.Tensor,
    *,
    task: str = "classification",
    loss_fn: Callable | None = None,
    eval_mode: bool = True,
) -> torch.Tensor:
    """[c] float64: the mean loss over (x, y) at the weights at(t) {name: [c, *shape]}, for the points t of
    `coords` [c, ...]: each chunk of points a stack of copies (one vmapped forward pass), `fixed` (unstacked
    buffers and frozen parameters) the same at every point. For loss-landscape lines and planes."""
    size = sum(v[0].numel() for v in at(coords[:1]).values())
    chunk = max(1, POINT_BUDGET // size)
    out = []
    for s in range(0, coords.shape[0], chunk):
        points = at(coords[s : s + chunk])
        c = next(iter(points.values())).shape[0]
        stacked = {k: v[None].expand(c, *v.shape) for k, v in fixed.items()}
        op = MeanLoss(base, points, stacked, x, y, task=task, loss_fn=loss_fn, eval_mode=eval_mode)
        out.append(op.losses())
    return torch.cat(out)
