"""The CUDA step paths (compiled and graph-captured, folded) against the plain path; skipped without a GPU.

"The plain path" is the step path "autograd": eager, one kernel per elementwise op, cuBLAS matmuls and no
multiply-sum layers (those are switched on only when compiled). `train_group`'s default path ("auto")
is the compiled one on CUDA.
"""

from __future__ import annotations

import pytest
import torch
from conftest import rel_diff

from batchlab.engine import RunSpec, train_group
from batchlab.engine.data import load_for
from batchlab.engine.train import GroupTrainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SMALL = dict(train_subset=2000, test_subset=500, widths=(256, 256), batch_size=64, epochs=2)


def train_cuda(specs: list[RunSpec], *, fast: bool):
    """(trainer, results) of one chunk on CUDA: the fast path (compiled, in CUDA graphs) or the plain path."""
    device = torch.device("cuda")
    trainer = GroupTrainer(specs, load_for(specs[0], device), device, "compiled" if fast else "autograd")
    results = trainer.run(keep_params=True)
    path = trainer.path
    if not fast:  # really the plain path: eager, uncompiled, cuBLAS layers
        assert trainer.graphs is None
        assert path.losses == path.eager_losses and path.update == path.eager_update
        assert trainer.state.stack.matvec_max_batch == 0
    else:
        assert trainer.graphs is not None
        assert path.losses != path.eager_losses and path.update != path.eager_update
    return trainer, results


# Fast vs plain path is compared in float64. In float32 two correct paths that round differently do
# not stay close: over ~60 steps some pre-activation lies within float32 rounding of a ReLU's kink
# (expected a few times among ~6e7 evaluations), flips, and the runs part; on the CPU, with 1e-7
# perturbations of the init, 1 run in 8 ended 2e-5 (SGD) to 7e-2 (SGD with Nesterov momentum) apart, and
# Adam turns a gradient flipping between 0 and tiny into a whole step. In float64 nothing lies that
# close (~1e-16), the two paths stay ~1e-16 apart, and a wrong fused update or replay shows at once.
# Both paths take the same code in float64 as in float32 (no TF32, no autocast, same thresholds).
PLAIN_VS_FAST_TOL = 1e-10


def assert_same_runs(fast: list, plain: list) -> None:
    for a, b in zip(fast, plain):
        assert a.status == b.status == "finished"
        assert a.steps == b.steps
        assert rel_diff(a.params, b.params) < PLAIN_VS_FAST_TOL
        last_a, last_b = a.metrics[-1], b.metrics[-1]
        assert last_a["test_loss"] == pytest.approx(last_b["test_loss"], rel=1e-9)
        assert last_a["test_acc"] == pytest.approx(last_b["test_acc"], abs=1e-12)


@pytest.mark.parametrize(
    "opt",
    [dict(lr=0.05), dict(lr=0.05, momentum=0.9, nesterov=True), dict(optimizer="adamw", lr=1e-3, weight_decay=0.1)],
)
def test_graph_and_fused_update_match_the_plain_path(opt):
    """Compiled loss and update, replayed CUDA graphs vs eager unfused kernels: the same math."""
    specs = [RunSpec(**SMALL, seed=s, precision="float64", **opt) for s in range(4)]
    _, plain = train_cuda(specs, fast=False)
    trainer, fast = train_cuda(specs, fast=True)
    assert 64 in trainer.graphs.captured  # the full-batch step was captured, then replayed
    assert_same_runs(fast, plain)


def test_cuda_matches_cpu():
    spec = RunSpec(**SMALL, lr=0.05, momentum=0.9)
    (gpu,) = train_group([spec], device="cuda", keep_params=True)
    (cpu,) = train_group([spec], device="cpu", keep_params=True)
    assert rel_diff(gpu.params, cpu.params) < 1e-4


@pytest.mark.parametrize("precision,subset,tol", [("float64", 2000, 1e-10), ("float32", 64, 1e-6)])
def test_group_independence_on_cuda(precision, subset, tol):
    """No leak between runs. In float32 cuBLAS picks other kernels for another group size, and
    SGD amplifies their rounding differences over many steps, so float32 is checked after two steps
    (one epoch of 64 examples, twice)."""
    small = SMALL | {"train_subset": subset, "precision": precision}
    target = RunSpec(**small, seed=5, lr=0.03)
    (alone,) = train_group([target], device="cuda", keep_params=True)
    grouped = train_group([RunSpec(**small, seed=s) for s in range(7)] + [target], device="cuda", keep_params=True)
    assert rel_diff(grouped[-1].params, alone.params) < tol


def test_rerun_is_bitwise_identical_on_cuda():
    specs = [RunSpec(**SMALL, seed=s) for s in range(3)]
    a = train_group(specs, device="cuda", keep_params=True)
    b = train_group(specs, device="cuda", keep_params=True)
    for x, y in zip(a, b):
        assert all(torch.equal(x.params[k], y.params[k]) for k in x.params)


def test_divergence_inside_a_captured_graph():
    specs = [RunSpec(**SMALL, seed=0, lr=0.05), RunSpec(**SMALL, seed=1, lr=1e6)]
    res = train_group(specs, device="cuda", keep_params=True)
    assert [r.status for r in res] == ["finished", "diverged"]
    (solo,) = train_group(specs[:1], device="cuda", keep_params=True)
    assert rel_diff(res[0].params, solo.params) < 1e-6


def test_tiny_batch_multiply_sum_layers_match_the_plain_path():
    """Batch 2 with several runs takes the compiled multiply-sum layers (stacked_mlp_forward); the plain
    path multiplies with cuBLAS."""
    small = SMALL | {"train_subset": 200, "batch_size": 2, "epochs": 1, "precision": "float64"}
    specs = [RunSpec(**small, seed=s, lr=0.02) for s in range(3)]
    _, plain = train_cuda(specs, fast=False)
    trainer, fast = train_cuda(specs, fast=True)
    # every training batch (2 examples per run) is at most matvec_max_batch: the multiply-sum branch
    assert trainer.plan == [(2, 100)]
    assert trainer.state.stack.matvec_max_batch >= 2, "multiply-sum layers off (BATCHLAB_MATVEC_MAX_BATCH < 2?)"
    assert 2 in trainer.graphs.captured
    assert_same_runs(fast, plain)
    assert fast[0].steps == 100


def test_folded_step_in_a_captured_graph_matches_the_plain_path():
    """Plain SGD with the folded step (the update inside the weight-gradient matmul; opt-in on CUDA),
    feature-major and graph-captured; the plain path takes autograd and the optimizer's masked update."""
    specs = [RunSpec(**SMALL, seed=s, precision="float64", lr=0.02 * (s + 1)) for s in range(4)]
    _, plain = train_cuda(specs, fast=False)
    device = torch.device("cuda")
    trainer = GroupTrainer(specs, load_for(specs[0], device), device, "folded")
    fast = trainer.run(keep_params=True)
    assert trainer.path.name == "folded" and trainer.path.fold.feature_major and 64 in trainer.graphs.captured
    assert_same_runs(fast, plain)


def test_folded_step_keeps_a_frozen_run_bitwise_on_cuda():
    """The folded path's masked step (always taken on CUDA) leaves a diverged run's weights as they were."""
    small = SMALL | {"widths": (64, 32), "batch_size": 16, "train_subset": 64}
    specs = [RunSpec(**small, seed=s, lr=0.1) for s in range(3)]
    device = torch.device("cuda")
    trainer = GroupTrainer(specs, load_for(specs[0], device), device, "folded")
    params = trainer.state.stack.params
    with torch.no_grad():
        params["net.0.bias"][1, 3] = float("inf")  # run 1 has diverged: an infinite hidden activation
    before = {k: v.detach().clone() for k, v in params.items()}
    trainer.state.start_epoch(0)
    trainer.path.step(16)
    assert trainer.state.alive.tolist() == [True, False, True]
    for k, v in params.items():
        assert torch.equal(v[1], before[k][1]), k
        assert torch.isfinite(v[0]).all() and not torch.equal(v[0], before[k][0]), k
