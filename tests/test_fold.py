"""The folded SGD step (the update inside the weight-gradient matmul) against the autograd step."""

from __future__ import annotations

import warnings

import pytest
import torch

from batchlab.engine import RunSpec
from batchlab.engine.data import load_for
from batchlab.engine.fold import FoldedSGD, fold_blocker
from batchlab.engine.train import GroupTrainer
from batchlab.models import Stack, build_model

CPU = torch.device("cpu")
TINY = dict(train_subset=600, test_subset=100, widths=(24, 16), batch_size=32, epochs=2, precision="float64")


def trained(specs, fused):
    trainer = GroupTrainer(specs, load_for(specs[0], CPU), CPU, graphs=False, fused=fused)
    return trainer, trainer.run(keep_params=True)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_folded_step_equals_the_autograd_step_in_float64(activation, reduction):
    lr = 0.05 if reduction == "mean" else 0.002
    specs = [
        RunSpec(**TINY, activation=activation, loss_reduction=reduction, seed=s, lr=lr * (1 + s)) for s in range(3)
    ]
    folded_trainer, folded = trained(specs, None)
    plain_trainer, plain = trained(specs, False)
    assert folded_trainer.fold is not None and plain_trainer.fold is None
    for a, b in zip(folded, plain):
        for k in a.params:
            torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-11, atol=1e-12)
        assert a.metrics[-1]["train_loss"] == pytest.approx(b.metrics[-1]["train_loss"], rel=1e-10)


def test_folded_step_equals_the_autograd_step_in_float32_with_a_schedule():
    specs = [
        RunSpec(**{**TINY, "precision": "float32"}, seed=s, lr=0.1, lr_schedule={"kind": "step", "milestones": [1]})
        for s in range(2)
    ]
    _, folded = trained(specs, None)
    _, plain = trained(specs, False)
    for a, b in zip(folded, plain):
        for k in a.params:
            torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-4, atol=1e-5)


def stack_and_batch(runs=2, b=5):
    base = build_model("mlp", widths=(8, 6))
    stack = Stack.from_seeds(base, "glorot", list(range(runs)), CPU, torch.float64)
    x = torch.randn(runs, b, 784, dtype=torch.float64)
    y = torch.randint(10, (runs, b))
    return stack, x, y


@pytest.mark.parametrize("feature_major,defer", [(False, False), (True, False), (False, True)])
def test_a_frozen_run_keeps_its_weights_bitwise_even_with_infinite_activations(feature_major, defer, monkeypatch):
    from batchlab.engine import fold as fold_module

    monkeypatch.setattr(fold_module, "DEFER_MIN_WEIGHTS", 0)
    stack, x, y = stack_and_batch()
    stack.params["net.0.bias"][1, 0] = float("inf")  # run 1's hidden unit 0 is infinite: it has diverged
    before = {k: v.clone() for k, v in stack.params.items()}
    fold = FoldedSGD("relu", 3, "mean", feature_major, defer_rows=32 if defer else 0)
    alive = torch.isfinite(fold.losses(fold.forward(stack.params, x)[0], y))
    assert alive.tolist() == [True, False]
    for _ in range(3 if defer else 1):  # deferred: three steps, then the flush
        fold.step(stack.params, x, y, torch.tensor([0.1, 0.1], dtype=torch.float64), alive)
    assert fold.rows == (15 if defer else 0)
    fold.flush(stack.params)
    for k, v in stack.params.items():
        assert torch.equal(v[1], before[k][1]), k
        assert not torch.equal(v[0], before[k][0]), k  # the live run moved


@pytest.mark.parametrize("feature_major", [False, True])
def test_skipping_the_masks_when_every_run_is_alive_changes_no_bit(feature_major):
    stack, x, y = stack_and_batch(runs=3)
    other = {k: v.clone() for k, v in stack.params.items()}
    fold = FoldedSGD("tanh", 3, "mean", feature_major)
    lr, alive = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), torch.ones(3, dtype=torch.bool)
    fold.step(stack.params, x, y, lr, alive, mask=True)
    fold.step(other, x, y, lr, alive, mask=False)
    assert all(torch.equal(stack.params[k], other[k]) for k in other)


@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_one_folded_step_equals_a_literal_torch_optim_step(feature_major, activation):
    stack, x, y = stack_and_batch(runs=2, b=7)
    lrs = [0.3, 0.05]
    expected = []
    for r in range(2):
        model = build_model("mlp", widths=(8, 6), activation=activation).double()
        model.load_state_dict({k: v[r] for k, v in stack.params.items()})
        opt = torch.optim.SGD(model.parameters(), lr=lrs[r])
        torch.nn.functional.cross_entropy(model(x[r]), y[r]).backward()
        opt.step()
        expected.append(dict(model.named_parameters()))
    fold = FoldedSGD(activation, 3, "mean", feature_major)
    fold.step(stack.params, x, y, torch.tensor(lrs, dtype=torch.float64), torch.ones(2, dtype=torch.bool))
    for r in range(2):
        for k, v in expected[r].items():
            torch.testing.assert_close(stack.params[k][r], v.detach(), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(
    "change,reason",
    [
        (dict(momentum=0.9), "optimizer sgd (momentum 0.9"),
        (dict(optimizer="adam", lr=1e-3), "optimizer adam"),
        (dict(weight_decay=1e-4), "weight decay 0.0001"),
        (dict(precision="bf16"), "bf16"),
        (dict(micro_batch=8), "micro-batches"),
    ],
)
def test_only_plain_sgd_on_an_mlp_takes_the_folded_step(change, reason):
    spec = RunSpec(**{**TINY, **change})
    data = load_for(spec, CPU)
    assert reason in fold_blocker([spec], build_model("mlp", widths=spec.widths), data.task)
    assert GroupTrainer([spec], data, CPU, graphs=False).fold is None


def test_without_a_compiler_the_cpu_step_runs_uncompiled_and_says_so_once(monkeypatch):
    from batchlab.engine import train

    monkeypatch.setattr(train.shutil, "which", lambda name: None)
    monkeypatch.setattr(train, "_warned_no_compiler", False)
    spec = RunSpec(**{**TINY, "momentum": 0.9})  # the autograd step, which fused=True would compile
    data = load_for(spec, CPU)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler found"):
        trainer = GroupTrainer([spec], data, CPU, graphs=False, fused=True)
    assert trainer.loss_fn == trainer._loss and trainer.finish_step == trainer._finish_step
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second trainer does not warn again
        GroupTrainer([spec], data, CPU, graphs=False, fused=True)


# --- deferred updates: tiny batches keep big layers' updates as factors until the weights are read ---


@pytest.fixture
def defer_every_layer(monkeypatch):
    """Deferral for the tests' small layers too (it is kept for layers of at least 2^16 weights)."""
    from batchlab.engine import fold

    monkeypatch.setattr(fold, "DEFER_MIN_WEIGHTS", 0)


@pytest.mark.parametrize("batch_size", [2, 3, 8])
def test_deferred_updates_equal_the_autograd_step_over_epochs_in_float64(defer_every_layer, batch_size):
    # 3 does not divide the 32 deferred rows (flushed early) nor the 90 examples (the last batch is 0 mod 3);
    # every epoch's evaluation reads the weights in between
    spec = dict(TINY, train_subset=90, batch_size=batch_size, epochs=3)
    specs = [RunSpec(**spec, seed=s, lr=0.05 * (1 + s)) for s in range(2)]
    deferred_trainer, deferred = trained(specs, None)
    _, plain = trained(specs, False)
    assert set(deferred_trainer.fold.pending) == {0, 1, 2}
    for a, b in zip(deferred, plain):
        for k in a.params:
            torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-11, atol=1e-12)
        assert [m["train_loss"] for m in a.metrics] == pytest.approx([m["train_loss"] for m in b.metrics], rel=1e-10)


def test_reading_the_weights_adds_the_deferred_updates_first(defer_every_layer):
    spec = RunSpec(**dict(TINY, batch_size=2))
    data = load_for(spec, CPU)
    deferred = GroupTrainer([spec], data, CPU, graphs=False)
    eager = GroupTrainer([spec], data, CPU, graphs=False)
    eager.fold.defer_rows = 0
    for trainer in (deferred, eager):
        trainer.start_epoch(0)
        for _ in range(5):
            trainer.step(2)
    assert deferred.fold.rows == 10 and eager.fold.rows == 0 and not eager.fold.pending
    weights = deferred.stack.params  # reading them flushes
    assert deferred.fold.rows == 0
    for k, v in eager.stack.params.items():
        torch.testing.assert_close(weights[k], v, rtol=1e-12, atol=1e-13)
    assert all(not t.any() for factors in deferred.fold.pending.values() for t in factors[:2])  # emptied


def test_a_batch_too_big_to_defer_adds_the_deferred_updates_first(defer_every_layer):
    stack, x, y = stack_and_batch(runs=2, b=12)
    other = {k: v.clone() for k, v in stack.params.items()}
    lr, alive = torch.tensor([0.1, 0.2], dtype=torch.float64), torch.ones(2, dtype=torch.bool)
    deferred, eager = FoldedSGD("relu", 3, "mean", defer_rows=32), FoldedSGD("relu", 3, "mean")
    for b in (2, 2, 12):  # two deferred steps, then one above DEFER_MAX_BATCH
        deferred.step(stack.params, x[:, :b], y[:, :b], lr, alive)
        eager.step(other, x[:, :b], y[:, :b], lr, alive)
    assert deferred.rows == 0
    for k, v in other.items():
        torch.testing.assert_close(stack.params[k], v, rtol=1e-12, atol=1e-13)


# --- padded weight rows: 4 KiB rows get 64 unused bytes each, the values and the training unchanged ---


def test_pad_rows_pads_only_rows_of_the_multiple_and_keeps_the_values():
    stack, _, _ = stack_and_batch()  # weights [2, 8, 784], [2, 6, 8], [2, 10, 6]
    before = {k: v.clone() for k, v in stack.params.items()}
    stack.pad_rows(multiple=6, extra=16)
    w = stack.params["net.4.weight"]  # rows of 6 floats: padded
    assert w.shape == (2, 10, 6) and w.stride() == (10 * 22, 22, 1)
    assert stack.params["net.0.weight"].is_contiguous() and stack.params["net.2.weight"].is_contiguous()
    assert all(torch.equal(stack.params[k], v) for k, v in before.items())


def test_a_cpu_trainer_pads_1024_wide_rows_only_for_the_folded_step():
    spec = RunSpec(**dict(TINY, widths=(1024,), epochs=1))
    data = load_for(spec, CPU)
    folded = GroupTrainer([spec], data, CPU, graphs=False)
    assert folded.stack.params["net.2.weight"].stride()[1] == 1024 + 16  # [1, 10, 1024]: padded
    assert folded.stack.params["net.0.weight"].is_contiguous()  # rows of 784
    plain = GroupTrainer([spec], data, CPU, graphs=False, fused=False)
    assert plain.stack.params["net.2.weight"].is_contiguous()


def test_training_with_padded_rows_equals_training_without(defer_every_layer):
    specs = [RunSpec(**dict(TINY, batch_size=4, train_subset=96), seed=s, lr=0.1) for s in range(2)]
    padded = GroupTrainer(specs, load_for(specs[0], CPU), CPU, graphs=False)
    padded.stack.pad_rows(multiple=1)  # every weight padded
    plain = GroupTrainer(specs, load_for(specs[0], CPU), CPU, graphs=False)
    assert not padded.stack.params["net.0.weight"].is_contiguous()
    for a, b in zip(padded.run(keep_params=True), plain.run(keep_params=True)):
        for k in a.params:
            torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-12, atol=1e-13)
