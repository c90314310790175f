"""The engine against slow, obvious references, on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_diff

from batchlab.engine import LRSchedule, RunSpec, data_order, train_group
from batchlab.engine import groups as engine_groups
from batchlab.engine.data import load_for
from batchlab.models import build_model, init_module

# 800 examples at batch 16 = 50 steps in one epoch.
SMALL = dict(train_subset=800, test_subset=200, widths=(32,), batch_size=16, epochs=1)

OPTIMIZERS = {
    "sgd": dict(optimizer="sgd", lr=0.05),
    "momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9),
    "nesterov": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True),
    "weight_decay": dict(optimizer="sgd", lr=0.05, momentum=0.5, weight_decay=0.01),
    "adam": dict(optimizer="adam", lr=1e-3, betas=(0.8, 0.99), eps=1e-7),
    "adam_l2": dict(optimizer="adam", lr=1e-3, weight_decay=0.01),
    "adamw": dict(optimizer="adamw", lr=1e-3, weight_decay=0.1),
}


def reference_run(spec: RunSpec) -> dict[str, torch.Tensor]:
    """The textbook loop: an nn.Module, torch.optim, the same init seed and the same batches."""
    dtype = torch.float64 if spec.precision == "float64" else torch.float32
    data = load_for(spec, torch.device("cpu"))
    model = build_model(spec.model, input_dim=data.input_dim, widths=spec.widths)
    init_module(model, spec.init, torch.Generator().manual_seed(spec.seed))
    model = model.to(dtype)
    kw = dict(lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), momentum=spec.momentum, nesterov=spec.nesterov, **kw)
    else:
        cls = torch.optim.Adam if spec.optimizer == "adam" else torch.optim.AdamW
        opt = cls(model.parameters(), betas=spec.betas, eps=spec.eps, **kw)
    n = data.n_train
    for epoch in range(spec.epochs):
        order = data_order(spec.order_seed, epoch, n)
        bs = spec.batch_size_at(epoch)
        for start in range(0, n, bs):
            idx = order[start : start + bs]
            opt.zero_grad()
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx], reduction=spec.loss_reduction)
            loss.backward()
            opt.step()
    return {k: v.detach() for k, v in model.named_parameters()}


@pytest.mark.parametrize("precision,tol", [("float32", 1e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_engine_matches_torch_optim(name, precision, tol):
    spec = RunSpec(**SMALL, **OPTIMIZERS[name], precision=precision, seed=3)
    (result,) = train_group([spec], device="cpu", keep_params=True)
    assert result.steps == 50
    assert rel_diff(result.params, reference_run(spec)) < tol


def test_mixed_group_matches_solo_runs():
    """Optimizer kind, lr and hyperparameters may differ inside one group."""
    specs = [RunSpec(**SMALL, **kw, seed=i) for i, kw in enumerate(OPTIMIZERS.values())]
    together = train_group(specs, device="cpu", keep_params=True)
    for spec, res in zip(specs, together):
        (solo,) = train_group([spec], device="cpu", keep_params=True)
        assert rel_diff(res.params, solo.params) < 1e-6
        assert rel_diff(res.params, reference_run(spec)) < 1e-5


def test_run_does_not_depend_on_its_group():
    target = RunSpec(**SMALL, seed=11, lr=0.03)
    others = [RunSpec(**SMALL, seed=s, lr=0.01 * (s + 1)) for s in range(7)]
    (alone,) = train_group([target], device="cpu", keep_params=True)
    grouped = train_group(others[:4] + [target] + others[4:], device="cpu", keep_params=True)
    assert rel_diff(grouped[4].params, alone.params) < 1e-6
    assert grouped[4].metrics[-1]["test_acc"] == pytest.approx(alone.metrics[-1]["test_acc"], abs=1e-9)


def test_chunking_gives_the_same_results():
    specs = [RunSpec(**SMALL, seed=s) for s in range(5)]
    whole = train_group(specs, device="cpu", keep_params=True)
    chunked = train_group(specs, device="cpu", keep_params=True, max_runs=2)
    assert [r.group_size for r in chunked] == [2, 2, 2, 2, 1]
    for a, b in zip(whole, chunked):
        assert rel_diff(a.params, b.params) < 1e-6


def test_rerun_is_bitwise_identical():
    specs = [RunSpec(**SMALL, seed=s, optimizer="adam", lr=1e-3) for s in range(2)]
    first = train_group(specs, device="cpu", keep_params=True)
    second = train_group(specs, device="cpu", keep_params=True)
    for a, b in zip(first, second):
        assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
        assert a.metrics == b.metrics


def test_divergent_run_is_masked_and_the_rest_go_on():
    good = [RunSpec(**SMALL, seed=s, lr=0.05) for s in range(3)]
    bad = RunSpec(**SMALL, seed=9, lr=1e6)
    results = train_group(good[:1] + [bad] + good[1:], device="cpu", keep_params=True)
    statuses = [r.status for r in results]
    assert statuses == ["finished", "diverged", "finished", "finished"]
    assert 0 <= results[1].diverged_step < 50
    assert results[1].metrics[-1]["train_loss"] is None  # NaN becomes a missing value, not a crash
    for spec, res in zip(good, [results[0], results[2], results[3]]):
        (solo,) = train_group([spec], device="cpu", keep_params=True)
        assert rel_diff(res.params, solo.params) < 1e-6


def test_sum_reduction_is_mean_with_lr_times_batch():
    """SGD on the summed loss with lr/B takes exactly the steps of the mean loss with lr (full batches)."""
    mean = RunSpec(**SMALL, lr=0.05, precision="float64")
    summed = RunSpec(**SMALL, lr=0.05 / 16, loss_reduction="sum", precision="float64")
    a, b = (train_group([s], device="cpu", keep_params=True)[0] for s in (mean, summed))
    assert rel_diff(a.params, b.params) < 1e-10


def test_batch_switch_and_lr_schedule_follow_the_reference():
    spec = RunSpec(
        train_subset=320,
        test_subset=100,
        widths=(16,),
        batch_size=64,
        epochs=3,
        batch_switch=((1, 32),),
        lr=0.05,
        momentum=0.9,
        precision="float64",
        lr_schedule=LRSchedule(kind="step", milestones=(2,), gamma=10.0),
    )
    (res,) = train_group([spec], device="cpu", keep_params=True)
    assert res.steps == 5 + 10 + 10
    assert [m["step"] for m in res.metrics] == [0, 5, 15, 25]

    # reference: torch.optim with the lr multiplied by 10 at the start of epoch 2
    data = load_for(spec, torch.device("cpu"))
    model = build_model("mlp", widths=spec.widths)
    init_module(model, "glorot", torch.Generator().manual_seed(0))
    model = model.double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):
        for g in opt.param_groups:
            g["lr"] = 0.05 * (10 if epoch >= 2 else 1)
        order, bs = data_order(0, epoch, 320), spec.batch_size_at(epoch)
        for start in range(0, 320, bs):
            idx = order[start : start + bs]
            opt.zero_grad()
            F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    assert rel_diff(res.params, {k: v.detach() for k, v in model.named_parameters()}) < 1e-12


def test_last_partial_batch_is_kept_or_dropped():
    kept = RunSpec(train_subset=100, test_subset=50, widths=(8,), batch_size=32, epochs=1)
    dropped = kept.model_copy(update={"drop_last": True})
    assert train_group([kept], device="cpu")[0].steps == 4
    assert train_group([dropped], device="cpu")[0].steps == 3


@pytest.mark.parametrize("model", ["cnn", "cnn-bn"])
def test_cnn_group_matches_solo(model):
    """Stacked convolutions and BatchNorm statistics stay per run (float64: rounding can't hide a leak)."""
    specs = [
        RunSpec(
            model=model,
            init="torch",
            train_subset=64,
            test_subset=32,
            batch_size=16,
            epochs=1,
            seed=s,
            lr=0.05,
            precision="float64",
        )
        for s in range(2)
    ]
    together = train_group(specs, device="cpu", keep_params=True)
    (solo,) = train_group(specs[1:], device="cpu", keep_params=True)
    assert rel_diff(together[1].params, solo.params) < 1e-12
    assert together[1].metrics[-1]["test_acc"] == pytest.approx(solo.metrics[-1]["test_acc"])


def test_group_rejects_runs_that_cannot_step_together():
    with pytest.raises(ValueError, match="shared"):
        train_group([RunSpec(**SMALL), RunSpec(**{**SMALL, "batch_size": 32})], device="cpu")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_fused_cpu_update_equals_the_masked_update_bitwise(momentum):
    """On the CPU, when no run of the group is frozen, SGD takes p - lr g in one fused pass instead of
    the masked form: the same bits. And with a frozen run the masked form keeps that run's weights."""
    from batchlab.engine.optim import SGD, RuleOptions

    gen = torch.Generator().manual_seed(0)
    p = torch.randn(3, 5, 7, generator=gen)
    g = torch.randn(3, 5, 7, generator=gen)
    hp = {"lr": torch.tensor([0.1, 0.01, 1.0]), "momentum": torch.full((3,), momentum)}
    hp |= {"nesterov": torch.zeros(3, dtype=torch.bool), "wd": torch.zeros(3)}
    out = {}
    for fused in (False, True):
        q, opts = p.clone(), RuleOptions(momentum=momentum > 0, weight_decay=False, all_alive=fused)
        rule = SGD()
        state = rule.init("w", q, opts)
        for _ in range(3):
            alive = torch.ones(3, dtype=torch.bool)
            rule.update("w", q, g.clone(), state, hp | {"alive": alive}, torch.tensor(1.0), opts)  # g is consumed
        out[fused] = q
    assert torch.equal(out[True], out[False]) and not torch.equal(out[True], p)
    q, opts = p.clone(), RuleOptions(momentum=False, weight_decay=False)
    SGD().update("w", q, g.clone(), {}, hp | {"alive": torch.tensor([True, False, True])}, torch.tensor(1.0), opts)
    assert torch.equal(q[1], p[1]) and not torch.equal(q[0], p[0])


# --- a run's numbers do not depend on the runs that share its group (README, "Float32 and chaos") ----------


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """The CPU's thread count: the bitwise promise holds for any group with one thread, and for groups of at
    least two runs with two (a lone run's matmuls are then split between the threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def assert_same_numbers(a, b) -> None:
    """Bitwise: the weights, the metrics at every evaluation, the status."""
    assert (a.key, a.status, a.diverged_step, a.steps) == (b.key, b.status, b.diverged_step, b.steps)
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert a.metrics == b.metrics


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_a_run_left_over_after_a_kill_or_split_by_out_of_memory_has_the_numbers_of_the_whole_group(
    precision, threads, monkeypatch
):
    """A group mixing plain SGD (the folded step) with momentum and Adam (the autograd step): whichever runs
    remain after a SIGKILL, or whatever chunks an out-of-memory halving leaves, each run computes what it did
    in the whole group, bit for bit (it once folded only when the group held no other optimizer: 1.1e-7)."""
    kinds = [
        dict(optimizer="sgd", lr=0.05, momentum=0.9),
        dict(optimizer="adam", lr=1e-3),
        dict(optimizer="sgd", lr=0.1),
        dict(optimizer="adam", lr=3e-3),
        dict(optimizer="sgd", lr=0.02, momentum=0.5),
        dict(optimizer="sgd", lr=0.05),
        dict(optimizer="sgd", lr=0.2),
        dict(optimizer="sgd", lr=0.03),
    ]
    specs = [RunSpec(**SMALL, **kw, precision=precision, seed=i) for i, kw in enumerate(kinds)]
    whole = train_group(specs, device="cpu", keep_params=True)
    assert [r.step_path for r in whole] == ["autograd", "autograd", "folded", "autograd"] + ["autograd"] + 3 * [
        "folded"
    ]
    left_over = train_group(specs[5:], device="cpu", keep_params=True)  # the runs a killed process had not stored
    sizes, real = [], engine_groups.GroupTrainer

    class TwoRunsFit(real):  # a device that holds two runs at once: out of memory, the chunk is halved
        def __init__(self, chunk, *a, **kw):
            sizes.append(len(chunk))
            if len(chunk) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            super().__init__(chunk, *a, **kw)

    monkeypatch.setattr(engine_groups, "GroupTrainer", TwoRunsFit)
    halved = train_group(specs, device="cpu", keep_params=True)
    assert sizes == [4, 2, 2, 2, 2]  # the autograd part whole, then in halves; the folded part's chunks of 2
    for a, b in zip(whole[5:], left_over):
        assert_same_numbers(a, b)
    for a, b in zip(whole, halved):
        assert_same_numbers(a, b)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_adam_in_a_group_of_40_has_the_numbers_of_the_run_in_a_group_of_2(precision, threads):
    """And alone, with one thread. Adam's bias correction beta^t: ATen's CPU pow takes SLEEF's vector code on
    full vectors (from 16 runs in float64, 32 in float32) and std::pow on the rest, which differed by an ulp at 75
    of 6,000 (beta, t)."""
    specs = [
        RunSpec(
            train_subset=512,
            test_subset=64,
            widths=(8,),
            batch_size=16,
            epochs=2,
            optimizer="adam",
            lr=1e-3,
            precision=precision,
            seed=s,
        )
        for s in range(40)
    ]
    big = train_group(specs, device="cpu", keep_params=True)
    assert big[0].steps == 64
    pair = train_group([specs[37], specs[0]], device="cpu", keep_params=True)
    alone = train_group(specs[:1], device="cpu", keep_params=True) if threads == 1 else []
    for a, b in zip([*pair, *alone], [big[37], big[0], big[0]]):
        assert_same_numbers(a, b)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_an_evaluation_gives_a_run_the_same_loss_in_any_group(precision, threads):
    """The evaluation's chunk of examples shrinks as the group grows (memory); a run's mean loss once depended on
    where the chunks ended (a test split of 10,000 examples is one chunk for 1 run, 5 for 16 runs)."""
    from batchlab.models.mlp import stacked_mlp_forward
    from batchlab.probes.metrics import evaluate

    dtype = getattr(torch, precision)
    gen = torch.Generator().manual_seed(0)
    params = {
        "net.0.weight": torch.randn(40, 64, 784, generator=gen, dtype=dtype) / 28,
        "net.0.bias": torch.randn(40, 64, generator=gen, dtype=dtype) / 10,
        "net.2.weight": torch.randn(40, 10, 64, generator=gen, dtype=dtype) / 8,
        "net.2.bias": torch.randn(40, 10, generator=gen, dtype=dtype) / 10,
    }
    x, y = torch.randn(1000, 784, generator=gen, dtype=dtype), torch.randint(0, 10, (1000,), generator=gen)
    losses = {}
    for r in (2, 4, 40) if threads > 1 else (1, 2, 4, 40):
        sub = {k: v[:r] for k, v in params.items()}
        # chunks of 512, 256 and 64 examples; 1000 = 15 x 64 + 40
        values = evaluate(lambda xc: stacked_mlp_forward(sub, xc), x, y, r, "classification", 1 << 20)
        losses[r] = float(values["loss"][0])
    assert len(set(losses.values())) == 1, losses


def test_the_noise_probe_draws_each_runs_batches_from_its_own_seed(threads):
    """Its batches were drawn for the whole group from its first run's seed: a run's |G|^2 and tr(Sigma) changed
    with the runs trained beside it (a resume, an out-of-memory halving), by more than rounding."""
    specs = [RunSpec(**SMALL, seed=s, lr=0.05, probes=("noise",)) for s in range(4)]
    whole = train_group(specs, device="cpu", keep_params=True)
    for a, b in zip(whole[2:], train_group(specs[2:], device="cpu", keep_params=True)):
        assert_same_numbers(a, b)
