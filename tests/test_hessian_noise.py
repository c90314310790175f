"""B_noise = tr(HΣ)/(GᵀHG) (McCandlish et al. 2018, eq. 2.7) checked against slow, obvious references: the explicit
Hessian (torch.func.hessian over the flattened parameters) and a loop of single-example backward passes, in
float64; and the closed forms of linear regression with Gaussian inputs, isotropic and anisotropic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import user_models
from torch import nn
from torch.func import functional_call

from batchlab import noise_scale
from batchlab.analysis.noise import (
    bootstrap_hessian_noise,
    bootstrap_per_example_ci,
    hessian_noise_estimates,
    percentile_interval,
    ratio_replicates,
)
from batchlab.engine import RunSpec, train_group
from batchlab.engine.curvature import hessian_vector_products
from batchlab.engine.data import load_for, template_model
from batchlab.engine.spec import Checkpoint, TaskSpec
from batchlab.engine.step import per_example_grads
from batchlab.executors import TaskUnit, execute
from batchlab.models import MLP
from batchlab.noise import format_noise_scale
from batchlab.probes import per_run_loss

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
KEYS = (
    "b_noise b_noise_lo b_noise_hi trace_h_sigma g_h_g b_simple b_simple_lo b_simple_hi trace_sigma grad_sq_norm "
    "mean_loss examples"
).split()


def rel(a, b) -> float:
    return abs(a - b) / abs(b)


# --- references -------------------------------------------------------------------------------------------------


def explicit(module, params, x, y, task, loss_fn=None):
    """(per-example gradients [n, P] by a loop of single-example backward passes, H [P, P] of the mean loss by
    torch.func.hessian over the flattened parameters), float64 numpy."""
    names = list(params)
    shapes = [params[k].shape for k in names]
    theta = torch.cat([params[k].reshape(-1) for k in names]).detach()

    def unflatten(t):
        out, at = {}, 0
        for k, s in zip(names, shapes):
            out[k] = t[at : at + math.prod(s)].reshape(s)
            at += math.prod(s)
        return out

    def mean_loss(t, xb, yb):
        out = functional_call(module, unflatten(t), (xb,))
        return per_run_loss(out[None], yb[None], task, "mean", loss_fn)[0]

    grads = []
    for i in range(x.shape[0]):
        leaf = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(mean_loss(leaf, x[i : i + 1], y[i : i + 1]), leaf)
        grads.append(g)
    hessian = torch.func.hessian(lambda t: mean_loss(t, x, y))(theta)
    return torch.stack(grads).numpy(), hessian.numpy()


def brute_force(grads: np.ndarray, hessian: np.ndarray, fpc: float = 1.0) -> dict[str, float]:
    """The estimators written out with numpy: the sample covariance (ddof 1), tr(HS), ḡᵀHḡ − fpc tr(HS)/n."""
    n = grads.shape[0]
    cov = np.cov(grads.T, ddof=1)
    mean = grads.mean(0)
    trace_h, trace = float(np.trace(hessian @ cov)), float(np.trace(cov))
    g_h_g = float(mean @ hessian @ mean) - fpc * trace_h / n
    grad_sq = float(mean @ mean) - fpc * trace / n
    return {
        "trace_h_sigma": trace_h,
        "g_h_g": g_h_g,
        "b_noise": trace_h / g_h_g,
        "trace_sigma": trace,
        "grad_sq_norm": grad_sq,
        "b_simple": trace / grad_sq,
    }


def closed_form(c: np.ndarray, d: np.ndarray, s: float) -> tuple[float, float]:
    """(B_noise, B_simple) of the loss ½(xᵀw − y)², x ~ N(0, C), y = xᵀw* + N(0, s²), at w = w* + d:
    G = Cd, H = C, Σ = Cd dᵀC + (dᵀCd + s²) C (Gaussian fourth moments)."""
    c2, c3, dcd = c @ c, c @ c @ c, float(d @ c @ d)
    b_noise = (d @ c3 @ d + (dcd + s * s) * np.trace(c2)) / (d @ c3 @ d)
    b_simple = (d @ c2 @ d + (dcd + s * s) * np.trace(c)) / (d @ c2 @ d)
    return float(b_noise), float(b_simple)


def half_squared_error(out, target):
    return 0.5 * (out - target).pow(2).mean()


def gaussian_regression(eigenvalues, d0, s: float, n: int, seed: int):
    """x ~ N(0, C) with C = U diag(eigenvalues) Uᵀ (U a seeded rotation), y = xᵀw* + N(0, s²); a bias-free
    nn.Linear at w* + d, d = U d0. Returns (model, x, y, C, d)."""
    gen = torch.Generator().manual_seed(seed)
    dim = len(eigenvalues)
    u, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    lam = torch.as_tensor(eigenvalues, dtype=torch.float64)
    c = u @ torch.diag(lam) @ u.T
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64) * lam.sqrt() @ u.T
    w_star = torch.randn(dim, generator=gen, dtype=torch.float64)
    y = (x @ w_star + s * torch.randn(n, generator=gen, dtype=torch.float64)).unsqueeze(1)
    d = u @ torch.as_tensor(d0, dtype=torch.float64)
    model = nn.Linear(dim, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_((w_star + d)[None])
    return model, x, y, c.numpy(), d.numpy()


ISOTROPIC = ([2.0] * 6, [1.0, 0.5, -0.3, 0.2, 0.0, 0.1], 0.5)
ANISOTROPIC = ([100.0, 10, 10, 10, 10, 10], [0.3, 0, 0, 0, 0, 0], 1.0)  # eigenvalues 10x apart


# --- exact finite-sample identities -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "linear", "bn-cnn"])
def test_hessian_vector_products_and_estimates_equal_the_explicit_hessian(kind):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    y = (torch.rand(12, generator=gen) < 0.2).long()  # mostly class 0: a gradient above the noise of 12
    buffers = None
    torch.manual_seed(0)  # the modules' own init: the same whatever ran before
    if kind == "mlp":
        module, task = MLP((5, 4, 3), "tanh").double(), "classification"
    elif kind == "linear":
        module, task = nn.Linear(5, 1).double(), "regression"
        # targets far from the initial fit (a slope of 3), so that the gradient is above the noise of 12 examples
        y = x.sum(1, keepdim=True) * 3 + 0.1 * torch.randn(12, 1, generator=gen, dtype=torch.float64)
    else:  # BatchNorm on running statistics (made up, not the initial 0 and 1), as per_example_grads' bn_mode="eval"
        module, task = user_models.bn_cnn(channels=2, classes=3, size=4).double(), "classification"
        x = torch.randn(12, 1, 4, 4, generator=gen, dtype=torch.float64)
        for name, b in module.named_buffers():
            if b.is_floating_point():
                b.copy_(torch.rand(b.shape, generator=gen, dtype=torch.float64) + 0.5)
        buffers = {k: v.detach() for k, v in module.named_buffers()}
    params = {k: v.detach() for k, v in module.named_parameters()}
    grads, hessian = explicit(module.eval(), params, x, y, task)
    module.train()  # the functions put it in evaluation mode themselves
    # the engine's per-example gradients and H g_i (forward-over-reverse, in chunks of 5 vectors)
    g, _ = per_example_grads(module, params, x, y, task=task, buffers=buffers)
    hv = hessian_vector_products(module, params, buffers, x, y, g, task=task, chunk_size=5)
    assert module.training  # its mode restored
    flat_g = torch.cat([t.flatten(1) for t in g.values()], 1).numpy()
    flat_hv = torch.cat([t.flatten(1) for t in hv.values()], 1).numpy()
    assert np.abs(flat_g - grads).max() <= 1e-12 * np.abs(grads).max()
    want = grads @ hessian  # H symmetric: row i is (H g_i)ᵀ
    assert np.linalg.norm(flat_hv - want) <= 1e-10 * np.linalg.norm(want)
    # split examples of H: the mean's Hessian from parts weighted by their share
    parts = hessian_vector_products(module, params, buffers, x, y, g, task=task, example_chunk=5)
    flat_parts = torch.cat([t.flatten(1) for t in parts.values()], 1).numpy()
    assert np.linalg.norm(flat_parts - want) <= 1e-10 * np.linalg.norm(want)
    fpc = 1 - 12 / 40
    est = hessian_noise_estimates(flat_g @ flat_hv.T, fpc=fpc)
    ref = brute_force(grads, hessian, fpc)
    assert ref["g_h_g"] > 0 and ref["grad_sq_norm"] > 0
    for name in ("trace_h_sigma", "g_h_g", "b_noise"):
        assert rel(getattr(est, name), ref[name]) < 1e-10, name
    plain = hessian_noise_estimates(flat_g @ flat_g.T, fpc=fpc)  # H = I: B_simple
    assert rel(plain.b_noise, ref["b_simple"]) < 1e-10


SMALL = dict(batch_size=32, lr=0.05, epochs=1, probes=())
SEED = 1  # the task's draw of 12 of 40: both denominators positive at these checkpoints (finite ratios to compare)
FLAT5 = dict(dataset="user_models:flat", dataset_args={"features": 5, "n_train": 40}, batch_size=8)
TINY = dict(precision="float64", epochs=1, lr=0.1, probes=())


@pytest.mark.parametrize(
    "run, args",
    [
        (RunSpec(model="mlp", widths=(4,), activation="tanh", **FLAT5, **TINY), {"hessian_examples": 20}),
        (
            RunSpec(model="linear", widths=(), dataset="regression", regression=(40, 4, 0.5, 0), batch_size=8, **TINY),
            {},
        ),
        (RunSpec(model="user_models:mlp", model_args={"sizes": [5, 4, 3], "activation": "tanh"}, **FLAT5, **TINY), {}),
    ],
    ids=["builtin-mlp", "linear", "user-mlp"],
)
def test_task_equals_brute_force_on_the_explicit_hessian(run, args):
    """The task at a float64 checkpoint: 12 of the 40 training examples (the seed's draw), H over the first
    `hessian_examples` of the same draw; every scalar within 1e-10 of the numpy formulas."""
    (trained,) = train_group([run], device="cpu", checkpoints={1})
    spec = TaskSpec(
        kind="hessian-noise-scale", args={"examples": 12, "bootstrap": 20, **args}, seed=SEED,
        start=Checkpoint(run=run, epoch=1),
    )  # fmt: skip
    r = execute(TaskUnit(spec, trained.checkpoints[1]), CPU, None)
    assert r.status == "finished", r.error
    data = load_for(run, CPU)
    module = template_model(run, data).double()
    params = {k.removeprefix("param:"): torch.as_tensor(v) for k, v in trained.checkpoints[1].items()}
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(SEED))
    grads, _ = explicit(module, params, data.x_train[perm[:12]], data.y_train[perm[:12]], data.task)
    n_h = args.get("hessian_examples", 12)
    _, hessian = explicit(module, params, data.x_train[perm[:n_h]], data.y_train[perm[:n_h]], data.task)
    ref = brute_force(grads, hessian, fpc=1 - 12 / 40)
    assert ref["g_h_g"] > 0 and ref["grad_sq_norm"] > 0
    for name, value in ref.items():
        assert rel(r.scalars[name], value) < 1e-10, name
    assert r.scalars["examples"] == 12 and r.scalars["hessian_examples"] == n_h
    assert r.arrays["bootstrap_b_noise"].shape == r.arrays["bootstrap_b_simple"].shape == (20,)


def test_with_h_the_identity_the_bootstrap_is_b_simples():
    """One rule for both: with Q the Gram matrix, the replicates' interval is `bootstrap_per_example_ci`'s."""
    gen = torch.Generator().manual_seed(0)
    g = (torch.randn(50, 8, generator=gen, dtype=torch.float64) + 0.4).numpy()
    mean_sq = float(np.square(g.mean(0)).sum())
    for seed in (0, 1):
        want = bootstrap_per_example_ci(np.square(g).sum(1), g, mean_sq, resamples=500, seed=seed)
        got = percentile_interval(ratio_replicates(*bootstrap_hessian_noise(g @ g.T, resamples=500, seed=seed)))
        assert got == pytest.approx(want, rel=1e-12)


# --- linear regression: the closed forms ----------------------------------------------------------------------------


def regression_estimates(problem, n: int, n_hessian: int, seed: int):
    """B_noise and B_simple with their 99 % intervals from n per-example gradients (the engine's, under the
    user's loss) and H over n_hessian examples (the first n of them the gradients' own)."""
    model, x, y, c, d = gaussian_regression(*problem, n=n_hessian, seed=seed)
    params = {k: v.detach() for k, v in model.named_parameters()}
    g, _ = per_example_grads(model, params, x[:n], y[:n], task="regression", loss_fn=half_squared_error)
    hv = hessian_vector_products(model, params, None, x, y, g, loss_fn=half_squared_error, chunk_size=256)
    flat_g, flat_hv = g["weight"].flatten(1), hv["weight"].flatten(1)
    out = {}
    for name, q in (("noise", flat_g @ flat_hv.T), ("simple", flat_g @ flat_g.T)):
        reps = ratio_replicates(*bootstrap_hessian_noise(q, resamples=300, seed=seed))
        out[name] = (hessian_noise_estimates(q).b_noise, percentile_interval(reps, 0.99))
    return out, closed_form(c, d, problem[2])


# 4096 gradients, H over 16384 examples: over seeds 0-9 every closed form fell inside its 99 % interval and the
# anisotropic estimates were apart by more than the intervals (2048 of 16384: 9 of 10), about 5 s per seed
def test_isotropic_regression_b_noise_equals_b_simple_and_the_closed_form():
    est, (b_noise, b_simple) = regression_estimates(ISOTROPIC, 4096, 16384, seed=0)
    assert b_noise == pytest.approx(b_simple, rel=1e-12)  # H = cI: tr(HΣ)/GᵀHG = c tr(Σ) / (c |G|²)
    for name in ("noise", "simple"):
        value, (lo, hi) = est[name]
        assert lo <= b_simple <= hi and rel(value, b_simple) < 0.1, (name, value, lo, hi, b_simple)
    # the two estimates differ only by H's deviation from cI in the sample: far less than either interval
    (bn, (lo, hi)), (bs, _) = est["noise"], est["simple"]
    assert abs(bn - bs) < 0.25 * (hi - lo)


def test_anisotropic_regression_b_noise_differs_from_b_simple_as_the_closed_form_says():
    est, (b_noise, b_simple) = regression_estimates(ANISOTROPIC, 4096, 16384, seed=0)
    assert b_simple / b_noise > 1.2  # 2.67 against 2.17: the curvature weights the noise down
    (bn, (n_lo, n_hi)), (bs, (s_lo, s_hi)) = est["noise"], est["simple"]
    assert n_lo <= b_noise <= n_hi and s_lo <= b_simple <= s_hi
    assert n_hi < bs and bn < s_lo  # the estimates differ by more than either interval allows


# --- the public API ---------------------------------------------------------------------------------------------------


def test_noise_scale_reports_b_noise_within_its_interval_of_the_closed_form():
    """H over the same 2048 samples (as `noise_scale` takes it): seeds 0-7 all held the closed forms at 99 %."""
    model, x, y, c, d = gaussian_regression(*ANISOTROPIC, n=2048, seed=2)
    b_noise, b_simple = closed_form(c, d, ANISOTROPIC[2])
    ns = noise_scale(
        model, half_squared_error, (x, y), samples=2048, hessian_samples=2048, level=0.99, resamples=300, seed=2
    )
    assert ns.hessian_samples == 2048 and ns.b_noise_ci[0] <= b_noise <= ns.b_noise_ci[1], (ns.b_noise, ns.b_noise_ci)
    assert ns.ci[0] <= b_simple <= ns.ci[1]
    assert ns.b_noise == pytest.approx(ns.trace_h_sigma / ns.g_h_g) and ns.b_noise < ns.ci[0]
    assert "B_noise ≈" in str(ns) and "B_noise   ≈" in format_noise_scale(ns) and "tr(HΣ)" in format_noise_scale(ns)
    # the default: a seeded subset of 256 samples
    assert noise_scale(model, half_squared_error, (x, y), samples=1024, resamples=50).hessian_samples == 256


def test_noise_scale_without_b_noise():
    model, x, y, _, _ = gaussian_regression(*ISOTROPIC, n=512, seed=0)
    two = noise_scale(model, half_squared_error, (x, y), samples=512, estimator="two-batch", resamples=50)
    assert two.b_noise is None and two.b_noise_ci is None and two.g_h_g is None
    assert any("B_noise" in note and "two-batch" in note for note in two.notes)
    assert "B_noise ≈" not in str(two) and "B_noise   ≈" not in format_noise_scale(two)
    off = noise_scale(model, half_squared_error, (x, y), samples=512, hessian_samples=0, resamples=50)
    assert off.b_noise is None and not any("B_noise" in note for note in off.notes)
    with pytest.raises(ValueError, match="hessian_samples"):
        noise_scale(model, half_squared_error, (x, y), hessian_samples=1)


def test_noise_scale_says_why_when_hessian_vector_products_fail():
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.2), nn.Linear(8, 1)).double()
    _, x, y, _, _ = gaussian_regression(*ISOTROPIC, n=256, seed=0)
    ns = noise_scale(model, half_squared_error, (x, y), samples=256, resamples=50)
    assert ns.b_noise is None and any("B_noise not measured" in note for note in ns.notes)


# --- the task at checkpoints ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run",
    [
        RunSpec(train_subset=2048, test_subset=200, widths=(16, 16), batch_size=256, lr=0.05, epochs=1, probes=()),
        RunSpec(model="user_models:transformer", dataset="user_models:tokens", dataset_args={"n_train": 256}, **SMALL),
        RunSpec(model="user_models:bn_cnn", dataset="user_models:images", dataset_args={"n_train": 256}, **SMALL),
    ],
    ids=["mnist-mlp", "user-transformer", "user-bn-cnn"],
)
def test_task_runs_at_a_checkpoint(run):
    """At the start (epoch 0). The MNIST MLP and the transformer have gradients well above the noise of 128
    examples, so every scalar is finite; the BatchNorm CNN's (random images) is not: B_noise may be +inf there
    (GᵀHG ≤ 0), and its intervals unbounded above."""
    (trained,) = train_group([run], device="cpu", checkpoints={0})
    spec = TaskSpec(kind="hessian-noise-scale", args={"examples": 128}, start=Checkpoint(run=run, epoch=0))
    r = execute(TaskUnit(spec, trained.checkpoints[0]), CPU, None)
    assert r.status == "finished", r.error
    assert set(KEYS) <= set(r.scalars) and r.scalars["examples"] == 128
    assert r.arrays["bootstrap_b_noise"].shape == r.arrays["bootstrap_b_simple"].shape == (200,)
    assert r.scalars["b_noise_lo"] <= r.scalars["b_noise"] <= r.scalars["b_noise_hi"]
    assert r.scalars["b_simple_lo"] <= r.scalars["b_simple"] <= r.scalars["b_simple_hi"]
    if "bn_cnn" in run.model:
        assert all(math.isfinite(r.scalars[k]) for k in ("trace_h_sigma", "g_h_g", "trace_sigma", "mean_loss"))
    else:
        assert all(math.isfinite(r.scalars[k]) for k in KEYS), r.scalars


def test_gradient_tasks_use_the_runs_own_loss():
    """`gradient-norms` and `noise-scale` differentiate the run's loss (`--loss`), not the task's."""
    sizes = {"sizes": [5, 4, 3]}
    run = RunSpec(model="user_models:mlp", model_args=sizes, loss="user_models:smoothed_ce", **FLAT5, **TINY)
    (trained,) = train_group([run], device="cpu", checkpoints={1})
    data = load_for(run, CPU)
    module = template_model(run, data).double()
    params = {k.removeprefix("param:"): torch.as_tensor(v) for k, v in trained.checkpoints[1].items()}
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))[:16]
    grads, _ = explicit(module, params, data.x_train[perm], data.y_train[perm], data.task, user_models.smoothed_ce)
    spec = TaskSpec(kind="gradient-norms", args={"examples": 16}, start=Checkpoint(run=run, epoch=1))
    r = execute(TaskUnit(spec, trained.checkpoints[1]), CPU, None)
    assert r.status == "finished", r.error
    assert r.arrays["sq_norms"] == pytest.approx(np.square(grads).sum(1), rel=1e-10)
    args = {"examples": 40, "small_batch": 4, "big_batch": 8, "draws": 2, "bootstrap": 10}
    spec = TaskSpec(kind="noise-scale", args=args, start=Checkpoint(run=run, epoch=1))
    r = execute(TaskUnit(spec, trained.checkpoints[1]), CPU, None)
    all_grads, _ = explicit(module, params, data.x_train, data.y_train, data.task, user_models.smoothed_ce)
    trace = float(np.trace(np.cov(all_grads.T, ddof=1)))
    assert r.scalars["per_example_trace_sigma"] == pytest.approx(trace, rel=1e-10)
