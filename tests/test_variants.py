"""Gradient-descent variants: the regime classifier against the quadratic's exact theory, the scaling rules,
B_max and the claim rules on synthetic numbers, and the regression problem's run options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.analysis.regimes import LOSS_LABELS, classify_loss, classify_trajectory, quadratic_theory
from batchlab.engine import RunSpec, train_group
from batchlab.engine.spec import TaskSpec
from batchlab.executors import TaskUnit, execute
from batchlab.studies.variants.common import scaled_lr, warmup

pytestmark = pytest.mark.usefixtures("one_thread")


def quadratic_errors(lrs, curvature=2.0, **args) -> np.ndarray:
    """The quadratic-gd task's errors w_t - w* (engine-free), one row per lr, 100 steps."""
    spec = TaskSpec(kind="quadratic-gd", args={"lrs": list(lrs), "steps": 100, "curvature": curvature, **args})
    return execute(TaskUnit(spec, None), torch.device("cpu"), None).arrays["errors"]


@settings(max_examples=200, deadline=None)
@given(
    eta_l=st.floats(min_value=2e-4, max_value=4.0).filter(lambda x: min(abs(x - 1), abs(x - 2)) > 2e-3),
    curvature=st.sampled_from([0.5, 2.0, 3.0]),
)
def test_quadratic_trajectory_labels_match_the_closed_form(eta_l, curvature):
    """The trajectory classified from its errors alone equals the closed form from eta L, at any curvature."""
    lr = eta_l / curvature
    (errors,) = quadratic_errors([lr], curvature)
    assert classify_trajectory(errors, 1e-6) == quadratic_theory(lr, curvature, 100, 1e-6)


@pytest.mark.parametrize("curvature", [0.5, 2.0, 4.0])
def test_on_the_boundaries_one_over_l_lands_and_two_over_l_is_a_period_two_orbit(curvature):
    lrs = [1 / curvature, 2 / curvature]
    one, two = quadratic_errors(lrs, curvature)
    assert one[0] == -2 and np.all(one[1:] == 0)  # eta L = 1: w* in one step, exactly
    assert np.all(np.abs(two) == 2) and np.all(two[1:] == -two[:-1])  # eta L = 2: w0, 2 w* - w0, w0, ...
    assert [classify_trajectory(e, 1e-6) for e in (one, two)] == ["converges", "period-2"]
    assert [quadratic_theory(lr, curvature, 100, 1e-6) for lr in lrs] == ["converges", "period-2"]


def test_a_period_two_orbit_is_found_through_rounding():
    """w* and w0 that are not exact in binary: 2 w* - w rounds each step, the orbit still keeps its size."""
    (errors,) = quadratic_errors([2 / 3], 3.0, w0=0.1, w_star=2.3)
    assert classify_trajectory(errors, 1e-6) == quadratic_theory(2 / 3, 3.0, 100, 1e-6) == "period-2"
    assert classify_trajectory(errors * 1.001 ** np.arange(101), 1e-6) == "diverges"  # a slowly growing flip


def test_quadratic_theory_regions():
    assert [quadratic_theory(lr, 2.0, 1000, 1e-6) for lr in (0.2, 0.5, 0.7, 1.0, 1.3, 1e-5)] == [
        "converges",
        "converges",  # eta L = 1 jumps to w* in one step
        "oscillates",
        "period-2",  # |1 - eta L| = 1: flips forever between w0 and its mirror image
        "diverges",
        "stalls",
    ]
    assert quadratic_theory(0.95, 2.0, 100, 1e-6) == "stalls"  # 0.9^100 = 2.7e-5: oscillating, too slowly
    assert quadratic_theory(0.95, 2.0, 200, 1e-6) == "oscillates"  # 0.9^200 = 7e-10


def test_loss_curve_labels():
    t = np.arange(50)
    assert classify_loss(2.3 * np.exp(-t / 10)) == "converges"
    assert classify_loss(2.3 * np.exp(-t / 10) * (1 + 0.3 * (-1) ** t)) == "fluctuates"  # not `oscillates`
    assert classify_loss(np.r_[2.3, 2.0, np.nan]) == "diverges"
    assert classify_loss(np.r_[2.3, 2.5, 3.0]) == "diverges"
    assert classify_loss(2.3 - 0.001 * t) == "stalls"
    assert set(map(classify_loss, [2.3 * np.exp(-t / 10), 2.3 - 0.001 * t])) <= set(LOSS_LABELS)


def test_scaling_rules_and_goyal_warmup():
    assert scaled_lr("linear", 0.01, 1024, 64) == pytest.approx(0.16)
    assert scaled_lr("sqrt", 0.01, 1024, 64) == pytest.approx(0.04)
    ramp = warmup(0.01, 0.16, 5)
    assert (ramp.kind, ramp.warmup_epochs, ramp.warmup_start) == ("warmup", 5, pytest.approx(0.0625))
    assert warmup(0.01, 0.01, 5).kind == "constant"


def test_regression_options_change_the_problem_and_the_model():
    common = dict(dataset="regression", model="linear", widths=(), batch_size=50, epochs=1, probes=("weights",))
    (a,) = train_group([RunSpec(**common, regression=(200, 2, 0.1, 0), bias=False)], device="cpu")
    (b,) = train_group([RunSpec(**common, regression=(200, 2, 0.1, 0))], device="cpu")
    assert set(k for k in a.metrics[0] if k.startswith("w:")) == {"w:linear.weight[0]", "w:linear.weight[1]"}
    assert "w:linear.bias[0]" in b.metrics[0]
    first = [a.metrics[s]["w:linear.weight[0]"] for s in range(len(a.metrics))]
    assert len(set(first)) == len(first)  # one recorded value per step: the weights moved every step
    assert RunSpec(**common).key != RunSpec(**common, regression=(200, 2, 0.1, 1)).key


def test_step_cost_on_a_cpu_estimates_more_memory_for_a_bigger_batch():
    def cost(b):
        spec = TaskSpec(
            kind="step-cost", args={"run": {"train_subset": 1024, "widths": [16], "batch_size": b}, "steps": 2}
        )
        return execute(TaskUnit(spec, None), torch.device("cpu"), None).scalars

    small, big = cost(8), cost(512)
    assert small["memory_measured"] == big["memory_measured"] == 0.0  # no allocator peak on a CPU: estimated
    # weights, gradients: 2 x (784*16 + 16 + 16*10 + 10) floats; activations: B x (784 + 16 + 10) x 2 floats
    params = 784 * 16 + 16 + 16 * 10 + 10
    assert small["peak_memory_bytes"] == 4 * (2 * params + 8 * 810 * 2)
    assert big["peak_memory_bytes"] - small["peak_memory_bytes"] == 4 * (512 - 8) * 810 * 2
    assert small["seconds_per_step"] > 0
