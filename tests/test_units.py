"""Work units beyond training runs: tasks, checkpoints, arrays in the store, the executor boundary."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_run

from batchlab import driver
from batchlab.cli import run_cli
from batchlab.engine import RunSpec, train_group
from batchlab.engine.optim import RULES, SGD, register_rule
from batchlab.engine.spec import Checkpoint, TaskSpec
from batchlab.engine.step import per_example_grads
from batchlab.executors import TaskUnit, TrainUnit, execute, local
from batchlab.models import build_model, init_params
from batchlab.probes import PROBES, register_probe
from batchlab.store import SCHEMA_VERSION, Store
from batchlab.studies import REGISTRY
from batchlab.studies.common import Results, Study, StudyConfig, StudyOutput

pytestmark = pytest.mark.usefixtures("one_thread")

COMMITTED = Path(__file__).parent.parent / "benchmarks" / "results" / "spec02-full-h100-2026-11-23"


# --- specs -----------------------------------------------------------------------------------------------
def test_new_run_options_at_their_defaults_keep_old_keys():
    """micro_batch, probes and eval_every were added with defaults: a run's key is unchanged."""
    assert (
        RunSpec(batch_size=64, lr=0.01, seed=1).key
        == RunSpec(batch_size=64, lr=0.01, seed=1, micro_batch=None, probes=("metrics", "geometry"), eval_every=0).key
    )
    assert RunSpec(micro_batch=32).key != RunSpec().key


def test_task_key_depends_on_kind_args_seed_and_start():
    run = tiny_run()
    base = TaskSpec(kind="gradient-norms", args={"examples": 8}, start=Checkpoint(run=run, epoch=1))
    variants = [
        base.model_copy(update={"seed": 1}),
        base.model_copy(update={"args": {"examples": 9}}),
        base.model_copy(update={"start": Checkpoint(run=run, epoch=2)}),
        base.model_copy(update={"start": Checkpoint(run=run.model_copy(update={"seed": 3}), epoch=1)}),
    ]
    assert len({base.key, *(v.key for v in variants)}) == 5
    assert TaskSpec(**json.loads(base.model_dump_json())).key == base.key  # plain data round trip


def test_checkpoint_after_the_last_epoch_is_rejected():
    with pytest.raises(ValueError, match="after the run's last epoch"):
        Checkpoint(run=tiny_run(), epoch=3)


def test_micro_batch_must_divide_the_batch():
    with pytest.raises(ValueError, match="micro_batch 5 must divide"):
        tiny_run(micro_batch=5)


# --- engine primitives ---------------------------------------------------------------------------------------
def test_micro_batches_equal_the_direct_batch_in_float64():
    for opt in (dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(optimizer="adam", lr=1e-3)):
        direct = tiny_run(precision="float64", **opt)
        (a,) = train_group([direct], device="cpu", keep_params=True)
        (b,) = train_group([direct.model_copy(update={"micro_batch": 8})], device="cpu", keep_params=True)
        num = sum((a.params[k] - b.params[k]).pow(2).sum() for k in a.params).sqrt()
        den = sum(
            (a.params[k] - init_params(build_model("mlp", widths=(16,)), "glorot", 0)[k].double()).pow(2).sum()
            for k in a.params
        ).sqrt()
        assert float(num / den) < 1e-12, opt


def test_per_example_grads_equal_a_loop_of_single_backward_passes():
    base = build_model("mlp", widths=(8,)).double()
    params = {k: v.double() for k, v in init_params(base, "glorot", 0).items()}
    x, y = torch.randn(5, 784, dtype=torch.float64), torch.tensor([0, 3, 9, 3, 1])
    grads, losses = per_example_grads(base, params, x, y, chunk_size=2)
    module = build_model("mlp", widths=(8,)).double()
    module.load_state_dict(params)
    for i in range(5):
        module.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(x[i : i + 1]), y[i : i + 1])
        loss.backward()
        assert float(losses[i]) == pytest.approx(loss.item(), rel=1e-13)
        for name, p in module.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad, rtol=1e-12, atol=1e-14)


def test_given_example_order_is_used():
    """Feeding each run's own data_order reproduces the default; another order changes the result."""
    from batchlab.engine.data import data_order

    spec = tiny_run(precision="float64")
    (default,) = train_group([spec], device="cpu", keep_params=True)
    own = np.stack([data_order(spec.seed, e, 256).numpy() for e in range(2)])
    (fed,) = train_group([spec], device="cpu", keep_params=True, orders=[own])
    (reversed_,) = train_group([spec], device="cpu", keep_params=True, orders=[own[:, ::-1].copy()])
    assert all(torch.equal(default.params[k], fed.params[k]) for k in default.params)
    assert not all(torch.equal(default.params[k], reversed_.params[k]) for k in default.params)
    with pytest.raises(ValueError, match="example indices"):
        train_group([spec], device="cpu", orders=[np.arange(10)])


def test_start_from_given_weights_continues_training():
    """Two epochs straight equal one epoch, then one more epoch started from the epoch-1 checkpoint."""
    spec = tiny_run(precision="float64", lr=0.05)
    (whole,) = train_group([spec], device="cpu", keep_params=True, checkpoints={1})
    ckpt = {k: v[None] for k, v in whole.checkpoints[1].items()}
    one_more = spec.model_copy(update={"epochs": 1, "data_seed": None})
    # the second epoch's order is data_order(seed, 1): feed it, since a fresh run would use epoch 0's
    from batchlab.engine.data import data_order

    (cont,) = train_group(
        [one_more], device="cpu", keep_params=True, start=ckpt, orders=[data_order(spec.seed, 1, 256).numpy()]
    )
    for k in whole.params:
        torch.testing.assert_close(cont.params[k], whole.params[k], rtol=1e-12, atol=1e-14)


def test_eval_every_n_steps_and_no_probes():
    spec = tiny_run(eval_every=3)  # 8 steps per epoch, 16 in all
    (res,) = train_group([spec], device="cpu")
    assert [m["step"] for m in res.metrics] == [0, 3, 6, 9, 12, 15, 16]
    assert res.metrics[1]["epoch"] == pytest.approx(3 / 8)
    (silent,) = train_group([tiny_run(probes=())], device="cpu")
    assert silent.metrics == [] and silent.steps == 16


def test_a_registered_probe_runs_at_the_cadence():
    register_probe(
        "param_count",
        lambda ctx: {"n_params": torch.full((ctx.n_runs,), float(sum(p[0].numel() for p in ctx.params.values())))},
    )
    try:
        (res,) = train_group([tiny_run(probes=("param_count",))], device="cpu")
    finally:
        del PROBES["param_count"]
    assert [m["n_params"] for m in res.metrics] == [784 * 16 + 16 + 16 * 10 + 10] * 3


def test_an_update_rule_sees_parameter_names():
    seen = []

    class Recording(SGD):
        def update(self, name, p, g, state, hp, t, opts):
            seen.append(name)
            super().update(name, p, g, state, hp, t, opts)

    register_rule("sgd", Recording())
    try:
        (a,) = train_group([tiny_run(epochs=1, precision="float64")], device="cpu", keep_params=True)
    finally:
        register_rule("sgd", SGD())
    # the plain path, as with the registered rule (the built-in SGD's own folded step rounds differently)
    (b,) = train_group([tiny_run(epochs=1, precision="float64")], device="cpu", keep_params=True, path="autograd")
    assert seen[:4] == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params) and isinstance(RULES["sgd"], SGD)


# --- executor --------------------------------------------------------------------------------------------
def test_execute_a_train_unit_returns_checkpoints_asked_for_and_the_environment():
    specs = (tiny_run(seed=0), tiny_run(seed=1))
    results = execute(TrainUnit(specs, {specs[0].key: (0, 2)}), "cpu")
    assert set(results[0].checkpoints) == {0, 2} and results[1].checkpoints == {}
    assert results[0].env["device_type"] == "cpu" and results[0].env["torch"] == torch.__version__
    w0 = init_params(build_model("mlp", widths=(16,)), "glorot", 0)["net.0.weight"].numpy()
    np.testing.assert_array_equal(results[0].checkpoints[0]["param:net.0.weight"], w0)


def test_execute_a_task_unit():
    run = tiny_run()
    (trained,) = train_group([run], device="cpu", checkpoints={2})
    task = TaskSpec(kind="gradient-norms", args={"examples": 256}, start=Checkpoint(run=run, epoch=2))
    result = execute(TaskUnit(task, trained.checkpoints[2]), "cpu")
    assert result.status == "finished" and result.arrays["sq_norms"].shape == (256,)
    # all 256 training examples (in a drawn order): against single-example backward passes at the checkpoint,
    # and ||mean g||^2 against one backward pass of the whole set's mean loss
    from batchlab.engine.data import load_for, template_model

    data = load_for(run, torch.device("cpu"))
    module = template_model(run, data)
    module.load_state_dict({k.removeprefix("param:"): torch.as_tensor(v) for k, v in trained.checkpoints[2].items()})

    def sq_norm_of_grad(x, y) -> float:
        module.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        return sum(float(p.grad.double().square().sum()) for p in module.parameters())

    singles = [sq_norm_of_grad(data.x_train[i : i + 1], data.y_train[i : i + 1]) for i in range(256)]
    np.testing.assert_allclose(np.sort(result.arrays["sq_norms"]), np.sort(singles), rtol=1e-5)
    assert result.scalars["mean_sq_norm"] == pytest.approx(np.mean(singles), rel=1e-5)
    assert result.scalars["sq_norm_of_mean"] == pytest.approx(sq_norm_of_grad(data.x_train, data.y_train), rel=1e-5)
    # E||g_i||^2 > ||mean g||^2 (Jensen): the gap is the per-example variance
    assert result.scalars["mean_sq_norm"] > result.scalars["sq_norm_of_mean"]


# --- the driver: runs before tasks, checkpoints as artifacts, nothing twice -------------------------------------
class TinyConfig(StudyConfig):
    epochs: int = 2


class CheckpointStudy(Study):
    """A test study: two runs, and a task at each run's checkpoint after the first epoch."""

    name = "test-checkpoints"
    title = "checkpoint test"
    description = "test"
    Config = TinyConfig
    profiles = {"quick": {"train_subset": 256, "test_subset": 64, "widths": (16,), "seeds": 2}}
    epoch = 1

    def runs(self, cfg):
        return cfg.seeded(batch_size=32, epochs=cfg.epochs)

    def plan(self, cfg):
        return [
            *self.runs(cfg),
            *(
                TaskSpec(kind="gradient-norms", args={"examples": 8}, start=Checkpoint(run=r, epoch=self.epoch))
                for r in self.runs(cfg)
            ),
        ]

    def analyze(self, cfg, results: Results):
        self.seen = [results.array(t, "sq_norms") for t in self.plan(cfg) if isinstance(t, TaskSpec)]
        return StudyOutput()


@pytest.fixture
def checkpoint_study(monkeypatch):
    study = CheckpointStudy()
    monkeypatch.setitem(REGISTRY, study.name, study)
    return study


def test_tasks_run_after_their_checkpoints_and_rerun_does_nothing(tmp_path, checkpoint_study, monkeypatch):
    out = tmp_path / "res"
    first = driver.run_study(checkpoint_study.name, device="cpu", out=out)
    assert first.trained == 4 and len(checkpoint_study.seen) == 2 and checkpoint_study.seen[0].shape == (8,)
    with Store(out) as store:
        keys = [s.key for s in checkpoint_study.plan(checkpoint_study.config())]
        recs = store.runs(keys)
        assert [recs[k].kind for k in keys] == ["train", "train", "task:gradient-norms", "task:gradient-norms"]
        assert store.checkpoint_epochs(keys[0]) == {1}
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        before = store.finished_at()

    def nothing(*a, **kw):
        raise AssertionError("computed again")

    monkeypatch.setattr(local, "train_group", nothing)
    monkeypatch.setattr(local, "run_task", nothing)
    again = driver.run_study(checkpoint_study.name, device="cpu", out=out)
    assert (again.trained, again.reused) == (0, 4)
    with Store(out) as store:
        assert store.finished_at() == before


def test_a_new_checkpoint_of_a_stored_run_retrains_it_and_keeps_its_row(tmp_path, checkpoint_study):
    out = tmp_path / "res"
    driver.run_study(checkpoint_study.name, device="cpu", out=out)
    with Store(out) as store:
        before = store.finished_at()
    checkpoint_study.epoch = 2  # new tasks, at a checkpoint the store does not have
    second = driver.run_study(checkpoint_study.name, device="cpu", out=out)
    assert second.trained == 4  # the two runs again (only for their checkpoints) and the two new tasks
    with Store(out) as store:
        run_key = checkpoint_study.runs(checkpoint_study.config())[0].key
        assert store.checkpoint_epochs(run_key) == {1, 2}
        after = store.finished_at()
    assert {k: after[k] for k in before} == before and len(after) == 6


def test_arrays_are_content_addressed_files_written_once(tmp_path):
    with Store(tmp_path) as store:
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        ref1, ref2 = store.put_array(a), store.put_array(a.copy())
        assert ref1.sha256 == ref2.sha256 and ref1.shape == (2, 3)
        files = list((tmp_path / "artifacts").rglob("*.npy"))
        assert len(files) == 1 and not list((tmp_path / "artifacts").rglob("*.tmp"))
        np.testing.assert_array_equal(store.load_array(ref1), a)


# --- store schema ----------------------------------------------------------------------------------------
def test_a_v1_store_is_migrated_and_reports_the_same_claims(tmp_path):
    """The committed full-protocol store (schema v1) opens, migrates, and gives the recorded verdicts and numbers."""
    shutil.copy(COMMITTED / "batchlab.sqlite", tmp_path / "batchlab.sqlite")
    with Store(tmp_path) as store:
        assert store.schema_version() == SCHEMA_VERSION and store.count_runs() == 57
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    recorded = {c["id"]: c for c in json.loads((COMMITTED / "claims.json").read_text())["claims"]}
    claims = {}
    for name in ("batch-size-sweep", "lr-compensation", "schedule-switch", "distance-grid", "adam-vs-sgd"):
        _, output = driver.write_report(name, tmp_path, profile="full")
        claims |= {c.id: c for c in output.claims}
        assert json.loads((tmp_path / name / "claims.json").read_text())["claims"][0]["id"] == output.claims[0].id
    assert sorted(claims) == sorted(recorded)
    for cid, claim in claims.items():
        assert claim.verdict == recorded[cid]["verdict"], cid
        for k, v in recorded[cid]["evidence"].items():
            if isinstance(v, float):
                assert claim.evidence[k] == pytest.approx(v, rel=1e-12, abs=1e-12), (cid, k)


def test_a_store_from_a_newer_schema_is_refused_in_one_line(tmp_path, capsys):
    with Store(tmp_path) as store:
        store.db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    code = run_cli(["report", "batch-size-sweep", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "newer than this batchlab" in err


def test_cheap_mlp_per_example_norms_equal_the_norms_of_per_example_grads():
    from batchlab.engine.step import per_example_sq_norms

    base = build_model("mlp", widths=(8, 6), activation="tanh").double()
    params = {k: v.double() for k, v in init_params(base, "glorot", 1).items()}
    x, y = torch.randn(7, 784, dtype=torch.float64), torch.tensor([0, 3, 9, 3, 1, 2, 2])
    grads, _ = per_example_grads(base, params, x, y)
    brute = sum(v.flatten(1).pow(2).sum(1) for v in grads.values())
    torch.testing.assert_close(per_example_sq_norms(base, params, x, y, chunk_size=3), brute, rtol=1e-12, atol=0)


def test_rounding_check_reruns_seed_zero_alone_and_reports_it_in_every_claim(tmp_path):
    """The float32 rounding check: seed 0 of each configuration trained again alone; its distance to the grouped
    run, against the seed spread, is in the evidence of every claim, recomputable from the store."""
    tiny = {"epochs": 2, "train_subset": 1024, "test_subset": 200, "widths": (16,), "rounding_check": True}
    run = driver.run_study("adam-vs-sgd", overrides=tiny | {"fit_start": 0}, device="cpu", out=tmp_path)
    assert run.tasks == 2  # seed 0 of SGD and of Adam
    evidence = run.output.claims[0].evidence
    assert evidence["float32 rounding check: configurations"] == 2
    with Store(tmp_path) as store:
        recs = store.runs(k for (k,) in store.db.execute("SELECT key FROM runs"))
    tasks = [r for r in recs.values() if r.kind == "task:rerun-alone"]
    gaps = []
    for t in tasks:
        grouped = recs[RunSpec(**t.config["args"]["run"]).key]
        gaps.append(abs(t.metrics[0]["test_acc"] - grouped.metrics[-1]["test_acc"]))
    assert evidence["float32 rounding check: largest |alone - in group| test_acc (pp)"] == pytest.approx(
        100 * max(gaps)
    )
    ratio = (
        evidence["float32 rounding check: largest |alone - in group| test_acc (pp)"]
        / evidence["float32 rounding check: seed sd of test_acc there (pp)"]
    )
    assert evidence["seed spread mostly rounding noise"] == ("yes" if ratio >= 0.5 else "no")
    assert all(
        c.evidence["seed spread mostly rounding noise"] == evidence["seed spread mostly rounding noise"]
        for c in run.output.claims
    )
