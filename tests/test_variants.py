"""Gradient-descent variants: the regime classifier against the quadratic's exact theory, the scaling rules,
B_max and the claim rules on synthetic numbers, and the regression problem's run options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlab.analysis.regimes import classify_loss, classify_trajectory, quadratic_theory
from batchlab.engine import RunSpec, train_group
from batchlab.engine.spec import TaskSpec
from batchlab.executors import TaskUnit, execute
from batchlab.studies.variants.claims import rule_l1, rule_s1, rule_v2
from batchlab.studies.variants.common import scaled_lr, warmup
from batchlab.studies.variants.linear_scaling import b_max

pytestmark = pytest.mark.usefixtures("one_thread")


@settings(max_examples=200, deadline=None)
@given(lr=st.floats(min_value=1e-4, max_value=2.0).filter(lambda x: min(abs(x - 0.5), abs(x - 1.0)) > 1e-3))
def test_quadratic_trajectory_labels_match_the_theory(lr):
    """The engine-free trajectory (the quadratic-gd task) classified from its errors equals the closed form."""
    spec = TaskSpec(kind="quadratic-gd", args={"lrs": [lr], "steps": 100})
    errors = execute(TaskUnit(spec, None), torch.device("cpu"), None).arrays["errors"][0]
    assert classify_trajectory(errors, 1e-6) == quadratic_theory(lr, 100, 1e-6)


def test_quadratic_theory_regions():
    assert [quadratic_theory(lr, 1000, 1e-6) for lr in (0.2, 0.5, 0.7, 1.0, 1.3, 1e-5)] == [
        "converges",
        "converges",  # lr 0.5 jumps to w* in one step
        "oscillates",
        "oscillates",  # |1 - 2 lr| = 1: flips forever
        "diverges",
        "stalls",
    ]


def test_loss_curve_labels():
    t = np.arange(50)
    assert classify_loss(2.3 * np.exp(-t / 10)) == "converges"
    assert classify_loss(2.3 * np.exp(-t / 10) * (1 + 0.3 * (-1) ** t)) == "oscillates"
    assert classify_loss(np.r_[2.3, 2.0, np.nan]) == "diverges"
    assert classify_loss(np.r_[2.3, 2.5, 3.0]) == "diverges"
    assert classify_loss(2.3 - 0.001 * t) == "stalls"


def test_scaling_rules_and_goyal_warmup():
    assert scaled_lr("linear", 0.01, 1024, 64) == pytest.approx(0.16)
    assert scaled_lr("sqrt", 0.01, 1024, 64) == pytest.approx(0.04)
    ramp = warmup(0.01, 0.16, 5)
    assert (ramp.kind, ramp.warmup_epochs, ramp.warmup_start) == ("warmup", 5, pytest.approx(0.0625))
    assert warmup(0.01, 0.01, 5).kind == "constant"


def test_b_max_is_the_last_batch_before_the_first_break():
    bs = [64, 256, 1024, 4096]
    assert b_max(bs, [0.90, 0.895, 0.905, 0.5], 0.90) == 1024
    assert b_max(bs, [0.90, 0.85, 0.90, 0.90], 0.90) == 64  # a break is a break, even if later batches recover
    assert b_max(bs, [0.90, 0.90, np.nan, 0.90], 0.90) == 256  # diverged


def test_s1_verdicts():
    up = {"sgd": {"linear": 256, "linear+warmup": 1024, "sqrt": 256}}
    assert rule_s1(up, 64, 4096).verdict == "supported"
    assert rule_s1({"sgd": {"linear": 1024, "linear+warmup": 256, "sqrt": 64}}, 64, 4096).verdict == "not supported"
    assert rule_s1({"sgd": {"linear": 1024, "linear+warmup": 1024, "sqrt": 64}}, 64, 4096).verdict == "inconclusive"


def test_v2_rule():
    smooth = {"batch GD": 0.001, "SGD (batch 1)": 0.2, "mini-batch (32)": 0.05}
    ahead = {
        "batch GD": np.array([5.0, 2.0]),
        "SGD (batch 1)": np.array([0.1, 0.01]),
        "mini-batch (32)": np.array([1.0, 0.1]),
    }
    assert rule_v2(ahead, smooth).verdict == "supported"
    behind = ahead | {"mini-batch (32)": np.array([1.0, 3.0])}
    assert rule_v2(behind, smooth).verdict == "not supported"
    assert rule_v2(ahead, smooth | {"batch GD": 0.5}).verdict == "not supported"


def test_l1_rule():
    lrs, theory = (0.1, 0.7), ["converges", "oscillates"]
    assert rule_l1(lrs, theory, theory, tolerance=1e-6, steps=100).verdict == "supported"
    wrong = rule_l1(lrs, ["converges", "diverges"], theory, tolerance=1e-6, steps=100)
    assert wrong.verdict == "not supported" and wrong.why == "mismatch at lr 0.7: diverges vs oscillates"
    assert rule_l1(lrs, None, theory, tolerance=1e-6, steps=100).why == "the quadratic task is missing"


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
