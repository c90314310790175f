"""LARS and LAMB: the vectorised rules against a literal per-layer loop of the papers' algorithms, a leak test
between runs of a group, and the trust-ratio probe in training."""

from __future__ import annotations

import math

import pytest
import torch

from batchlab.engine import RunSpec, train_group
from batchlab.engine.optim import StackedOptimizer

SHAPES = {"net.0.weight": (4, 5), "net.0.bias": (4,), "net.2.weight": (3, 4), "net.2.bias": (3,)}


def params_for(seeds, scale=(1.0, 1.0)):
    out = {}
    for name, shape in SHAPES.items():
        out[name] = torch.stack(
            [
                torch.randn(*shape, generator=torch.Generator().manual_seed(s), dtype=torch.float64) * c
                for s, c in zip(seeds, scale)
            ]
        )
    return out


def grads_at(step: int, r: int):
    g = torch.Generator().manual_seed(100 + step)
    return {name: torch.randn(r, *shape, generator=g, dtype=torch.float64) for name, shape in SHAPES.items()}


def reference_lars(w: dict, grads: list, lr: float, momentum: float, wd: float, eta: float) -> dict:
    """You, Gitman & Ginsburg 2017, algorithm 1, one run, layer by layer; 1-D tensors: plain momentum."""
    w = {k: v.clone() for k, v in w.items()}
    buf = {k: torch.zeros_like(v) for k, v in w.items()}
    for g in grads:
        for k in w:
            if w[k].dim() >= 2:
                wn, gn = float(w[k].norm()), float(g[k].norm())
                local = eta * wn / (gn + wd * wn) if wn > 0 and gn > 0 else eta
                buf[k] = momentum * buf[k] + lr * local * (g[k] + wd * w[k])
            else:
                buf[k] = momentum * buf[k] + lr * g[k]
            w[k] = w[k] - buf[k]
    return w


def reference_lamb(w: dict, grads: list, lr: float, b1: float, b2: float, eps: float, wd: float) -> dict:
    """You et al. 2019, algorithm 2, one run, layer by layer; 1-D tensors: the Adam step, no decay."""
    w = {k: v.clone() for k, v in w.items()}
    m = {k: torch.zeros_like(v) for k, v in w.items()}
    v = {k: torch.zeros_like(x) for k, x in w.items()}
    for t, g in enumerate(grads, start=1):
        for k in w:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            r = (m[k] / (1 - b1**t)) / ((v[k] / (1 - b2**t)).sqrt() + eps)
            if w[k].dim() >= 2:
                u = r + wd * w[k]
                wn, un = float(w[k].norm()), float(u.norm())
                w[k] = w[k] - lr * (wn / un if wn > 0 and un > 0 else 1.0) * u
            else:
                w[k] = w[k] - lr * r
    return w


def engine(specs, params, steps, lr):
    params = {k: v.clone() for k, v in params.items()}
    opt = StackedOptimizer(specs, params)
    r = len(specs)
    for step in range(steps):
        opt.step(params, grads_at(step, r), torch.full((r,), lr, dtype=torch.float64), torch.ones(r, dtype=torch.bool))
    return params, opt


@pytest.mark.parametrize("optimizer", ["lars", "lamb"])
def test_rule_equals_a_literal_loop_of_the_paper(optimizer):
    kw = dict(optimizer=optimizer, weight_decay=1e-3, precision="float64")
    kw |= {"momentum": 0.9} if optimizer == "lars" else {"betas": (0.9, 0.99)}
    specs = [RunSpec(**kw, seed=s, lr=0.5) for s in (0, 1)]
    start = params_for((0, 1))
    got, _ = engine(specs, start, steps=6, lr=0.5)
    for r in range(2):
        grads = [{k: v[r] for k, v in grads_at(step, 2).items()} for step in range(6)]
        w0 = {k: v[r] for k, v in start.items()}
        if optimizer == "lars":
            want = reference_lars(w0, grads, lr=0.5, momentum=0.9, wd=1e-3, eta=0.001)
        else:
            want = reference_lamb(w0, grads, lr=0.5, b1=0.9, b2=0.99, eps=1e-8, wd=1e-3)
        for k in SHAPES:
            torch.testing.assert_close(got[k][r], want[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimizer", ["lars", "lamb"])
def test_scaling_one_runs_weights_by_1000_changes_nothing_in_another_run(optimizer):
    specs = [RunSpec(optimizer=optimizer, momentum=0.9 if optimizer == "lars" else 0.0, seed=s) for s in (0, 1)]
    normal, opt_n = engine(specs, params_for((0, 1)), steps=3, lr=0.1)
    scaled, opt_s = engine(specs, params_for((0, 1), scale=(1.0, 1000.0)), steps=3, lr=0.1)
    for k in SHAPES:
        assert torch.equal(normal[k][0], scaled[k][0])
    for name, st in opt_n.state.items():
        if "trust" in st:
            assert torch.equal(st["trust"][0], opt_s.state[name]["trust"][0])
            assert not torch.equal(st["trust"][1], opt_s.state[name]["trust"][1])  # run 1's own ratio did change


def test_lars_and_lamb_train_with_trust_ratios_recorded_per_layer():
    common = dict(train_subset=1024, test_subset=200, widths=(16,), batch_size=256, epochs=4)
    specs = [
        RunSpec(**common, optimizer="lars", lr=20.0, momentum=0.9, probes=("metrics", "trust")),
        RunSpec(**common, optimizer="lamb", lr=0.03, probes=("metrics", "trust")),
        RunSpec(**common, optimizer="sgd", lr=0.1, probes=("metrics", "trust")),
    ]
    lars, lamb, sgd = train_group(specs, device="cpu")
    for result in (lars, lamb):
        assert result.status == "finished" and result.metrics[-1]["test_acc"] > 0.3  # from 0.035 at the init
        ratios = [m["trust:net.0"] for m in result.metrics[1:]]
        assert all(math.isfinite(x) and x > 0 for x in ratios) and len(set(ratios)) > 1  # one per epoch
    assert lars.metrics[-1]["trust:net.0"] < 0.01  # eta ||w|| / ||g||: about the trust coefficient's scale
    assert sgd.metrics[-1]["trust:net.0"] is None  # a run of another optimizer in the group has no ratio
