"""beta2-halflife: the grid helpers, the AS4-AS6 rules on synthetic loss grids whose answer is known, the workload
switch, and one tiny run of the study end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import cli_run, set_args

from batchlab.analysis.stats import grid_argmin as refine
from batchlab.studies.adam.beta2_halflife import CHARLM_SETUP, Beta2HalfLife
from batchlab.studies.adam.claims import rule_as4, rule_as5, rule_as6
from batchlab.studies.adam.optima import beta2_for, half_life_of, optimum, width

B = (4, 16, 64, 256, 1024)
LRS = np.logspace(-3.5, -0.5, 13)
HALF_LIVES = np.logspace(1, 6, 11)


def grids(hl_slope: float, lr_exponent: float, sharpening: float, seeds: int = 5, noise: float = 0.002, seed=0):
    """[B, lr, half-life, seed] of a bowl in (log lr, log half-life) whose centre moves as B^hl_slope and
    B^lr_exponent and whose curvature grows as B^sharpening (widths shrink when sharpening > 0)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(B), len(LRS), len(HALF_LIVES), seeds))
    for i, b in enumerate(B):
        c_hl = math.log(1000) + hl_slope * math.log(b / B[0])
        c_lr = math.log(1e-3) + lr_exponent * math.log(b / B[0])
        bowl = (np.log(LRS)[:, None] - c_lr) ** 2 + (np.log(HALF_LIVES)[None, :] - c_hl) ** 2
        for s in range(seeds):
            out[i, :, :, s] = 0.5 * (1 + 0.05 * (b / B[0]) ** sharpening * bowl)
            out[i, :, :, s] += noise * rng.standard_normal(bowl.shape)
    return out


def test_half_life_and_beta2_are_inverse_and_scale_with_the_batch():
    assert half_life_of(beta2_for(1000.0, 64), 64) == pytest.approx(1000.0)
    assert half_life_of(0.999, 1) == pytest.approx(692.8, rel=1e-3)  # ln 0.5 / ln 0.999
    assert beta2_for(100.0, 4) ** 256 == pytest.approx(beta2_for(100.0, 1024))  # beta2_0^(B / B0)
    assert half_life_of(0.0, 16) == 0.0


def test_refine_finds_the_vertex_between_grid_points_and_flags_an_edge():
    x = np.log([1.0, 10.0, 100.0, 1000.0])
    assert refine(x, (x - math.log(30.0)) ** 2)[0] == pytest.approx(math.log(30.0))
    assert refine(x, x) == (pytest.approx(x[0]), True)
    assert refine(x, [np.inf, 1.0, np.inf, 2.0]) == (pytest.approx(x[1]), False)  # diverged neighbours: no parabola


def test_a_diverged_cell_is_never_the_best_and_narrows_the_region():
    grid = np.array([[1.0, 0.9], [0.5, np.inf]])  # lr 2 with the long half-life diverged
    assert optimum(grid, [1.0, 2.0], [10.0, 100.0])["loss"] == 0.5
    assert width([0.5, 0.5, 0.5], [0, 1, 2], 5) == pytest.approx(2.0)
    assert width([0.5, 0.5, np.inf], [0, 1, 2], 5) < 1.1  # up to just past the last finished point


def test_as4_as5_as6_supported_when_the_half_life_is_fixed_and_the_bowl_sharpens():
    losses = grids(hl_slope=0.0, lr_exponent=0.2, sharpening=0.3)
    assert [r(B, LRS, HALF_LIVES, losses).verdict for r in (rule_as4, rule_as5, rule_as6)] == ["supported"] * 3


def test_as4_as5_as6_not_supported_when_beta2_is_fixed_lr_faster_than_sqrt_and_the_bowl_widens():
    losses = grids(hl_slope=1.0, lr_exponent=0.7, sharpening=-0.3)
    c4, c5, c6 = (r(B, LRS, HALF_LIVES, losses) for r in (rule_as4, rule_as5, rule_as6))
    assert (c4.verdict, c5.verdict, c6.verdict) == ("not supported",) * 3
    assert c4.evidence["beta2 fixed (slope 1) excluded"] == "no"


def test_an_optimum_on_the_grids_edge_or_noise_leaves_it_inconclusive():
    losses = grids(hl_slope=0.0, lr_exponent=0.2, sharpening=0.3)
    c = rule_as5(B, LRS[3:], HALF_LIVES, losses[:, 3:])  # the best lr at B=4 (1e-3) is now the grid's first
    assert c.verdict == "inconclusive" and "edge" in c.why
    noisy = grids(hl_slope=0.2, lr_exponent=0.45, sharpening=0.0, seeds=3, noise=0.05)
    c4 = rule_as4(B, LRS, HALF_LIVES, noisy)
    assert c4.verdict in ("inconclusive", "supported", "not supported")  # decided or says why
    if c4.verdict == "inconclusive":
        assert "CI" in c4.why or "edge" in c4.why


def test_a_diverged_seed_is_the_worst_loss_not_a_missing_one():
    losses = grids(hl_slope=0.0, lr_exponent=0.2, sharpening=0.3)
    i = int(np.argmin(losses[0, :, :, 0].min(axis=1)))
    losses[0, i, :, 1] = np.inf  # seed 1 diverged at B=4's best lr, every half-life
    c = rule_as6(B, LRS, HALF_LIVES, losses)
    assert math.isfinite(c.evidence["B=4: lr width (decades)"])


def test_workload_charlm_names_the_language_model_by_reference():
    study = Beta2HalfLife()
    cfg = study.config("quick", {"workload": "charlm"})
    assert cfg.model == CHARLM_SETUP["model"] and cfg.dataset == CHARLM_SETUP["dataset"]
    assert cfg.train_subset is None and cfg.dataset_args["seq_len"] == 16
    run = cfg.grid(0)[(4, cfg.lrs[0], cfg.half_lives[0])]
    assert run.model == "batchlab.workloads.charlm:model" and run.betas[1] == pytest.approx(0.5 ** (4 / 300))
    assert len(study.plan(study.config("quick"))) == 5 * 4 * 4 * 4


TINY = {
    "train_subset": 256,
    "test_subset": 100,
    "widths": 8,
    "batch_sizes": (8, 32, 128),
    "lrs": (0.001, 0.01, 0.1),
    "half_lives": (100.0, 1000.0, 10000.0),
    "epochs": 1,
    "seeds": 2,
}


def test_the_beta2_halflife_study_end_to_end(capsys, tmp_path):
    import json

    code, out, err = cli_run(capsys, "run", "beta2-halflife", *set_args(TINY), "--device", "cpu", "--out", tmp_path)
    assert code == 0, err
    study = next(p for p in tmp_path.iterdir() if p.name.startswith("beta2-halflife"))
    claims = json.loads((study / "claims.json").read_text())["claims"]
    assert [c["id"] for c in claims] == ["AS4", "AS5", "AS6"]
    assert {p.stem for p in (study / "figures").glob("*.png")} >= {"profiles", "optima"}
    assert len((study / "tables" / "grid.csv").read_text().splitlines()) == 1 + 3 * 3 * 3 * 2
