"""The gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018): estimators checked against known answers."""

from __future__ import annotations

import math
import textwrap
from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import linear_regression_noise, rel_diff
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import batchlab.noise as nsm
from batchlab.analysis.noise import (
    CountSketch,
    NoiseScaleEMA,
    bootstrap_two_batch_ci,
    per_example_estimates,
    percentile_interval,
    two_batch_estimates,
)
from batchlab.noise import estimators, format_b, format_noise_scale, load_factory, module_per_example_grads, noise_scale

MSE = nn.MSELoss()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny workloads: one thread is as fast (see conftest)."""


def regression(n: int, d: int = 10, *, seed: int = 0, offset: float = 0.15):
    """A float64 linear regression y = x w + noise and a nn.Linear at `offset` from the best weights."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = torch.randn(d, 1, generator=gen, dtype=torch.float64)
    y = x @ w + torch.randn(n, 1, generator=gen, dtype=torch.float64)
    model = nn.Linear(d, 1).double()
    with torch.no_grad():
        model.weight.copy_(w.T + offset * torch.randn(1, d, generator=gen, dtype=torch.float64))
        model.bias.fill_(0.1)
    return model, x, y


def closed_form_grads(model: nn.Linear, x, y) -> torch.Tensor:
    """Every example's gradient of (w·x + b − y)², written out: 2 r_i [x_i, 1], [n, d + 1]."""
    with torch.no_grad():
        r = model(x) - y
    return 2 * r * torch.cat([x, torch.ones_like(r)], 1)


def brute_force(grads: torch.Tensor) -> tuple[float, float]:
    """|G|² and tr(Σ) straight from the definitions on a matrix of per-example gradients."""
    n = grads.shape[0]
    mean = grads.mean(0)
    trace = float((grads - mean).square().sum() / (n - 1))
    return float(mean.square().sum()) - trace / n, trace


rel = rel_diff  # |a - b| / |b|


# --- the per-example estimator ---------------------------------------------------------------------------


def test_per_example_estimator_equals_brute_force_loop_of_single_example_backward_passes():
    model, x, y = regression(64, d=5, offset=1.0)
    grads = []
    for i in range(x.shape[0]):
        model.zero_grad()
        MSE(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
    grad_sq, trace = brute_force(torch.stack(grads))

    ns = noise_scale(model, MSE, (x, y), samples=64, estimator="per-example")

    assert ns.estimator == "per-example" and ns.samples == 64
    assert rel(ns.grad_sq_norm, grad_sq) < 1e-5
    assert rel(ns.trace_sigma, trace) < 1e-5
    assert rel(ns.b_simple, trace / grad_sq) < 1e-5


def test_per_example_estimator_on_linear_regression_equals_the_closed_form():
    """g_i = 2 r_i [x_i, 1] by hand in float64 (numpy): |G|², tr(Σ) and B_simple to rounding."""
    model, x, y = regression(512, d=4, offset=0.5)
    grad_sq, trace, b_simple = linear_regression_noise(x, y, model.weight.detach(), model.bias.detach())
    ns = noise_scale(model, MSE, (x, y), samples=512, estimator="per-example", resamples=10)
    assert ns.samples == 512 and 1 < b_simple < 1e3
    assert rel(ns.grad_sq_norm, grad_sq) < 1e-9 and rel(ns.trace_sigma, trace) < 1e-9
    assert rel(ns.b_simple, b_simple) < 1e-9


def test_per_example_estimates_from_norms_equal_the_definitions():
    grads = torch.randn(50, 7, dtype=torch.float64) + 0.3
    mean = grads.mean(0)
    est = per_example_estimates(float(grads.square().sum()), float(mean.square().sum()), 50)
    grad_sq, trace = brute_force(grads)
    # |G|² is also the mean inner product over pairs of different examples
    gram = grads @ grads.T
    pairs = float((gram.sum() - gram.diagonal().sum()) / (50 * 49))
    assert rel(est.grad_sq_norm, grad_sq) < 1e-12 and rel(est.grad_sq_norm, pairs) < 1e-12
    assert rel(est.trace_sigma, trace) < 1e-12


class Scaled(nn.Module):
    """An MLP with buffers (input normalisation, a step counter) and a frozen parameter, no BatchNorm."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.linspace(-0.5, 0.5, 6))
        self.register_buffer("std", torch.linspace(0.5, 2.0, 6))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 3))
        self.temperature = nn.Parameter(torch.tensor(1.5), requires_grad=False)

    def forward(self, x):
        return self.body((x - self.mean) / self.std) / self.temperature


@pytest.mark.parametrize("make", [lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), Scaled])
def test_module_per_example_grads_equal_single_example_backward_loop(make):
    torch.manual_seed(0)
    model = make().double()
    x = torch.randn(20, 6, dtype=torch.float64)
    y = torch.randint(3, (20,))
    loss_fn = nn.CrossEntropyLoss()

    grads = module_per_example_grads(model, loss_fn, x, y, chunk=7)

    trainable = {k: p for k, p in model.named_parameters() if p.requires_grad}
    assert set(grads) == set(trainable)
    for i in range(20):
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
        for k, p in trainable.items():
            torch.testing.assert_close(grads[k][i], p.grad, rtol=1e-10, atol=1e-12)


def test_per_example_estimator_on_an_mlp_with_buffers_equals_brute_force():
    torch.manual_seed(1)
    model = Scaled().double()
    x, y = torch.randn(40, 6, dtype=torch.float64), torch.randint(3, (40,))
    grads = module_per_example_grads(model, nn.CrossEntropyLoss(), x, y)
    grad_sq, trace = brute_force(torch.cat([g.reshape(40, -1) for g in grads.values()], 1))
    ns = noise_scale(model, nn.CrossEntropyLoss(), (x, y), samples=40, estimator="per-example", chunk=16)
    assert rel(ns.grad_sq_norm, grad_sq) < 1e-9 and rel(ns.trace_sigma, trace) < 1e-9


# --- the two-batch estimator -----------------------------------------------------------------------------


def test_two_batch_estimator_is_unbiased_on_synthetic_gradients_with_known_noise():
    """g_i = G + noise (skewed, independent coordinates with known variances); small batch nested in big."""
    rng = np.random.default_rng(0)
    d, b_small, b_big, draws = 40, 4, 32, 4000
    G = rng.normal(size=d) * 0.2
    scale = np.linspace(0.2, 1.5, d)
    true_trace, true_grad_sq = float(np.square(scale).sum()), float(np.square(G).sum())
    noise = (rng.exponential(size=(draws, b_big, d)) - 1.0) * scale  # mean 0, variance scale²
    g = G + noise
    small_sq = np.square(g[:, :b_small].mean(1)).sum(1)
    big_sq = np.square(g.mean(1)).sum(1)

    per_draw = [two_batch_estimates(s, b, b_small, b_big) for s, b in zip(small_sq, big_sq)]
    grad_sqs = np.array([e.grad_sq_norm for e in per_draw])
    traces = np.array([e.trace_sigma for e in per_draw])
    pooled = two_batch_estimates(small_sq, big_sq, b_small, b_big)

    # the formulas are linear in the norms: averaging norms first is averaging the estimates
    assert pooled.grad_sq_norm == pytest.approx(grad_sqs.mean(), rel=1e-9)
    assert pooled.trace_sigma == pytest.approx(traces.mean(), rel=1e-9)
    se_g, se_t = grad_sqs.std(ddof=1) / math.sqrt(draws), traces.std(ddof=1) / math.sqrt(draws)
    assert abs(pooled.grad_sq_norm - true_grad_sq) < 3 * se_g
    assert abs(pooled.trace_sigma - true_trace) < 3 * se_t
    assert se_t < 0.05 * true_trace  # the check has teeth: 3 standard errors are a small fraction


def test_two_batch_draws_average_to_the_per_example_estimate_on_the_same_samples():
    """Batches drawn without replacement from n samples estimate the per-example |G|² and tr(Σ) of those n."""
    model, x, y = regression(256, d=6)
    exact = noise_scale(model, MSE, (x, y), samples=256, estimator="per-example", resamples=1)
    runs = [
        noise_scale(model, MSE, (x, y), samples=256, estimator="two-batch", batch_sizes=(4, 32), seed=s, resamples=1)
        for s in range(60)
    ]
    for field in ("grad_sq_norm", "trace_sigma"):
        values = np.array([getattr(r, field) for r in runs])
        se = values.std(ddof=1) / math.sqrt(len(values))
        assert abs(values.mean() - getattr(exact, field)) < 3 * se, field


def test_both_estimators_agree_within_25_percent_on_linear_regression():
    model, x, y = regression(4096)
    per_example = noise_scale(model, MSE, (x, y), samples=4096, estimator="per-example", resamples=200)
    two_batch = noise_scale(model, MSE, (x, y), samples=4096, estimator="two-batch", resamples=200)
    assert two_batch.estimator == "two-batch" and two_batch.batch_sizes == (16, 128) and two_batch.draws == 32
    assert 20 < per_example.b_simple < 200  # a regime where the noise matters
    assert rel(two_batch.b_simple, per_example.b_simple) < 0.25


# --- confidence intervals --------------------------------------------------------------------------------


def test_bootstrap_ci_contains_the_brute_force_value_and_narrows_with_more_samples():
    model, x, y = regression(20480)
    truth_grad_sq, truth_trace = brute_force(closed_form_grads(model, x, y))
    truth = truth_trace / truth_grad_sq
    covered, widths = 0, []
    for k in range(20):  # disjoint subsets of 256
        part = slice(256 * k, 256 * (k + 1))
        ns = noise_scale(model, MSE, (x[part], y[part]), samples=256, estimator="per-example", seed=k, resamples=500)
        covered += ns.ci[0] <= truth <= ns.ci[1]
        widths.append(ns.ci[1] - ns.ci[0])
    assert covered >= 16  # 95% intervals: 19 of 20 expected
    big = noise_scale(model, MSE, (x, y), samples=4096, estimator="per-example", resamples=500)
    assert big.ci[0] <= truth <= big.ci[1]
    assert big.ci[1] - big.ci[0] < 0.5 * np.median(widths)  # 16x the samples: about 1/4 the width


def test_two_batch_ci_covers_the_truth_and_narrows_with_more_samples():
    model, x, y = regression(16384, seed=3)
    grad_sq, trace = brute_force(closed_form_grads(model, x, y))
    small = noise_scale(model, MSE, (x[:1024], y[:1024]), samples=1024, estimator="two-batch", resamples=500)
    big = noise_scale(model, MSE, (x, y), samples=16384, estimator="two-batch", resamples=500)
    for ns in (small, big):
        assert ns.ci[0] <= trace / grad_sq <= ns.ci[1]
    assert big.ci[1] - big.ci[0] < 0.5 * (small.ci[1] - small.ci[0])


def test_sketched_bootstrap_gives_nearly_the_exact_interval(monkeypatch):
    """Models too large to keep every gradient use a CountSketch of them: the interval barely moves."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 5)).double()
    x = torch.randn(512, 20, dtype=torch.float64)
    y = (x[:, :5] + x[:, 5:10]).argmax(1)
    run = dict(samples=512, estimator="per-example", resamples=500)
    exact = noise_scale(model, nn.CrossEntropyLoss(), (x, y), **run)
    monkeypatch.setattr(estimators, "FEATURE_BUDGET", 512 * 512)  # k = 512 buckets for 1669 parameters
    sketched = noise_scale(model, nn.CrossEntropyLoss(), (x, y), **run)
    assert sketched.b_simple == pytest.approx(exact.b_simple, rel=1e-9)  # the estimate itself is exact
    assert rel(sketched.ci[0], exact.ci[0]) < 0.1 and rel(sketched.ci[1], exact.ci[1]) < 0.1


def test_count_sketch_keeps_inner_products_on_average():
    a, b = torch.randn(1, 300, dtype=torch.float64), torch.randn(1, 300, dtype=torch.float64)
    b = b + a  # correlated
    dots = []
    for seed in range(200):
        sketch = CountSketch([torch.Size([300])], 64, seed=seed)
        dots.append(float(sketch([a])[0] @ sketch([b])[0]))
    exact = float(a[0] @ b[0])
    assert abs(np.mean(dots) - exact) < 3 * np.std(dots) / math.sqrt(len(dots))


def test_percentile_interval_keeps_unbounded_replicates():
    values = np.concatenate([np.linspace(1, 10, 90), np.full(10, np.inf)])
    lo, hi = percentile_interval(values, 0.9)
    assert lo == pytest.approx(1.5, abs=0.2) and hi == math.inf
    assert all(math.isnan(v) for v in bootstrap_two_batch_ci([1.0], [0.5], 2, 8))  # one draw: no interval


def test_ema_keeps_the_two_estimates_apart_and_takes_the_ratio_last():
    ema = NoiseScaleEMA(decay=0.5)
    ema.update(1.0, 10.0)
    assert ema.b_simple == pytest.approx(10.0)  # bias-corrected: the first update is the estimate itself
    ema.update(-0.5, 10.0)  # a noisy step whose own ratio is meaningless (|G|² < 0)
    assert ema.grad_sq_norm == pytest.approx(0.0, abs=1e-12)  # weights 1/3 and 2/3
    ema.update(1.0, 10.0)
    g2 = (1 * 1.0 + 2 * -0.5 + 4 * 1.0) / 7  # weights 1, 2, 4 over their sum
    assert ema.grad_sq_norm == pytest.approx(g2)
    assert ema.b_simple == pytest.approx(10.0 / g2)
    step = NoiseScaleEMA(decay=0.0).update_two_batch(small_sq_norm=3.0, big_sq_norm=1.5, b_small=2, b_big=8)
    assert step.trace_sigma == pytest.approx((3.0 - 1.5) / (1 / 2 - 1 / 8))


# --- what the model and data may be ----------------------------------------------------------------------


def bn_model() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU()),
            head=nn.Linear(8, 1),
        )
    )


def test_batchnorm_in_training_mode_raises_naming_the_module_and_works_after_eval():
    torch.manual_seed(0)
    model = bn_model()
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    with pytest.raises(ValueError, match=r"BatchNorm1d in training mode at 'features\.1'.*model\.eval\(\)"):
        noise_scale(model, MSE, (x, y))
    model.eval()  # running statistics: each example's loss is its own, as in a loop of single-example passes
    grads = []
    for i in range(x.shape[0]):
        model.zero_grad()
        MSE(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double())
    grad_sq, trace = brute_force(torch.stack(grads))
    ns = noise_scale(model, MSE, (x, y), estimator="per-example")
    assert rel(ns.b_simple, trace / grad_sq) < 1e-5 and ns.ci[0] <= ns.b_simple <= ns.ci[1]
    # the two-batch estimate (ordinary backward passes) on 4096 examples: within sampling error (its spread
    # over seeds is about 9 %) of the per-example estimate on the same examples, which lies in its interval
    x, y = torch.randn(4096, 5), torch.randn(4096, 1)
    exact = noise_scale(model, MSE, (x, y), samples=4096, estimator="per-example", resamples=10).b_simple
    two_batch = noise_scale(model, MSE, (x, y), samples=4096, estimator="two-batch")
    assert rel(two_batch.b_simple, exact) < 0.3 and two_batch.ci[0] <= exact <= two_batch.ci[1]


def test_a_dataloader_gives_the_same_answer_as_the_tensors_it_wraps():
    model, x, y = regression(300, d=4)
    loader = DataLoader(TensorDataset(x, y), batch_size=37, shuffle=False)
    for estimator in ("per-example", "two-batch"):
        a = noise_scale(model, MSE, (x, y), samples=300, estimator=estimator, resamples=300)
        b = noise_scale(model, MSE, loader, samples=300, estimator=estimator, resamples=300)
        assert b.samples == a.samples
        assert b.b_simple == pytest.approx(a.b_simple, rel=1e-12)
        assert b.ci == pytest.approx(a.ci, rel=1e-12)
    first = noise_scale(model, MSE, loader, samples=100, estimator="per-example", resamples=10)
    assert first.b_simple == pytest.approx(
        noise_scale(model, MSE, (x[:100], y[:100]), samples=100, estimator="per-example", resamples=10).b_simple
    )


class CallsItem(nn.Module):
    """A forward that reads a value back to Python, which vmap cannot batch."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x):
        if x.abs().max().item() > 1e6:
            raise AssertionError("unreachable")
        return self.lin(x)


def test_auto_falls_back_to_two_batch_when_torch_func_fails_and_says_so():
    torch.manual_seed(0)
    model, x, y = CallsItem(), torch.randn(4096, 3), torch.randn(4096, 1)
    ns = noise_scale(model, MSE, (x, y), samples=4096, estimator="auto")
    assert ns.estimator == "two-batch"
    # a linear model: B_simple in closed form; the two-batch estimate is within its sampling error (about 5 %
    # over seeds) of it, and its interval holds it
    _, _, b_simple = linear_regression_noise(x, y, model.lin.weight.detach(), model.lin.bias.detach())
    assert rel(ns.b_simple, b_simple) < 0.2 and ns.ci[0] <= b_simple <= ns.ci[1]
    assert any("torch.func" in note and "two-batch" in note for note in ns.notes)
    with pytest.raises(RuntimeError, match="two-batch"):
        noise_scale(model, MSE, (x, y), estimator="per-example")


@pytest.mark.parametrize(
    "kwargs, data, match",
    [
        (dict(samples=1), None, "samples must be an integer of at least 2"),
        (dict(), (torch.randn(10, 3), torch.randn(9, 1)), "same number of examples"),
        (dict(estimator="jackknife"), None, "unknown estimator 'jackknife'"),
        (dict(batch_sizes=(8, 8)), None, "small < big"),
        (dict(batch_sizes=(0, 4)), None, "small < big"),
        (dict(batch_sizes=(8, 64), samples=32), None, "larger than the 32 samples"),
        (dict(level=1.5), None, "level must be between 0 and 1"),
        (dict(), "not data", "data must be"),
        (dict(), (torch.randn(1, 3), torch.randn(1, 1)), "at least 2 examples"),
    ],
)
def test_bad_input_raises_a_clear_value_error(kwargs, data, match):
    model = nn.Linear(3, 1)
    data = (torch.randn(32, 3), torch.randn(32, 1)) if data is None else data
    with pytest.raises(ValueError, match=match):
        noise_scale(model, MSE, data, **kwargs)


def test_a_loss_that_sums_over_the_batch_is_refused():
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    with pytest.raises(ValueError, match="sums over the batch.*reduction='mean'"):
        noise_scale(nn.Linear(3, 1), nn.MSELoss(reduction="sum"), (x, y))
    with pytest.raises(ValueError, match="must return a scalar"):
        noise_scale(nn.Linear(3, 1), nn.MSELoss(reduction="none"), (x, y))


def test_samples_beyond_the_data_use_all_of_it_and_say_so():
    model, x, y = regression(50, d=3)
    ns = noise_scale(model, MSE, (x, y), samples=1024, estimator="per-example", resamples=10)
    assert ns.samples == 50 and any("50 examples" in note for note in ns.notes)


def test_from_batchlab_import_noise_scale_is_the_function():
    """The lazy export of the package is the function of batchlab.noise, loaded on first use."""
    from batchlab import noise_scale as imported

    model, x, y = regression(64, d=3, offset=1.0)  # far enough from the best weights for a finite B_simple
    assert imported is nsm.noise_scale
    _, _, b_simple = linear_regression_noise(x, y, model.weight.detach(), model.bias.detach())
    assert 0 < b_simple < math.inf
    assert rel(imported(model, MSE, (x, y), estimator="per-example", resamples=10).b_simple, b_simple) < 1e-9


# --- what is printed -------------------------------------------------------------------------------------


def test_recommendation_and_format_noise_scale_cite_the_paper_and_round_b_simple():
    model, x, y = regression(1024)
    ns = noise_scale(model, MSE, (x, y), estimator="per-example", resamples=200)
    b = format_b(ns.b_simple)
    assert len(b.rstrip("0")) <= 2  # two significant figures
    assert "McCandlish et al. 2018" in ns.recommendation
    assert f"B_simple ≈ {b}" in ns.recommendation and "proxy" in ns.recommendation
    assert "batchlab critical-batch" in ns.recommendation
    assert "measure again later in training" in ns.recommendation
    text = format_noise_scale(ns)
    assert text.splitlines()[0] == "Gradient noise scale (per-example estimator, 1024 samples)"
    assert f"B_simple  ≈ {b}" in text and all(len(line) <= 100 for line in text.splitlines())
    assert str(ns).startswith(f"B_simple ≈ {b} (95% CI ")
    assert [format_b(v) for v in (483.2, 3.46, 12345.0, 0.0421, math.inf)] == ["480", "3.5", "12000", "0.042", "∞"]


def test_a_gradient_below_the_noise_gives_an_unbounded_b_simple_explained_in_words():
    model, x, y = regression(64, d=5, offset=0.0)  # at the best weights: G is pure sampling noise
    ns = noise_scale(model, MSE, (x, y), estimator="per-example", resamples=200)
    assert ns.grad_sq_norm <= 0 and ns.b_simple == math.inf and ns.ci[1] == math.inf
    assert "too large to measure" in ns.recommendation and "more samples" in ns.recommendation
    assert "B_simple  ≈ ∞" in format_noise_scale(ns) and any("|G|² estimate is ≤ 0" in note for note in ns.notes)


# --- load_factory ----------------------------------------------------------------------------------------


FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn

    def good():
        return nn.Linear(3, 1), nn.MSELoss(), (torch.randn(8, 3), torch.randn(8, 1))

    def returns_none():
        return None

    def two_things():
        return nn.Linear(3, 1), nn.MSELoss()

    def no_module():
        return "model", nn.MSELoss(), (torch.randn(8, 3), torch.randn(8, 1))

    def loss_not_callable():
        return nn.Linear(3, 1), 1.0, (torch.randn(8, 3), torch.randn(8, 1))

    def one_tensor():
        return nn.Linear(3, 1), nn.MSELoss(), (torch.randn(8, 3),)

    NOT_A_FUNCTION = 3
    """
)


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "my_factories.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_load_factory_imports_a_dotted_module_from_the_current_folder_or_a_file(factories):
    model, loss_fn, (x, y) = load_factory("my_factories:good")
    assert isinstance(model, nn.Linear) and x.shape == (8, 3)
    model, _, _ = load_factory(f"{factories / 'my_factories.py'}:good")
    assert isinstance(model, nn.Linear)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("my_factories", "must look like 'package.module:factory'"),
        (":good", "must look like"),
        ("my_factories:", "must look like"),
        ("my_factories:1good", "not a Python name"),
        ("my factories:good", "not a dotted module name"),
        ("batchlab_no_such_module_xyz:good", "no module named 'batchlab_no_such_module_xyz'"),
        ("no_such_dir/factories.py:good", "no file"),
        ("my_factories:missing", "has no attribute 'missing'"),
        ("my_factories:NOT_A_FUNCTION", "is not callable"),
        ("my_factories:returns_none", r"must return \(model, loss_fn, data\).*got None"),
        ("my_factories:two_things", "got a tuple of 2"),
        ("my_factories:no_module", "not a torch.nn.Module"),
        ("my_factories:loss_not_callable", "loss_fn is a float, not callable"),
        ("my_factories:one_tensor", "its data is a tuple of 1"),
    ],
)
def test_load_factory_errors_are_clear(factories, spec, match):
    with pytest.raises(ValueError, match=match):
        load_factory(spec)


# --- the command line ------------------------------------------------------------------------------------
def tiny_factory():
    """A linear regression with a known answer, for `batchlab noise-scale --model this_file.py:tiny_factory`."""
    model, x, y = regression(512, d=3)
    return model, MSE, (x, y)


def test_cli_noise_scale_prints_the_same_b_simple_as_the_api(capsys):
    from batchlab import cli

    code = cli.run_cli(["noise-scale", "--model", f"{__file__}:tiny_factory", "--estimator", "per-example"])
    out, err = capsys.readouterr()
    model, loss_fn, data = tiny_factory()
    ns = noise_scale(model, loss_fn, data, samples=1024, estimator="per-example")
    assert code == 0, err
    assert f"B_simple  ≈ {format_b(ns.b_simple)}" in out and "McCandlish" in out


def test_cli_noise_scale_bad_factory_is_one_line_exit_2(capsys):
    from batchlab import cli

    code = cli.run_cli(["noise-scale", "--model", "no_such_module_here:f"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no module named 'no_such_module_here'" in err
