"""The folded SGD step (the update inside the weight-gradient matmul) against the autograd step.

Every test steps through the objects a training run uses: a FoldedPath on a GroupState, or a GroupTrainer.
"""

from __future__ import annotations

import pytest
import torch

from batchlab.engine import RunSpec
from batchlab.engine.data import load_for
from batchlab.engine.paths import FoldedPath
from batchlab.engine.state import GroupState
from batchlab.engine.train import GroupTrainer
from batchlab.models import Stack, build_model

CPU = torch.device("cpu")
TINY = dict(train_subset=600, test_subset=100, widths=(24, 16), batch_size=32, epochs=2, precision="float64")


def trained(specs, path):
    trainer = GroupTrainer(specs, load_for(specs[0], CPU), CPU, path)
    return trainer, trainer.run(keep_params=True)


def folded_path(lrs=(0.1, 0.1), batch_size=5, activation="relu", **options) -> FoldedPath:
    """A folded path on a fresh group of float64 MLPs 784-8-6-10 (one run per lr), at the start of epoch 0."""
    specs = [
        RunSpec(
            train_subset=64,
            test_subset=16,
            widths=(8, 6),
            batch_size=batch_size,
            epochs=1,
            precision="float64",
            activation=activation,
            seed=r,
            lr=lr,
        )
        for r, lr in enumerate(lrs)
    ]
    state = GroupState(specs, load_for(specs[0], CPU), CPU)
    state.start_epoch(0)
    return FoldedPath(state, **options)


def weights(path: FoldedPath) -> dict[str, torch.Tensor]:
    path.flush()
    return {k: v.detach().clone() for k, v in path.state.stack.params.items()}


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_folded_step_equals_the_autograd_step_in_float64(activation, reduction):
    lr = 0.05 if reduction == "mean" else 0.002
    specs = [
        RunSpec(**TINY, activation=activation, loss_reduction=reduction, seed=s, lr=lr * (1 + s)) for s in range(3)
    ]
    folded_trainer, folded = trained(specs, "auto")
    plain_trainer, plain = trained(specs, "autograd")
    assert folded_trainer.path.name == "folded" and plain_trainer.path.name == "autograd"
    for a, b in zip(folded, plain):
        for k in a.params:
            torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-11, atol=1e-12)
        assert a.metrics[-1]["train_loss"] == pytest.approx(b.metrics[-1]["train_loss"], rel=1e-10)


def test_folded_step_equals_the_autograd_step_in_float32_with_a_schedule():
    specs = [
        RunSpec(**{**TINY, "precision": "float32"}, seed=s, lr=0.1, lr_schedule={"kind": "step", "milestones": [1]})
        for s in range(2)
    ]
    _, folded = trained(specs, "folded")
    _, plain = trained(specs, "autograd")
    for a, b in zip(folded, plain):
        for k in a.params:
            torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("feature_major,defer", [(False, False), (True, False), (False, True)])
def test_a_frozen_run_keeps_its_weights_bitwise_even_with_infinite_activations(feature_major, defer, monkeypatch):
    from batchlab.engine import fold as fold_module

    monkeypatch.setattr(fold_module, "DEFER_MIN_WEIGHTS", 0)
    path = folded_path(feature_major=feature_major, defer_rows=32 if defer else 0)
    with torch.no_grad():
        path.state.stack.params["net.0.bias"][1, 0] = float("inf")  # run 1's hidden unit 0: it diverges
    before = weights(path)
    for _ in range(3 if defer else 1):  # deferred: three steps, then the flush
        path.step(5)
    assert path.state.alive.tolist() == [True, False] and path.state.diverged_step.tolist() == [-1, 0]
    assert path.fold.rows == (15 if defer else 0)
    after = weights(path)
    for k, v in after.items():
        assert torch.equal(v[1], before[k][1]), k
        assert not torch.equal(v[0], before[k][0]), k  # the live run moved


@pytest.mark.parametrize("feature_major", [False, True])
def test_skipping_the_masks_when_every_run_is_alive_changes_no_bit(feature_major):
    skipped = folded_path((0.1, 0.2, 0.3), activation="tanh", feature_major=feature_major)
    masked = folded_path((0.1, 0.2, 0.3), activation="tanh", feature_major=feature_major)
    masked.all_alive_and_finite = lambda logits: False  # as on CUDA: per-run losses, divergence check, masks
    for path in (skipped, masked):
        for _ in range(3):
            path.step(5)
    a, b = weights(skipped), weights(masked)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_one_folded_step_equals_a_literal_torch_optim_step(feature_major, activation):
    lrs = [0.3, 0.05]
    path = folded_path(lrs, batch_size=7, activation=activation, feature_major=feature_major)
    s = path.state
    idx = s.batch_indices(7).clone()
    expected = []
    for r in range(2):
        model = build_model("mlp", widths=(8, 6), activation=activation).double()
        model.load_state_dict({k: v[r] for k, v in s.stack.params.items()})
        opt = torch.optim.SGD(model.parameters(), lr=lrs[r])
        torch.nn.functional.cross_entropy(model(s.data.x_train[idx[r]]), s.data.y_train[idx[r]]).backward()
        opt.step()
        expected.append(dict(model.named_parameters()))
    path.step(7)
    for r in range(2):
        for k, v in expected[r].items():
            torch.testing.assert_close(s.stack.params[k][r], v.detach(), rtol=1e-13, atol=1e-14)


# --- deferred updates: tiny batches keep big layers' updates as factors until the path flushes them ---


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
    deferred_trainer, deferred = trained(specs, "auto")
    _, plain = trained(specs, "autograd")
    assert set(deferred_trainer.path.fold.pending) == {0, 1, 2}
    for a, b in zip(deferred, plain):
        for k in a.params:
            torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-11, atol=1e-12)
        assert [m["train_loss"] for m in a.metrics] == pytest.approx([m["train_loss"] for m in b.metrics], rel=1e-10)


READERS = {
    "evaluation": lambda t: t.measure(),
    "checkpoint": lambda t: t.snapshot(),
    "state copy": lambda t: t.host_copy(0, 5, 0),
    "overflow check": lambda t: t.freeze_nonfinite(),
    "results": lambda t: t.results([], 5, 0.0, keep_params=True),
}


@pytest.mark.parametrize("reader", READERS)
def test_the_folded_path_flushes_before_anything_reads_the_weights(defer_every_layer, reader):
    spec = RunSpec(**dict(TINY, batch_size=2))
    data = load_for(spec, CPU)
    deferred, eager = GroupTrainer([spec], data, CPU), GroupTrainer([spec], data, CPU)
    eager.path.fold.defer_rows = 0
    for trainer in (deferred, eager):
        trainer.state.start_epoch(0)
        for _ in range(5):
            trainer.step(2)
    assert deferred.path.fold.rows == 10 and eager.path.fold.rows == 0 and not eager.path.fold.pending
    READERS[reader](deferred)
    assert deferred.path.fold.rows == 0
    for k, v in eager.state.stack.params.items():
        torch.testing.assert_close(deferred.state.stack.params[k], v, rtol=1e-12, atol=1e-13)
    assert all(not t.any() for factors in deferred.path.fold.pending.values() for t in factors[:2])  # emptied
    assert "params" in vars(deferred.state.stack)  # a plain attribute: reading it changes nothing


def test_a_batch_too_big_to_defer_adds_the_deferred_updates_first(defer_every_layer):
    deferred = folded_path((0.1, 0.2), batch_size=2, defer_rows=32)
    eager = folded_path((0.1, 0.2), batch_size=2, defer_rows=0)
    for path in (deferred, eager):
        for b in (2, 2, 12):  # two deferred steps, then one above DEFER_MAX_BATCH
            path.step(b)
    assert deferred.fold.rows == 0
    a, b = weights(deferred), weights(eager)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-13)


# --- padded weight rows: 4 KiB rows get 64 unused bytes each, the values and the training unchanged ---


def test_pad_rows_pads_only_rows_of_the_multiple_and_keeps_the_values():
    stack = Stack.from_seeds(build_model("mlp", widths=(8, 6)), "glorot", [0, 1], CPU, torch.float64)
    before = {k: v.clone() for k, v in stack.params.items()}  # weights [2, 8, 784], [2, 6, 8], [2, 10, 6]
    stack.pad_rows(multiple=6, extra=16)
    w = stack.params["net.4.weight"]  # rows of 6 floats: padded
    assert w.shape == (2, 10, 6) and w.stride() == (10 * 22, 22, 1)
    assert stack.params["net.0.weight"].is_contiguous() and stack.params["net.2.weight"].is_contiguous()
    assert all(torch.equal(stack.params[k], v) for k, v in before.items())


def test_a_cpu_trainer_pads_1024_wide_rows_only_for_the_folded_step():
    spec = RunSpec(**dict(TINY, widths=(1024,), epochs=1))
    data = load_for(spec, CPU)
    folded = GroupTrainer([spec], data, CPU).state.stack
    assert folded.params["net.2.weight"].stride()[1] == 1024 + 16  # [1, 10, 1024]: padded
    assert folded.params["net.0.weight"].is_contiguous()  # rows of 784
    plain = GroupTrainer([spec], data, CPU, "autograd").state.stack
    assert plain.params["net.2.weight"].is_contiguous()


def test_training_with_padded_rows_equals_training_without(defer_every_layer):
    specs = [RunSpec(**dict(TINY, batch_size=4, train_subset=96), seed=s, lr=0.1) for s in range(2)]
    padded = GroupTrainer(specs, load_for(specs[0], CPU), CPU)
    padded.state.stack.pad_rows(multiple=1)  # every weight padded
    plain = GroupTrainer(specs, load_for(specs[0], CPU), CPU)
    assert not padded.state.stack.params["net.0.weight"].is_contiguous()
    for a, b in zip(padded.run(keep_params=True), plain.run(keep_params=True)):
        for k in a.params:
            torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-12, atol=1e-13)
