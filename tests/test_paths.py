"""choose_path: one step path per group, with its reason; the counters every path advances; the reason
recorded in each stored run's environment."""

from __future__ import annotations

import warnings

import pytest
import torch

from batchlab.engine import RunSpec, choose_path
from batchlab.engine.data import load_for
from batchlab.engine.paths import PATHS, AutogradPath, CompiledPath, FoldedPath
from batchlab.engine.train import GroupTrainer

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # choose_path only reads the device's type
TINY = dict(train_subset=96, test_subset=32, widths=(12,), batch_size=16, epochs=1)
PLAIN, ADAM = RunSpec(**TINY), RunSpec(**TINY, optimizer="adam", lr=1e-3)


@pytest.fixture(autouse=True)
def no_fold_on_cuda(monkeypatch):
    monkeypatch.delenv("BATCHLAB_FOLD_CUDA", raising=False)


@pytest.mark.parametrize(
    "spec,device,asked,path,reason",
    [
        (PLAIN, CPU, "auto", FoldedPath, "auto on the CPU"),
        (ADAM, CPU, "auto", AutogradPath, "auto on the CPU; not folded: optimizer adam"),
        (PLAIN, CUDA, "auto", CompiledPath, "auto on CUDA (the folded step is opt-in there: BATCHLAB_FOLD_CUDA=1)"),
        (PLAIN, CPU, "autograd", AutogradPath, "autograd asked for"),
        (PLAIN, CUDA, "autograd", AutogradPath, "autograd asked for"),
        (PLAIN, CUDA, "folded", FoldedPath, "folded asked for"),
        (ADAM, CUDA, "folded", CompiledPath, "folded asked for; not folded: optimizer adam"),
        (ADAM, CPU, "folded", AutogradPath, "folded asked for; not folded: optimizer adam"),
        (PLAIN, CUDA, "compiled", CompiledPath, "compiled asked for"),
    ],
)
def test_each_request_gets_its_path_and_says_why(spec, device, asked, path, reason):
    chosen, why = choose_path([spec], device, asked, "classification")
    assert chosen is path and why.startswith(reason)


@pytest.mark.parametrize(
    "change,task,blocker",
    [
        (dict(momentum=0.9), "classification", "optimizer sgd (momentum 0.9"),
        (dict(optimizer="adam", lr=1e-3), "classification", "optimizer adam"),
        (dict(weight_decay=1e-4), "classification", "weight decay 0.0001"),
        (dict(precision="bf16"), "classification", "bf16"),
        (dict(micro_batch=8), "classification", "micro-batches"),
        (dict(model="cnn"), "classification", "model cnn"),
        ({}, "regression", "task regression"),
    ],
)
def test_only_plain_sgd_on_an_mlp_with_cross_entropy_takes_the_folded_step(change, task, blocker):
    path, why = choose_path([RunSpec(**{**TINY, **change})], CPU, "auto", task)
    assert path is AutogradPath and "; not folded: " in why and blocker in why


def test_one_run_of_another_optimizer_keeps_the_whole_group_off_the_folded_step():
    path, why = choose_path([PLAIN, RunSpec(**TINY, seed=1, momentum=0.5)], CPU)
    assert path is AutogradPath and "momentum 0.5" in why


def test_the_trainer_takes_the_chosen_path():
    data = load_for(PLAIN, CPU)
    assert GroupTrainer([PLAIN], data, CPU).path.name == "folded"
    assert GroupTrainer([ADAM], data, CPU).path.name == "autograd"
    assert GroupTrainer([PLAIN], data, CPU, "autograd").path.name == "autograd"
    with pytest.raises(ValueError, match="unknown step path 'fused'"):
        GroupTrainer([PLAIN], data, CPU, "fused")


def test_environment_variables_are_read_at_each_call(monkeypatch):
    assert choose_path([PLAIN], CUDA)[0] is CompiledPath
    monkeypatch.setenv("BATCHLAB_FOLD_CUDA", "1")
    assert choose_path([PLAIN], CUDA) == (FoldedPath, "auto on CUDA with BATCHLAB_FOLD_CUDA=1")
    assert choose_path([ADAM], CUDA)[0] is CompiledPath
    monkeypatch.setenv("BATCHLAB_FOLD_CUDA", "0")
    assert choose_path([PLAIN], CUDA)[0] is CompiledPath
    # the multiply-sum layers' limit, read when the compiled path is made (torch.compile builds nothing yet)
    monkeypatch.setenv("BATCHLAB_MATVEC_MAX_BATCH", "2")
    specs = [RunSpec(**TINY, seed=s, momentum=0.9) for s in range(2)]
    trainer = GroupTrainer(specs, load_for(specs[0], CPU), CPU, "compiled")
    assert trainer.path.name == "compiled" and trainer.state.stack.matvec_max_batch == 2


def test_without_a_compiler_the_compiled_request_runs_uncompiled_and_says_so_once(monkeypatch):
    from batchlab.engine import device

    monkeypatch.setattr(device.shutil, "which", lambda name: None)
    monkeypatch.setattr(device, "_warned_no_compiler", False)
    spec = RunSpec(**TINY, momentum=0.9)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler found"):
        path, why = choose_path([spec], CPU, "compiled")
    assert (
        path is AutogradPath
        and why == "compiled asked for; not compiled: no C++ compiler (torch.compile needs one on the CPU)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second choice does not warn again
        trainer = GroupTrainer([spec], load_for(spec, CPU), CPU, "compiled")
    assert trainer.path.losses == trainer.path.eager_losses and trainer.path.update == trainer.path.eager_update


# every path but the reference; "compiled" is checked in test_fast_path.py (its CPU compilation takes ~30 s)
@pytest.mark.parametrize("name", sorted(set(PATHS) - {"autograd", "compiled"}))
def test_every_path_computes_the_autograd_paths_numbers(name, monkeypatch):
    """A new path in PATHS is checked here too: plain SGD in float64, which every path takes, over two epochs
    (batch 16, then 4: the folded path defers its updates, here of every layer; an evaluation in between)."""
    from batchlab.engine import fold

    monkeypatch.setattr(fold, "DEFER_MIN_WEIGHTS", 0)
    specs = [
        RunSpec(**TINY | {"epochs": 2}, precision="float64", seed=s, lr=0.05 * (1 + s), batch_switch=((1, 4),))
        for s in range(2)
    ]
    data = load_for(specs[0], CPU)
    trainer = GroupTrainer(specs, data, CPU, name)
    assert trainer.path.name == name
    results = trainer.run(keep_params=True)
    if name == "folded":
        assert set(trainer.path.fold.pending) == {0, 1}  # batch 4 deferred its updates
    for a, b in zip(results, GroupTrainer(specs, data, CPU, "autograd").run(keep_params=True)):
        assert a.step_path == name and b.step_path == "autograd" and a.steps == b.steps
        for k in a.params:
            torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-11, atol=1e-12)
        assert a.metrics[-1]["test_loss"] == pytest.approx(b.metrics[-1]["test_loss"], rel=1e-10)


@pytest.mark.parametrize("spec,path", [(PLAIN, "folded"), (ADAM, "autograd")])
def test_every_path_advances_the_same_counters(spec, path):
    """One advance() at the end of each step: the step count, the position in the order, the optimizer's t."""
    trainer = GroupTrainer([spec], load_for(spec, CPU), CPU)
    assert trainer.path.name == path
    trainer.state.start_epoch(0)
    for _ in range(3):
        trainer.step(16)
    s = trainer.state
    assert (int(s.step_t), int(s.offset), int(s.optimizer.t)) == (3, 48, 3)


def test_the_step_path_and_its_reason_are_recorded_in_each_stored_run(tmp_path):
    from batchlab.driver import save_result
    from batchlab.executors import TrainUnit
    from batchlab.executors.local import execute
    from batchlab.store import Store

    # PLAIN and ADAM would share a group (and its path): each trains in its own unit here
    results = execute(TrainUnit((PLAIN, RunSpec(**TINY, seed=3))), "cpu") + execute(TrainUnit((ADAM,)), "cpu")
    with Store(tmp_path) as store:
        for result in results:
            save_result(store, result)
        stored = store.runs([r.key for r in results])
    plain, other, adam = (stored[r.key].env for r in results)
    assert (plain["step_path"], plain["step_path_reason"]) == ("folded", "auto on the CPU")
    assert other["step_path"] == "folded" and other["device"] == plain["device"]
    assert adam["step_path"] == "autograd" and "not folded: optimizer adam" in adam["step_path_reason"]
