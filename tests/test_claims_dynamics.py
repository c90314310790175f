"""The verdict rules of claims D1-D8 on small synthetic inputs whose right verdict is known.

Every rule is a pure function of the seeds' final values (fractions for accuracies, in seed order) or
their curves, so no training happens here. Each rule is shown supported, not supported, and
inconclusive when the seeds cannot decide.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchlab.claims import ClaimSpec
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
    assert claim.statement and claim.source and claim.rule and claim.why
    if verdict != "inconclusive":
        assert claim.evidence
        for key, value in claim.evidence.items():
            assert isinstance(value, (int, float, str)), key
    return claim


# ------------------------------------------------------------------------------------------ D1
SEED_NOISE = a(0.0, 0.0006, -0.0005, 0.0002)  # the seeds' shared offsets: pairing removes them


def test_d1_significant_decrease_at_every_step():
    c = check(rule_d1([64, 256, 1024], [0.98 + SEED_NOISE, 0.97 + SEED_NOISE, 0.95 + SEED_NOISE]), "supported", "D1")
    assert c.evidence["batch 64 -> batch 256: estimate (pp)"] == pytest.approx(-1.0)
    assert c.evidence["batch 64 -> batch 256: test"] == "one-sided paired t"
    assert c.evidence["batch 64 -> batch 256: Holm p"] < 0.05


def test_d1_an_increase_is_not_supported():
    check(rule_d1([64, 256], [0.97 + SEED_NOISE, 0.98 + SEED_NOISE]), "not supported", "D1")


def test_d1_overlapping_seeds_are_inconclusive():
    c = check(rule_d1([64, 256], [a(0.97, 0.95, 0.99), a(0.968, 0.99, 0.95)]), "inconclusive", "D1")
    assert "batch 64 -> batch 256" in c.why


def test_d1_single_seed_inconclusive():
    check(rule_d1([64, 256, 1024], [a(0.98), a(0.97), a(0.95)]), "inconclusive", "D1")


def test_d1_a_diverged_seed_is_left_out_and_counted_and_one_seed_left_is_inconclusive():
    c = check(rule_d1([64, 1024], [a(0.98, 0.981), a(0.95, NAN)]), "inconclusive", "D1")
    assert c.evidence["diverged runs left out"] == "batch 1024: 1"
    c = check(rule_d1([64, 1024], [0.98 + SEED_NOISE, 0.95 + a(0.0, 0.0006, NAN, 0.0002)]), "supported", "D1")
    assert c.evidence["batch 64 -> batch 1024: seeds"] == "3/3"


def test_monotone_decrease_needs_two_configurations():
    claim = monotone_decrease_claim(ClaimSpec("D1", "s", "src"), [64], [np.array([0.9, 0.91])], "test accuracy")
    assert claim.verdict == "inconclusive"


# ------------------------------------------------------------------------------------------ D2


def test_d2_equivalent_within_half_a_point_is_supported():
    c = check(rule_d2(0.98 + SEED_NOISE, 0.979 + SEED_NOISE, 0.95 + SEED_NOISE), "supported", "D2")
    assert c.evidence["batch 1024, lr 0.1 - batch 64, lr 0.01: estimate (pp)"] == pytest.approx(-0.1)
    assert c.evidence["gap without raising lr (pp)"] == pytest.approx(-3.0)
    assert "TOST" in c.evidence["batch 1024, lr 0.1 - batch 64, lr 0.01: test"]


def test_d2_clearly_below_is_not_supported():
    check(rule_d2(0.98 + SEED_NOISE, 0.97 + SEED_NOISE), "not supported", "D2")


def test_d2_overshoot_is_not_supported():
    check(rule_d2(0.97 + SEED_NOISE, 0.98 + SEED_NOISE), "not supported", "D2")


def test_d2_a_mean_gap_inside_the_band_with_wide_seeds_is_inconclusive():
    """Three seeds of sd 0.8 pp and a -0.3 pp mean gap: the point estimate is inside ±0.5 pp, the CI is not."""
    c = check(rule_d2(a(0.950, 0.958, 0.942), a(0.944, 0.959, 0.938)), "inconclusive", "D2")
    assert "crosses" in c.why


@pytest.mark.parametrize("missing", ["small", "large"])
def test_d2_missing_or_diverged_is_inconclusive(missing):
    small, large = (a(), a(0.98, 0.98)) if missing == "small" else (a(0.98, 0.98), a(NAN, NAN))
    check(rule_d2(small, large), "inconclusive", "D2")


def test_d2_a_diverged_seed_is_left_out_and_counted():
    c = check(rule_d2(0.98 + SEED_NOISE, a(0.979, 0.9796, NAN, 0.9792)), "supported", "D2")
    assert c.evidence["diverged runs left out"] == 1


# ------------------------------------------------------------------------------------------ D3


def d3(c=0.98, d=0.98, e=0.98, b=0.96):
    return [0.98 + SEED_NOISE, b + SEED_NOISE, c + SEED_NOISE, d + SEED_NOISE, e + SEED_NOISE]


def test_d3_all_switches_recover_and_the_control_stays_below():
    c = check(rule_d3(*d3()), "supported", "D3")
    assert c.evidence["(b) - (a): Holm p"] < 0.05


def test_d3_one_switch_ends_clearly_lower_is_not_supported():
    check(rule_d3(*d3(d=0.97)), "not supported", "D3")


def test_d3_a_control_that_also_recovers_is_not_supported():
    """Old rule's loophole: the control ending 0.5 pp *above* (a) counted as 'not within'. Now it must be below."""
    check(rule_d3(*d3(b=0.985)), "not supported", "D3")


def test_d3_missing_schedule_is_inconclusive():
    check(rule_d3(a(0.98), a(), a(0.98), a(0.98), a(0.98)), "inconclusive", "D3")


# ------------------------------------------------------------------------------------------ D4

BS, LRS = (64, 256, 1024), (0.01, 0.1)


def w_cells(w_means):
    return [[w + 0.1 * SEED_NOISE * 100 for w in row] for row in w_means]


def test_d4_w_grows_everywhere_and_accuracy_rises_with_w():
    w = [[4.0, 8.0], [2.0, 6.0], [1.0, 3.0]]
    acc = a(0.97, 0.98, 0.96, 0.975, 0.95, 0.965).reshape(3, 2)
    c = check(rule_d4(w_cells(w), acc, BS, LRS), "supported", "D4")
    assert c.evidence["W steps significantly growing (Holm)"] == "7 of 7"
    assert c.evidence["Spearman rho(W, test accuracy)"] == pytest.approx(1.0)


def test_d4_accuracy_falling_with_w_is_not_supported():
    w = [[4.0, 8.0], [2.0, 6.0], [1.0, 3.0]]
    acc = 1 - a(0.97, 0.98, 0.96, 0.975, 0.95, 0.965).reshape(3, 2)
    check(rule_d4(w_cells(w), acc, BS, LRS), "not supported", "D4")


def test_d4_w_shrinking_with_lr_is_not_supported_and_named():
    w = [[8.0, 4.0], [6.0, 2.0], [3.0, 1.0]]
    acc = a(0.98, 0.97, 0.975, 0.96, 0.965, 0.95).reshape(3, 2)
    c = check(rule_d4(w_cells(w), acc, BS, LRS), "not supported", "D4")
    assert "batch 64: lr 0.01 -> 0.1" in c.evidence["W steps significantly not growing"]


def test_d4_too_few_cells_is_inconclusive():
    w = [[a(1.0), a(NAN)], [a(NAN), a(NAN)], [a(2.0), a(NAN)]]
    check(rule_d4(w, np.full((3, 2), 0.9), BS, LRS), "inconclusive", "D4")


def test_d4_constant_accuracy_is_inconclusive():
    check(rule_d4(w_cells([[4.0, 8.0], [2.0, 6.0], [1.0, 3.0]]), np.full((3, 2), 0.9), BS, LRS), "inconclusive", "D4")


# ------------------------------------------------------------------------------------------ D5


def test_d5_long_run_reaches_the_distance_and_the_accuracy():
    w64 = a(100.0, 102.0, 98.0, 101.0)
    c = check(
        rule_d5(w64, 0.98 + SEED_NOISE, 0.99 * w64, 0.9795 + SEED_NOISE, steps_small=28140, steps_long=28160),
        "supported",
        "D5",
    )
    assert c.evidence["W ratio long / 64: estimate"] == pytest.approx(0.99)
    assert c.evidence["steps long run"] == 28160


def test_d5_distance_too_short_is_not_supported():
    w64 = a(100.0, 102.0, 98.0, 101.0)
    check(rule_d5(w64, 0.98 + SEED_NOISE, 0.6 * w64, 0.98 + SEED_NOISE), "not supported", "D5")


def test_d5_accuracy_too_low_is_not_supported():
    w64 = a(100.0, 102.0, 98.0, 101.0)
    check(rule_d5(w64, 0.98 + SEED_NOISE, w64, 0.97 + SEED_NOISE), "not supported", "D5")


def test_d5_missing_long_run_is_inconclusive():
    check(rule_d5(a(2.0, 2.0), a(0.95, 0.95), a(), a()), "inconclusive", "D5")


# ------------------------------------------------------------------------------------------ D6

EPOCHS = np.arange(31.0)
STEPS = 938 * EPOCHS


def seeds(curve, exponents=(0.0, 0.0, 0.0)):
    """One curve per seed, each bent by t^e (so the seeds' fitted exponents differ by e)."""
    t = np.maximum(EPOCHS, 1.0)
    return np.vstack([curve * t**e for e in exponents])


def test_d6_sqrt_sgd_and_linear_adam_is_supported():
    sgd = seeds(0.05 * np.sqrt(STEPS), (0.0, 0.01, -0.01))
    adam = seeds(3.0 * STEPS / 938, (0.0, 0.01, -0.01))
    c = check(
        rule_d6(STEPS, sgd, STEPS, adam, fit_start=5, fit_end=30, sgd_epochs=EPOCHS, adam_epochs=EPOCHS),
        "supported",
        "D6",
    )
    assert c.evidence["SGD exponent a (mean over seeds)"] == pytest.approx(0.5, abs=1e-9)
    assert c.evidence["Adam exponent a (mean over seeds)"] == pytest.approx(1.0, abs=1e-9)


def test_d6_adam_growing_like_sqrt_is_not_supported_even_though_a_line_fits_it():
    sgd = seeds(0.05 * STEPS**0.3, (0.0, 0.01, -0.01))
    adam = seeds(2.0 * STEPS**0.37, (0.0, 0.01, -0.01))
    c = check(
        rule_d6(STEPS, sgd, STEPS, adam, fit_start=5, fit_end=30, sgd_epochs=EPOCHS, adam_epochs=EPOCHS),
        "not supported",
        "D6",
    )
    assert c.evidence["Adam linear-fit R^2 in the window (evidence only)"] > 0.95
    assert "R^2 alone cannot decide" in c.why


def test_d6_one_seed_each_is_inconclusive():
    check(
        rule_d6(
            STEPS,
            seeds(np.sqrt(STEPS))[:1],
            STEPS,
            seeds(STEPS)[:1],
            fit_start=5,
            sgd_epochs=EPOCHS,
            adam_epochs=EPOCHS,
        ),
        "inconclusive",
        "D6",
    )


def test_d6_too_few_points_is_inconclusive():
    check(
        rule_d6(
            STEPS[:3],
            seeds(np.sqrt(STEPS))[:, :3],
            STEPS[:3],
            seeds(STEPS)[:, :3],
            fit_start=5,
            sgd_epochs=EPOCHS[:3],
            adam_epochs=EPOCHS[:3],
        ),
        "inconclusive",
        "D6",
    )


def test_d6_missing_runs_is_inconclusive():
    check(rule_d6([], np.zeros((0, 0)), STEPS, seeds(STEPS), fit_start=5), "inconclusive", "D6")


def test_curve_shape_helpers():
    x = np.arange(1.0, 20.0)
    assert concavity(x, np.sqrt(x)) == (1.0, 17)
    assert concavity(x, x**2)[0] == 0.0
    assert power_law_exponent(x, 3 * x**0.7) == pytest.approx(0.7)
    assert linear_r2(x, 2 * x + 1) == pytest.approx(1.0)
    assert math.isnan(linear_r2(x, np.ones_like(x)))


# ------------------------------------------------------------------------------------------ D7


def test_d7_adam_far_and_significantly_worse_is_supported():
    c = check(
        rule_d7(a(2.0, 2.2, 2.1), a(40.0, 44.0, 43.0), 0.97 + SEED_NOISE[:3], 0.96 + SEED_NOISE[:3]), "supported", "D7"
    )
    assert c.evidence["W ratio Adam / SGD, smallest pair"] == pytest.approx(20.0)


def test_d7_one_seed_pair_not_far_enough_is_not_supported():
    check(
        rule_d7(a(2.0, 2.0, 2.0), a(40.0, 19.0, 40.0), 0.97 + SEED_NOISE[:3], 0.96 + SEED_NOISE[:3]),
        "not supported",
        "D7",
    )


def test_d7_adam_not_worse_is_not_supported_and_undecided_accuracy_inconclusive():
    check(
        rule_d7(a(2.0, 2.0, 2.0), a(40.0, 40.0, 40.0), 0.96 + SEED_NOISE[:3], 0.97 + SEED_NOISE[:3]),
        "not supported",
        "D7",
    )
    check(rule_d7(a(2.0, 2.0), a(40.0, 40.0), a(0.97, 0.96), a(0.965, 0.968)), "inconclusive", "D7")
    check(rule_d7(a(2.0, 2.0), a(), a(0.97, 0.97), a()), "inconclusive", "D7")


# ------------------------------------------------------------------------------------------ D8

LAYERS = ("cos_init:net.0", "cos_init:net.2", "cos_init:net.4")


def cos(*values, n=2):
    return {layer: np.full(n, v) for layer, v in zip(LAYERS, values)}


def test_d8_sgd_rotates_adam_moves_away_for_every_seed():
    c = check(rule_d8(a(44.0, 44.2), a(44.5, 44.9), cos(0.99, 0.98, 0.95), cos(0.2, 0.3, 0.4)), "supported", "D8")
    assert c.evidence["SGD cos net.4 (mean)"] == pytest.approx(0.95)
    assert c.evidence["Adam highest per-layer cosine (any seed)"] == pytest.approx(0.4)


def test_d8_one_seed_whose_norm_grows_too_much_is_not_supported():
    check(rule_d8(a(44.0, 44.0), a(44.5, 50.0), cos(0.99, 0.98, 0.95), cos(0.2, 0.3, 0.4)), "not supported", "D8")


def test_d8_one_sgd_layer_turns_too_far():
    check(rule_d8(a(44.0, 44.0), a(44.0, 44.0), cos(0.99, 0.80, 0.95), cos(0.2, 0.3, 0.4)), "not supported", "D8")


def test_d8_one_adam_layer_stays_close():
    c = check(rule_d8(a(44.0, 44.0), a(44.0, 44.0), cos(0.99, 0.98, 0.95), cos(0.2, 0.3, 0.6)), "not supported", "D8")
    assert "highest Adam layer cosine 0.600" in c.why


def test_d8_a_single_seed_is_inconclusive():
    check(rule_d8(a(44.0), a(44.0), cos(0.99, 0.98, 0.95, n=1), cos(0.2, 0.3, 0.4, n=1)), "inconclusive", "D8")


def test_d8_no_cosines_is_inconclusive():
    check(rule_d8(a(44.0), a(44.0), {}, cos(0.2, 0.3, 0.4)), "inconclusive", "D8")


def test_d8_missing_norms_is_inconclusive():
    check(rule_d8(a(), a(), cos(0.99, 0.98, 0.95), cos(0.2, 0.3, 0.4)), "inconclusive", "D8")
