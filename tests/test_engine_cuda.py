"""The CUDA paths (graph-captured step, fused update) against the plain path; skipped without a GPU."""
from __future__ import annotations

import pytest
import torch

from batchlab.engine import RunSpec, train_group

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SMALL = dict(train_subset=2000, test_subset=500, widths=(256, 256), batch_size=64, epochs=2)


def rel_diff(a: dict, b: dict) -> float:
    num = sum((a[k].double() - b[k].double()).pow(2).sum() for k in a).sqrt()
    return float(num / sum(b[k].double().pow(2).sum() for k in b).sqrt())


@pytest.mark.parametrize("opt", [dict(lr=0.05), dict(lr=0.05, momentum=0.9, nesterov=True),
                                 dict(optimizer="adamw", lr=1e-3, weight_decay=0.1)])
def test_graph_and_fused_update_match_the_plain_path(opt):
    specs = [RunSpec(**SMALL, seed=s, **opt) for s in range(4)]
    plain = train_group(specs, device="cuda", keep_params=True, graphs=False)
    fast = train_group(specs, device="cuda", keep_params=True, graphs=True)
    for a, b in zip(fast, plain):
        assert rel_diff(a.params, b.params) < 1e-5
        assert a.metrics[-1]["test_acc"] == pytest.approx(b.metrics[-1]["test_acc"], abs=2e-3)


def test_cuda_matches_cpu():
    spec = RunSpec(**SMALL, lr=0.05, momentum=0.9)
    (gpu,) = train_group([spec], device="cuda", keep_params=True)
    (cpu,) = train_group([spec], device="cpu", keep_params=True)
    assert rel_diff(gpu.params, cpu.params) < 1e-4


@pytest.mark.parametrize("precision,subset,tol", [("float64", 2000, 1e-10), ("float32", 64, 1e-6)])
def test_group_independence_on_cuda(precision, subset, tol):
    """No leak between runs. In float32 cuBLAS picks other kernels for another group size, and
    SGD amplifies their rounding differences over many steps, so float32 is checked after two steps (one epoch of 64 examples, twice)."""
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
    """Batch 2 with several runs takes the compiled multiply-sum layers (stacked_mlp_forward)."""
    small = SMALL | {"train_subset": 200, "batch_size": 2, "epochs": 1}
    specs = [RunSpec(**small, seed=s, lr=0.02) for s in range(3)]
    plain = train_group(specs, device="cuda", keep_params=True, graphs=False)
    fast = train_group(specs, device="cuda", keep_params=True)
    for a, b in zip(fast, plain):
        assert rel_diff(a.params, b.params) < 1e-4
