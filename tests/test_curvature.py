"""The curvature tools checked against slow, obvious references: matrices with known spectra, the explicit Hessian
(torch.func.hessian over the flattened parameters) of tiny models in float64, the closed forms of linear regression
(H = 2 X̃ᵀX̃ / n for the mean squared error, X̃ the inputs with a column of ones for the bias), vertex enumeration
for ε-sharpness, and torch's own Adam step for Adam's preconditioner."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import user_models
from conftest import cli_run
from torch import nn
from torch.func import functional_call

import batchlab
from batchlab.analysis.landscape import filter_normalised
from batchlab.analysis.spectrum import (
    adam_preconditioner,
    hutchinson,
    lanczos,
    power_iteration,
    preconditioned,
)
from batchlab.curvature import interpolation_losses, landscape_plane, sharpness
from batchlab.engine import RunSpec, train_group
from batchlab.engine.curvature import MeanLoss, batch_sharpness_ratios, hessian_vector_products
from batchlab.engine.data import load_for, template_model
from batchlab.engine.spec import Checkpoint, TaskSpec
from batchlab.executors import TaskUnit, execute
from batchlab.probes import per_run_loss

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
D = torch.float64


def rel(a, b) -> float:
    return abs(a - b) / abs(b)


# --- references -------------------------------------------------------------------------------------------------


def known_matrix(n=200, top=(10.0, 5.0), low=(-4.0, 4.0), seed=0):
    """A symmetric matrix with eigenvalues `top` and n - len(top) spread over `low`, and its eigenvectors."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))
    values = torch.cat([torch.tensor(top, dtype=D), torch.linspace(*low, n - len(top), dtype=D)])
    return q @ torch.diag(values) @ q.T, values, q


def as_matvec(*matrices):
    a = torch.stack(matrices)
    return lambda v: torch.einsum("rij,rmj->rmi", a, v)


def tiny():
    """A 5-4-3 tanh MLP in float64 (39 parameters) on 40 examples of user_models.flat."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y, _, _ = user_models.flat(features=5, n_train=40)
    return model, F.cross_entropy, x.double(), y


def linear_regression(n=64, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=D) * torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=D)[:d]
    y = x @ torch.randn(d, generator=g, dtype=D) + 0.3 * torch.randn(n, generator=g, dtype=D)
    model = nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=D))
        model.bias.fill_(0.5)
    return model, (lambda out, t: F.mse_loss(out.squeeze(-1), t)), x, y


def closed_form_hessian(x):
    """2 X̃ᵀX̃ / n in the order (weight, bias) of nn.Linear's flattened parameters."""
    xt = torch.cat([x, torch.ones(x.shape[0], 1, dtype=D)], 1)
    return 2 * xt.T @ xt / x.shape[0]


def explicit_hessian(model, loss_fn, x, y, params=None):
    """H [P, P] of the mean loss over (x, y) by torch.func.hessian over the flattened parameters, float64."""
    params = params or {k: p.detach() for k, p in model.named_parameters()}
    names, shapes = list(params), [params[k].shape for k in params]
    theta = torch.cat([params[k].reshape(-1) for k in names])

    def unflatten(t):
        out, at = {}, 0
        for k, s in zip(names, shapes):
            out[k] = t[at : at + math.prod(s)].reshape(s)
            at += math.prod(s)
        return out

    return torch.func.hessian(lambda t: loss_fn(functional_call(model, unflatten(t), (x,)), y))(theta)


def flat_grad(model, loss_fn, x, y):
    loss = loss_fn(model(x), y)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


# --- eigensolvers on known spectra -------------------------------------------------------------------------------


def test_power_iteration_converges_to_1e6_within_the_stated_iterations():
    """|λ2/λ1| = 1/2: the residual shrinks by half per iteration, from about tan θ0 (the start's angle to the top
    vector), so log(tol / (2 tan θ0)) / log(1/2) iterations suffice; the eigenvalue is then within 1e-6 (far
    better: the error is the residual squared over the gap)."""
    a, _, q = known_matrix()
    v0 = torch.randn(1, 200, generator=torch.Generator().manual_seed(1), dtype=D)
    cos = abs(float(v0[0] @ q[:, 0])) / float(v0.norm())
    bound = math.ceil(math.log(1e-6 / (2 * math.tan(math.acos(cos)))) / math.log(0.5))
    e = power_iteration(as_matvec(a), v0, max_iter=200, tol=1e-6)
    assert bool(e.converged[0]) and int(e.iterations[0]) <= bound, (int(e.iterations[0]), bound)
    assert rel(float(e.values[0, 0]), 10.0) < 1e-6 and float(e.residual[0, 0]) <= 1e-6
    assert e.history.shape == (int(e.iterations[0]), 1) and rel(float(e.history[-1, 0]), 10.0) < 1e-6
    assert abs(float(e.vectors[0, 0] @ q[:, 0])) > 1 - 1e-6


def test_lanczos_meets_the_kaniel_paige_saad_bound():
    """Lanczos's error after m steps is at most (λ1 − λn) (tan θ0 / T_{m−1}(1 + 2γ))², γ = (λ1 − λ2)/(λ2 − λn)
    (Saad 2011, thm 6.4): the m at which that is 1e-6 λ1 is enough, and converged (residual ≤ tol) soon after."""
    a, values, q = known_matrix()
    v0 = torch.randn(1, 200, generator=torch.Generator().manual_seed(1), dtype=D)
    cos = abs(float(v0[0] @ q[:, 0])) / float(v0.norm())
    gamma = (10 - 5) / (5 - (-4))
    m = next(
        m
        for m in range(2, 200)
        if 14 * (math.tan(math.acos(cos)) / math.cosh((m - 1) * math.acosh(1 + 2 * gamma))) ** 2 <= 1e-5
    )
    e = lanczos(as_matvec(a), v0, k=1, max_iter=m, tol=1e-12)
    assert rel(float(e.values[0, 0]), 10.0) < 1e-6, (m, float(e.values[0, 0]))
    e = lanczos(as_matvec(a), v0, k=3, max_iter=200, tol=1e-8)
    assert bool(e.converged[0]) and int(e.iterations[0]) < 200
    for got, want in zip(e.values[0].tolist(), values.sort(descending=True).values[:3].tolist()):
        assert rel(got, want) < 1e-6
    v = e.vectors[0]
    assert torch.allclose(v @ v.T, torch.eye(3, dtype=D), atol=1e-8)  # orthonormal Ritz vectors


def test_lanczos_finds_the_largest_by_value_and_power_iteration_by_magnitude():
    a, _, _ = known_matrix(top=(3.0, 2.0, -9.0), low=(-1.0, 1.0))  # λ_min = -9 dominates in magnitude
    v0 = torch.randn(1, 200, generator=torch.Generator().manual_seed(2), dtype=D)
    assert rel(float(lanczos(as_matvec(a), v0, k=1, tol=1e-9).values[0, 0]), 3.0) < 1e-6
    assert rel(float(power_iteration(as_matvec(a), v0, max_iter=500, tol=1e-6).values[0, 0]), -9.0) < 1e-6


def test_a_start_in_an_invariant_subspace_goes_on_to_the_other_eigenvalues():
    """From the top eigenvector itself the Krylov space stops at once (β = 0); Lanczos restarts orthogonally and
    still finds the top 3, with no spurious copy of the first."""
    a, values, q = known_matrix(n=50)
    e = lanczos(as_matvec(a), q[:, 0][None].clone(), k=3, max_iter=50, tol=1e-8, generator=torch.Generator())
    assert bool(e.converged[0])
    for got, want in zip(e.values[0].tolist(), values.sort(descending=True).values[:3].tolist()):
        assert rel(got, want) < 1e-6


def test_runs_are_solved_independently_and_an_unconverged_one_is_flagged():
    """Two operators in one batch equal each alone; a run stopped by max_iter is not converged, its settled value
    NaN beside a finite estimate, its iterations the whole budget."""
    a1, _, _ = known_matrix(seed=0)
    a2, _, _ = known_matrix(top=(4.01,), seed=3)  # 0.01 above a dense spectrum: slow
    v0 = torch.randn(2, 200, generator=torch.Generator().manual_seed(4), dtype=D)
    both = lanczos(as_matvec(a1, a2), v0, k=1, max_iter=30, tol=1e-8)
    alone = lanczos(as_matvec(a1), v0[:1], k=1, max_iter=30, tol=1e-8)
    assert bool(both.converged[0]) and not bool(both.converged[1])
    assert int(both.iterations[0]) == int(alone.iterations[0]) and int(both.iterations[1]) == 30
    assert float(both.values[0, 0]) == pytest.approx(float(alone.values[0, 0]), rel=1e-12)
    assert math.isnan(float(both.settled()[1, 0])) and math.isfinite(float(both.values[1, 0]))
    assert float(both.residual[1, 0]) > 1e-8 and math.isfinite(float(both.last_change[1]))
    p = power_iteration(as_matvec(a2), v0[1:], max_iter=5, tol=1e-8)
    assert not bool(p.converged[0]) and int(p.iterations[0]) == 5 and math.isnan(float(p.settled()[0, 0]))


def test_a_run_with_non_finite_products_is_nan_and_does_not_hold_up_the_others():
    """A diverged run's weights give NaN or inf products: its values are NaN, not converged, after one product;
    the other runs of the batch are solved as if alone."""
    a, values, _ = known_matrix(n=50)
    v0 = torch.randn(3, 50, generator=torch.Generator().manual_seed(0), dtype=D)
    for solve in (lambda mv: lanczos(mv, v0, k=2, tol=1e-8), lambda mv: power_iteration(mv, v0, tol=1e-8)):
        e = solve(as_matvec(a, torch.full_like(a, torch.nan), torch.full_like(a, torch.inf)))
        assert bool(e.converged[0]) and rel(float(e.values[0, 0]), 10.0) < 1e-6
        assert not e.converged[1:].any() and e.values[1:].isnan().all() and (e.iterations[1:] == 1).all()


def test_hutchinson_is_exact_for_a_diagonal_and_unbiased_with_the_theoretical_error():
    diag = torch.diag(torch.linspace(-1, 3, 30, dtype=D))
    t = hutchinson(as_matvec(diag), 1, 30, samples=8, generator=torch.Generator().manual_seed(0), dtype=D)
    assert float(t.estimate[0]) == pytest.approx(float(diag.trace()), abs=1e-12) and float(t.standard_error[0]) < 1e-12
    a, _, _ = known_matrix(n=60)
    t = hutchinson(as_matvec(a), 1, 60, samples=4000, chunk=500, generator=torch.Generator().manual_seed(0), dtype=D)
    sd = math.sqrt(2 * float((a**2).sum() - (a.diagonal() ** 2).sum()))  # one sample's sd
    assert abs(float(t.estimate[0]) - float(a.trace())) < 4 * float(t.standard_error[0])
    assert float(t.standard_error[0]) == pytest.approx(sd / math.sqrt(4000), rel=0.1)


def test_adams_preconditioner_is_the_one_torch_adam_steps_with():
    """Cohen et al. 2022's P = (1 − β1^t)(sqrt(v̂) + ε): Adam's step is exactly −lr m / P, m its raw first moment."""
    model, loss_fn, x, y = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.95), eps=1e-6)
    for _ in range(3):
        before = [p.detach().clone() for p in model.parameters()]
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        for p, b in zip(model.parameters(), before):
            st = opt.state[p]
            pre = adam_preconditioner(st["exp_avg_sq"], float(st["step"]), 0.8, 0.95, 1e-6)
            assert torch.allclose(p.detach() - b, -0.01 * st["exp_avg"] / pre, rtol=1e-10, atol=1e-14)


# --- the engine's operator ---------------------------------------------------------------------------------------


def test_a_stack_of_runs_gives_each_run_its_own_hessian_products():
    """R = 3 runs with different weights in one batched product equal the explicit Hessian of each run."""
    model, loss_fn, x, y = tiny()
    g = torch.Generator().manual_seed(5)
    names = [k for k, _ in model.named_parameters()]
    stacked = {k: p.detach()[None] + 0.3 * torch.randn(3, *p.shape, generator=g, dtype=D) for k, p in
               model.named_parameters()}  # fmt: skip
    op = MeanLoss(model, stacked, None, x, y, loss_fn=loss_fn, example_chunk=16)
    v = torch.randn(3, 2, op.size, generator=g, dtype=D)
    hv = op.matvec(v)
    for r in range(3):
        h = explicit_hessian(model, loss_fn, x, y, {k: stacked[k][r] for k in names})
        assert torch.allclose(hv[r], v[r] @ h.T, rtol=1e-10, atol=1e-12)
    losses, grads = op.value_and_grad()
    for r in range(3):
        with torch.no_grad():
            want = loss_fn(functional_call(model, {k: stacked[k][r] for k in names}, (x,)), y)
        assert float(losses[r]) == pytest.approx(float(want), rel=1e-12)


def test_batch_sharpness_ratios_are_each_batchs_curvature_along_its_own_gradient():
    model, loss_fn, x, y = tiny()
    params = {k: p.detach()[None] for k, p in model.named_parameters()}
    ratios, sq = batch_sharpness_ratios(model, params, None, x, y, 8, 5, torch.Generator().manual_seed(3),
                                        loss_fn=loss_fn)  # fmt: skip
    gen = torch.Generator().manual_seed(3)
    for d in range(5):
        idx = torch.randperm(40, generator=gen)[:8]
        h = explicit_hessian(model, loss_fn, x[idx], y[idx])
        gb = flat_grad(model, loss_fn, x[idx], y[idx])
        assert float(ratios[0, d]) == pytest.approx(float(gb @ h @ gb / (gb @ gb)), rel=1e-10)
        assert float(sq[0, d]) == pytest.approx(float(gb @ gb), rel=1e-10)


# --- the public API against the exact Hessian and closed forms ----------------------------------------------------


def test_sharpness_matches_the_exact_hessian_of_a_tiny_model():
    model, loss_fn, x, y = tiny()
    exact = torch.linalg.eigvalsh(explicit_hessian(model, loss_fn, x, y)).flip(0)
    s = sharpness(model, loss_fn, (x, y), top_k=3, tol=1e-9, trace_samples=2000)
    assert s.converged and s.iterations <= 39
    for got, want in zip(s.top_eigenvalues, exact[:3].tolist()):
        assert rel(got, want) < 1e-6
    assert abs(s.trace - float(exact.sum())) < 4 * s.trace_se
    p = sharpness(model, loss_fn, (x, y), top_k=1, method="power", tol=1e-9, max_iter=2000, trace_samples=0)
    assert rel(p.lambda_max, float(exact[exact.abs().argmax()])) < 1e-6
    # the eigenvectors returned are the Hessian's: H y = λ y
    h = explicit_hessian(model, loss_fn, x, y)
    vec = torch.cat([s.eigenvectors[k][0].reshape(-1) for k, _ in model.named_parameters()])
    assert torch.allclose(h @ vec, s.lambda_max * vec, atol=1e-7 * s.lambda_max)


def test_linear_regression_matches_the_closed_form():
    """H = 2 X̃ᵀX̃ / n: every eigenvalue within 1e-6, the trace within 4 standard errors (and exactly tr H); batch
    sharpness at B = n is gᵀHg / gᵀg of the full batch, with no spread."""
    model, loss_fn, x, y = linear_regression()
    h = closed_form_hessian(x)
    exact = torch.linalg.eigvalsh(h).flip(0)
    s = sharpness(model, loss_fn, (x, y), top_k=5, tol=1e-10, trace_samples=500, batch_sizes=(64,), draws=3)
    for got, want in zip(s.top_eigenvalues, exact.tolist()):
        assert rel(got, want) < 1e-6
    assert abs(s.trace - float(h.trace())) < 4 * s.trace_se
    g = flat_grad(model, loss_fn, x, y)
    (b,) = s.batch_sharpness
    assert b.mean == pytest.approx(float(g @ h @ g / (g @ g)), rel=1e-10) and b.standard_error < 1e-10


def test_epsilon_sharpness_finds_the_largest_vertex_of_the_box():
    """The loss of linear regression is a convex quadratic, so its maximum over Keskar et al.'s box is at one of the
    2^5 vertices: enumerated, it is the value found (away from the minimum), and never exceeded (a lower bound)."""
    model, loss_fn, x, y = linear_regression()
    theta = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])
    xt = torch.cat([x, torch.ones(64, 1, dtype=D)], 1)
    f = lambda t: float(((xt @ t - y) ** 2).mean())  # noqa: E731
    for eps in (1e-3, 0.05):
        radius = eps * (theta.abs() + 1)
        best = max(f(theta + radius * torch.tensor(s, dtype=D)) for s in itertools.product((-1, 1), repeat=5))
        e = sharpness(model, loss_fn, (x, y), top_k=1, trace_samples=0, epsilon=eps, epsilon_iter=50).epsilon
        assert e.max_loss <= best * (1 + 1e-12) and e.max_loss == pytest.approx(best, rel=1e-9)
        assert e.value == pytest.approx(100 * (best - f(theta)) / (1 + f(theta)), rel=1e-6)


def test_adams_preconditioned_sharpness_matches_the_dense_matrix():
    model, loss_fn, x, y = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    h = explicit_hessian(model, loss_fn, x, y)
    pre = torch.cat([adam_preconditioner(opt.state[p]["exp_avg_sq"], 3.0, 0.9, 0.999, 1e-8).reshape(-1)
                     for p in model.parameters()])  # fmt: skip
    want = float(torch.linalg.eigvalsh(h / pre.sqrt()[:, None] / pre.sqrt()[None]).max())
    s = sharpness(model, loss_fn, (x, y), top_k=1, tol=1e-9, trace_samples=0, optimizer=opt)
    assert s.preconditioned.converged and rel(s.preconditioned.lambda_max, want) < 1e-6
    assert s.adam_threshold == pytest.approx(38 / 0.01) and "stability threshold" in str(s)
    # the same through the generic wrapper: P^-1/2 H P^-1/2 has P⁻¹H's eigenvalues
    v0 = torch.randn(1, h.shape[0], dtype=D, generator=torch.Generator().manual_seed(0))
    e = lanczos(preconditioned(as_matvec(h), pre[None]), v0, tol=1e-10)
    assert rel(float(e.values[0, 0]), float(torch.linalg.eigvals(h / pre[:, None]).real.max())) < 1e-6


def test_an_unconverged_estimate_reads_as_not_converged():
    model, loss_fn, x, y = tiny()
    s = sharpness(model, loss_fn, (x, y), top_k=3, max_iter=2, trace_samples=0)
    assert not s.converged and s.iterations == 2 and math.isnan(s.lambda_max)
    assert all(math.isfinite(v) for v in s.hessian.estimates[:2]) and math.isfinite(s.last_change)
    text = str(s)
    assert "NOT CONVERGED after 2 Hessian-vector products" in text and "last estimate" in text
    assert "2/λ_max" not in text  # no number derived from an unconverged estimate
    as_json = s.to_json()
    assert as_json["lambda_max"] is None and as_json["converged"] is False and as_json["iterations"] == 2
    json.dumps(as_json, allow_nan=False)


def test_a_warm_start_from_the_previous_result_converges_at_once():
    model, loss_fn, x, y = tiny()
    first = sharpness(model, loss_fn, (x, y), top_k=1, tol=1e-6, trace_samples=0)
    again = sharpness(model, loss_fn, (x, y), top_k=1, tol=1e-6, trace_samples=0, start=first)
    assert again.iterations == 1 < first.iterations and again.lambda_max == pytest.approx(first.lambda_max, rel=1e-9)


def test_hessian_products_on_a_transformer_match_finite_differences_and_its_eigenpairs():
    """Too large for an explicit Hessian (2747 parameters): the products match central differences of autograd
    gradients (reverse over forward was 10 % off here in torch 2.13), and the returned pairs satisfy Hy = λy."""
    torch.manual_seed(0)
    model = user_models.transformer().double()
    x, y, _, _ = user_models.tokens(n_train=32)
    loss_fn = lambda out, t: F.cross_entropy(out.flatten(0, 1), t.flatten())  # noqa: E731
    params = {k: p.detach() for k, p in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    v = {k: torch.randn(t.shape, generator=g, dtype=D) for k, t in params.items()}

    def grads(step):
        shifted = {k: (params[k] + step * v[k]).requires_grad_(True) for k in params}
        loss = loss_fn(functional_call(model, shifted, (x,)), y)
        return torch.autograd.grad(loss, list(shifted.values()))

    fd = torch.cat([((a - b) / 2e-5).reshape(-1) for a, b in zip(grads(1e-5), grads(-1e-5))])
    hv = hessian_vector_products(model, params, None, x, y, {k: t[None] for k, t in v.items()}, loss_fn=loss_fn)
    assert float((torch.cat([t.reshape(-1) for t in hv.values()]) - fd).norm() / fd.norm()) < 1e-7
    s = sharpness(model, loss_fn, (x, y), top_k=2, tol=1e-6, trace_samples=0)
    assert s.converged
    hv = hessian_vector_products(model, params, None, x, y, s.eigenvectors, loss_fn=loss_fn, eval_mode=False)
    for i, lam in enumerate(s.top_eigenvalues):
        r = torch.cat([(hv[k][i] - lam * s.eigenvectors[k][i]).reshape(-1) for k in params]).norm()
        assert float(r) <= 1e-6 * abs(lam)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "arnoldi"}, "unknown method"),
        ({"method": "power", "top_k": 2}, "top eigenvalue only"),
        ({"tol": 0}, "tol must be"),
        ({"max_iter": 0}, "max_iter must be"),
        ({"trace_samples": 1}, "trace_samples must be"),
        ({"batch_sizes": (0,)}, "batch_sizes must be"),
        ({"batch_sizes": (41,)}, "larger than the 40 examples"),
        ({"epsilon": -1.0}, "epsilon must be"),
        ({"examples": 1}, "examples must be"),
        ({"start": "previous"}, "start must be"),
    ],
)
def test_bad_arguments_are_one_clear_value_error(kwargs, match):
    model, loss_fn, x, y = tiny()
    with pytest.raises(ValueError, match=match):
        sharpness(model, loss_fn, (x, y), **kwargs)


def test_batchnorm_in_training_mode_and_active_dropout_are_refused():
    x, y, _, _ = user_models.images(n_train=8)
    with pytest.raises(ValueError, match="BatchNorm2d in training mode at 'features.1'.*model.eval"):
        sharpness(user_models.bn_cnn(), F.cross_entropy, (x, y))
    s = sharpness(user_models.bn_cnn().eval(), F.cross_entropy, (x, y), top_k=1, trace_samples=0)
    assert s.converged
    xf, yf, _, _ = user_models.flat(n_train=8)
    with pytest.raises(ValueError, match="dropout is active"):
        sharpness(user_models.dropout_mlp(), F.cross_entropy, (xf, yf))
    with pytest.raises(ValueError, match="sums over the batch"):
        sharpness(user_models.mlp(), lambda o, t: F.cross_entropy(o, t, reduction="sum"), (xf, yf))


def test_batchlab_sharpness_is_the_api():
    assert batchlab.sharpness is sharpness


# --- landscapes ---------------------------------------------------------------------------------------------------


def test_interpolation_is_the_loss_at_the_ends_and_a_parabola_for_a_quadratic_loss():
    model, loss_fn, x, y = linear_regression()
    a = {k: p.detach() for k, p in model.named_parameters()}
    b = {k: v + 0.5 for k, v in a.items()}
    alphas = np.linspace(-0.5, 1.5, 9)
    losses = interpolation_losses(model, a, b, (x, y), alphas, loss_fn=loss_fn)
    xt = torch.cat([x, torch.ones(64, 1, dtype=D)], 1)
    theta = lambda p: torch.cat([p["weight"].reshape(-1), p["bias"]])  # noqa: E731
    f = lambda t: float(((xt @ t - y) ** 2).mean())  # noqa: E731
    assert losses[2] == pytest.approx(f(theta(a)), rel=1e-12) and losses[6] == pytest.approx(f(theta(b)), rel=1e-12)
    d = theta(b) - theta(a)
    step = alphas[1] - alphas[0]
    second = np.diff(losses, 2) / step**2  # = dᵀHd for a quadratic, H = 2 X̃ᵀX̃ / n
    assert np.allclose(second, float(d @ closed_form_hessian(x) @ d), rtol=1e-8)
    # the task's loss by default: squared error for float targets
    assert interpolation_losses(model, a, b, (x, y[:, None]), [0.0])[0] == pytest.approx(f(theta(a)), rel=1e-12)


def test_the_plane_is_centred_on_the_loss_with_filter_normalised_directions():
    model, loss_fn, x, y = tiny()
    theta = {k: p.detach() for k, p in model.named_parameters()}
    d = filter_normalised(theta, torch.Generator().manual_seed(0))
    for k, w in theta.items():
        if w.dim() == 1:
            assert (d[k] == 0).all()
        else:
            assert torch.allclose(d[k].norm(dim=1), w.norm(dim=1), rtol=1e-12)
    grid = np.linspace(-1, 1, 5)
    losses = landscape_plane(model, model, (x, y), grid, seed=0, loss_fn=loss_fn)
    assert losses.shape == (5, 5)
    assert losses[2, 2] == pytest.approx(float(loss_fn(model(x), y).detach()), rel=1e-12)
    again = landscape_plane(model, theta, (x, y), (grid, grid[:3]), seed=0, loss_fn=loss_fn)
    assert np.array_equal(again, losses[:, :3])


# --- the probes: during training --------------------------------------------------------------------------------

FLAT5 = dict(dataset="user_models:flat", dataset_args={"features": 5, "n_train": 40}, batch_size=40)
TINY = dict(model="mlp", widths=(4,), activation="tanh", precision="float64", epochs=3, eval_every=1, **FLAT5)


def test_the_sharpness_probes_track_every_run_and_warm_start():
    """Full-batch runs of the tiny MLP (B = n, so batch sharpness is the full-batch gᵀHg/gᵀg): lambda_max at the
    last evaluation equals the explicit Hessian's at the final weights; later eigensolves start from the previous
    vector and need fewer products; the Adam run has a preconditioned sharpness, the SGD runs NaN."""
    probes = ("sharpness:examples=40:tol=1e-9", "batch_sharpness:draws=2", "adam_sharpness:examples=40:tol=1e-9")
    specs = [RunSpec(seed=s, lr=0.01, probes=probes, **TINY) for s in (0, 1)]
    specs.append(RunSpec(seed=2, optimizer="adam", lr=1e-3, probes=probes, **TINY))
    results = train_group(specs, device="cpu", keep_params=True)
    data = load_for(specs[0], CPU)
    for spec, res in zip(specs, results):
        module = template_model(spec, data).double()
        last = res.metrics[-1]
        params = {k: v.double() for k, v in res.params.items()}
        loss = lambda out, t: per_run_loss(out[None], t[None], "classification")[0]  # noqa: E731
        h = explicit_hessian(module, loss, data.x_train, data.y_train, params)
        assert rel(last["lambda_max"], float(torch.linalg.eigvalsh(h).max())) < 1e-6
        assert last["lambda_max_converged"] == 1.0 and last["lambda_max_residual"] <= 1e-9
        first_iters = res.metrics[0]["lambda_max_iterations"]
        assert all(m["lambda_max_iterations"] <= first_iters for m in res.metrics[1:])
        module.load_state_dict(params, strict=False)
        g = flat_grad(module, loss, data.x_train, data.y_train)
        assert last["batch_sharpness"] == pytest.approx(float(g @ h @ g / (g @ g)), rel=1e-8)
        is_adam = spec.optimizer == "adam"
        assert (last["adam_lambda_max"] is not None) == is_adam
        assert res.metrics[0]["adam_lambda_max"] is None  # before the first step there is no v
    assert results[2].metrics[-1]["adam_lambda_max"] > results[2].metrics[-1]["lambda_max"]


def test_every_sets_the_probes_own_cadence():
    (res,) = train_group([RunSpec(seed=0, probes=("metrics", "sharpness:every=2:examples=40"), **TINY)], device="cpu")
    assert [m["step"] for m in res.metrics] == [0, 1, 2, 3]
    assert ["lambda_max" in m for m in res.metrics] == [True, False, True, False]


def test_probe_options_are_checked():
    spec = RunSpec(seed=0, probes=("sharpness:sizes=3",), **{**TINY, "epochs": 1})
    with pytest.raises(ValueError, match="unknown probe options"):
        train_group([spec], device="cpu")
    spec = RunSpec(seed=0, probes=("metrics:examples=3",), **{**TINY, "epochs": 1})
    with pytest.raises(ValueError, match="takes no options"):
        train_group([spec], device="cpu")


# --- the tasks: at a checkpoint ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint():
    run = RunSpec(seed=0, lr=0.1, probes=(), **{**TINY, "epochs": 1, "eval_every": 0})
    (trained,) = train_group([run], device="cpu", checkpoints={0, 1})
    data = load_for(run, CPU)
    module = template_model(run, data).double()
    params = {k.removeprefix("param:"): torch.as_tensor(v) for k, v in trained.checkpoints[1].items()}
    loss = lambda out, t: per_run_loss(out[None], t[None], "classification")[0]  # noqa: E731
    return run, trained, data, module, params, loss


def _task(checkpoint, kind, args, epoch=1):
    run, trained = checkpoint[:2]
    spec = TaskSpec(kind=kind, args=args, seed=3, start=Checkpoint(run=run, epoch=epoch))
    r = execute(TaskUnit(spec, trained.checkpoints[epoch]), CPU, None)
    assert r.status == "finished", r.error
    return r


def test_the_hessian_spectrum_task_matches_the_exact_hessian(checkpoint):
    _, _, data, module, params, loss = checkpoint
    exact = torch.linalg.eigvalsh(explicit_hessian(module, loss, data.x_train, data.y_train, params)).flip(0)
    r = _task(checkpoint, "hessian-spectrum", {"examples": 40, "top_k": 3, "tol": 1e-9, "trace_samples": 400})
    for i in range(3):
        assert rel(r.scalars[f"eigenvalue_{i + 1}"], float(exact[i])) < 1e-6
    assert r.scalars["lambda_max"] == r.scalars["eigenvalue_1"] and r.scalars["converged"] == 1.0
    assert abs(r.scalars["trace"] - float(exact.sum())) < 4 * r.scalars["trace_se"]
    assert r.arrays["history"].shape == (r.scalars["iterations"],) and r.arrays["trace_samples"].shape == (400,)
    stopped = _task(checkpoint, "hessian-spectrum", {"examples": 40, "max_iter": 2, "trace_samples": 0})
    assert math.isnan(stopped.scalars["lambda_max"]) and stopped.scalars["converged"] == 0.0
    assert math.isfinite(stopped.scalars["lambda_max_estimate"]) and stopped.scalars["iterations"] == 2


def test_the_other_curvature_tasks_run_and_agree_with_references(checkpoint):
    _, trained, data, module, params, loss = checkpoint
    x, y = data.x_train, data.y_train
    r = _task(checkpoint, "batch-sharpness", {"batch_sizes": [40, 8], "draws": 3})
    h = explicit_hessian(module, loss, x, y, params)
    module.load_state_dict(params, strict=False)
    g = flat_grad(module, loss, x, y)
    assert r.scalars["batch_sharpness_40"] == pytest.approx(float(g @ h @ g / (g @ g)), rel=1e-8)
    assert r.arrays["ratios_8"].shape == (3,)
    r = _task(checkpoint, "epsilon-sharpness", {"epsilons": [1e-3], "max_iter": 5})
    assert r.scalars["epsilon_sharpness_0.001"] > 0 and r.scalars["max_loss_0.001"] > r.scalars["loss"]
    r = _task(checkpoint, "loss-plane", {"points": 5, "examples": 40})
    assert r.arrays["losses"].shape == (5, 5) and r.arrays["losses"][2, 2] == pytest.approx(r.scalars["loss"])
    r = _task(checkpoint, "loss-interpolation", {"alphas": [0.0, 0.5, 1.0], "examples": 40})
    with torch.no_grad():
        end = float(loss(module(x), y))
        init = {k.removeprefix("param:"): torch.as_tensor(v) for k, v in trained.checkpoints[0].items()}
        start = float(loss(functional_call(module, init, (x,)), y))
    assert r.scalars["loss_end"] == pytest.approx(end, rel=1e-12) and r.scalars["loss_init"] == pytest.approx(start)
    assert r.arrays["losses"][[0, 2]] == pytest.approx([start, end], rel=1e-12)


# --- the command line -------------------------------------------------------------------------------------------


def triple_factory():
    """(model, loss_fn, data) as `batchlab noise-scale --model` takes it."""
    model, loss_fn, x, y = linear_regression()
    return model, loss_fn, (x, y)


def test_cli_on_the_builtin_mlp(capsys):
    code, out, err = cli_run(capsys, "sharpness", "--examples", 128, "--top-k", 1, "--trace-samples", 2)
    assert code == 0, err
    assert "784-256-256-10 MLP" in out and "λ_max = " in out and "converged after" in out and "2/λ_max" in out


def test_cli_on_a_user_module_and_data_matches_the_api(capsys):
    args = ["--model", "user_models:mlp", "--model-arg", "sizes=[20,8,3]", "--data", "user_models:flat"]
    code, out, err = cli_run(capsys, "sharpness", *args, "--top-k", 2, "--batch-size", 8, "--json")
    assert code == 0, err
    got = json.loads(out)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = user_models.mlp(sizes=(20, 8, 3))
    x, y, _, _ = user_models.flat()
    s = sharpness(model, F.cross_entropy, (x, y), top_k=2, batch_sizes=(8,))
    assert got["lambda_max"] == pytest.approx(s.lambda_max, rel=1e-6) and got["converged"] is True
    assert got["batch_sharpness"][0]["batch_size"] == 8 and got["trace_se"] > 0


def test_cli_takes_a_noise_scale_factory(capsys):
    code, out, err = cli_run(capsys, "sharpness", "--model", f"{__file__}:triple_factory", "--top-k", 5, "--tol", 1e-8)
    assert code == 0, err
    model, loss_fn, (x, y) = triple_factory()
    top = float(torch.linalg.eigvalsh(closed_form_hessian(x)).max())
    assert f"λ_max = {top:.5g}" in out


@pytest.mark.parametrize(
    "args, match",
    [
        (["--method", "arnoldi"], "unknown method"),
        (["--data", "user_models:flat"], "need a model given by reference"),
        (["--model", "user_models:mlp"], "give its data with --data"),
        (["--model", "user_models:bn_cnn", "--data", "user_models:images"], "BatchNorm2d in training mode"),
        (["--model", "no_such_module_here:f"], "no module named 'no_such_module_here'"),
        (["--model", "user_models:mlp", "--data", "user_models:flat", "--model-arg", "sizes=[20,8,2]"], "labels 0..2"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(capsys, args, match):
    code, out, err = cli_run(capsys, "sharpness", *args)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert match in err
