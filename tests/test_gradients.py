"""Gradient statistics checked against slow, obvious references: loops of single-example backward passes,
closed forms on linear regression, and synthetic gradients with known noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import linear_regression_noise

from batchlab.engine import RunSpec, train_group
from batchlab.engine.data import load_for, template_model
from batchlab.engine.spec import Checkpoint, TaskSpec
from batchlab.executors import TaskUnit, execute
from batchlab.models import init_params
from batchlab.studies.gradients.claims import (
    diverged_passes,
    power_law,
    rule_g1,
    rule_g3,
    rule_g4,
    rule_n1,
    rule_v1,
)
from batchlab.tasks.gradients import mean_batch_error, per_example_gram, regression_gram

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
RUN = RunSpec(train_subset=2048, test_subset=200, widths=(16, 16), batch_size=1024, lr=0.01, epochs=1, probes=())


@pytest.fixture(scope="module")
def checkpoint():
    (result,) = train_group([RUN], device="cpu", checkpoints={1})
    return result.checkpoints[1]


def task(kind, args, checkpoint, seed=0):
    spec = TaskSpec(kind=kind, args=args, seed=seed, start=Checkpoint(run=RUN, epoch=1))
    result = execute(TaskUnit(spec, checkpoint), CPU, None)
    assert result.status == "finished", result.error
    return result


def test_gram_equals_a_loop_of_single_example_backward_passes():
    data = load_for(RUN.model_copy(update={"precision": "float64"}), CPU)
    base = template_model(RUN, data)
    params = {k: v.double() for k, v in init_params(base, "glorot", 3).items()}
    x, y = data.x_train[:12], data.y_train[:12]
    grads = []
    for i in range(12):
        module = template_model(RUN, data).double()
        module.load_state_dict(params)
        torch.nn.functional.cross_entropy(module(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in module.parameters()]))
    reference = torch.stack(grads) @ torch.stack(grads).T
    gram = per_example_gram(base, params, x, y)
    torch.testing.assert_close(gram, reference, rtol=1e-10, atol=1e-12)


def test_lr_zero_with_sum_gives_the_same_summed_gradient_for_every_batch_size(checkpoint):
    norms = [
        task(
            "gradient-competition",
            {"batch_size": b, "trials": 3, "examples": 256, "lr": 0, "reduction": "sum"},
            checkpoint,
        ).arrays["norms"]
        for b in (1, 3, 16, 256)
    ]
    norms = np.stack(norms)
    spread = float(np.max((norms.max(0) - norms.min(0)) / norms.mean(0)))
    assert spread < 1e-5
    assert rule_g4({"early": spread}).verdict == "supported"


def test_one_batch_of_all_examples_sums_to_the_direct_gradient(checkpoint):
    """B = examples: one step, whose summed gradient is the batch gradient of those examples (mean loss)."""
    result = task("gradient-competition", {"batch_size": 64, "trials": 2, "examples": 64, "lr": 0.01}, checkpoint)
    from batchlab.tasks.gradients import trial_draws

    data = load_for(RUN, CPU)
    module = template_model(RUN, data)
    module.load_state_dict({k.removeprefix("param:"): torch.as_tensor(v) for k, v in checkpoint.items()})
    for t, idx in enumerate(trial_draws(0, 2, 64, data.n_train)):
        module.zero_grad()
        torch.nn.functional.cross_entropy(module(data.x_train[idx]), data.y_train[idx]).backward()
        last = [p for n, p in module.named_parameters() if n.endswith(".weight")][-1]
        assert result.arrays["norms"][t] == pytest.approx(float(last.grad.norm()), rel=1e-5)


def test_trial_draws_are_the_same_for_every_batch_size_and_distinct():
    from batchlab.tasks.gradients import trial_draws

    a, b = trial_draws(7, 4, 100, 1000), trial_draws(7, 6, 100, 1000)
    assert torch.equal(a, b[:4])
    assert all(len(set(row.tolist())) == 100 for row in a)
    assert not torch.equal(a[0], a[1])


def test_variance_on_regression_matches_the_closed_form_within_sampling_error():
    """With replacement E||g_B - G||^2 = tr(Sigma)/B exactly; 4000 draws put the mean within a few %."""
    gram = regression_gram(2, 1024, 5, 0.5, "cpu")
    centered = gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()
    trace = float(centered.diagonal().mean())
    gen = torch.Generator().manual_seed(0)
    for b in (1, 8, 128):
        measured, sd = mean_batch_error(centered, b, 4000, replace=True, gen=gen)
        assert abs(measured - trace / b) < 4 * sd / math.sqrt(4000)  # within 4 Monte Carlo standard errors
        without, _ = mean_batch_error(centered, b, 4000, replace=False, gen=gen)
        assert without == pytest.approx(trace / b * (1024 - b) / 1023, rel=0.08)
    whole, _ = mean_batch_error(centered, 1024, 10, replace=False, gen=gen)
    assert abs(whole) < 1e-9 * trace  # the whole sample is G itself


def test_noise_scale_task_per_example_estimate_equals_a_literal_sum(checkpoint):
    args = {"examples": 2048, "small_batch": 16, "big_batch": 512, "draws": 64, "bootstrap": 20}
    r = task("noise-scale", args, checkpoint)
    # per-example: all 2048 training examples, so |G|² is |ḡ|² itself; against every example's own gradient
    # (torch.func, not the task's Gram matrix), summed up in float64
    data = load_for(RUN, CPU)
    module = template_model(RUN, data)
    params = {k.removeprefix("param:"): torch.as_tensor(v) for k, v in checkpoint.items()}

    def loss(p, x, y):
        return torch.nn.functional.cross_entropy(torch.func.functional_call(module, p, (x[None],)), y[None])

    total, sum_sq = 0.0, 0.0
    for part in torch.arange(data.n_train).split(256):
        grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(
            params, data.x_train[part], data.y_train[part]
        )
        g = torch.cat([v.flatten(1) for v in grads.values()], 1).double().numpy()
        total, sum_sq = total + g.sum(0), sum_sq + np.square(g).sum()
    mean = total / data.n_train
    trace = (sum_sq - data.n_train * (mean @ mean)) / (data.n_train - 1)
    assert r.scalars["per_example_trace_sigma"] == pytest.approx(trace, rel=1e-4)
    assert r.scalars["per_example_grad_sq_norm"] == pytest.approx(mean @ mean, rel=1e-4)
    assert r.scalars["per_example_b_simple"] == pytest.approx(trace / (mean @ mean), rel=1e-4)


def test_n1_decides_on_the_ratio_interval_with_all_three_outcomes():
    """Synthetic: the rule reads the interval of the ratio, not the point estimates."""
    assert rule_n1({"early": (100, 110, (0.9, 1.2)), "late": (50, 48, (0.8, 1.1))}).verdict == "supported"
    outside = rule_n1({"early": (100, 110, (0.9, 1.2)), "late": (50, 100, (1.4, 2.9))})
    assert outside.verdict == "not supported" and "outside" in outside.why
    # the same point estimates (within 25 %) with a wide interval: undecided, not supported
    wide = rule_n1({"early": (100, 110, (0.97, 1.47)), "late": (7700, 8800, (0.46, 9.2))})
    assert wide.verdict == "inconclusive" and "crosses" in wide.why


def test_the_ratio_interval_keeps_an_unresolved_signal_as_an_open_end():
    """A replicate with |G|^2 <= 0 is B = +inf in either estimator (one rule): the interval's end becomes 0 or inf."""
    from batchlab.analysis.noise import estimator_ratio_interval

    rng = np.random.default_rng(0)
    per_example, two_batch = rng.lognormal(np.log(100), 0.1, 400), rng.lognormal(np.log(100), 0.1, 400)
    lo, hi = estimator_ratio_interval(per_example, two_batch, 1.0)
    assert 0.7 < lo < 1 < hi < 1.4
    two_batch[:40] = np.inf  # 10 % of the two-batch replicates could not resolve the signal
    assert estimator_ratio_interval(per_example, two_batch, 1.0)[1] == np.inf


def test_noise_scale_task_on_linear_regression_equals_the_closed_form():
    """At a checkpoint of a linear regression run, the per-example estimate over all n examples is
    tr(Σ)/|ḡ|² with g_i = 2 r_i [x_i, 1], written out in float64."""
    run = RunSpec(
        dataset="regression", model="linear", widths=(), regression=(512, 4, 0.5, 0), batch_size=32, epochs=1,
        lr=0.01, precision="float64", probes=(),
    )  # fmt: skip
    (trained,) = train_group([run], device="cpu", checkpoints={1})
    args = {"examples": 512, "small_batch": 8, "big_batch": 64, "draws": 4, "bootstrap": 10}
    spec = TaskSpec(kind="noise-scale", args=args, start=Checkpoint(run=run, epoch=1))
    r = execute(TaskUnit(spec, trained.checkpoints[1]), CPU, None)
    assert r.status == "finished", r.error
    data = load_for(run, CPU)
    w, b = (trained.checkpoints[1][f"param:linear.{k}"] for k in ("weight", "bias"))
    grad_sq, trace, b_simple = linear_regression_noise(data.x_train, data.y_train, w, b, population=512)
    assert 1 < b_simple < 1e4
    assert r.scalars["per_example_grad_sq_norm"] == pytest.approx(grad_sq, rel=1e-9)
    assert r.scalars["per_example_trace_sigma"] == pytest.approx(trace, rel=1e-9)
    assert r.scalars["per_example_b_simple"] == pytest.approx(b_simple, rel=1e-9)


def test_power_law_recovers_a_known_exponent_and_leaves_out_diverged_trials():
    bs = np.array([1, 2, 4, 8, 16, 32])
    rng = np.random.default_rng(1)
    norms = 3.0 * bs[:, None] ** 0.5 * rng.lognormal(0, 0.05, (6, 200))
    norms[5, :3] = np.inf
    fit = power_law(bs, norms, n_boot=300)
    assert fit["alpha"] == pytest.approx(0.5, abs=0.02)  # B = 32 (3 diverged trials) is left out, not averaged in
    assert fit["ci"][0] < 0.5 < fit["ci"][1] and fit["diverged trials"] == 3
    assert fit["diverged B"] == [32] and fit["fitted B"] == 5 and fit["worst factor"] < 1.05


def _g1(norms, diverged=None):
    bs = [1, 2, 4, 8, 16, 32, 64]
    return rule_g1({"early": {"sum": power_law(bs, norms, diverged, n_boot=300)}})


def test_g1_leaves_out_diverged_passes_and_decides_only_where_the_power_law_fits():
    """Synthetic passes over 7 batch sizes, 100 trials: a clean B^0.3 is supported and B^-0.3 is not; a flat curve
    is inconclusive (the CI crosses 0); the same B^-0.3 whose passes blow up (loss x100) from B = 8 on, with norms
    1e10 times larger, is decided on the stable B = 1-4 (not supported, naming the left-out batch sizes) where a
    fit through the blow-up gives alpha > 2 and fits badly; two stable batch sizes or a kinked curve (a mean 2x off the
    line) are inconclusive."""
    bs = np.array([1, 2, 4, 8, 16, 32, 64])
    rng = np.random.default_rng(0)
    noise = rng.lognormal(0, 0.05, (7, 100))
    assert _g1(bs[:, None] ** 0.3 * noise).verdict == "supported"
    assert _g1(bs[:, None] ** -0.3 * noise).verdict == "not supported"
    assert _g1(rng.lognormal(0, 0.1, (7, 5))).verdict == "inconclusive"  # flat, 5 noisy trials

    blown = bs[:, None] ** -0.3 * noise
    blown[3:] *= 1e10
    before = np.ones((7, 100))
    after = np.where(bs[:, None] >= 8, 100.0, 0.9) * before
    through = _g1(blown)  # without the losses the blow-up reads as "larger steps", and the fit's quality objects
    assert through.evidence["early, sum: alpha"] > 2 and through.verdict == "inconclusive"
    claim = _g1(blown, diverged_passes(blown, before, after))
    assert claim.verdict == "not supported"
    assert claim.evidence["early, sum: batch sizes with diverged passes (left out)"] == "8, 16, 32, 64"
    assert "passes diverged at B = 8, 16, 32, 64" in claim.why

    two = np.where(bs[:, None] >= 4, 100.0, 0.9) * before
    assert _g1(bs[:, None] ** 0.3 * noise, diverged_passes(blown, before, two)).verdict == "inconclusive"
    kinked = bs[:, None] ** 0.3 * noise
    kinked[3] *= 2
    claim = _g1(kinked)
    assert claim.verdict == "inconclusive" and "misses a mean by a factor" in claim.why


def test_a_pass_diverges_when_its_loss_rises_tenfold_or_its_norm_is_not_finite():
    norms = np.array([[1.0, 1.0, np.inf, 1e31]])
    before = np.array([[1.0, 1.0, 1.0, 1.0]])
    after = np.array([[10.0, 10.01, 0.5, 0.5]])
    assert diverged_passes(norms, before, after).tolist() == [[False, True, True, True]]
    assert diverged_passes(norms, before, np.array([[np.nan, 0.5, 0.5, 0.5]])).tolist() == [[True, False, True, True]]


def test_g3_decides_on_a_scale_free_tail_weight():
    """Synthetic per-trial kurtosis [B, trials]: rising with B over 400 trials is supported, falling is not, a rise
    buried in noise over 20 trials is inconclusive, and a missing batch size leaves it inconclusive. The rule sees
    only kurtosis, so a gradient rescaled by any factor per B reads the same (unlike a count beyond a magnitude)."""
    rng = np.random.default_rng(0)
    bs = [1, 2, 4, 8, 16]
    level = np.array([3.0, 3.5, 4.0, 4.5, 5.0])[:, None]
    assert rule_g3(bs, {"early": {"mean": level + rng.normal(0, 0.3, (5, 400))}}).verdict == "supported"
    assert rule_g3(bs, {"early": {"mean": level[::-1] + rng.normal(0, 0.3, (5, 400))}}).verdict == "not supported"
    noisy = rule_g3(bs, {"early": {"mean": level + np.random.default_rng(0).normal(0, 3.0, (5, 20))}})
    assert noisy.verdict == "inconclusive"
    missing = level + rng.normal(0, 0.3, (5, 400))
    missing[2] = np.nan
    assert rule_g3(bs, {"early": {"mean": missing}}).verdict == "inconclusive"


def test_competition_task_stores_the_pass_losses_and_kurtosis_of_a_literal_loop(checkpoint):
    """One trial stepped by hand (deepcopy of the module, torch.optim.SGD per batch of 16): the loss on its 64
    examples before and after the pass and the kurtosis of the summed last-layer gradient equal the task's."""
    import copy

    from batchlab.tasks.gradients import trial_draws

    args = {"batch_size": 16, "trials": 2, "examples": 64, "lr": 0.05}
    result = task("gradient-competition", args, checkpoint)
    data = load_for(RUN, CPU)
    start = template_model(RUN, data)
    start.load_state_dict({k.removeprefix("param:"): torch.as_tensor(v) for k, v in checkpoint.items()})
    for t, idx in enumerate(trial_draws(0, 2, 64, data.n_train)):
        module = copy.deepcopy(start)
        opt = torch.optim.SGD(module.parameters(), lr=0.05)
        last = [p for n, p in module.named_parameters() if n.endswith(".weight")][-1]
        loss = torch.nn.functional.cross_entropy
        with torch.no_grad():
            assert result.arrays["loss_before"][t] == pytest.approx(
                float(loss(module(data.x_train[idx]), data.y_train[idx])), rel=1e-5
            )
        total = torch.zeros_like(last)
        for s in range(0, 64, 16):
            b = idx[s : s + 16]
            opt.zero_grad()
            loss(module(data.x_train[b]), data.y_train[b]).backward()
            total += last.grad
            opt.step()
        with torch.no_grad():
            assert result.arrays["loss_after"][t] == pytest.approx(
                float(loss(module(data.x_train[idx]), data.y_train[idx])), rel=1e-5
            )
        v = total.double().flatten()
        assert result.arrays["kurtosis"][t] == pytest.approx(float(v.pow(4).mean() / v.pow(2).mean() ** 2), rel=1e-5)


def test_v1_decides_on_each_ratios_monte_carlo_interval():
    """Synthetic: 5 % off with a tight interval is inside the 10 % band; 20 % off with a tight one is outside; 5 %
    off with a standard error of 3 % (an interval of +-5.9 %) crosses it and says how many more draws it needs."""
    bs = np.array([1, 2, 4])
    tight = 10.0 / bs * 0.001  # standard errors of the measured means: 0.1 % of the ratio
    assert rule_v1({"p": (bs, 10.0 / bs * 1.05, 10.0, tight)}).verdict == "supported"
    assert rule_v1({"p": (bs, 10.0 / bs * np.array([1, 1, 1.2]), 10.0, tight)}).verdict == "not supported"
    wide = rule_v1({"p": (bs, 10.0 / bs * 1.05, 10.0, 10.0 / bs * 0.03)})
    assert wide.verdict == "inconclusive" and "the draws" in wide.why
    assert rule_v1({"p": (bs, 10.0 / bs, 10.0, None)}).verdict == "inconclusive"
    assert rule_v1({}).verdict == "inconclusive"


# --- steps to a target ---------------------------------------------------------------------------------
def test_a_run_stops_at_its_target_and_its_path_is_unchanged_until_then():
    common = dict(train_subset=1024, test_subset=200, widths=(16,), batch_size=64, epochs=4, probes=("test",))
    free = RunSpec(**common, eval_every=4, lr=0.1)
    stopping = RunSpec(**common, eval_every=4, stop_metric="test_acc", stop_at=0.5, lr=0.1)
    slow = RunSpec(**common, eval_every=4, stop_metric="test_acc", stop_at=0.5, lr=1e-4)
    (a,) = train_group([free], device="cpu")
    b, c = train_group([stopping, slow], device="cpu")
    hit = next(m["step"] for m in a.metrics if m["test_acc"] >= 0.5)
    assert [m["test_acc"] for m in b.metrics if m["step"] <= hit] == [
        m["test_acc"] for m in a.metrics if m["step"] <= hit
    ]
    after = [m["test_acc"] for m in b.metrics if m["step"] > hit]
    assert after and len(set(after)) == 1  # stopped: the weights no longer move
    assert c.metrics[-1]["step"] == a.metrics[-1]["step"]  # the slow run never reached it: the group ran to the end


def test_a_group_ends_when_every_run_has_reached_its_target():
    common = dict(train_subset=1024, test_subset=200, widths=(16,), batch_size=64, epochs=50, probes=("test",))
    (r,) = train_group([RunSpec(**common, eval_every=2, stop_metric="test_acc", stop_at=0.6)], device="cpu")
    assert r.metrics[-1]["test_acc"] >= 0.6 and r.steps == r.metrics[-1]["step"] < 50 * 16


def test_fit_steps_recovers_a_known_critical_batch_size():
    from batchlab.studies.gradients.steps_to_target import fit_steps, rule_n2

    bs = np.array([16, 32, 64, 128, 256, 512, 1024, 2048])
    steps = 50 * (1 + 300 / bs) * np.exp(np.random.default_rng(0).normal(0, 0.02, bs.size))
    fit = fit_steps(bs, steps)
    assert fit["b_noise"] == pytest.approx(300, rel=0.1) and fit["s_min"] == pytest.approx(50, rel=0.1)
    assert fit["ci"][0] < 300 < fit["ci"][1] and fit["r2"] > 0.99
    assert rule_n2(fit, 500.0, (450.0, 560.0)).verdict == "supported"
    assert rule_n2(fit, 5000.0, (4000.0, 6000.0)).verdict == "not supported"
    # the same point estimates with B_simple's interval reaching past a factor 3: undecided
    assert rule_n2(fit, 500.0, (300.0, 3000.0)).verdict == "inconclusive"
    assert rule_n2(fit_steps(bs[:2], steps[:2]), 500.0, (450.0, 560.0)).verdict == "inconclusive"
    bounded = rule_n2(fit, 500.0, (450.0, 560.0), bounds=[1024, 2048])
    assert bounded.verdict == "inconclusive" and "upper bounds" in bounded.why


def test_regression_gram_equals_autograd_per_example_gradients():
    """The closed-form per-example gradients of linear regression at w = 0 against autograd, one example at
    a time (squared error of each example, no mean)."""
    from batchlab.datasets import regression_problem

    x, y, _, _, _ = regression_problem(2, 64, 4, 0.5)
    model = torch.nn.Linear(4, 1).double()
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    grads = []
    for i in range(64):
        model.zero_grad()
        ((model(x[i : i + 1]) - y[i : i + 1]) ** 2).sum().backward()
        grads.append(torch.cat([model.weight.grad.flatten(), model.bias.grad]))
    g = torch.stack(grads)
    torch.testing.assert_close(regression_gram(2, 64, 4, 0.5, "cpu"), g @ g.T, rtol=1e-12, atol=1e-12)


def test_g2_decides_on_the_bootstrap_interval_of_rho_over_trials():
    """Synthetic norms [B, trials]: a spread that grows clearly with B (many trials) is supported, one that falls
    is not, and a real trend measured on 8 trials only (rho 1.0 by point, the coin flip the point rule was) is
    inconclusive."""
    from batchlab.studies.gradients.claims import rule_g2

    rng = np.random.default_rng(0)
    bs = [1, 2, 4, 8, 16, 32]

    def norms(spreads, trials):
        return np.stack([rng.lognormal(0, s, trials) for s in spreads])

    grows = rule_g2(bs, {"early": {"mean": norms([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 400)}})
    assert grows.verdict == "supported"
    falls = rule_g2(bs, {"early": {"mean": norms([0.6, 0.5, 0.4, 0.3, 0.2, 0.1], 400)}})
    assert falls.verdict == "not supported"
    few_rng = np.random.default_rng(0)
    few = np.stack([few_rng.lognormal(0, s, 8) for s in [0.2, 0.25, 0.3, 0.35, 0.4, 0.45]])
    weak = rule_g2(bs, {"early": {"mean": few}})
    assert weak.evidence["early, mean: Spearman rho"] == 1.0 and weak.verdict == "inconclusive"
