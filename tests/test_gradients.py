"""Gradient statistics checked against slow, obvious references: loops of single-example backward passes,
closed forms on linear regression, and synthetic gradients with known noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batchlab.engine import RunSpec, train_group
from batchlab.engine.data import load_for, template_model
from batchlab.engine.spec import Checkpoint, TaskSpec
from batchlab.executors import TaskUnit, execute
from batchlab.models import init_params
from batchlab.studies.gradients.claims import power_law, rule_g4, rule_n1, rule_v1
from batchlab.tasks.gradients import (
    mean_batch_error,
    per_example_gram,
    regression_gram,
    two_batch_estimates,
)

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
        measured = mean_batch_error(centered, b, 4000, replace=True, gen=gen)
        assert measured * b / trace == pytest.approx(1, abs=0.08)
        without = mean_batch_error(centered, b, 4000, replace=False, gen=gen)
        assert without == pytest.approx(trace / b * (1024 - b) / 1023, rel=0.08)
    whole = mean_batch_error(centered, 1024, 10, replace=False, gen=gen)
    assert abs(whole) < 1e-9 * trace  # the whole sample is G itself


def test_two_batch_estimator_is_unbiased_on_synthetic_gradients():
    """g_i = G + noise with known tr(Sigma): the mean over many draws of the estimates is the truth."""
    rng = np.random.default_rng(0)
    d, g_true, sigma = 50, np.full(50, 0.2), 0.5
    trace, g2 = d * sigma**2, float(g_true @ g_true)
    small, big = [], []
    for _ in range(4000):
        small.append(np.sum((g_true + sigma * rng.standard_normal((8, d)).mean(0)) ** 2))
        big.append(np.sum((g_true + sigma * rng.standard_normal((64, d)).mean(0)) ** 2))
    est = two_batch_estimates(np.array(small), np.array(big), 8, 64)
    assert est["trace_sigma"] == pytest.approx(trace, rel=0.05)
    assert est["grad_sq_norm"] == pytest.approx(g2, rel=0.05)
    assert est["b_simple"] == pytest.approx(trace / g2, rel=0.08)


def test_noise_scale_task_estimators_agree_at_a_checkpoint(checkpoint):
    args = {"examples": 2048, "small_batch": 16, "big_batch": 512, "draws": 64, "bootstrap": 20}
    r = task("noise-scale", args, checkpoint)
    tb = two_batch_estimates(r.arrays["small_sq_norms"], r.arrays["big_sq_norms"], 16, 512)
    assert r.scalars["per_example_b_simple"] > 0
    assert rule_n1({"early": (r.scalars["per_example_b_simple"], tb["b_simple"])}).verdict == "supported"


def test_power_law_recovers_a_known_exponent_and_leaves_out_diverged_trials():
    bs = np.array([1, 2, 4, 8, 16, 32])
    rng = np.random.default_rng(1)
    norms = 3.0 * bs[:, None] ** 0.5 * rng.lognormal(0, 0.05, (6, 200))
    norms[5, :3] = np.inf
    fit = power_law(bs, norms, n_boot=300)
    assert fit["alpha"] == pytest.approx(0.5, abs=0.02)
    assert fit["ci"][0] < 0.5 < fit["ci"][1] and fit["diverged trials"] == 3


def test_v1_rule_thresholds():
    bs = np.array([1, 2, 4])
    assert rule_v1({"p": (bs, 10.0 / bs * 1.05, 10.0)}).verdict == "supported"
    assert rule_v1({"p": (bs, 10.0 / bs * np.array([1, 1, 1.2]), 10.0)}).verdict == "not supported"
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
    assert rule_n2(fit, 500.0).verdict == "supported"
    assert rule_n2(fit, 5000.0).verdict == "not supported"
    assert rule_n2(fit_steps(bs[:2], steps[:2]), 500.0).verdict == "inconclusive"


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
