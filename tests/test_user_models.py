"""The user's own nn.Module, data and loss, named by reference, trained as stacked runs on the generic path.

The core check: float64 equality (relative difference < 1e-10) between `train_group` on a group of runs that mixes
every optimizer rule, learning rates and seeds, and a literal per-run loop: the factory's module built under
`torch.manual_seed(seed)`, `copy`-free and alone, `torch.optim` (SGD, momentum, Nesterov, weight decay, Adam, AdamW)
or the papers' per-layer LARS and LAMB written out, the same batches in the same order (`data_order`), on a CNN
with BatchNorm (running statistics compared too), a small transformer block on token ids (per-position
cross-entropy) and a 1-D convolution over sequences (regression: nn.GRU has no vmap batching rule in torch 2.13).
Then: batchlab's MLP given by reference equals the built-in fast paths; every bad reference is one line naming it.
"""

from __future__ import annotations

import copy
import textwrap

import pytest
import torch
import torch.nn.functional as F
import user_models
from conftest import rel_diff
from reference_optimizers import optimizer_for

from batchlab import references
from batchlab.engine import RunSpec, data_order, train_group
from batchlab.engine.data import check_run, load_for
from batchlab.errors import UsageError

# every rule, in one group, each with its own lr and seed (and one with its own data order)
RULES = [
    dict(optimizer="sgd", lr=0.05, seed=0),
    dict(optimizer="sgd", lr=0.03, momentum=0.9, seed=1, data_seed=11),
    dict(optimizer="sgd", lr=0.02, momentum=0.8, nesterov=True, weight_decay=1e-3, seed=2),
    dict(optimizer="adam", lr=2e-3, betas=(0.8, 0.99), seed=3),
    dict(optimizer="adamw", lr=3e-3, weight_decay=0.05, seed=4),
    dict(optimizer="lars", lr=0.5, momentum=0.9, weight_decay=1e-3, seed=5),
    dict(optimizer="lamb", lr=0.01, betas=(0.9, 0.99), weight_decay=1e-2, seed=6),
]
COMMON = dict(precision="float64", epochs=2, probes=("metrics",))
CASES = {
    # 48 examples at batch 16: 3 steps an epoch
    "bn-cnn": dict(model="user_models:bn_cnn", dataset="user_models:images", batch_size=16),
    # 40 sequences at batch 16: the last batch of each epoch has 8
    "transformer": dict(model="user_models:transformer", dataset="user_models:tokens", batch_size=16),
    # regression on [N, T, F] sequences, 48 at batch 12
    "conv1d": dict(model="user_models:conv1d", dataset="user_models:sequences", batch_size=12),
}


def auto_loss(out, y):
    """The "auto" loss written plainly: cross-entropy over the last dimension, or mean squared error."""
    if y.is_floating_point():
        return F.mse_loss(out, y)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def reference_run(spec: RunSpec, loss=auto_loss) -> torch.nn.Module:
    """The run trained by hand: the factory's module (built under the run's seed), torch.optim, model.train()."""
    data = load_for(spec, torch.device("cpu"))
    factory = getattr(user_models, spec.model.split(":")[1])
    torch.manual_seed(spec.seed)
    model = copy.deepcopy(factory(**spec.model_args)).double().train()
    opt = optimizer_for(spec, model.parameters())
    n = data.n_train
    for epoch in range(spec.epochs):
        order = data_order(spec.order_seed, epoch, n)
        for start in range(0, n, spec.batch_size):
            idx = order[start : start + spec.batch_size]
            opt.zero_grad()
            loss(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    return model


@torch.no_grad()
def reference_eval(model, x, y, loss=auto_loss) -> dict[str, float]:
    model.eval()
    out = model(x)
    values = {"loss": float(loss(out, y))}
    if not y.is_floating_point():
        values["acc"] = float((out.argmax(-1) == y).double().mean())
    return values


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, one_thread):
    specs = [RunSpec(**CASES[request.param], **COMMON, **kw) for kw in RULES]
    results = train_group(specs, device="cpu", keep_params=True)
    return request.param, specs, results, [reference_run(s) for s in specs]


def test_every_rule_equals_a_literal_per_run_loop(trained):
    case, specs, results, models = trained
    for spec, res, model in zip(specs, results, models):
        assert res.status == "finished" and res.step_path == "autograd", (case, res.step_path_reason)
        ref = {k: v.detach() for k, v in model.named_parameters()}
        assert set(res.params) == set(ref)
        assert res.params[next(iter(ref))].dtype == torch.float64
        for name, p in ref.items():
            assert rel_diff(res.params[name], p) < 1e-10, (case, spec.optimizer, name)
        # training moved the weights (the comparison is not between two initialisations)
        torch.manual_seed(spec.seed)
        init = {k: v.detach() for k, v in getattr(user_models, spec.model.split(":")[1])().double().named_parameters()}
        assert rel_diff(init, ref) > 1e-4, (case, spec.optimizer)


def test_batchnorm_running_statistics_are_per_run_and_match(trained):
    case, specs, results, models = trained
    for spec, res, model in zip(specs, results, models):
        ref = dict(model.named_buffers())
        assert set(res.buffers) == set(ref)
        for name, b in ref.items():
            if b.is_floating_point():
                assert rel_diff(res.buffers[name], b) < 1e-10, (case, spec.optimizer, name)
            else:
                assert torch.equal(res.buffers[name], b), name
    if case == "bn-cnn":
        means = [res.buffers["features.1.running_mean"] for res in results]
        assert not torch.equal(means[0], means[1])  # each run its own statistics
        assert int(results[0].buffers["features.1.num_batches_tracked"]) == 6


def test_metrics_are_the_eval_mode_loss_and_accuracy(trained):
    case, specs, results, models = trained
    data = load_for(specs[0], torch.device("cpu"))
    for spec, res, model in zip(specs, results, models):
        last = res.metrics[-1]
        for split, x, y in (("test", data.x_test, data.y_test), ("train", data.x_train, data.y_train)):
            want = reference_eval(model, x, y)
            assert last[f"{split}_loss"] == pytest.approx(want["loss"], rel=1e-10), (case, spec.optimizer, split)
            if "acc" in want:
                assert last[f"{split}_acc"] == pytest.approx(want["acc"], abs=1e-12)
            else:
                assert f"{split}_acc" not in last  # regression: loss only


def test_a_user_loss_function_replaces_the_auto_loss(one_thread):
    kw = dict(model="user_models:mlp", dataset="user_models:flat", loss="user_models:smoothed_ce", batch_size=16)
    specs = [RunSpec(**kw, **COMMON, **r) for r in (RULES[1], RULES[4])]
    results = train_group(specs, device="cpu", keep_params=True)
    for spec, res in zip(specs, results):
        model = reference_run(spec, loss=user_models.smoothed_ce)
        assert rel_diff(res.params, {k: v.detach() for k, v in model.named_parameters()}) < 1e-10
        data = load_for(spec, torch.device("cpu"))
        want = reference_eval(model, data.x_test, data.y_test, loss=user_models.smoothed_ce)
        assert res.metrics[-1]["test_loss"] == pytest.approx(want["loss"], rel=1e-10)


def test_a_user_loss_keeps_a_builtin_model_off_the_folded_step(one_thread):
    spec = RunSpec(model="mlp", widths=(8,), dataset="user_models:flat", loss="user_models:smoothed_ce", batch_size=16)
    (res,) = train_group([RunSpec(**{**spec.as_dict(), "epochs": 1})], device="cpu")
    assert res.step_path == "autograd" and "not folded: loss user_models:smoothed_ce" in res.step_path_reason


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_builtin_mlp_by_reference_equals_its_fast_path(optimizer, one_thread):
    """The same MLP, the same initial weights: built in (the folded step for SGD, batched matmuls for Adam) and
    given by reference (vmap over functional_call)."""
    common = dict(dataset="user_models:flat", batch_size=8, **COMMON)
    opt = dict(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3)
    builtin = [RunSpec(model="mlp", widths=(16, 16), seed=s, **common, **opt) for s in (0, 1)]
    fast = train_group(builtin, device="cpu", keep_params=True, checkpoints={0})
    assert fast[0].step_path == ("folded" if optimizer == "sgd" else "autograd")
    start = {k: torch.stack([torch.as_tensor(r.checkpoints[0][k]) for r in fast]) for k in fast[0].checkpoints[0]}
    user = [RunSpec(model="user_models:mlp", seed=s, **common, **opt) for s in (0, 1)]
    generic = train_group(user, device="cpu", keep_params=True, start={k: v.numpy() for k, v in start.items()})
    for f, g in zip(fast, generic):
        assert rel_diff(g.params, f.params) < 1e-10
        for name in ("test_loss", "train_acc"):
            assert g.metrics[-1][name] == pytest.approx(f.metrics[-1][name], rel=1e-10)


def test_datasets_are_materialised_once_to_the_same_tensors():
    a = load_for(RunSpec(model="user_models:mlp", dataset="user_models:flat"), torch.device("cpu"))
    b = load_for(RunSpec(model="user_models:mlp", dataset="user_models:flat_datasets"), torch.device("cpu"))
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert b.task == "classification" and b.num_classes == 3 and b.y_train.dtype == torch.int64


def test_inputs_are_neither_flattened_nor_standardised():
    x_train, *_ = user_models.images()
    data = load_for(RunSpec(model="user_models:bn_cnn", dataset="user_models:images"), torch.device("cpu"))
    assert data.x_train.shape == (48, 1, 8, 8) and torch.equal(data.x_train, x_train)
    tok = load_for(RunSpec(model="user_models:transformer", dataset="user_models:tokens"), torch.device("cpu"))
    assert tok.x_train.dtype == torch.int64 and tok.x_train.shape == (40, 8) and tok.task == "classification"
    seq = load_for(
        RunSpec(model="user_models:conv1d", dataset="user_models:sequences", precision="float64"), torch.device("cpu")
    )
    assert seq.x_train.dtype == torch.float64 and seq.task == "regression" and seq.y_train.shape == (48, 2)


# --- keys -----------------------------------------------------------------------------------------------------


def test_builtin_keys_are_unchanged():
    """Keys hash the fields that differ from the defaults: the new fields leave a built-in run's key as it was."""
    assert RunSpec().key == "44136fa355b3678a1146"
    assert RunSpec(model="cnn-bn", dataset="fashion-mnist", lr=0.1, epochs=3).key == "57232044658310aa3710"
    assert RunSpec(dataset="regression", model="linear").key == "512aa787ece85d7f3a0c"
    assert RunSpec().code_version == "" and "code_version" not in RunSpec().as_dict()


def test_the_key_holds_the_reference_its_arguments_and_the_source_hash(tmp_path, monkeypatch):
    module = tmp_path / "edited_model.py"
    module.write_text("from torch import nn\n\ndef net(width=4):\n    return nn.Linear(3, width)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    a = RunSpec(model="edited_model:net", dataset="user_models:flat")
    assert len(a.code_version) == 64 and a.as_dict()["code_version"] == a.code_version
    assert RunSpec(model="edited_model:net", dataset="user_models:flat").key == a.key  # deterministic
    assert RunSpec(model="edited_model:net", dataset="user_models:flat", model_args={"width": 5}).key != a.key
    module.write_text(module.read_text() + "# edited\n")
    b = RunSpec(model="edited_model:net", dataset="user_models:flat")
    assert b.code_version != a.code_version and b.key != a.key
    # a stored spec keeps the version it was computed with
    assert RunSpec(**a.as_dict()).key == a.key
    # a file reference works the same way
    c = RunSpec(model=f"{module}:net", dataset="user_models:flat")
    assert c.code_version and c.code_version != b.code_version


def test_a_spec_whose_code_version_is_not_the_sources_is_refused_before_training(one_thread):
    spec = RunSpec(model="user_models:mlp", dataset=FLAT, batch_size=16)
    stale = RunSpec(**{**spec.as_dict(), "code_version": "0" * 64})
    assert stale.key != spec.key
    with pytest.raises(UsageError, match="is not that of the sources of user_models:mlp, user_models:flat now"):
        train_group([stale], device="cpu")
    check_run(spec, torch.device("cpu"))


def test_args_without_a_reference_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="model_args apply to a model given by reference"):
        RunSpec(model="mlp", model_args={"width": 3})
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        RunSpec(model="resnet")
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        RunSpec(loss="mse")


# --- bad references: one line, naming the reference -----------------------------------------------------------

BAD_AT_SPEC = [
    (dict(model="no_such_module_xyz:net"), "no module named 'no_such_module_xyz'"),
    (dict(model="user_models:"), "must look like 'package.module:factory'"),
    (dict(model="user models:net"), "is not a dotted module name"),
    (dict(model="user_models:net-1"), "is not a Python name"),
    (dict(model="user_models:mlp", dataset="missing_dir/data.py:load"), "no file"),
    (dict(loss="no_such_module_xyz:fn"), "no module named"),
]

FLAT = "user_models:flat"
BAD_AT_CHECK = [
    (dict(model="user_models:nope", dataset=FLAT), "has no attribute 'nope'"),
    (dict(model="user_models:NOT_CALLABLE", dataset=FLAT), "is not callable"),
    (dict(model="user_models:bad_raises", dataset=FLAT), "raised RuntimeError: out of coffee second line"),
    (dict(model="user_models:bad_not_module", dataset=FLAT), "must return a torch.nn.Module; got a str"),
    (dict(model="user_models:mlp", dataset="user_models:bad_data_type"), "must return (x_train, y_train"),
    (dict(model="user_models:mlp", dataset="user_models:bad_lengths"), "x_train has 48 examples but y_train has 47"),
    (dict(model="user_models:mlp", dataset="user_models:bad_raises"), "raised RuntimeError"),
    (dict(model="user_models:bad_output_size", dataset=FLAT), "labels 0..2 do not fit the 2 classes of the output"),
    (dict(model="user_models:transformer", dataset=FLAT), "raised"),
    (dict(model="user_models:bn_cnn", dataset="user_models:tokens"), "raised"),
    (dict(model="user_models:conv1d", dataset="user_models:sequences", model_args={"outputs": 3}), "does not fit"),
    (dict(model="user_models:mlp", dataset=FLAT, loss="user_models:bad_loss"), "must return the mean loss"),
    (dict(model="user_models:mlp", dataset=FLAT, loss="user_models:huber"), "loss 'user_models:huber'"),
    (dict(model="user_models:mlp", dataset=FLAT, batch_size=100), "batch size 100 exceeds the 48"),
    (dict(model="user_models:dropout_mlp", dataset=FLAT), "draws random numbers in its forward pass"),
    (dict(model="user_models:gru", dataset="user_models:sequences"), "does not run stacked"),
    (dict(model="user_models:mlp", dataset=FLAT, train_subset=100), "train_subset 100 exceeds"),
]


@pytest.mark.parametrize("kw, problem", BAD_AT_SPEC, ids=[str(k) for k, _ in BAD_AT_SPEC])
def test_a_bad_reference_is_one_line_when_the_spec_is_made(kw, problem):
    with pytest.raises(UsageError) as err:
        RunSpec(**kw)
    message = str(err.value)
    assert "\n" not in message and problem in message
    assert any(v in message for v in kw.values() if ":" in v), message


@pytest.mark.parametrize("kw, problem", BAD_AT_CHECK, ids=[str(k) for k, _ in BAD_AT_CHECK])
def test_a_bad_reference_is_one_line_before_training(kw, problem, one_thread):
    spec = RunSpec(**{"batch_size": 16, **kw}, epochs=1)
    for check in (lambda: check_run(spec, torch.device("cpu")), lambda: train_group([spec], device="cpu")):
        with pytest.raises(UsageError) as err:
            check()
        message = str(err.value)
        assert "\n" not in message and problem in message, message
        named = [v for k, v in kw.items() if k in ("model", "dataset", "loss") and ":" in v]
        assert any(ref in message for ref in named), message


def test_a_model_without_random_draws_passes_the_stacked_check():
    check_run(RunSpec(model="user_models:dropout_mlp", model_args={"p": 0.0}, dataset=FLAT, batch_size=16), "cpu")


def test_a_factory_whose_architecture_depends_on_the_seed_is_refused():
    specs = [RunSpec(model="user_models:bad_seed_dependent", dataset=FLAT, batch_size=16, seed=s) for s in range(6)]
    with pytest.raises(UsageError, match="'user_models:bad_seed_dependent' built different parameters for seeds 0"):
        train_group(specs, device="cpu")


def test_a_diverged_user_run_is_frozen_and_leaves_the_others_as_alone(one_thread):
    kw = dict(model="user_models:mlp", dataset=FLAT, batch_size=16, epochs=2, probes=("metrics",))
    good, bad = RunSpec(**kw, lr=0.05, seed=0), RunSpec(**kw, lr=1e6, seed=1)  # the largest lr: diverges at once
    together = train_group([good, bad], device="cpu", keep_params=True)
    alone = train_group([good], device="cpu", keep_params=True)
    assert together[1].status == "diverged" and together[1].diverged_step is not None
    assert together[0].status == "finished"
    assert rel_diff(together[0].params, alone[0].params) < 1e-6


def test_a_factory_importing_a_broken_module_says_so(tmp_path, monkeypatch):
    (tmp_path / "broken_user_module.py").write_text(
        textwrap.dedent("""
            import torch
            raise ImportError("needs a GPU\\nreally")
            def net():
                return torch.nn.Linear(2, 2)
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = RunSpec(model="broken_user_module:net", dataset=FLAT, batch_size=16)  # found without running it
    with pytest.raises(UsageError, match="importing 'broken_user_module' failed: ImportError: needs a GPU really"):
        check_run(spec, torch.device("cpu"))


def test_references_helpers():
    assert references.is_reference("pkg.mod:f") and not references.is_reference("mlp")
    assert references.load_reference("user_models:mlp", "model") is user_models.mlp


def test_micro_batches_of_a_user_model_equal_the_direct_batch(one_thread):
    kw = dict(CASES["transformer"], **COMMON, optimizer="adam", lr=1e-3)
    (direct,) = train_group([RunSpec(**kw)], device="cpu", keep_params=True)
    (split,) = train_group([RunSpec(**kw, micro_batch=4)], device="cpu", keep_params=True)
    assert rel_diff(split.params, direct.params) < 1e-10
