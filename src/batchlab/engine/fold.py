"""Plain SGD on a stack of MLPs with the update folded into the weight-gradient matmul.

The autograd step writes each weight gradient dW = delta a^T to memory, then the optimizer reads it
back with W and writes W - lr dW: three passes over the weights after the matmul. For plain SGD (no
momentum, no weight decay) the matmul can accumulate into W itself, a GEMM with C = W and beta = 1:

    W <- W - (lr delta) a^T        `W.baddbmm_(lr * delta, a^T, alpha=-1)`

which reads W once and writes it once; dW never exists. The per-run lr is folded into delta at the
output layer, where it is a small [R, classes, b] tensor, and it then flows through the backward
pass unchanged (every later delta is linear in it), so the bias step is simply the sum of delta.
The forward and backward passes are written out (the same math as `stacked_mlp_forward` and the
autograd of `per_run_loss`), so there is also no autograd bookkeeping per step, which is most of a
tiny batch's cost on the CPU.

A tiny batch's step is bound by moving the weights, and the update moves them twice (read and write)
to change them by a matrix of rank b. For tiny batches the big layers therefore defer it: their
updates are kept as factors, W_now = W - D^T A (D: the lr-scaled deltas, A: the layer inputs, one row
per example), the forward and backward passes use W_now through two small matmuls each
(a W_now^T = a W^T - (a A^T) D), and one matmul adds the factors to W when DEFER_ROWS rows are full,
before a bigger batch, or when the step path flushes them (before anything reads the weights:
engine/paths/folded.py).

This module is the math; engine/paths/folded.py composes it into the engine's step. Results equal the
autograd step up to rounding (the lr multiplies before the matmul's sum instead of after it);
tests/test_fold.py checks that step against the autograd path and a literal torch.optim loop.
Runs whose `alive` flag is False keep their weights bitwise: their delta is masked to exactly 0, and
so are their hidden activations, which may be infinite at the step where a run diverges (0 x inf is
NaN); on the CPU, where reading the flags costs nothing, the masks are skipped when every run is alive.
"""

from __future__ import annotations

import torch

# d(loss)/d(pre-activation) from d(loss)/d(activation): the kernels autograd itself uses
ACTIVATION_BACKWARD = {
    "relu": lambda grad, z, h: torch.ops.aten.threshold_backward(grad, h, 0),
    "tanh": lambda grad, z, h: torch.ops.aten.tanh_backward(grad, h),
    "sigmoid": lambda grad, z, h: torch.ops.aten.sigmoid_backward(grad, h),
    "gelu": lambda grad, z, h: torch.ops.aten.gelu_backward(grad, z),
}
ACTIVATION_FORWARD = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": torch.nn.functional.gelu,
}


# deferred updates (FoldedSGD): for batches of at most DEFER_MAX_BATCH examples, the layers of at least
# DEFER_MIN_WEIGHTS weights per run keep their updates as factors for up to DEFER_ROWS examples. Measured on
# 2 cores, one run of 784-1024-1024-10, per step: batch 2 1044 -> 846 us, 4: 1276 -> 1134, 8: 1479 -> 1395,
# 16: no gain; 784-256-256-10 at batch 2: 308 -> 281 us; 64 rows instead of 32: no better
DEFER_MAX_BATCH, DEFER_ROWS, DEFER_MIN_WEIGHTS = 8, 32, 1 << 16


class FoldedSGD:
    """One training step of a stack of MLPs: forward, loss, and backward with the SGD update folded in.

    `feature_major`: activations [R, features, b] (z = W a + b, as `stacked_mlp_forward` keeps them) or
    batch-major [R, b, features] (z = a W^T + b). The CPU's GEMMs want batch-major for tiny batches
    (2 cores, one 256x784 layer at batch 2: forward 14 us instead of 62, input gradient 8 instead of 55;
    the same at batch 64); the GPU keeps the layout the rest of its engine uses.
    """

    def __init__(
        self, activation: str, n_layers: int, reduction: str, feature_major: bool = False, defer_rows: int = 0
    ):
        self.act, self.act_backward = ACTIVATION_FORWARD[activation], ACTIVATION_BACKWARD[activation]
        self.keep_pre = activation == "gelu"  # the others' derivatives need only the activation
        self.n_layers, self.reduction, self.feature_major = n_layers, reduction, feature_major
        self.f = 1 if feature_major else 2  # the feature dimension of activations and deltas
        self._minus_one: dict[torch.Size, torch.Tensor] = {}  # the one-hot's -1 per target shape, made once
        # deferred updates (batch-major only): per big layer, the factors A [R, defer_rows, in] and
        # D [R, defer_rows, out] of the rank-b updates not yet added to W (W_now = W - D^T A), with their
        # transposed views; rows past `rows` are zero, so the products may use every row
        self.defer_rows = 0 if feature_major else defer_rows
        self.pending: dict[int, tuple[torch.Tensor, ...]] = {}
        self.rows = 0  # rows of A and D in use
        self._deferred: dict[int, tuple[int, ...]] = {}  # batch size -> its deferred layers

    def deferred_layers(self, params: dict[str, torch.Tensor], batch_size: int) -> tuple[int, ...]:
        """The layers whose update this step defers: those of at least DEFER_MIN_WEIGHTS weights per run,
        when the batch is at most DEFER_MAX_BATCH and deferral is on."""
        layers = self._deferred.get(batch_size)
        if layers is None:
            big = [i for i in range(self.n_layers) if params[f"net.{2 * i}.weight"][0].numel() >= DEFER_MIN_WEIGHTS]
            layers = self._deferred[batch_size] = tuple(
                big if batch_size <= min(DEFER_MAX_BATCH, self.defer_rows) else ()
            )
        return layers

    @torch.no_grad()
    def flush(self, params: dict[str, torch.Tensor]) -> None:
        """Add the deferred updates to the weights: W <- W - D^T A, one matmul per layer over all `defer_rows`
        rows (the unused ones are zero), then empty the factors."""
        for i, (a, d, _, d_t) in self.pending.items():
            params[f"net.{2 * i}.weight"].baddbmm_(d_t, a, alpha=-1)
            a.zero_(), d.zero_()
        self.rows = 0

    @torch.no_grad()
    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor):
        """Logits of batches x [R, b, in] (in this layout) and the activations the backward pass needs."""
        defer = self.deferred_layers(params, x.shape[1])
        if self.rows and (not defer or self.rows + x.shape[1] > self.defer_rows):
            self.flush(params)  # full, or this batch is too big to defer
        p = self.rows
        a = x.transpose(1, 2) if self.feature_major else x
        inputs, pre = [], []
        for i in range(self.n_layers):
            w, bias = params[f"net.{2 * i}.weight"], params[f"net.{2 * i}.bias"]
            if self.feature_major:
                z = torch.baddbmm(bias.unsqueeze(2), w, a)
            else:
                z = torch.baddbmm(bias.unsqueeze(1), a, w.transpose(1, 2))
                if p and i in self.pending:  # a W_now^T = a W^T - (a A^T) D
                    _, pd, pa_t, _ = self.pending[i]
                    z.baddbmm_(torch.bmm(a, pa_t), pd, alpha=-1)
            inputs.append(a)
            if i < self.n_layers - 1:
                pre.append(z if self.keep_pre else None)
                a = self.act(z)
        return z, (inputs, pre)

    @torch.no_grad()
    def losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each run's cross-entropy [R] on its batch (y [R, b]), as `per_run_loss` computes it."""
        logp = torch.log_softmax(logits, dim=self.f)  # one kernel (z - logsumexp(z) is five on the CPU)
        losses = -logp.gather(self.f, y.unsqueeze(self.f)).squeeze(self.f)  # [R, b]
        return losses.mean(1) if self.reduction == "mean" else losses.sum(1)

    @torch.no_grad()
    def backward_update(
        self,
        params: dict[str, torch.Tensor],
        logits: torch.Tensor,
        y: torch.Tensor,
        cache,
        lr: torch.Tensor,
        alive: torch.Tensor,
        mask: bool = True,
    ) -> None:
        """W <- W - lr dW and b <- b - lr db for every layer, in place. lr, alive: [R].

        `mask=False` (every run known to be alive) skips the masks that keep frozen runs exact."""
        inputs, pre = cache
        b = logits.shape[3 - self.f]
        defer, p = self.deferred_layers(params, b), self.rows
        scale = (lr / b if self.reduction == "mean" else lr).view(-1, 1, 1)
        target = y.unsqueeze(self.f)
        minus_one = self._minus_one.get(target.shape)
        if minus_one is None or minus_one.dtype != logits.dtype or minus_one.device != logits.device:
            minus_one = torch.full(target.shape, -1.0, dtype=logits.dtype, device=logits.device)
            self._minus_one[target.shape] = minus_one
        delta = torch.softmax(logits, dim=self.f).scatter_add_(self.f, target, minus_one)  # d(loss)/d(logits)
        delta.mul_(scale)  # times lr: the lr rides along through every layer below
        if mask:
            live = alive.view(-1, 1, 1)
            delta = torch.where(live, delta, 0)
        for i in reversed(range(self.n_layers)):
            w, bias, a = params[f"net.{2 * i}.weight"], params[f"net.{2 * i}.bias"], inputs[i]
            below = None
            if i > 0:  # the gradient for the layer below, through the weights before their update
                grad_a = torch.bmm(w.transpose(1, 2), delta) if self.feature_major else torch.bmm(delta, w)
                if p and i in self.pending:  # delta W_now = delta W - (delta D^T) A
                    pa, _, _, pd_t = self.pending[i]
                    grad_a.baddbmm_(torch.bmm(delta, pd_t), pa, alpha=-1)
                below = self.act_backward(grad_a, pre[i - 1], a)
                if mask:
                    a = torch.where(live, a, 0)
            if i in defer:  # the update joins the deferred ones: two small copies instead of a pass over W
                if i not in self.pending:
                    pa, pd = (a.new_zeros(w.shape[0], self.defer_rows, n) for n in (a.shape[2], delta.shape[2]))
                    self.pending[i] = (pa, pd, pa.transpose(1, 2), pd.transpose(1, 2))
                pa, pd = self.pending[i][:2]
                pa[:, p : p + b].copy_(a)
                pd[:, p : p + b].copy_(delta)
            elif self.feature_major:
                w.baddbmm_(delta, a.transpose(1, 2), alpha=-1)
            else:
                w.baddbmm_(delta.transpose(1, 2), a, alpha=-1)
            bias.sub_(delta.sum(3 - self.f))
            if below is not None:
                delta = below
        if defer:
            self.rows = p + b
