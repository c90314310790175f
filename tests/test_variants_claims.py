"""The rules of V2, L1, S1 and S2 on synthetic numbers whose answer is known: each one supported, not supported
and inconclusive; and the lars study's staged plan (lr chosen on tuning seeds, compared on other seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from batchlab.store.schema import RunRecord
from batchlab.studies import get_study
from batchlab.studies.common import Results
from batchlab.studies.variants.claims import DIVERGED_ACC, b_max, rises, rule_l1, rule_s1, rule_s2, rule_v2

GD, SGD, MB = "batch GD", "SGD (batch 1)", "mini-batch (32)"


# --- V2 ---------------------------------------------------------------------------------------------------
def v2_data(worst: dict[str, list[float]], *, epochs: int = 8, gd_bump: bool = False, sgd_flat: bool = False):
    """Batch GD converging linearly per seed (one step an epoch), and each stochastic variant at its seed's
    log ratio `worst[v][s]` to batch GD at epoch 1, then closing in (the ratio shrinks, its log stays the largest
    at epoch 1); the stochastic curves zigzag step to step, SGD's not when `sgd_flat`."""
    seeds = len(next(iter(worst.values())))
    t = np.arange(epochs + 1)
    gd = np.array([(2.0 + 0.1 * s) * 0.8**t + 0.01 for s in range(seeds)])
    if gd_bump:
        gd[0, 3] = gd[0, 2] * 1.01  # one step up in one seed
    per_step, per_epoch = {GD: gd}, {GD: gd[:, 1:]}
    for v, r in worst.items():
        ep = gd[:, 1:] * np.exp(np.asarray(r))[:, None] * np.linspace(1.0, 0.9, epochs)
        zig = np.repeat(ep, 4, axis=1) * (1 + 0.05 * (np.arange(4 * epochs) % 2))
        per_step[v] = np.concatenate([gd[:, :1], np.sort(zig)[:, ::-1] if v == SGD and sgd_flat else zig], axis=1)
        per_epoch[v] = ep
    return per_step, per_epoch


AHEAD = {SGD: [-3.0, -2.9, -3.1, -3.0], MB: [-1.5, -1.4, -1.6, -1.5]}


def test_rises_counts_steps_up_beyond_rounding_and_divergence():
    assert rises(np.array([1.0, 0.9, 0.9 * (1 + 1e-7), 0.95, 0.5])) == 1  # 1e-7: float32 rounding, not a rise
    assert rises(np.array([1.0, 0.5, np.nan])) == 1


def test_v2_supported_when_batch_gd_is_smooth_sgd_is_not_and_both_are_ahead_early():
    claim = rule_v2(*v2_data(AHEAD), early=5)
    assert claim.verdict == "supported", claim.why
    assert claim.evidence[f"{GD}: steps where the loss rose (per seed)"] == "0/0/0/0"


def test_v2_behind_late_does_not_count_against_early_progress():
    """Batch GD passing the stochastic variants after the early epochs (it converges linearly to the same floor)
    is not what the claim is about."""
    per_step, per_epoch = v2_data(AHEAD, epochs=10)
    per_epoch[MB][:, 6:] = per_epoch[GD][:, 6:] * 3  # behind from epoch 7 on
    assert rule_v2(per_step, per_epoch, early=5).verdict == "supported"


@pytest.mark.parametrize(
    ("case", "words"),
    [
        (dict(gd_bump=True), "batch GD's loss rose at 1 steps"),
        (dict(sgd_flat=True), "SGD's never rose"),
        (dict(worst={**AHEAD, MB: [0.5, 0.6, 0.55, 0.5]}), "significantly not lower"),
    ],
)
def test_v2_not_supported(case, words):
    claim = rule_v2(*v2_data(**({"worst": AHEAD} | case)), early=5)
    assert claim.verdict == "not supported" and words in claim.why, claim.why


def test_v2_inconclusive_with_seeds_that_disagree_and_says_how_many_it_needs():
    claim = rule_v2(*v2_data({SGD: [-3.0, -2.9, -3.05], MB: [-0.5, 0.3, -0.4]}), early=5)
    assert claim.verdict == "inconclusive" and "needs about" in claim.why, claim.why
    per_step, per_epoch = v2_data(AHEAD, epochs=3)
    assert "only 3 epochs" in rule_v2(per_step, per_epoch, early=5).why


def test_v2_a_stochastic_variant_that_diverges_early_is_behind():
    per_step, per_epoch = v2_data(AHEAD)
    per_epoch[MB][1, 2] = np.nan
    claim = rule_v2(per_step, per_epoch, early=5)
    assert claim.verdict == "not supported" and "1 of 4 seeds diverged" in claim.why


# --- L1 ---------------------------------------------------------------------------------------------------
def test_l1_rule():
    lrs, theory = (0.1, 0.5, 0.7, 1.0), ["converges", "converges", "oscillates", "period-2"]
    ok = rule_l1(lrs, theory, theory, curvature=2.0, tolerance=1e-6, steps=100)
    assert ok.verdict == "supported" and ok.evidence["boundaries on the grid"] == "1/L, 2/L"
    wrong = rule_l1(
        lrs, ["converges", "converges", "oscillates", "stalls"], theory, curvature=2, tolerance=1e-6, steps=9
    )
    assert wrong.verdict == "not supported" and wrong.why == "mismatch at lr 1: stalls vs period-2"
    missing = rule_l1(lrs, None, theory, curvature=2.0, tolerance=1e-6, steps=100)
    assert missing.verdict == "inconclusive" and missing.why == "the quadratic task is missing"


# --- S1 ---------------------------------------------------------------------------------------------------
def s1_acc(shifts: dict[str, dict[int, float]], seeds: int = 6, sd: float = 0.2, seed: int = 0) -> dict:
    """Per rule, per-seed accuracies (fractions): B_base = 64 shared, each B its mean shift in pp from it plus a
    paired seed-to-seed spread of `sd` pp; a shift of None: every seed diverged (DIVERGED_ACC)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.90, 0.003, seeds)
    out = {}
    for rule, per in shifts.items():
        out[rule] = {64: base}
        for b, shift in per.items():
            noise = rng.normal(0, sd, seeds)
            out[rule][b] = np.full(seeds, DIVERGED_ACC) if shift is None else base + (shift + noise) / 100
    return out


def test_s1_supported_when_warmup_keeps_the_accuracy_where_linear_alone_loses_it():
    acc = s1_acc({"linear+warmup": {256: 0.0, 1024: -0.2, 4096: None}, "linear": {256: 0.1, 1024: -8, 4096: -30}})
    claim = rule_s1({"sgd": acc}, 64)
    assert claim.verdict == "supported", claim.why
    assert claim.evidence["sgd: B_max linear+warmup"] == 1024 and claim.evidence["sgd: B_max linear"] == 256
    assert b_max(acc["linear+warmup"], 64) == 1024


@pytest.mark.parametrize(
    ("warm", "lin", "words"),
    [
        ({256: -10, 1024: -20}, {256: 0, 1024: 0}, "right after B_base"),
        ({256: 0, 1024: None}, {256: 0, 1024: 0}, "where linear without warmup keeps it (to 1024)"),
    ],
)
def test_s1_not_supported(warm, lin, words):
    claim = rule_s1({"momentum": s1_acc({"linear+warmup": warm, "linear": lin})}, 64)
    assert claim.verdict == "not supported" and words in claim.why, claim.why


def test_s1_inconclusive_when_the_seeds_cannot_decide_and_says_how_many_it_needs():
    acc = s1_acc({"linear+warmup": {256: 0.2, 1024: 0}, "linear": {256: 0, 1024: -8}}, seeds=3, sd=1.0, seed=1)
    claim = rule_s1({"sgd": acc}, 64)
    assert claim.verdict == "inconclusive" and "needs about" in claim.why, claim.why


def test_s1_inconclusive_when_the_grid_cannot_separate_the_rules():
    same = {256: 0.0, 1024: -0.1, 4096: -25}
    claim = rule_s1({"sgd": s1_acc({"linear+warmup": same, "linear": same})}, 64)
    assert claim.verdict == "inconclusive" and "does not move B_max on this grid" in claim.why
    flat = {256: 0.0, 1024: 0.0}
    claim = rule_s1({"sgd": s1_acc({"linear+warmup": flat, "linear": flat})}, 64)
    assert claim.verdict == "inconclusive" and "raise the batches" in claim.why


def test_s1_needs_every_optimizer():
    good = s1_acc({"linear+warmup": {256: 0.0, 1024: 0.0}, "linear": {256: -8, 1024: -9}})
    bad = s1_acc({"linear+warmup": {256: -10, 1024: -20}, "linear": {256: 0, 1024: 0}})
    assert rule_s1({"sgd": good}, 64).verdict == "supported"
    assert rule_s1({"sgd": good, "momentum": bad}, 64).verdict == "not supported"


# --- S2 ---------------------------------------------------------------------------------------------------
LRS = {"sgd": 0.64, "lars": 10.0, "lamb": 0.03}


def s2_acc(means_pp: dict[str, float], seeds: int = 4, sd: float = 0.2, seed: int = 0) -> dict:
    """Per optimizer, per-seed accuracies: a shared seed effect plus each optimizer's mean and its own spread."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.3, seeds)
    return {o: (m + shared + rng.normal(0, sd, seeds)) / 100 for o, m in means_pp.items()}


def test_s2_supported_when_both_challengers_beat_sgd_after_holm():
    claim = rule_s2(s2_acc({"sgd": 88.0, "lars": 90.0, "lamb": 91.0}), LRS, 4096)
    assert claim.verdict == "supported", claim.why
    assert {"lars - SGD: Holm p", "lamb - SGD: Holm p"} <= set(claim.evidence)


def test_s2_a_baseline_that_diverged_in_every_seed_lost():
    acc = s2_acc({"lars": 90.0, "lamb": 91.0}) | {"sgd": np.full(4, DIVERGED_ACC)}
    claim = rule_s2(acc, LRS, 4096)
    assert claim.verdict == "supported" and claim.evidence["sgd (lr 0.64) test acc (%)"] == 0.0


def test_s2_not_supported_when_a_challenger_is_significantly_below_sgd():
    claim = rule_s2(s2_acc({"sgd": 90.0, "lars": 91.5, "lamb": 87.0}), LRS, 4096)
    assert claim.verdict == "not supported" and "lamb vs SGD" in claim.why


def test_s2_inconclusive_with_too_few_or_too_spread_seeds_or_missing_runs():
    noisy = rule_s2(s2_acc({"sgd": 90.0, "lars": 90.3, "lamb": 90.4}, seeds=3, sd=1.0), LRS, 4096)
    assert noisy.verdict == "inconclusive", noisy.why
    missing = rule_s2(s2_acc({"sgd": 90.0, "lars": 91.0}), LRS, 4096)
    assert missing.verdict == "inconclusive" and missing.why == "runs missing: lamb"


# --- the lars study's stages --------------------------------------------------------------------------------
def record(spec, acc: float | None) -> RunRecord:
    """A stored run that ended at test accuracy `acc`, or diverged (None)."""
    metrics = [{"epoch": 12, "step": 36, "test_acc": acc}]
    status, step = ("diverged", 0) if acc is None else ("finished", None)
    return RunRecord(spec.key, {}, spec.seed, status, step, 36, 0.0, 1, {}, metrics)


def test_lars_chooses_each_lr_on_tuning_seeds_and_tests_it_on_other_seeds():
    study = get_study("lars")
    cfg = study.config("quick")
    tuning = study.tuning(cfg)
    assert study.follow_up(cfg, Results({})) == []  # nothing to choose from yet
    scores = {("lars", 10.0): 0.90, ("lars", 20.0): None, ("lamb", 0.01): 0.80, ("lamb", 0.03): 0.85}
    records = {s.key: record(s, scores[(o, lr)]) for (o, lr, b), specs in tuning.items() for s in specs}
    results = Results(records)
    assert study.chosen(cfg, results)[4096] == {"sgd": 0.64, "lars": 10.0, "lamb": 0.03}
    tests = study.follow_up(cfg, results)
    assert {(s.optimizer, s.lr) for s in tests} == {("lars", 10.0), ("lamb", 0.03)}
    tuning_seeds = {s.seed for specs in tuning.values() for s in specs}
    test_seeds = {s.seed for s in [*tests, *study.plan(cfg)] if s.optimizer == "sgd" or s in tests}
    assert tuning_seeds == {0, 1} and test_seeds == {2, 3, 4}  # disjoint
    partial = Results({k: r for k, r in records.items() if r.status == "diverged"})  # lr 10's runs missing
    assert "lars" not in study.chosen(cfg, partial)[4096] and study.follow_up(cfg, partial) == []


def test_s1_with_every_run_diverged_is_inconclusive_not_kept():
    """All-diverged linear-scaling: every arm ties at the diverged score, which must not read as "keeps the
    accuracy" (it did: "both keep the accuracy to the largest batch tested")."""
    from batchlab.studies.variants.claims import DIVERGED_ACC, rule_s1

    z = np.full(4, DIVERGED_ACC)
    acc = {"sgd": {rule: {64: z, 256: z, 1024: z} for rule in ("linear", "linear+warmup")}}
    claim = rule_s1(acc, 64)
    assert claim.verdict == "inconclusive" and "diverged in every seed" in claim.why
