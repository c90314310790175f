"""Schedules, geometry probes and precision options against direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import rel_diff
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from batchlab.engine import LRSchedule, RunSpec, train_group
from batchlab.engine.schedules import epoch_plan, lr_factor, lr_table, total_steps
from batchlab.probes import geometry


def test_step_schedule_multiplies_at_each_milestone():
    s = LRSchedule(kind="step", milestones=(10, 20), gamma=0.1)
    assert [lr_factor(s, e, 30) for e in (0, 9.99, 10, 19, 20, 29)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_is_linear_then_flat():
    s = LRSchedule(kind="warmup", warmup_epochs=5, warmup_start=0.2)
    assert lr_factor(s, 0, 30) == pytest.approx(0.2)
    assert lr_factor(s, 2.5, 30) == pytest.approx(0.6)
    assert lr_factor(s, 5, 30) == lr_factor(s, 29, 30) == 1


def test_cosine_after_warmup():
    s = LRSchedule(kind="cosine", warmup_epochs=2, final_factor=0.1)
    assert lr_factor(s, 1, 12) == pytest.approx(0.5)
    assert lr_factor(s, 2, 12) == pytest.approx(1.0)
    assert lr_factor(s, 7, 12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(s, 12, 12) == pytest.approx(0.1)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 500),
    bs=st.integers(1, 300),
    epochs=st.integers(1, 4),
    drop=st.booleans(),
    switch=st.integers(1, 64),
)
def test_lr_table_has_one_entry_per_step(n, bs, epochs, drop, switch):
    spec = RunSpec(
        batch_size=bs, epochs=epochs, drop_last=drop, batch_switch=((epochs - 1, switch),) if epochs > 1 else ()
    )
    plan = epoch_plan(spec, n)
    for b, steps in plan:
        assert steps == (n // b if drop else math.ceil(n / b))
    assert len(lr_table(spec, n)) == sum(s for _, s in plan) == total_steps(spec, n)


def test_training_holds_one_epochs_lr_table_not_the_runs():
    """Each epoch's lrs are written when it starts: equal to the whole run's table row for row, and a run of a
    million steps holds one epoch's rows (the whole table of a run near the step bound took gigabytes)."""
    from batchlab.engine.data import load_for
    from batchlab.engine.state import GroupState

    cpu = torch.device("cpu")
    schedule = LRSchedule(kind="cosine", warmup_epochs=1, final_factor=0.1)
    specs = [
        RunSpec(widths=(8,), train_subset=96, test_subset=32, batch_size=32, epochs=4, lr=lr, lr_schedule=schedule)
        for lr in (0.1, 0.3)
    ]
    state = GroupState(specs, load_for(specs[0], cpu), cpu)
    rows = []
    for epoch in range(4):
        state.start_epoch(epoch)
        for _ in range(3):
            rows.append(state.check_losses(torch.zeros(2)).clone())
            state.advance(32)
    want = np.stack([lr_table(s, 96) for s in specs], axis=1).astype(np.float32)
    assert np.array_equal(torch.stack(rows).numpy(), want)
    long = RunSpec(widths=(8,), train_subset=64, test_subset=32, batch_size=64, epochs=1_000_000)
    assert tuple(GroupState([long], load_for(long, cpu), cpu).lrs.shape) == (1, 1)


def test_geometry_against_direct_formulas():
    g = torch.Generator().manual_seed(0)
    init = {
        "a.weight": torch.randn(2, 4, 3, generator=g),
        "a.bias": torch.randn(2, 4, generator=g),
        "b.weight": torch.randn(2, 1, 4, generator=g),
        "b.bias": torch.randn(2, 1, generator=g),
    }
    now = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in init.items()}
    out = geometry(now, init)
    for r in range(2):
        w_now = torch.cat([now["a.weight"][r].flatten(), now["b.weight"][r].flatten()]).double()
        w_0 = torch.cat([init["a.weight"][r].flatten(), init["b.weight"][r].flatten()]).double()
        b_now = torch.cat([now["a.bias"][r], now["b.bias"][r]]).double()
        b_0 = torch.cat([init["a.bias"][r], init["b.bias"][r]]).double()
        assert out["dist_init_w"][r] == pytest.approx(float((w_now - w_0).norm()))
        assert out["dist_init_b"][r] == pytest.approx(float((b_now - b_0).norm()))
        assert out["norm_w"][r] == pytest.approx(float(w_now.norm()))
        assert out["norm_b"][r] == pytest.approx(float(b_now.norm()))
        a, a0 = now["a.weight"][r].flatten().double(), init["a.weight"][r].flatten().double()
        assert out["cos_init:a"][r] == pytest.approx(float(a @ a0 / (a.norm() * a0.norm())))


class MatmulDtypes(TorchDispatchMode):
    """The dtypes of the matrix products' results, forward and backward, as the dispatcher runs them."""

    def __init__(self):
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in ("mm", "bmm", "addmm", "baddbmm"):
            self.dtypes.add(out.dtype)
        return out


@pytest.fixture(scope="module")
def by_precision():
    """{precision: (result, dtypes of its matrix products)} of one run trained in each precision."""
    out = {}
    for precision in ("float32", "bf16", "float64"):
        spec = RunSpec(
            train_subset=512, test_subset=128, widths=(32,), batch_size=32, epochs=2, lr=0.1, precision=precision
        )
        with MatmulDtypes() as seen:
            (res,) = train_group([spec], device="cpu", keep_params=True)
        out[precision] = res, seen.dtypes
    return out


@pytest.mark.parametrize(
    "precision, compute, weights",
    [
        ("float32", torch.float32, torch.float32),
        ("bf16", torch.bfloat16, torch.float32),  # bf16 products, float32 master weights
        ("float64", torch.float64, torch.float64),
    ],
)
def test_precision_options_train(by_precision, precision, compute, weights):
    res, dtypes = by_precision[precision]
    losses = [m["train_loss"] for m in res.metrics]
    assert res.status == "finished" and losses[-1] < 0.7 * losses[0]
    assert np.isfinite(losses).all()
    assert dtypes == {compute}  # every matrix product of the forward and backward passes
    assert {p.dtype for p in res.params.values()} == {weights}


def test_bf16_and_float64_change_the_numbers_by_their_rounding(by_precision):
    """Same seed and data: bf16 (8 bits of mantissa) moves the weights by about 1 %, float64 only by float32's
    own rounding; an ignored precision flag would give float32's weights exactly."""
    reference = by_precision["float32"][0].params
    assert 1e-3 < rel_diff(by_precision["bf16"][0].params, reference) < 0.1
    assert 0 < rel_diff(by_precision["float64"][0].params, reference) < 1e-5


def test_init_norms_of_the_reference_setup():
    """Spec 02: Glorot init gives a total weight norm of about 44, PyTorch's default about 26."""
    for init, expected in (("glorot", 44), ("torch", 26)):
        (res,) = train_group([RunSpec(init=init, epochs=0, train_subset=64, test_subset=64)], device="cpu")
        assert res.metrics[0]["norm_w"] == pytest.approx(expected, rel=0.03)
        assert res.metrics[0]["dist_init_w"] == 0
