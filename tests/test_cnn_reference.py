"""The CNNs (with and without BatchNorm) against a literal reference loop, in float64, on the CPU.

The reference is the textbook loop: an nn.Module built and initialised exactly as the engine
initialises run `seed`, `torch.optim` (SGD with momentum, Adam), the same batches in the same order,
`model.train()` while training and `model.eval()` for the evaluation. The engine runs both
optimizers in one group (a stack of two copies under vmap), so this also checks that BatchNorm's
running statistics are updated per run under vmap and that evaluation uses them.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_diff

from batchlab.engine import RunSpec, data_order, train_group
from batchlab.engine.data import load_for
from batchlab.models import build_model, init_module

# 64 examples at batch 16: 4 steps an epoch, 2 epochs (the second checks the per-epoch data order).
SMALL = dict(
    train_subset=64, test_subset=32, batch_size=16, epochs=2, init="torch", precision="float64", probes=("metrics",)
)
OPTIMIZERS = [
    dict(optimizer="sgd", lr=0.05, momentum=0.9, seed=1),
    dict(optimizer="adam", lr=1e-3, betas=(0.8, 0.99), eps=1e-4, seed=2),
]
# Adam's eps: in cnn-bn a bias just before a BatchNorm has a zero gradient in exact arithmetic (the
# batch mean takes it out), so what is computed is rounding noise (~1e-14) that differs between two
# correct implementations, and Adam steps by lr * g / eps while |g| << eps. With eps = 1e-7 that puts
# the two apart by ~1e-9 relative; eps = 1e-4 keeps the amplified noise far below the 1e-10 checked.
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def reference_run(spec: RunSpec) -> torch.nn.Module:
    """The run trained by hand: nn.Module, torch.optim, model.train(); returns the trained module."""
    data = load_for(spec, torch.device("cpu"))
    model = build_model(spec.model)
    init_module(model, spec.init, torch.Generator().manual_seed(spec.seed))  # as init_params: in float32
    model = model.double()
    if spec.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr, betas=spec.betas, eps=spec.eps)
    model.train()
    n = data.n_train
    for epoch in range(spec.epochs):
        order = data_order(spec.order_seed, epoch, n)
        for start in range(0, n, spec.batch_size):
            idx = order[start : start + spec.batch_size]
            opt.zero_grad()
            F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    return model


@torch.no_grad()
def reference_eval(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode (BatchNorm by its running statistics)."""
    model.eval()
    out = model(x)
    return F.cross_entropy(out, y).item(), (out.argmax(1) == y).double().mean().item()


@pytest.fixture(scope="module", params=["cnn", "cnn-bn"])
def trained(request, one_thread):
    """(specs, engine results, reference modules) for one model: both optimizers in one group."""
    specs = [RunSpec(model=request.param, **SMALL, **kw) for kw in OPTIMIZERS]
    results = train_group(specs, device="cpu", keep_params=True, path="autograd")
    return specs, results, [reference_run(s) for s in specs]


def test_parameters_match_the_reference(trained):
    specs, results, models = trained
    for spec, res, model in zip(specs, results, models):
        assert res.status == "finished" and res.steps == 8
        ref = dict(model.named_parameters())
        assert set(res.params) == set(ref)
        for name, p in ref.items():
            assert res.params[name].dtype == torch.float64
            assert rel_diff(res.params[name], p.detach()) < 1e-10, (spec.optimizer, name)


def test_batchnorm_running_statistics_match_the_reference(trained):
    specs, results, models = trained
    for spec, res, model in zip(specs, results, models):
        ref = dict(model.named_buffers())
        assert set(res.buffers) == set(ref)
        if spec.model == "cnn":
            assert not ref
            continue
        assert {name.rsplit(".", 1)[1] for name in ref} == set(BN_BUFFERS)
        for name, b in ref.items():
            if name.endswith("num_batches_tracked"):
                assert int(b) == 8
                assert torch.equal(res.buffers[name], b), name
            else:
                # really moved away from the fresh statistics (mean 0, variance 1)
                fresh = torch.zeros_like(b) if name.endswith("running_mean") else torch.ones_like(b)
                assert rel_diff(b, fresh) > 1e-3, name
                assert rel_diff(res.buffers[name], b) < 1e-10, (spec.optimizer, name)


def test_evaluation_is_in_eval_mode_and_matches_the_reference(trained):
    specs, results, models = trained
    data = load_for(specs[0], torch.device("cpu"))
    for spec, res, model in zip(specs, results, models):
        last = res.metrics[-1]
        assert last["step"] == 8 and last["epoch"] == 2
        for split, x, y in (("test", data.x_test, data.y_test), ("train", data.x_train, data.y_train)):
            loss, acc = reference_eval(model, x, y)
            assert last[f"{split}_loss"] == pytest.approx(loss, rel=1e-10), (spec.optimizer, split)
            assert last[f"{split}_acc"] == pytest.approx(acc, abs=1e-12), (spec.optimizer, split)
        if spec.model == "cnn-bn":
            # evaluation with the batch's statistics (train mode) would give another loss
            scratch = copy.deepcopy(model).train()  # a copy: a train-mode forward moves the statistics
            with torch.no_grad():
                batch_stats = F.cross_entropy(scratch(data.x_test), data.y_test).item()
            assert last["test_loss"] != pytest.approx(batch_stats, rel=1e-6)
