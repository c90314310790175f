"""The gradient noise scale of any model at its current weights (McCandlish et al. 2018, arXiv:1812.06162).

    from batchlab import noise_scale
    ns = noise_scale(model, loss_fn, (x, y), samples=1024)
    print(ns)  # B_simple, its confidence interval, |G|², tr(Σ) and what they mean for the batch size

B_simple = tr(Σ) / |G|² compares the noise of a single example's gradient (tr(Σ), the summed variance) with
the squared norm of the true gradient. McCandlish et al.'s model is about the Hessian-weighted B_noise (below),
of which B_simple is the estimate when the Hessian is a multiple of the identity: the steps to a given loss are
S = S_min (1 + B_noise / B), so a doubled batch nearly halves the steps well below B_noise, saves a third of
them at B_noise / 2 and a quarter at B_noise, and training at B = B_noise takes about twice the minimum steps
and twice the minimum examples. This lab's own measurements (`critical-batch`) found B_simple a poor proxy for
the batch size where the halving stops, so the recommendation presents it as one. Two estimators
(formulas in `analysis.noise`):

- "per-example": every example's gradient by `torch.func` (`vmap` of `grad` over `functional_call`), a
  chunk of examples at a time, keeping only ‖g_i‖², the running sum of the gradients and a fixed-size
  sketch of each g_i for the bootstrap. Works for any `nn.Module` whose ops `vmap` supports.
- "two-batch": only ordinary backward passes. The samples are split into disjoint "draws" of a big
  batch, each cut into small batches, as data-parallel training gets them for free (per-device and
  all-reduced gradients); the norms are averaged over draws and the ratio taken last.
- "auto": per-example, falling back to two-batch if `torch.func` fails (an unsupported op, memory).

Beside B_simple, the per-example estimator also gives McCandlish et al.'s B_noise = tr(HΣ)/(GᵀHG) (H the
Hessian) on at most `hessian_samples` of the samples, from their gradients' Hessian-vector products
(`engine.curvature`); it equals B_simple when H is a multiple of the identity.

Both assume the loss of a batch is the mean of per-example losses; BatchNorm in training mode breaks it
(examples interact through the batch statistics) and is refused.

Modules: `measure` (`noise_scale`, its checks of the inputs), `estimators` (the two estimators run on a
model), `text` (the recommendation and the printed summary), `factory` (`--model package.module:function`).
"""

from __future__ import annotations

from .estimators import check_examples_independent, module_per_example_grads
from .factory import load_factory
from .measure import ESTIMATORS, NoiseScale, default_batch_sizes, noise_scale
from .text import CITATION, format_b, format_noise_scale, recommendation

__all__ = [
    "CITATION",
    "ESTIMATORS",
    "NoiseScale",
    "check_examples_independent",
    "default_batch_sizes",
    "format_b",
    "format_noise_scale",
    "load_factory",
    "module_per_example_grads",
    "noise_scale",
    "recommendation",
]
