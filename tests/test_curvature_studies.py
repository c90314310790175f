"""The curvature family (sharpness, edge-of-stability): the tools it added (the square loss, tasks that read two
checkpoints, the loss on the line between two runs, Dinh et al.'s rescaling, Lanczos with a run gone bad), each claim
rule on synthetic data (supported, not supported, inconclusive), and each study end to end at a tiny config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from batchlab.analysis.spectrum import lanczos
from batchlab.engine import RunSpec, train_group
from batchlab.engine.spec import Checkpoint, TaskSpec
from batchlab.executors import TaskUnit, execute
from batchlab.probes.metrics import square_loss

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
