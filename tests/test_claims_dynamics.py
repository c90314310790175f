"""The verdict rules of claims D1-D8 on small synthetic inputs whose right verdict is known.

Every rule is a pure function of final values (fractions for accuracies) or curves, so no training
happens here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from batchlab.claims import VERDICTS
from batchlab.studies.dynamics import (
    concavity,
    linear_r2,
    monotone_decrease_claim,
    power_law_exponent,
    rule_d1,
    rule_d2,
    rule_d3,
    rule_d4,
    rule_d5,
    rule_d6,
    rule_d7,
    rule_d8,
)

NAN = float("nan")


def a(*values):
    return np.array(values, dtype=float)


def check(claim, verdict, id):
    """Common checks: id, verdict, a rule and a reason; numbers behind any decided verdict."""
    assert claim.id == id
    assert claim.verdict == verdict, (claim.why, claim.evidence)
    assert claim.verdict in VERDICTS
    assert claim.statement and claim.source and claim.rule and claim.why
    if verdict != "inconclusive":
        assert claim.evidence
        for key, value in claim.evidence.items():
            assert isinstance(value, (int, float, str)), key
    return claim


# ------------------------------------------------------------------------------------------ D1


def test_d1_monotone_decrease():
    samples = [a(0.95, 0.951), a(0.93, 0.931), a(0.90, 0.902)]
    check(monotone_decrease_claim("D1", "s", "src", [64, 256, 1024], samples, "test accuracy"), "supported", "D1")


def test_d1_overlapping_seeds_not_supported():
    samples = [a(0.95, 0.90), a(0.93, 0.94), a(0.90, 0.902)]
    check(monotone_decrease_claim("D1", "s", "src", [64, 256, 1024], samples, "test accuracy"), "not supported", "D1")


def test_d1_single_seed_inconclusive():
    samples = [a(0.95), a(0.93), a(0.90)]
    check(monotone_decrease_claim("D1", "s", "src", [64, 256, 1024], samples, "test accuracy"), "inconclusive", "D1")


def test_d1_a_diverged_seed_is_inconclusive_and_names_its_batch_size():
    clear_decrease = [a(0.95, 0.951, 0.952), a(0.93, 0.931, 0.932), a(0.90, 0.902, 0.901)]
    assert rule_d1([64, 256, 1024], clear_decrease).verdict == "supported"
    diverged = [a(0.95, 0.951, 0.952), a(0.93, 0.931, 0.932), a(0.90, NAN, 0.901)]
    claim = check(rule_d1([64, 256, 1024], diverged), "inconclusive", "D1")
    assert "diverged" in claim.why and "batch 1024 (1 of 3 seeds)" in claim.why, claim.why
    assert "batch 64" not in claim.why and "batch 256" not in claim.why, claim.why


# ------------------------------------------------------------------------------------------ D2


def test_d2_within_half_a_point_is_supported():
    c = check(rule_d2(a(0.950, 0.952), a(0.948, 0.951), a(0.90, 0.91)), "supported", "D2")
    assert c.evidence["gap (pp)"] == pytest.approx(-0.15)
    assert c.evidence["gap without raising lr (pp)"] == pytest.approx(-4.6)


def test_d2_still_below_is_not_supported():
    c = check(rule_d2(a(0.95, 0.952), a(0.93, 0.935)), "not supported", "D2")
    assert c.evidence["gap (pp)"] == pytest.approx(-1.85)
    assert "below" in c.why


def test_d2_overshoot_is_outside_the_band():
    # the rule is "within 0.5 pp", so ending 2 pp above batch 64 is not "recovering" it; the reason says so
    c = check(rule_d2(a(0.93, 0.93), a(0.95, 0.95)), "not supported", "D2")
    assert "overshoots" in c.why


def test_d2_boundary_is_inclusive():
    check(rule_d2(a(0.950), a(0.945)), "supported", "D2")


@pytest.mark.parametrize("missing", [a(), a(NAN, NAN)])
def test_d2_missing_or_diverged_is_inconclusive(missing):
    check(rule_d2(a(0.95, 0.95), missing), "inconclusive", "D2")


def test_d2_a_diverged_seed_is_left_out_and_counted():
    c = check(rule_d2(a(0.95, 0.95), a(0.948, NAN)), "supported", "D2")
    assert c.evidence["diverged runs left out"] == 1


# ------------------------------------------------------------------------------------------ D3

A, B_CONTROL = a(0.900, 0.902), a(0.80, 0.81)


def test_d3_all_switches_recover_and_control_does_not():
    c = check(rule_d3(A, B_CONTROL, a(0.899, 0.900), a(0.903, 0.901), a(0.897, 0.899)), "supported", "D3")
    assert c.evidence["(b) - (a) (pp)"] == pytest.approx(-9.6)


def test_d3_one_switch_fails():
    c = check(rule_d3(A, B_CONTROL, a(0.899, 0.900), a(0.903, 0.901), a(0.85, 0.86)), "not supported", "D3")
    assert "(e)" in c.why and "(c), (d) recover" in c.why


def test_d3_control_also_recovers_is_not_supported():
    c = check(rule_d3(A, a(0.899, 0.902), A, A, A), "not supported", "D3")
    assert "control (b)" in c.why


def test_d3_missing_schedule_is_inconclusive():
    c = check(rule_d3(A, B_CONTROL, A, a(), A), "inconclusive", "D3")
    assert "(d)" in c.why


# ------------------------------------------------------------------------------------------ D4

BATCHES, LRS = (64, 256, 1024), (0.01, 0.1)
# W shrinks with batch and grows with lr; accuracy rises with W
W_GRID = a(2.0, 5.0, 1.4, 3.0, 0.7, 2.0).reshape(3, 2)


def test_d4_accuracy_rises_with_w():
    acc = 0.80 + 0.02 * W_GRID
    c = check(rule_d4(W_GRID, acc, BATCHES, LRS), "supported", "D4")
    assert c.evidence["Spearman rho(W, test accuracy)"] == pytest.approx(1.0)
    assert c.evidence["W grows as batch shrinks, at every lr"] == "yes"
    assert c.evidence["W grows with lr, at every batch size"] == "yes"
    assert c.evidence["cells"] == 6


def test_d4_accuracy_falls_with_w():
    acc = 0.99 - 0.02 * W_GRID
    c = check(rule_d4(W_GRID, acc, BATCHES, LRS), "not supported", "D4")
    assert c.evidence["Spearman rho(W, test accuracy)"] == pytest.approx(-1.0)


def test_d4_reports_when_w_does_not_grow_with_lr():
    w = W_GRID.copy()
    w[0] = (5.0, 2.0)  # at batch 64 the larger lr travels less
    c = check(rule_d4(w, 0.8 + 0.02 * w, BATCHES, LRS), "supported", "D4")
    assert c.evidence["W grows with lr, at every batch size"].startswith("no (2 of 3")


def test_d4_too_few_cells_is_inconclusive():
    w = W_GRID.copy()
    w[1:] = NAN
    check(rule_d4(w, 0.8 + 0.02 * W_GRID, BATCHES, LRS), "inconclusive", "D4")


def test_d4_constant_accuracy_is_inconclusive():
    check(rule_d4(W_GRID, np.full((3, 2), 0.9), BATCHES, LRS), "inconclusive", "D4")


# ------------------------------------------------------------------------------------------ D5


def test_d5_long_run_matches():
    c = check(rule_d5(a(2.0, 2.1), a(0.95, 0.95), a(2.05, 2.0), a(0.947, 0.949), steps_small=28140,
                      steps_long=28320), "supported", "D5")
    assert c.evidence["W ratio long / 64"] == pytest.approx(4.05 / 4.1)
    assert c.evidence["steps long run"] == 28320


def test_d5_distance_too_short():
    c = check(rule_d5(a(2.0, 2.0), a(0.95, 0.95), a(1.6, 1.6), a(0.95, 0.95)), "not supported", "D5")
    assert "outside ±15%" in c.why


def test_d5_accuracy_too_low():
    c = check(rule_d5(a(2.0, 2.0), a(0.95, 0.95), a(2.0, 2.0), a(0.94, 0.94)), "not supported", "D5")
    assert c.evidence["accuracy gap long - 64 (pp)"] == pytest.approx(-1.0)


def test_d5_missing_long_run_is_inconclusive():
    check(rule_d5(a(2.0, 2.0), a(0.95, 0.95), a(), a()), "inconclusive", "D5")


# ------------------------------------------------------------------------------------------ D6

EPOCHS = np.arange(31.0)
STEPS = 938 * EPOCHS


def seeds(curve, n=3, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return np.vstack([curve * (1 + noise * rng.standard_normal(curve.shape)) for _ in range(n)])


def test_d6_sqrt_sgd_and_linear_adam():
    sgd = seeds(0.05 * np.sqrt(STEPS))
    adam = seeds(np.where(EPOCHS > 0, 20 + 3 * EPOCHS, 0.0), noise=0.002)
    c = check(rule_d6(STEPS, sgd, EPOCHS, adam, fit_start=5, fit_end=30, sgd_epochs=EPOCHS), "supported", "D6")
    assert c.evidence["SGD power-law exponent (W ~ steps^a)"] == pytest.approx(0.5)
    assert c.evidence["Adam fit window (epochs)"] == "5..30"
    assert "SGD linear-fit R^2 (Adam's window)" in c.evidence


def test_d6_convex_sgd_is_not_supported():
    sgd = seeds(1e-6 * STEPS ** 1.5)
    adam = seeds(3.0 * EPOCHS)
    c = check(rule_d6(STEPS, sgd, EPOCHS, adam, fit_start=5), "not supported", "D6")
    assert c.evidence["SGD fraction negative"] == 0.0


def test_d6_saturating_adam_is_not_supported():
    sgd = seeds(np.log1p(STEPS))
    adam = seeds(50 * (1 - np.exp(-EPOCHS / 4)))
    c = check(rule_d6(STEPS, sgd, EPOCHS, adam, fit_start=5, fit_end=30), "not supported", "D6")
    assert c.evidence["Adam linear-fit R^2"] < 0.95


def test_d6_too_few_points_is_inconclusive():
    check(rule_d6(STEPS[:3], seeds(np.sqrt(STEPS[:3])), EPOCHS[:3], seeds(EPOCHS[:3]), fit_start=5),
          "inconclusive", "D6")


def test_d6_missing_runs_is_inconclusive():
    check(rule_d6([], np.zeros((0, 0)), EPOCHS, seeds(EPOCHS), fit_start=5), "inconclusive", "D6")


def test_curve_shape_helpers():
    x = np.arange(1.0, 20.0)
    assert concavity(x, np.sqrt(x)) == (1.0, 17)
    assert concavity(x, x ** 2)[0] == 0.0
    assert power_law_exponent(x, 3 * x ** 0.7) == pytest.approx(0.7)
    assert linear_r2(x, 2 * x + 1) == pytest.approx(1.0)
    assert math.isnan(linear_r2(x, np.ones_like(x)))


# ------------------------------------------------------------------------------------------ D7


def test_d7_adam_far_and_worse():
    c = check(rule_d7(a(2.0, 2.2), a(40.0, 44.0), a(0.97, 0.971), a(0.96, 0.962)), "supported", "D7")
    assert c.evidence["W ratio Adam / SGD"] == pytest.approx(20.0)


def test_d7_not_far_enough():
    c = check(rule_d7(a(2.0, 2.0), a(10.0, 10.0), a(0.97, 0.97), a(0.96, 0.96)), "not supported", "D7")
    assert "5.0x" in c.why


def test_d7_adam_better():
    c = check(rule_d7(a(2.0, 2.0), a(40.0, 40.0), a(0.96, 0.96), a(0.97, 0.97)), "not supported", "D7")
    assert "not lower" in c.why


def test_d7_missing_adam_is_inconclusive():
    check(rule_d7(a(2.0, 2.0), a(), a(0.97, 0.97), a()), "inconclusive", "D7")


# ------------------------------------------------------------------------------------------ D8

LAYERS = ("cos_init:net.0", "cos_init:net.2", "cos_init:net.4")


def cos(*values):
    return {layer: a(v, v) for layer, v in zip(LAYERS, values)}


def test_d8_sgd_rotates_adam_moves_away():
    c = check(rule_d8(a(44.0, 44.2), a(44.5, 44.9), cos(0.99, 0.98, 0.95), cos(0.2, 0.3, 0.4)), "supported", "D8")
    assert c.evidence["SGD cos net.4"] == pytest.approx(0.95)
    assert c.evidence["Adam cos net.0"] == pytest.approx(0.2)


def test_d8_sgd_norm_grows_too_much():
    c = check(rule_d8(a(44.0), a(50.0), cos(0.99, 0.98, 0.95), cos(0.2, 0.3, 0.4)), "not supported", "D8")
    assert c.evidence["SGD norm ratio"] == pytest.approx(50 / 44)


def test_d8_one_sgd_layer_turns_too_far():
    check(rule_d8(a(44.0), a(44.0), cos(0.99, 0.80, 0.95), cos(0.2, 0.3, 0.4)), "not supported", "D8")


def test_d8_one_adam_layer_stays_close():
    c = check(rule_d8(a(44.0), a(44.0), cos(0.99, 0.98, 0.95), cos(0.2, 0.3, 0.6)), "not supported", "D8")
    assert "highest Adam layer cosine 0.600" in c.why


def test_d8_no_cosines_is_inconclusive():
    check(rule_d8(a(44.0), a(44.0), {}, cos(0.2, 0.3, 0.4)), "inconclusive", "D8")


def test_d8_missing_norms_is_inconclusive():
    check(rule_d8(a(), a(), cos(0.99, 0.98, 0.95), cos(0.2, 0.3, 0.4)), "inconclusive", "D8")


def test_monotone_decrease_needs_two_configurations():
    from batchlab.studies.dynamics import monotone_decrease_claim

    claim = monotone_decrease_claim("D1", "s", "src", [64], [np.array([0.9, 0.91])], "test accuracy")
    assert claim.verdict == "inconclusive"
