"""Batch-size-invariant Adam (RunSpec.adam_second_moment="micro-batch") against a literal loop over micro-batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_diff, tiny_run

from batchlab.engine import RunSpec, data_order, train_group
from batchlab.engine.data import load_for
from batchlab.models import build_model, init_module

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_invariant_adam(spec: RunSpec) -> dict[str, torch.Tensor]:
    """Wang & Aitchison (2024, arXiv 2402.18824), written out: per step, the mean gradient of each micro-batch by its
    own backward pass; m from their mean, v from the mean of their squares; then Adam's bias-corrected step (and
    AdamW's decoupled decay), one parameter at a time."""
    data = load_for(spec, torch.device("cpu"))
    model = build_model(spec.model, input_dim=data.input_dim, widths=spec.widths)
    init_module(model, spec.init, torch.Generator().manual_seed(spec.seed))
    model = model.double()
    params = list(model.parameters())
    (b1, b2), mb = spec.betas, spec.micro_batch
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    t = 0
    for epoch in range(spec.epochs):
        order = data_order(spec.order_seed, epoch, data.n_train)
        for start in range(0, data.n_train, spec.batch_size):
            idx = order[start : start + spec.batch_size]
            micro = []
            for j in range(0, len(idx), mb):
                part = idx[j : j + mb]
                model.zero_grad()
                F.cross_entropy(model(data.x_train[part].double()), data.y_train[part]).backward()
                micro.append([p.grad.clone() for p in params])
            t += 1
            with torch.no_grad():
                for i, p in enumerate(params):
                    g = sum(gs[i] for gs in micro) / len(micro)
                    g2 = sum(gs[i] ** 2 for gs in micro) / len(micro)
                    if spec.optimizer == "adamw":
                        p.mul_(1 - spec.lr * spec.weight_decay)
                    m[i] = b1 * m[i] + (1 - b1) * g
                    v[i] = b2 * v[i] + (1 - b2) * g2
                    m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
                    p.sub_(spec.lr * m_hat / (v_hat.sqrt() + spec.eps))
    return {k: p.detach() for k, p in model.named_parameters()}


def invariant(**changes) -> RunSpec:
    base = dict(optimizer="adam", lr=3e-3, betas=(0.8, 0.95), precision="float64", micro_batch=8)
    return tiny_run(**(base | {"adam_second_moment": "micro-batch"} | changes))


@pytest.mark.parametrize("changes", [{}, {"optimizer": "adamw", "weight_decay": 0.1}, {"micro_batch": 32}])
def test_invariant_adam_matches_the_literal_micro_batch_loop_in_float64(changes):
    spec = invariant(**changes)
    (result,) = train_group([spec], device="cpu", keep_params=True)
    assert rel_diff(result.params, reference_invariant_adam(spec)) < 1e-12


def test_invariant_adam_differs_from_adam_with_several_micro_batches_and_not_with_one():
    """With one micro-batch per step the mean of squares is the square of the mean: plain Adam's numbers."""
    plain = tiny_run(optimizer="adam", lr=3e-3, betas=(0.8, 0.95), precision="float64")
    (a,) = train_group([plain], device="cpu", keep_params=True)
    (one,) = train_group([invariant(micro_batch=32)], device="cpu", keep_params=True)
    (four,) = train_group([invariant()], device="cpu", keep_params=True)
    assert rel_diff(one.params, a.params) < 1e-13
    assert rel_diff(four.params, a.params) > 1e-3


def test_invariant_adam_in_a_group_has_each_runs_own_numbers():
    specs = [invariant(seed=s, lr=lr) for s, lr in ((0, 3e-3), (1, 1e-3))]
    together = train_group(specs, device="cpu", keep_params=True)
    for spec, res in zip(specs, together):
        (alone,) = train_group([spec], device="cpu", keep_params=True)
        assert rel_diff(res.params, alone.params) < 1e-13


def test_the_option_keeps_old_keys_and_checks_its_use():
    assert RunSpec(optimizer="adam").key == RunSpec(optimizer="adam", adam_second_moment="batch").key
    assert invariant().key != invariant(adam_second_moment="batch").key
    for bad in (
        dict(micro_batch=None),
        dict(optimizer="sgd", betas=(0.9, 0.999)),
        dict(loss_reduction="sum"),
        dict(weight_decay=0.1),
    ):
        with pytest.raises(ValueError, match="adam_second_moment"):
            invariant(**bad)
