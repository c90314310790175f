"""The equivalence family: the vectorised one-step approaches against a literal loop (BatchNorm by its initial
running statistics and by statistics estimated from data), gradient accumulation against a literal loop for
every optimizer, LARS included, the float64 equalities (E1, E5, E6, accumulation), the named BatchNorm1d error,
the claim rules on synthetic numbers, and the three studies end to end through the CLI on tiny configurations.

Everything runs in float64 on the CPU with a handful of MNIST images (one thread: tiny workloads).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import cli_run, set_args
from reference_optimizers import optimizer_for
from torch.optim.swa_utils import update_bn

from batchlab.engine import RunSpec, data_order, train_group
from batchlab.engine.data import load_for
from batchlab.engine.spec import TaskSpec
from batchlab.executors import TaskUnit, execute
from batchlab.models import build_model, init_params
from batchlab.studies import REGISTRY
from batchlab.studies.equivalence import claims as C
from batchlab.tasks import TaskContext
from batchlab.tasks import equivalence as T
from batchlab.tasks.equivalence_steps import batch_step, estimate_bn_statistics, mean_grad_step, single_example_steps

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
OPTIMIZERS = ("sgd", "momentum", "adam", "weight_decay")


def rel(x: dict, ref: dict, base: dict) -> float:
    """||x - ref|| / ||ref - base|| over all tensors."""
    num = sum(float((x[k].detach().double() - ref[k].detach().double()).pow(2).sum()) for k in ref)
    den = sum(float((ref[k].detach().double() - base[k].double()).pow(2).sum()) for k in ref)
    return math.sqrt(num / den)


def torch_optimizer(name: str, params):
    """A fresh reference optimizer (torch.optim, or the paper's LARS) with the study's settings of `name`."""
    return optimizer_for(T.optimizer_spec(name), params)


@pytest.fixture(scope="module")
def examples():
    data = load_for(T.data_spec("cnn", "float64", 64, 16), CPU)
    return data.x_train[:4], data.y_train[:4]


@pytest.fixture(scope="module")
def stats_pool():
    """Two batches of 4 further images, for running statistics estimated from data."""
    data = load_for(T.data_spec("cnn", "float64", 64, 16), CPU)
    return data.x_train[4:12]


def start_buffers(model: str, params0: dict, buffers0: dict, stats: str, pool: torch.Tensor) -> dict:
    """theta0's running statistics: as initialised, or estimated from `pool` in batches of 4 (the vectorised path)."""
    if stats == "initial" or not buffers0:
        return buffers0
    return estimate_bn_statistics(build_model(model), params0, buffers0, pool, 4)


def reference_start(model: str, params0: dict, buffers0: dict, stats: str, pool: torch.Tensor) -> torch.nn.Module:
    """The reference module at theta0; for data statistics, torch's own update_bn over `pool` in batches of 4."""
    m = module_at(model, params0, buffers0)
    if stats == "data":
        update_bn(list(pool.split(4)), m)
    return m


def module_at(model: str, params: dict, buffers: dict) -> torch.nn.Module:
    m = build_model(model).double()
    m.load_state_dict(params | buffers)
    return m


# --- the vectorised path equals a literal loop ------------------------------------------------------
def test_running_statistics_from_data_equal_torch_update_bn(stats_pool):
    """The estimate at theta0 is what torch.optim.swa_utils.update_bn gives: the average of the batches' statistics."""
    base = build_model("cnn-bn")
    params0, buffers0 = T.initial_weights(base, 0, CPU, torch.float64)
    got = start_buffers("cnn-bn", params0, buffers0, "data", stats_pool)
    want = dict(reference_start("cnn-bn", params0, buffers0, "data", stats_pool).named_buffers())
    assert set(got) == set(want)
    for k, b in want.items():
        if b.is_floating_point():
            torch.testing.assert_close(got[k], b, rtol=1e-12, atol=1e-15)
            assert not torch.equal(got[k], buffers0[k])  # moved away from (0, 1)
        else:
            assert int(got[k]) == int(b) == 2  # batches counted


@pytest.mark.parametrize(
    "model,stats", [("cnn", "initial"), ("cnn-bn", "initial"), ("cnn-bn", "data")], ids=["cnn", "cnn-bn", "cnn-bn-data"]
)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_vectorised_steps_equal_a_literal_loop(examples, stats_pool, model, stats, optimizer):
    """B (fresh single-example steps, averaged) and C (mean per-example gradient, one step) against
    copy.deepcopy + a fresh torch.optim optimizer per example; cnn-bn with bn_single=eval, by the initial
    running statistics or by those estimated from data (the reference's from torch's update_bn)."""
    x, y = examples
    base = build_model(model)
    params0, buffers0 = T.initial_weights(base, 0, CPU, torch.float64)
    reference = reference_start(model, params0, buffers0, stats, stats_pool)
    buffers0 = start_buffers(model, params0, buffers0, stats, stats_pool)
    thetas, grads = [], []
    for i in range(x.shape[0]):
        m = copy.deepcopy(reference)
        m.eval()  # bn_single=eval: BatchNorm by its running statistics (a no-op for cnn)
        opt = torch_optimizer(optimizer, m.parameters())
        F.cross_entropy(m(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
        opt.step()
        thetas.append({k: p.detach().clone() for k, p in m.named_parameters()})
    loop_b = {k: torch.stack([t[k] for t in thetas]).mean(0) for k in params0}
    c_module = copy.deepcopy(reference)
    opt = torch_optimizer(optimizer, c_module.parameters())
    for k, p in c_module.named_parameters():
        p.grad = torch.stack([g[k] for g in grads]).mean(0)
    opt.step()
    loop_c = {k: p.detach() for k, p in c_module.named_parameters()}

    spec = T.optimizer_spec(optimizer)
    single = single_example_steps(base, params0, buffers0 or None, x, y, spec, bn_mode="eval", chunk_size=3)
    assert rel(single.params, loop_b, params0) < 1e-12
    assert rel(mean_grad_step(params0, single.mean_grad, spec), loop_c, params0) < 1e-12
    for k, b in single.buffers.items():  # eval mode leaves the running statistics where they were
        assert torch.equal(b, buffers0[k])


@pytest.mark.parametrize("model,stats", [("cnn", "initial"), ("cnn-bn", "initial"), ("cnn-bn", "data")])
def test_batch_step_equals_torch_optim(examples, stats_pool, model, stats):
    """A: one step on the whole batch in train mode (BatchNorm by the batch's statistics, buffers move from
    where they started: the initial statistics or those estimated from data)."""
    x, y = examples
    base = build_model(model)
    params0, buffers0 = T.initial_weights(base, 0, CPU, torch.float64)
    m = reference_start(model, params0, buffers0, stats, stats_pool)
    buffers0 = start_buffers(model, params0, buffers0, stats, stats_pool)
    m.train()
    opt = torch_optimizer("momentum", m.parameters())
    F.cross_entropy(m(x), y).backward()
    opt.step()
    a_params, a_buffers = batch_step(base, params0, buffers0 or None, x, y, T.optimizer_spec("momentum"))
    assert rel(a_params, dict(m.named_parameters()), params0) < 1e-12
    for k, b in m.named_buffers():
        torch.testing.assert_close(a_buffers[k], b, rtol=1e-12, atol=1e-15)


# --- the claims' equalities, in float64, on real task outputs -----------------------------------------
def run_task(kind: str, seed: int = 0, **args):
    spec = TaskSpec(kind=kind, args=args, seed=seed)
    fn = {"one-step-equivalence": T.one_step_equivalence, "multistep-equivalence": T.multistep_equivalence}[kind]
    args_model = {"one-step-equivalence": T.OneStepArgs, "multistep-equivalence": T.MultistepArgs}[kind]
    return fn(args_model(**args), TaskContext(spec, CPU)).scalars


TINY = dict(precision="float64", train_subset=64, test_subset=16)


@pytest.mark.parametrize("optimizer", ["sgd", "weight_decay"])
def test_e1_e5_one_step_is_exact_in_float64(optimizer):
    s = run_task("one-step-equivalence", model="cnn", optimizer=optimizer, batch_size=6, chunk_size=4, **TINY)
    assert s["AB_rel"] < 1e-9 and s["AC_rel"] < 1e-9
    assert s["AB_cos"] > 1 - 1e-12
    assert s["update_norm_A"] > 0 and 0 <= s["A_test_acc"] <= 1
    assert {"AB_rel:features.0.weight", "AB_max:classifier.3.bias", "A_test_loss", "C_test_acc"} <= set(s)
    rule = {"sgd": C.rule_e1, "weight_decay": C.rule_e5}[optimizer]
    assert rule(s["AB_rel"]).verdict == "supported"


def test_e6_accumulation_with_momentum_is_exact_and_c_drops_momentum():
    s = run_task("multistep-equivalence", k=2, batch_size=4, chunk_size=3, **TINY)
    assert s["AD_rel"] < 1e-9  # E6
    assert s["AC_rel"] > 1e-3  # C dropped the momentum of the first batch
    assert s["update_norm_B"] > s["update_norm_A"]  # 4 single-example steps per batch travel farther


def test_e3_e4_adam_and_batchnorm_break_it():
    adam = run_task("one-step-equivalence", model="cnn", optimizer="adam", batch_size=6, chunk_size=6, **TINY)
    assert adam["AB_rel"] > 0.1 and adam["AC_rel"] < 1e-9  # no BatchNorm: accumulation (C) still equals A
    assert adam["signlike_A"] > 0.5 and adam["signlike_single"] > 0.2
    bn = run_task("one-step-equivalence", model="cnn-bn", optimizer="sgd", batch_size=6, chunk_size=6, **TINY)
    assert bn["AB_rel"] > 1e-3 and bn["BC_rel"] < 1e-9  # B and C agree: the single-example passes are linear
    assert bn["buf_AB_rel"] == pytest.approx(1.0)  # only the batch step moves the running statistics


def test_e4_with_running_statistics_from_data():
    """bn_stats_batches: the same batch, statistics from the images drawn after it; BatchNorm still breaks it."""
    common = dict(model="cnn-bn", optimizer="sgd", batch_size=6, chunk_size=6, **TINY)
    spec = TaskSpec(kind="one-step-equivalence", args=common | {"bn_stats_batches": 2})
    out = T.one_step_equivalence(T.OneStepArgs(**spec.args), TaskContext(spec, CPU))
    initial = T.one_step_equivalence(T.OneStepArgs(**common), TaskContext(spec, CPU))
    batch, pool = out.arrays["examples"], out.arrays["bn_stats_examples"]
    assert (batch == initial.arrays["examples"]).all() and len(pool) == 12 and not set(batch) & set(pool)
    s = out.scalars
    assert s["AB_rel"] > 1e-3 and s["BC_rel"] < 1e-9 and s["bn_stats_examples"] == 12
    assert s["update_norm_A"] == pytest.approx(initial.scalars["update_norm_A"], rel=1e-12)  # A: batch statistics
    assert s["AB_rel"] != pytest.approx(initial.scalars["AB_rel"])
    with pytest.raises(ValueError, match="bn_stats_batches"):
        T.OneStepArgs(model="cnn", bn_stats_batches=2)
    assert "bn_stats_batches" not in T.task_args(T.OneStepArgs(**common))  # stored keys of earlier tasks unchanged


def test_micro_batches_equal_the_direct_batch_without_batchnorm_and_differ_with_it():
    common = dict(
        init="torch", normalize=False, train_subset=32, batch_size=16, epochs=1, precision="float64", probes=()
    )
    opts = [T.OPTIMIZER_SETTINGS[o] for o in ("sgd", "momentum", "adam", "lars")]
    for model in ("cnn", "cnn-bn"):
        direct = [RunSpec(model=model, **common, **o) for o in opts]
        micro = [s.model_copy(update={"micro_batch": 4}) for s in direct]
        a = train_group(direct, device="cpu", keep_params=True, path="autograd")
        b = train_group(micro, device="cpu", keep_params=True, path="autograd")
        params0 = {k: v.double() for k, v in init_params(build_model(model), "torch", 0).items()}
        diffs = [rel(rb.params, ra.params, params0) for ra, rb in zip(a, b)]
        if model == "cnn":
            assert max(diffs) < 1e-12, diffs
        else:
            assert min(diffs) > 1e-6, diffs


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "lars"])
def test_accumulation_runs_equal_a_literal_loop(optimizer):
    """The accumulation task's two runs (direct, micro-batches) against a literal loop: the module at theta0,
    the engine's data order, each micro-batch's mean loss weighted by its share of the batch before backward,
    one reference step per batch (torch.optim, or the LARS paper's, whose trust ratio then sees the whole
    accumulated gradient). The loop's own micro-batch and direct runs agree as closely."""
    args = T.AccumulationArgs(model="cnn", optimizer=optimizer, batch_size=8, micro_batch=4, steps=2, test_subset=16)
    specs = T.accumulation_specs(args, seed=0)
    data = load_for(specs[0], CPU)
    params0, _ = T.initial_weights(build_model("cnn"), 0, CPU, torch.float64)
    loops = []
    for spec in specs:
        (res,) = train_group([spec], device="cpu", keep_params=True, path="autograd")
        m = module_at("cnn", params0, {}).train()
        opt = optimizer_for(spec, m.parameters())
        order = data_order(spec.order_seed, 0, data.n_train)
        for idx in order.split(spec.batch_size):
            opt.zero_grad()
            for part in idx.split(spec.micro_batch or spec.batch_size):
                share = len(part) / len(idx)
                (F.cross_entropy(m(data.x_train[part]), data.y_train[part]) * share).backward()
            opt.step()
        loop = {k: p.detach() for k, p in m.named_parameters()}
        assert res.steps == 2 and rel(res.params, loop, params0) < 1e-12, (optimizer, spec.micro_batch)
        loops.append(loop)
    assert rel(loops[1], loops[0], params0) < 1e-12


# --- the named BatchNorm1d error -----------------------------------------------------------------------
def test_batchnorm1d_on_one_example_is_a_named_error_not_an_exception():
    spec = TaskSpec(kind="one-step-equivalence", args=dict(model="cnn-bn", bn_single="train", batch_size=4, **TINY))
    result = execute(TaskUnit(spec), "cpu")
    assert result.status == "error" and result.scalars == {}
    assert result.error.startswith(f"{T.BN1D_SINGLE}: BatchNorm1d cannot normalise one example")
    # cnn has no BatchNorm: bn_single=train is computed as usual
    ok = execute(TaskUnit(spec.model_copy(update={"args": spec.args | {"model": "cnn"}})), "cpu")
    assert ok.status == "finished" and ok.scalars["AB_rel"] < 1e-9


# --- the claim rules on synthetic numbers ----------------------------------------------------------------
def test_rules_e1_e2_e5():
    for rule in (C.rule_e1, C.rule_e2, C.rule_e5):
        ok = rule(2e-14, cos32=1 - 1e-10, rel32=1.5e-5, rel32_updates=3e-6)
        assert ok.verdict == "supported" and "not judged" in ok.why
        assert rule(1e-6, cos32=1 - 1e-10).verdict == "not supported"
        assert rule(2e-14, cos32=0.99).verdict == "not supported"  # float32 direction is judged
        assert rule(2e-14, rel32=0.5).verdict == "supported"  # float32 relative difference is not
        assert rule(float("nan")).verdict == "inconclusive"


def test_rules_e3_e4():
    ok = C.rule_e3(0.93, cos=0.46, signlike_batch=0.74, signlike_single=0.4, shrink=0.18)
    assert ok.verdict == "supported" and "sign" in ok.why
    assert C.rule_e3(0.01).verdict == "not supported"
    ok = C.rule_e4(1.2, 0.99, cos=0.5, length=1.4, init_length=0.05, stats_examples=256, buffers_rel=1.0)
    assert ok.verdict == "supported" and "256 training images" in ok.why and "0.05 times as far" in ok.why
    assert ok.evidence["initial statistics (0, 1): float64 ||A-B||/||A-theta0|| (not judged)"] == 0.99
    # judged on the statistics from data alone: a large difference by the initial (0, 1) ones does not decide
    assert C.rule_e4(1e-5, 0.99).verdict == "not supported"
    missing = C.rule_e4(float("nan"), 0.99, init_length=0.05)
    assert missing.verdict == "inconclusive" and "un-normalised" in missing.why
    named = C.rule_e4(float("nan"), error="bn1d-single-example: BatchNorm1d cannot ...")
    assert named.verdict == "inconclusive" and "bn1d-single-example" in named.why


def test_rules_e6_e7_e8():
    ks = [10, 2, 5]  # any order: rules sort by K
    assert C.rule_e6(ks, [1e-15, 3e-15, 2e-15]).verdict == "supported"
    assert C.rule_e6(ks, [1e-15, 1e-6, 2e-15]).verdict == "not supported"
    assert C.rule_e6(ks, [1e-15, float("nan"), 2e-15]).verdict == "inconclusive"
    assert C.rule_e7(ks, [3e-3, 1e-3, 2e-3]).verdict == "supported"
    assert C.rule_e7(ks, [1e-3, 2e-3, 3e-3]).verdict == "not supported"  # K=10 smallest
    assert C.rule_e7([2], [1e-3]).verdict == "inconclusive"
    ok = C.rule_e8(ks, ab_mean=[1e-4] * 3, ac_mean=[1e-3] * 3, rel_ad=[1e-15] * 3)
    assert ok.verdict == "supported" and "momentum" in ok.why
    no = C.rule_e8(ks, ab_mean=[1e-3] * 3, ac_mean=[1e-5] * 3, rel_ad=[1e-15] * 3)
    assert no.verdict == "not supported" and "dropped the momentum" in no.why and "confounded" in no.why
    # how much farther B goes: the measured ratios, in units of b, never a fixed "about b"
    far = C.rule_e8(ks, [1e-3] * 3, [1e-5] * 3, [1e-15] * 3, travel=[66.3, 127.0, 62.2], batch_size=32)
    assert "62.2 to 127 times as far" in far.why and "1.94 to 3.97 times b = 32" in far.why and "about b" not in far.why
    assert far.evidence["K=2: ||B-theta0||/||A-theta0||"] == 127.0 and "momentum buffer fills" in far.why
    near = C.rule_e8(ks, [1e-3] * 3, [1e-5] * 3, [1e-15] * 3, travel=[20.0, 30.0, 25.0], batch_size=32)
    assert "0.625 to 0.938 times b = 32" in near.why and "momentum buffer fills" not in near.why
    assert C.rule_e8(ks, [1e-4] * 3, [1e-3] * 3, [1e-3] * 3).verdict == "not supported"  # A-D not exact


def test_rules_a1_a2():
    labels = ["SGD", "momentum", "Adam", "LARS"]
    ok = C.rule_a1(labels, [1e-15, 2e-15, 1e-14, 3e-15])
    assert ok.verdict == "supported" and "trust ratio" in ok.why and "LARS" in C.A1.statement
    assert "trust ratio" not in C.rule_a1(labels[:3], [1e-15, 2e-15, 1e-14]).why  # only when LARS was run
    lars_off = C.rule_a1(labels, [1e-15, 2e-15, 1e-14, 1e-9])
    assert lars_off.verdict == "not supported" and "LARS" in lars_off.why
    labels = labels[:3]
    assert C.rule_a1(labels, [1e-15, 2e-15, 1e-9]).verdict == "not supported"
    assert C.rule_a1([], []).verdict == "inconclusive"
    assert C.rule_a2(labels, [0.5, 0.5, 0.7]).verdict == "supported"
    assert C.rule_a2(labels, [0.5, 1e-14, 0.7]).verdict == "not supported"


# --- the studies end to end ----------------------------------------------------------------------------
STUDY_SETS = {
    "equivalence": [
        "batch_size=4",
        "train_subset=32",
        "test_subset=16",
        "optimizers=sgd,adam",
        "precision=float64",
        "bn_stats_batches=2",
    ],
    "equivalence-multistep": ["ks=1,2", "batch_size=3", "train_subset=32", "test_subset=16"],
    "accumulation": ["batch_size=8", "micro_batch=4", "steps=2", "test_subset=16", "optimizers=sgd,adam,lars"],
}


def test_registered():
    for name in STUDY_SETS:
        assert name in REGISTRY and set(REGISTRY[name].profiles) == {"quick", "full"}
    full = REGISTRY["equivalence"].config("full")
    assert (full.batch_size, len(full.optimizers), len(full.models), len(full.precision)) == (256, 4, 2, 2)
    assert REGISTRY["equivalence-multistep"].config("full").ks == (2, 5, 10)


@pytest.mark.parametrize("name", list(STUDY_SETS))
def test_study_end_to_end(capsys, tmp_path, name):
    sets = set_args(STUDY_SETS[name])
    code, out, err = cli_run(capsys, "run", name, "--profile", "quick", "--device", "cpu", "--out", tmp_path, *sets)
    assert code == 0, err
    study_dir = Path(out.splitlines()[-1].removeprefix("report: ")).parent  # a variant: its --set values
    assert study_dir.parent == tmp_path and study_dir.name.startswith(f"{name}@")
    html = (study_dir / "report.html").read_text()
    assert list((study_dir / "figures").glob("*.png")) and list((study_dir / "tables").glob("*.csv"))
    claims = json.loads((study_dir / "claims.json").read_text())["claims"]
    ids = {c["id"]: c["verdict"] for c in claims}
    for claim_id in ids:
        assert claim_id in html and claim_id in out
    if name == "equivalence":
        assert ids["E1"] == ids["E4"] == ids["E3"] == "supported"
        assert ids["E2"] == ids["E5"] == "inconclusive"  # momentum and weight decay were not run
        assert T.BN1D_SINGLE in html  # the bn_single=train task's named outcome is in the report
    elif name == "equivalence-multistep":
        assert ids["E6"] == "supported"
    else:
        assert ids == {"A1": "supported", "A2": "supported"}


@pytest.mark.parametrize("key,value", [("bn_single", "foo"), ("precision", "float16")])
def test_bad_values_are_one_line_errors(capsys, tmp_path, key, value):
    out_dir = tmp_path / "out"
    code, out, err = cli_run(capsys, "run", "equivalence", "--set", f"{key}={value}", "--out", out_dir)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and key in err, err
    assert not out_dir.exists()
