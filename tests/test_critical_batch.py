"""The critical batch size measured by branched training: the decision rules on synthetic losses whose answer is
known, the branch task against a literal deepcopy + torch.optim loop, the staged plan end to end, and bad input."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cli_run
from conftest import one_line_error as assert_refused

from batchlab.analysis.critical import critical_batch, smoothed, warmup_schedule
from batchlab.analysis.decisions import not_worse
from batchlab.studies.critical.claims import rule_c1, rule_c2, rule_c3, rule_c5

RNG = np.random.default_rng(0)


def losses_like(base: np.ndarray, factor: float, noise: float = 0.002) -> np.ndarray:
    """Per-seed losses `factor` times `base`, with a little multiplicative noise per seed."""
    return base * factor * np.exp(RNG.normal(0, noise, base.shape))


BASE = np.array([0.30, 0.32, 0.29, 0.31, 0.30])


# --- the non-inferiority decision ------------------------------------------------------------------------------


def test_not_worse_has_all_three_outcomes():
    assert not_worse(BASE, losses_like(BASE, 1.0), 0.02).verdict == "supported"
    assert not_worse(BASE, losses_like(BASE, 1.2), 0.02).verdict == "not supported"
    noisy = not_worse(BASE, BASE * np.array([1.05, 0.97, 1.04, 0.98, 1.0]), 0.02)
    assert noisy.verdict == "inconclusive" and "seeds" in noisy.why


def test_a_diverged_branch_is_worse_not_missing():
    b = BASE.copy()
    b[2] = np.inf
    d = not_worse(BASE, b, 0.02)
    assert d.verdict == "not supported" and "diverged" in d.why


def test_not_worse_equals_a_one_sided_paired_t_on_log_ratios():
    from scipy import stats

    b = BASE * np.array([1.01, 1.0, 1.02, 0.995, 1.005])
    d = not_worse(BASE, b, 0.02)
    logs = np.log(b / BASE)
    p = stats.ttest_1samp(logs, math.log(1.02), alternative="less").pvalue
    assert d.p == pytest.approx(p, rel=1e-12)
    assert d.estimate == pytest.approx(math.expm1(logs.mean()), rel=1e-12)


# --- the critical batch size at one checkpoint ------------------------------------------------------------------


def synthetic(factors: dict[int, float]) -> dict[int, np.ndarray]:
    return {k: (BASE if k == 1 else losses_like(BASE, f)) for k, f in factors.items()}


def test_the_interval_lies_between_the_last_accepted_and_the_first_rejected():
    losses = synthetic({1: 1, 2: 1, 3: 1, 4: 1.0, 8: 1.3, 16: 2.0})
    r = critical_batch([1, 2, 3, 4, 8, 16], 16, losses, 0.02)
    assert (r["lower"], r["upper"], r["status"]) == (64, 128, "measured")
    assert r["point"] == pytest.approx(math.sqrt(64 * 128))


def test_every_k_accepted_gives_a_lower_bound_only():
    r = critical_batch([1, 2, 4], 16, synthetic({1: 1, 2: 1, 4: 1}), 0.02)
    assert (r["lower"], r["upper"], r["status"]) == (64, math.inf, "above range")


def test_the_first_k_rejected_means_below_the_range():
    r = critical_batch([1, 2, 4], 16, synthetic({1: 1, 2: 1.5, 4: 2}), 0.02)
    assert (r["lower"], r["upper"], r["status"]) == (16, 32, "below range")


def test_an_undecided_k_leaves_the_interval_bounded():
    losses = synthetic({1: 1, 2: 1, 4: 1, 8: 1.5})
    losses[4] = BASE * np.array([1.05, 0.97, 1.04, 0.98, 1.0])  # crosses the margin
    r = critical_batch([1, 2, 4, 8], 16, losses, 0.02)
    assert (r["lower"], r["upper"], r["status"], r["inconclusive_k"]) == (32, 128, "bounded", [4])


def test_smoothing_is_an_ema_and_keeps_a_divergence():
    curve = np.array([[1.0, 1.0], [0.5, np.inf], [0.25, 0.5]])
    s = smoothed(curve, 0.5)
    assert s[2, 0] == pytest.approx(0.5 * (0.5 * 1 + 0.5 * 0.5) + 0.5 * 0.25)
    assert np.isinf(s[1, 1]) and np.isinf(s[2, 1])


def test_the_warmup_doubles_while_the_critical_batch_exceeds_twice_the_batch():
    assert warmup_schedule([0, 2, 6, 12], [16, 40, 40, 300], 16) == [(0, 16), (2, 32), (12, 256)]
    assert warmup_schedule([0, 5], [100, 16], 16) == [(0, 64)]  # never shrinks
    assert warmup_schedule([0, 5], [16, 20], 16) == [(0, 16)]


# --- the claims' rules ------------------------------------------------------------------------------------------


def test_c1_growing_intervals_are_supported_and_falling_ones_not():
    fr = [0, 0.05, 0.1, 0.3, 0.6]
    up = rule_c1(fr, [16, 32, 64, 128, 256], [32, 64, 128, 256, 512])
    assert up.verdict == "supported"
    down = rule_c1(fr, [256, 128, 64, 32, 16], [512, 256, 128, 64, 32])
    assert down.verdict == "not supported"
    flat = rule_c1(fr, [16, 16, 16, 16, 16], [64, 64, 64, 64, 64])
    assert flat.verdict == "inconclusive"


def test_c2_compares_both_intervals_with_the_factor():
    crit = [(64, 128), (64, 128)]
    assert rule_c2([0.1, 0.6], [(90, 110), (70, 120)], crit).verdict == "supported"
    assert rule_c2([0.1, 0.6], [(900, 1100), (70, 120)], crit).verdict == "not supported"
    assert rule_c2([0.1, 0.6], [(20, 110), (70, 120)], crit).verdict == "inconclusive"
    assert "not measured" in rule_c2([0.1], [(math.nan, math.nan)], crit[:1]).why


def test_c3_is_supported_when_b_noise_is_consistently_closer():
    crit = [100, 200, 400]
    c3 = rule_c3([0.1, 0.3, 0.6], [1000, 2100, 3900], [150, 260, 500], crit)
    assert c3.verdict == "supported"
    assert rule_c3([0.1, 0.3, 0.6], [150, 260, 500], [1000, 2100, 3900], crit).verdict == "not supported"


def test_c5_needs_fewer_steps_and_no_worse_loss():
    b0, loss = np.array([600.0, 620, 610]), np.array([0.10, 0.11, 0.105])
    ok = rule_c5(b0, b0 * 0.6, loss, loss * 1.001, 0.02, [(0, 16), (2, 32)])
    assert ok.verdict == "supported"
    worse = rule_c5(b0, b0 * 0.6, loss, loss * 1.5, 0.02, [(0, 16), (2, 32)])
    assert worse.verdict == "not supported"
    assert rule_c5(b0, [], loss, [], 0.02, [(0, 16)]).verdict == "inconclusive"


# --- the branch task against a literal loop ---------------------------------------------------------------------


def test_a_branch_equals_deepcopy_and_torch_optim_from_the_checkpoint(one_thread):
    """float64: every (lr, seed) branch trained by the task equals a literal loop from the checkpoint's weights on
    the same batches (data_order of the branch's data seed), and its recorded loss is the whole training loss."""
    from batchlab.engine import RunSpec, train_group
    from batchlab.engine.data import data_order, load_for
    from batchlab.engine.spec import Checkpoint, TaskSpec
    from batchlab.executors import TaskUnit
    from batchlab.executors.local import execute
    from batchlab.models import build_model
    from batchlab.tasks.branches import BRANCH_DATA_SEED

    ref = RunSpec(widths=(16,), train_subset=96, test_subset=50, batch_size=8, epochs=2, lr=0.1, precision="float64")
    (res,) = train_group([ref], device="cpu", checkpoints={1})
    run = ref.model_copy(update={"batch_size": 24}).as_dict()
    task = TaskSpec(
        kind="branch",
        args=dict(run=run, lrs=[0.2, 0.4], seeds=[0, 1], examples=150, evals=3),
        start=Checkpoint(run=ref, epoch=1),
    )
    out = execute(TaskUnit(task, res.checkpoints[1]), torch.device("cpu"), None)
    data = load_for(ref, torch.device("cpu"))
    net = build_model("mlp", widths=(16,)).double()
    net.load_state_dict({k.removeprefix("param:"): torch.as_tensor(v) for k, v in res.checkpoints[1].items()})
    steps = math.ceil(150 / 24)
    for col, (lr, seed) in enumerate([(0.2, 0), (0.2, 1), (0.4, 0), (0.4, 1)]):
        m = copy.deepcopy(net)
        opt = torch.optim.SGD(m.parameters(), lr=lr)
        order, epoch, pos = data_order(BRANCH_DATA_SEED + seed, 0, 96), 0, 0
        for _ in range(steps):
            if pos + 24 > 96:
                epoch, pos = epoch + 1, 0
                order = data_order(BRANCH_DATA_SEED + seed, epoch, 96)
            idx = order[pos : pos + 24]
            pos += 24
            opt.zero_grad()
            F.cross_entropy(m(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
        with torch.no_grad():
            full = F.cross_entropy(m(data.x_train), data.y_train).item()
        assert out.arrays["train_loss"][-1, col] == pytest.approx(full, rel=1e-10)
    assert out.arrays["examples"][-1] == steps * 24


# --- the staged study end to end, and bad input -----------------------------------------------------------------

TINY = [
    "--set", "epochs=2", "--set", "multipliers=1,2,4", "--set", "checkpoints=0,0.5", "--set", "window=512",
    "--set", "lrs=0.05,0.1", "--set", "lr_grid=1.0", "--set", "seeds=2", "--set", "steps_profile=off",
    "--set", "proxies=false", "--set", "train_subset=512", "--set", "test_subset=200", "--set", "evals=4",
]  # fmt: skip


def test_the_staged_plan_runs_end_to_end_and_is_reused(capsys, tmp_path, one_thread):
    code, out, err = cli_run(capsys, "critical-batch", *TINY, "--out", tmp_path, "--json")
    assert code == 0, err
    import json

    answer = json.loads(out)
    assert [c["epoch"] for c in answer["checkpoints"]] == [0, 1]
    assert set(answer["seconds_per_step"]) == {"16", "32", "64"}
    assert answer["batch_size"] in (16, 32, 64) and answer["warmup"][0]["epoch"] == 0
    assert [c["id"] for c in answer["claims"]] == ["C1", "C2", "C3", "C4", "C5"]
    code, out, err = cli_run(capsys, "run", "critical-batch", *TINY, "--out", tmp_path)
    assert code == 0 and "trained 0 runs" in out and "reused" in out, (out, err)
    from batchlab.explorer import gather

    panel = gather(tmp_path)["critical"]  # the explorer's trade-offs panel shows the same intervals
    assert [r["critical batch, lower"] for r in panel["rows"]] == [c["lower"] for c in answer["checkpoints"]]
    assert panel["b0"] == 16 and "hint" not in panel


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["--set", "window=10000000"], "longer than the reference run"),
        (["--set", "multipliers=1,1"], "at least one larger"),
        (["--set", "checkpoints=0,1.0"], "checkpoints"),
        (["--set", "multipliers=2,4"], "need 1"),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(capsys, tmp_path, sets, fragment):
    code, out, err = cli_run(capsys, "critical-batch", *sets, "--out", tmp_path / "res")
    assert_refused(code, out, err, fragment)
    assert not (tmp_path / "res").exists()


def test_a_user_dataset_too_small_for_the_window_or_the_batches_is_one_line(capsys, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    user = ["--model", "examples.digits_cnn:model", "--data", "examples.digits_cnn:data", "--out", tmp_path / "res"]
    for sets, fragment in ((["--set", "window=10000000"], "longer than the reference run"),
                           (["--set", "multipliers=1,2,128"], "exceeds the 1438 training examples")):  # fmt: skip
        code, out, err = cli_run(capsys, "critical-batch", *sets, *user)
        assert_refused(code, out, err, fragment, "--data examples.digits_cnn:data")
    assert not (tmp_path / "res").exists()


def test_a_bad_optimizer_is_one_line(capsys, tmp_path):
    code, out, err = cli_run(capsys, "critical-batch", "--optimizer", "lbfgs", "--out", tmp_path / "res")
    assert_refused(code, out, err, "--optimizer")


def test_the_api_takes_module_level_functions_and_answers_for_a_user_model(tmp_path, one_thread):
    """batchlab.critical_batch with factories given as functions (they become references), on the tests' user
    MLP: the answer's checkpoints, proxies (B_noise of a user model), step times and JSON."""
    import json

    import user_models

    import batchlab

    answer = batchlab.critical_batch(
        user_models.mlp,
        user_models.flat,
        data_args={"n_train": 256, "n_test": 32},
        out=tmp_path,
        device="cpu",
        epochs=2,
        multipliers=(1, 2, 4),
        checkpoints=(0.0, 0.5),
        window=128,
        lrs=(0.1,),
        lr_grid=(1.0,),
        seeds=2,
        evals=3,
        noise_examples=16,
    )
    assert answer.model == "user_models:mlp" and answer.b0 == 16
    assert [c.epoch for c in answer.checkpoints] == [0, 1]
    assert all(c.b_simple > 0 and c.b_noise > 0 for c in answer.checkpoints)
    assert set(answer.seconds_per_step) == {16, 32, 64} and answer.batch_size in (16, 32, 64)
    doc = json.loads(json.dumps(answer.to_json(), allow_nan=False))
    assert doc["checkpoints"][0]["b_noise_ci"][0] > 0 and "C5" in [c["id"] for c in doc["claims"]]


def test_an_interactive_function_is_refused_in_one_line():
    from batchlab.driver.critical import reference
    from batchlab.errors import UsageError

    with pytest.raises(UsageError, match="module-level function"):
        reference(lambda: None, "model")


def test_the_20_percent_overhead_batch_reads_the_measured_steps():
    from batchlab.studies.critical.critical_batch import overhead_batch

    # perfect scaling to 64 (examples constant), then 30 % more examples at 128 and steps flat after
    assert overhead_batch([16, 32, 64, 128, 256], [800, 400, 200, 130, 130]) == 64
    assert overhead_batch([16, 32, 64], [800, 410, 219]) == 64  # +2.5 %, +9.5 %: both within 20 %
    assert math.isnan(overhead_batch([16, 32], [math.nan, 400]))


def test_the_branch_lr_rule_and_the_warmup_runs_follow_the_optimizer():
    from batchlab.engine.schedules import lr_table
    from batchlab.studies import get_study

    study = get_study("critical-batch")
    sgd, adam = study.config("quick"), study.config("quick", {"optimizer": "adam"})
    assert [sgd.rule_factor(k) for k in (1, 4, 16)] == [1, 4, 16]
    assert [adam.rule_factor(k) for k in (1, 4, 16)] == [1, 2, 4]
    assert study.config("quick", {"optimizer": "adam", "lr_rule": "linear"}).rule_factor(4) == 4
    assert adam.lrs == (3e-4, 1e-3, 3e-3) and sgd.lrs == (0.03, 0.1, 0.3)
    tasks = study.branch_tasks(sgd, 0.1)
    assert tasks[(2, 8)].args["lrs"] == pytest.approx([0.4, 0.8]) and tasks[(2, 8)].start.epoch == 2
    # the warmup: batch 16, then 64 from epoch 2 (two doublings): the lr x 4 there under the linear rule
    (run, *_) = study.warmup_runs(sgd, 0.1, [(0, 16), (2, 64)])
    assert run.batch_switch == ((2, 64),) and run.batch_size == 16
    table = lr_table(run, 10_000)
    first = 2 * (10_000 // 16)  # the first step of epoch 2 (625 steps an epoch at batch 16)
    assert table[0] == table[first - 1] == pytest.approx(0.1) and table[first] == pytest.approx(0.4)
    assert study.warmup_runs(sgd, 0.1, [(0, 16)]) == []
