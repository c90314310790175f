"""lr-surge: the optimal lr per batch size, the two fitted forms, the AS1/AS2 rules on synthetic data where the answer
is known, and one tiny run of the study through the CLI (with the explorer's panel read from its store)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import TINY_SURGE, cli_run, set_args

from batchlab.analysis.surge import compare_forms, fit, optimal_log_lr, optimal_lrs, predict, weights
from batchlab.studies.adam.claims import AS1, AS2, rule_surge

pytestmark = pytest.mark.usefixtures("one_thread")
B = np.array([4, 8, 16, 32, 64, 128, 256, 512, 1024], dtype=float)
GRID = [np.log(2.0 ** np.arange(-14, -3))] * B.size


def synthetic(form: str, noise: float, seed: int = 0, b_noise: float = 100.0) -> dict:
    """The optimal log lr of `form` (eps_max 0.01, B_noise `b_noise`) with bootstrap-like replicates of sd `noise`."""
    rng = np.random.default_rng(seed)
    y = predict(form, B, math.log(0.01), math.log(b_noise))
    reps = y + rng.normal(0, noise, (200, B.size))
    return compare_forms(B, y + rng.normal(0, noise, B.size), reps, weights(reps, GRID))


def decide(cmp, expect, spec):
    return rule_surge(spec, cmp, list(B.astype(int)), [], {"B_simple": 80.0}, 0.25, 0.9, 8, expect)


def test_each_form_recovers_its_own_parameters():
    for form in ("sgd", "surge"):
        y = predict(form, B, math.log(0.02), math.log(50.0))
        log_eps, log_bn, sse = fit(form, B, y, np.ones(B.size))
        assert math.exp(log_eps) == pytest.approx(0.02, rel=0.02) and math.exp(log_bn) == pytest.approx(50, rel=0.02)
        assert sse < 1e-4
    surge = np.exp(predict("surge", B, 0.0, math.log(64.0)))
    assert B[np.argmax(surge)] == 64 and surge[0] < surge[4] > surge[-1]  # rises, peaks at B_noise, falls


def test_sgd_shaped_data_support_as1_and_not_as2():
    cmp = synthetic("sgd", 0.05)
    assert cmp["ratio_ci"][0] >= 0.75
    assert decide(cmp, "sgd", AS1).verdict == "supported"
    assert decide(cmp, "surge", AS2).verdict == "not supported"


def test_surge_shaped_data_support_as2_with_the_peak_where_it_was_put():
    cmp = synthetic("surge", 0.05)
    claim = decide(cmp, "surge", AS2)
    assert claim.verdict == "supported", claim.why
    assert claim.evidence["B_peak 95% lo"] <= 100 <= claim.evidence["B_peak 95% hi"]
    assert claim.evidence["B_peak / B_simple"] == pytest.approx(cmp["b_peak"] / 80.0)
    assert decide(cmp, "sgd", AS1).verdict == "not supported"


def test_a_surge_peaking_outside_the_grid_is_no_surge_measured():
    cmp = synthetic("surge", 0.05, b_noise=20_000.0)  # on 4..1024 the surge form is a rising sqrt(B)
    claim = decide(cmp, "surge", AS2)
    assert claim.verdict == "not supported" and "outside" in claim.why


def test_noise_that_hides_the_form_is_inconclusive_with_the_seeds_it_would_need():
    cmp = synthetic("surge", 1.5, seed=3)
    claims = [decide(cmp, "surge", AS2), decide(cmp, "sgd", AS1)]
    undecided = [c for c in claims if c.verdict == "inconclusive"]
    assert undecided and all("seeds needed (about)" in c.evidence for c in undecided)
    assert rule_surge(AS2, None, [], [4, 8], {}, 0.25, 0.9, 8, "surge").verdict == "inconclusive"


def test_the_optimum_is_refined_between_grid_points_and_censored_at_the_edges():
    x = np.log(2.0 ** np.arange(-10, -3))
    d = -((x - math.log(2.0**-6.3)) ** 2)
    value, edge = optimal_log_lr(d, x)
    assert value == pytest.approx(math.log(2.0**-6.3), abs=1e-9) and not edge
    assert optimal_log_lr(-x, x) == (pytest.approx(x[0]), True)  # the smallest lr is best: censored
    assert math.isnan(optimal_log_lr(np.full(x.size, -np.inf), x)[0])
    d_div = d.copy()
    d_div[4] = -np.inf  # a diverged neighbour: the grid point itself
    assert optimal_log_lr(d_div, x)[0] == pytest.approx(x[3])


def test_seed_resamples_are_paired_across_batch_sizes():
    rng = np.random.default_rng(0)
    x = np.log(2.0 ** np.arange(-10, -3))
    decs = [-((x[:, None] - math.log(2.0**-6)) ** 2) + rng.normal(0, 0.05, (x.size, 6)) for _ in range(3)]
    out = optimal_lrs(decs, [x] * 3, resamples=50, seed=0)
    assert out["replicates"].shape == (50, 3) and not out["edge"].any()
    assert np.allclose(out["point"], math.log(2.0**-6), atol=0.3)
    same = optimal_lrs([decs[0]] * 3, [x] * 3, resamples=50, seed=0)["replicates"]
    assert np.array_equal(same[:, 0], same[:, 2])  # one resample of the seed indices serves every batch size


def test_branch_loss_is_branch_without_the_whole_split_metrics():
    """float64, sign-Adam branches: `branch-loss` gives `branch`'s losses to the bit, without its end-of-window
    metrics on the whole splits."""
    import torch

    from batchlab.engine import RunSpec, train_group
    from batchlab.engine.spec import Checkpoint, TaskSpec
    from batchlab.executors import TaskUnit
    from batchlab.executors.local import execute

    ref = RunSpec(widths=(8,), train_subset=64, test_subset=32, batch_size=16, epochs=1, precision="float64")
    (res,) = train_group([ref], device="cpu", checkpoints={1})
    run = ref.model_copy(update={"optimizer": "adam", "betas": (0.0, 0.0), "lr": 1e-3}).as_dict()
    args = dict(run=run, lrs=[1e-3, 1e-2], seeds=[0, 1], examples=16, evals=1, eval_examples=64)
    out = {}
    for kind in ("branch", "branch-loss"):
        task = TaskSpec(kind=kind, args=args, start=Checkpoint(run=ref, epoch=1))
        out[kind] = execute(TaskUnit(task, res.checkpoints[1]), torch.device("cpu"), None)
    assert np.array_equal(out["branch"].arrays["train_loss"], out["branch-loss"].arrays["train_loss"])
    assert "test_acc" in out["branch"].arrays and "test_acc" not in out["branch-loss"].arrays


def test_the_lr_surge_study_end_to_end(capsys, tmp_path):
    code, out, err = cli_run(capsys, "run", "lr-surge", *set_args(TINY_SURGE), "--device", "cpu", "--out", tmp_path)
    assert code == 0, err
    study = next(p for p in tmp_path.iterdir() if p.name.startswith("lr-surge"))
    claims = json.loads((study / "claims.json").read_text())["claims"]
    assert [c["id"] for c in claims] == ["AS1", "AS2"]
    assert all(c["verdict"] in ("supported", "not supported", "inconclusive") for c in claims)
    assert {p.stem for p in (study / "figures").glob("*.png")} == {"optimal_lr"}
    rows = (study / "tables" / "optimal_lr.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 4  # every optimizer and batch size
    from batchlab.explorer import gather

    surge = gather(tmp_path)["surge"]  # the explorer's optimal lr against B, from the store
    assert [c["label"] for c in surge["curves"]] == ["SGD", "Adam", "sign-Adam"]
    assert surge["batch_sizes"] == [8, 16, 32, 64] and len(surge["curves"][1]["lr"]) == 4


def test_without_results_the_explorer_says_to_run_lr_surge(tmp_path):
    from batchlab.explorer import gather

    assert gather(tmp_path)["surge"]["hint"] == f"batchlab run lr-surge --out {tmp_path}"
