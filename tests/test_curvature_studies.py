"""The curvature family (sharpness, edge-of-stability): the tools it added (the square loss, tasks that read two
checkpoints, the loss on the line between two runs, Dinh et al.'s rescaling, Lanczos with a run gone bad), each claim
rule on synthetic data (supported, not supported, inconclusive), and each study end to end at a tiny config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cli_run, set_args

from batchlab.analysis.spectrum import lanczos
from batchlab.engine import RunSpec, train_group
from batchlab.engine.spec import Checkpoint, TaskSpec
from batchlab.executors import TaskUnit, execute
from batchlab.probes.metrics import square_loss
from batchlab.studies.curvature.claims import ES1, ES3, curvature_along, rule_edge, rule_es2, rule_k1, rule_k2, rule_k3

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
FLAT = dict(dataset="user_models:flat", dataset_args={"features": 5, "n_train": 40, "n_test": 16}, batch_size=40)
TINY = dict(model="mlp", widths=(4,), activation="tanh", precision="float64", epochs=3, probes=(), **FLAT)


# --- the tools ----------------------------------------------------------------------------------------------------


def test_the_square_loss_is_half_the_squared_distance_to_the_one_hot_label():
    out = torch.tensor([[1.0, 0.0, 0.5], [0.0, 2.0, -1.0]], dtype=torch.float64)
    # example 1, label 0: (0² + 0² + 0.5²) / 2 = 0.125; example 2, label 2: (0² + 2² + 2²) / 2 = 4; mean 2.0625
    assert float(square_loss(out, torch.tensor([0, 2]))) == pytest.approx(2.0625, rel=1e-15)
    run = RunSpec(loss="square", train_subset=64)
    assert run.loss == "square" and run.code_version == ""  # built in: no source hash, no user-code checks
    with pytest.raises(ValueError, match="unknown loss"):
        RunSpec(loss="squared")


def test_lanczos_survives_a_run_whose_products_turn_nan_after_it_converged():
    """A run converges at once (its operator is zero: an exact invariant subspace), then its products are NaN (its
    weights diverged) while another run goes on: the batched eigensolve of the others must not see the NaN."""
    a = torch.diag(torch.arange(1.0, 31.0, dtype=torch.float64))
    calls = {"n": 0}

    def matvec(v):  # [2, 1, 30]
        calls["n"] += 1
        zero = torch.zeros_like(v[0]) if calls["n"] == 1 else torch.full_like(v[0], math.nan)
        return torch.stack([v[0] @ a, zero])

    eig = lanczos(matvec, torch.ones(2, 30, dtype=torch.float64), max_iter=30, tol=1e-10)
    assert eig.values[0, 0] == pytest.approx(30.0, rel=1e-10) and bool(eig.converged[0])
    assert eig.values[1, 0] == 0.0 and int(eig.iterations[1]) == 1


@pytest.fixture(scope="module")
def two_runs():
    """Two float64 runs of a 5-4-3 tanh MLP from the same init, at lr 0.1 and 0.5, with their checkpoints."""
    runs = [RunSpec(seed=0, lr=lr, **TINY) for lr in (0.1, 0.5)]
    trained = train_group(runs, device="cpu", checkpoints={3})
    return runs, trained


def _line_reference(theta_a: dict, theta_b: dict, x: torch.Tensor, y: torch.Tensor, alpha: float) -> float:
    """The mean cross-entropy of the 5-4-3 tanh MLP at (1 - α) a + α b, written out in float64."""
    w = {k: (1 - alpha) * torch.as_tensor(theta_a[k]) + alpha * torch.as_tensor(theta_b[k]) for k in theta_a}
    h = torch.tanh(x.double() @ w["param:net.0.weight"].T + w["param:net.0.bias"])
    logits = h @ w["param:net.2.weight"].T + w["param:net.2.bias"]
    return float(F.cross_entropy(logits, y))


def test_the_loss_between_two_runs_matches_a_written_out_float64_reference(two_runs):
    import user_models

    (a, b), (ta, tb) = two_runs
    alphas = (-0.5, 0.0, 0.25, 1.0, 1.5)
    spec = TaskSpec(kind="loss-between", args={"alphas": alphas, "examples": 40, "test_examples": 16}, seed=1,
                    start=Checkpoint(run=a, epoch=3), others=(Checkpoint(run=b, epoch=3),))  # fmt: skip
    r = execute(TaskUnit(spec, ta.checkpoints[3], (tb.checkpoints[3],)), CPU, None)
    assert r.status == "finished", r.error
    x, y, xt, yt = user_models.flat(features=5, n_train=40, n_test=16)
    ref = [_line_reference(ta.checkpoints[3], tb.checkpoints[3], x, y, al) for al in alphas]
    np.testing.assert_allclose(r.arrays["losses"], ref, rtol=1e-12)
    ref_test = [_line_reference(ta.checkpoints[3], tb.checkpoints[3], xt, yt, al) for al in alphas]
    np.testing.assert_allclose(r.arrays["test_losses"], ref_test, rtol=1e-12)
    assert r.scalars["loss_start"] == pytest.approx(ref[1], rel=1e-12)
    dist = math.sqrt(sum(float(((tb.checkpoints[3][k] - ta.checkpoints[3][k]) ** 2).sum()) for k in ta.checkpoints[3]))
    assert r.scalars["distance"] == pytest.approx(dist, rel=1e-12) and dist > 0
    assert spec.key != TaskSpec(kind="loss-between", args=spec.args, seed=1, start=spec.start).key
    with pytest.raises(ValueError, match="starts from one"):
        TaskSpec(kind="loss-between", others=(Checkpoint(run=b, epoch=3),))


def test_the_key_of_a_task_without_others_is_unchanged():
    """A single-checkpoint task's key is what it was before `others` existed (stores keep their results)."""
    from batchlab.engine.spec import content_key

    run = RunSpec(seed=0, **TINY)
    spec = TaskSpec(kind="hessian-spectrum", args={"examples": 40}, start=Checkpoint(run=run, epoch=1))
    body = {"unit": "task", "kind": spec.kind, "args": spec.args, "seed": 0, "start": {"run": run.key, "epoch": 1}}
    assert spec.key == content_key(body) and "others" not in spec.as_dict()


def test_rescaling_a_relu_mlp_keeps_its_loss_and_changes_its_sharpness():
    """Dinh et al. 2017: layer 1 x c and layer 2 / c is the same function, with another lambda_max."""
    run = RunSpec(seed=0, lr=0.1, **{**TINY, "activation": "relu", "widths": (6, 6)})
    (trained,) = train_group([run], device="cpu", checkpoints={3})
    out = {}
    for c in (1.0, 4.0):
        args = {"examples": 40, "top_k": 1, "tol": 1e-10, "trace_samples": 0, "rescale": c}
        spec = TaskSpec(kind="hessian-spectrum", args=args, start=Checkpoint(run=run, epoch=3))
        out[c] = execute(TaskUnit(spec, trained.checkpoints[3]), CPU, None)
        assert out[c].status == "finished", out[c].error
    assert out[4.0].scalars["loss"] == pytest.approx(out[1.0].scalars["loss"], rel=1e-12)
    assert abs(out[4.0].scalars["lambda_max"] / out[1.0].scalars["lambda_max"] - 1) > 0.1


def test_rescaling_is_refused_where_it_changes_the_function(two_runs):
    (a, _), (ta, _) = two_runs  # tanh: tanh(c z) != c tanh(z)
    spec = TaskSpec(kind="hessian-spectrum", args={"rescale": 2.0}, start=Checkpoint(run=a, epoch=3))
    with pytest.raises(ValueError, match="ReLU MLP"):
        execute(TaskUnit(spec, ta.checkpoints[3]), CPU, None)


def test_a_group_whose_runs_all_stop_early_keeps_the_last_checkpoint():
    """Every run reaches its target at epoch 1 of 5: the group ends there, and the epoch-5 checkpoint asked for is
    the weights it stopped with (they no longer change)."""
    run = RunSpec(seed=0, lr=0.1, **{**TINY, "epochs": 5, "probes": ("metrics",), "stop_metric": "train_acc",
                                      "stop_at": 0.01})  # fmt: skip
    (r,) = train_group([run], device="cpu", checkpoints={1, 5}, keep_params=True)
    assert r.steps == 1 and set(r.checkpoints) == {1, 5}
    for k, v in r.checkpoints[5].items():
        np.testing.assert_array_equal(v, r.checkpoints[1][k])
        np.testing.assert_array_equal(v, r.params[k.removeprefix("param:")].numpy())


# --- the rules on synthetic data: supported, not supported, inconclusive ------------------------------------------

B5 = (64, 128, 256, 512, 1024)


def test_k1_a_trend_across_batch_sizes_paired_by_seed():
    rising = np.array([[5.0, 6, 5.5], [7, 8, 7.5], [9, 9.5, 10], [11, 12, 11.5], [13, 14, 13.5]])
    assert rule_k1(B5, rising).verdict == "supported"
    assert rule_k1(B5, rising[::-1]).verdict == "not supported"
    mixed = np.array([[5.0, 9], [7, 6], [6, 8], [8, 5], [7, 7]])  # two seeds, no order
    claim = rule_k1(B5, mixed)
    assert claim.verdict == "inconclusive" and "Page p" in claim.why
    one = rising.copy()
    one[2, 1], one[3, 2] = np.nan, np.nan  # a missing run leaves its seed out: one complete seed cannot decide
    claim = rule_k1(B5, one, {"not converged": 2})
    assert claim.verdict == "inconclusive" and "needs 2" in claim.why
    assert claim.evidence["left out: not converged"] == 2
    short = rising.copy()
    short[-1, :] = [np.nan, np.nan, 14.0]  # no batch 1024 run reached the target but one: that B is left out, named
    claim = rule_k1(B5, short)
    assert claim.verdict == "supported" and "B=1024 left out" in claim.why


def test_k2_rank_association_across_runs():
    lam = np.linspace(5, 15, 15)
    assert rule_k2(lam, 0.9 - 0.001 * lam).verdict == "supported"
    assert rule_k2(lam, 0.8 + 0.001 * lam).verdict == "not supported"
    rng = np.random.default_rng(0)
    claim = rule_k2(lam[:6], 0.9 + 0.01 * rng.standard_normal(6))
    assert claim.verdict == "inconclusive"
    assert rule_k2(lam[:3], lam[:3]).verdict == "inconclusive"  # 3 runs: needs 4


def test_k3_the_curvature_along_the_line_at_each_end():
    alphas = np.round(np.arange(-1, 2.0001, 0.05), 10)
    line = 0.1 * alphas**2 + 0.4 * np.clip(alphas - 0.5, 0, None) ** 2  # more curved around alpha 1
    assert curvature_along(alphas, line, 0.0, 0.25) == pytest.approx(0.1 * 0.0625, rel=1e-9)
    assert math.isnan(curvature_along(alphas, line, 0.0, 0.33))  # not a grid point: no number
    assert rule_k3([0.01, 0.012, 0.011], [0.03, 0.028, 0.033], 0.25, (64, 1024)).verdict == "supported"
    assert rule_k3([0.03, 0.028, 0.033], [0.01, 0.012, 0.011], 0.25, (64, 1024)).verdict == "not supported"
    claim = rule_k3([0.01, 0.02], [0.015, 0.012], 0.25, (64, 1024))
    assert claim.verdict == "inconclusive"


def _arm(ratio, low=0.8, mid=0.1, end=0.05, ups=2, diverged=0):
    ratio = np.asarray(ratio, dtype=float)
    full = np.ones_like(ratio)
    return {"ratio": ratio, "low": low * full, "loss_mid": mid * full + 0.001 * np.arange(ratio.size),
            "loss_end": end * full, "ups": ups * full, "not_converged": 0, "diverged": diverged}  # fmt: skip


def test_es1_and_es3_sharpness_at_the_threshold_in_every_arm():
    at = {"lr 0.1": _arm([1.02, 1.03, 1.01]), "lr 0.2": _arm([0.98, 1.0, 0.99])}
    assert rule_edge(ES1, at, 0.1, "lambda_max", "(2/lr)").verdict == "supported"
    below = at | {"lr 0.2": _arm([0.5, 0.55, 0.52])}
    claim = rule_edge(ES1, below, 0.1, "lambda_max", "(2/lr)")
    assert claim.verdict == "not supported" and "lr 0.2 at the edge" in claim.why
    wide = at | {"lr 0.2": _arm([0.85, 1.2])}
    assert rule_edge(ES1, wide, 0.1, "lambda_max", "(2/lr)").verdict == "inconclusive"
    flat = at | {"lr 0.2": _arm([0.98, 1.0, 0.99], ups=0)}  # no loss rise seen at this cadence
    claim = rule_edge(ES1, flat, 0.1, "lambda_max", "(2/lr)")
    assert claim.verdict == "inconclusive" and "finer evaluations" in claim.why
    blown = at | {"lr 0.2": _arm([1.0, math.nan, 0.99], diverged=1)}  # a diverged run is an outcome
    claim = rule_edge(ES1, blown, 0.1, "lambda_max", "(2/lr)")
    assert claim.verdict == "not supported" and "1 of 3 seeds diverged" in claim.why
    adam = {"lr 0.01": _arm([0.97, 0.99, 0.98], low=0.4, ups=0)}
    assert rule_edge(ES3, adam, 0.1, "lambda_max(P^-1 H)", "(38/lr)", monotone_loss=False).verdict == "supported"
    assert rule_edge(ES3, {"lr 0.01": _arm([1.5, 1.6, 1.55])}, 0.1, "x", "t", False).verdict == "not supported"
    assert rule_edge(ES3, {"lr 0.01": _arm([0.8, 1.25], low=0.4)}, 0.1, "x", "t", False).verdict == "inconclusive"
    assert rule_edge(ES3, {}, 0.1, "x", "t", False).verdict == "inconclusive"


def test_a_trend_over_two_configurations_is_a_paired_t_on_the_logs():
    from batchlab.analysis.trends import trend

    d = trend([[1.0, 2.0, 4.0], [2.1, 3.9, 8.2]])  # every seed about doubles
    assert d.verdict == "supported" and "two configurations" in d.test
    assert d.estimate == pytest.approx(np.mean(np.log([2.1, 1.95, 2.05])))
    assert trend([[2.1, 3.9, 8.2], [1.0, 2.0, 4.0]]).verdict == "not supported"


def test_es2_batch_sharpness_at_the_edge_and_lambda_max_lower_for_smaller_batches():
    b = (25, 50, 125)
    batch = np.array([[1.0, 1.02, 0.99], [0.98, 1.01, 1.0], [1.03, 0.99, 1.0]])
    lam = np.array([[0.6, 0.62, 0.58], [0.75, 0.8, 0.77], [0.9, 0.92, 0.91]])
    assert rule_es2(b, batch, lam, 0.1).verdict == "supported"
    claim = rule_es2(b, 0.4 * batch, lam, 0.1)
    assert claim.verdict == "not supported" and "batch sharpness at B=25" in claim.why
    assert rule_es2(b, batch, lam[::-1], 0.1).verdict == "not supported"  # lambda_max falls with B
    assert rule_es2(b, batch[:, :2] * [[1.0, 0.8]], lam[:, :2], 0.1).verdict == "inconclusive"
    assert rule_es2(b, batch, lam, 0.1, diverged=1).verdict == "not supported"


# --- each study end to end, at a tiny config ----------------------------------------------------------------------

TINY_SHARP = {"train_subset": 256, "test_subset": 100, "widths": 16, "batch_sizes": (16, 32, 64), "epochs": 30}
TINY_SHARP |= {"target_train_acc": 0.6, "seeds": 2, "examples": 128, "plane_points": 5, "max_iter": 40}
TINY_EDGE = {"train_subset": 128, "test_subset": 64, "widths": 8, "lrs": (0.1, 0.2), "steps": 30, "every": 10}
TINY_EDGE |= {"examples": 128, "sgd_lr": 0.1, "batch_sizes": (16, 64), "draws": 4, "adam_lrs": (0.01,), "seeds": 2}


def test_the_sharpness_study_end_to_end(capsys, tmp_path):
    import json

    code, out, err = cli_run(capsys, "run", "sharpness", *set_args(TINY_SHARP), "--device", "cpu", "--out", tmp_path)
    assert code == 0, err
    study = next(p for p in tmp_path.iterdir() if p.name.startswith("sharpness"))
    claims = json.loads((study / "claims.json").read_text())["claims"]
    assert [c["id"] for c in claims] == ["K1", "K2", "K3"]
    assert {p.stem for p in (study / "figures").glob("*.png")} >= {"lambda_vs_batch", "interpolation", "landscape"}
    runs = (study / "tables" / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 3 * 2  # every run has its row, converged or not
    line = (study / "tables" / "line.csv").read_text().splitlines()
    assert len(line) == 1 + 2  # the loss-between task read both ends of each seed's line
    code, out, err = cli_run(capsys, "run", "sharpness", *set_args(TINY_SHARP), "--device", "cpu", "--out", tmp_path)
    assert code == 0 and "trained 0 runs" in out, (out, err)
    from batchlab.explorer import gather

    sharp = gather(tmp_path)["sharp"]  # the explorer's measured landscape: both planes, the lambda_max table
    assert [p["batch"] for p in sharp["planes"]] == [16, 64] and len(sharp["planes"][0]["losses"]) == 5
    assert len(sharp["lambda_max"]) == 3 and len(sharp["lambda_max"][0]) == 2


def test_the_edge_of_stability_study_end_to_end(capsys, tmp_path):
    import json

    code, out, err = cli_run(capsys, "run", "edge-of-stability", *set_args(TINY_EDGE), "--device", "cpu",
                             "--out", tmp_path)  # fmt: skip
    assert code == 0, err
    study = next(p for p in tmp_path.iterdir() if p.name.startswith("edge-of-stability"))
    claims = json.loads((study / "claims.json").read_text())["claims"]
    assert [c["id"] for c in claims] == ["ES1", "ES2", "ES3"]
    assert all(c["verdict"] in ("supported", "not supported", "inconclusive") for c in claims)
    figures = {p.stem for p in (study / "figures").glob("*.png")}
    assert figures == {"gd_sharpness", "gd_loss", "sgd_sharpness", "adam_sharpness"}
    rows = (study / "tables" / "edge.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 + 2 + 2 + 1  # GD lrs, SGD lambda_max and batch sharpness per B, Adam lrs
    from batchlab.explorer import gather

    edge = gather(tmp_path)["edge"]  # the explorer's sharpness-against-step curves, thresholds beside
    assert [c["label"] for c in edge["configs"]] == ["GD, lr 0.1", "GD, lr 0.2", "SGD, B=16, lr 0.1",
                                                     "SGD, B=64, lr 0.1", "Adam, lr 0.01"]  # fmt: skip
    assert edge["configs"][0]["threshold"] == pytest.approx(20.0) and edge["configs"][0]["step"][-1] == 30
    assert set(edge["configs"][2]["series"]) == {"lambda_max", "batch_sharpness"}


def test_without_results_the_explorer_says_which_curvature_study_to_run(tmp_path):
    from batchlab.explorer import gather

    data = gather(tmp_path)
    assert data["sharp"]["hint"] == f"batchlab run sharpness --out {tmp_path}"
    assert data["edge"]["hint"] == f"batchlab run edge-of-stability --out {tmp_path}"
