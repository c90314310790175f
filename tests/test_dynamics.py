"""Spec 02's studies end to end on the CPU in their `quick` profile, plus their plans and profiles.

The studies share one results directory (module-scoped), in the order a reader would run them, so
that the runs they share are trained once: the later studies must report them as reused.
"""

from __future__ import annotations

import csv
import math

import pytest
import scipy.stats

from batchlab.driver import run_study, write_report
from batchlab.store import Store
from batchlab.studies import REGISTRY
from batchlab.studies.common import StudyConfig
from batchlab.studies.dynamics import QUICK_EPOCHS, QUICK_SETUP, SPEC_EPOCHS

NEW = ["lr-compensation", "schedule-switch", "distance-grid", "adam-vs-sgd"]
FAMILY = ["batch-size-sweep", *NEW]
CLAIMS = {
    "batch-size-sweep": ["D1"],
    "lr-compensation": ["D2"],
    "schedule-switch": ["D3"],
    "distance-grid": ["D4", "D5"],
    "adam-vs-sgd": ["D6", "D7", "D8"],
}
FIGURES = {
    "lr-compensation": ["accuracy_vs_epoch"],
    "schedule-switch": ["last_epochs"],
    "distance-grid": ["distance_grid", "distance_vs_epoch_and_step"],
    "adam-vs-sgd": ["distance_from_init", "per_layer_cosine", "accuracy_vs_epoch"],
}
# End to end the family runs a smaller miniature of its quick profile (same structure, 2 seeds, fewer
# examples, epochs and units) so that the suite stays fast; the plans of the real quick profile are
# checked separately below.
TEST_SETUP = {"train_subset": 2048, "test_subset": 500, "widths": (64, 64), "seeds": 2}
E = 5
N_TRAIN = TEST_SETUP["train_subset"]


def steps_per_epoch(batch: int) -> int:
    return math.ceil(N_TRAIN / batch)


# ------------------------------------------------------------------------------ plans and profiles


def keys(specs):
    return {s.key for s in specs}


def test_registered():
    for name in FAMILY:
        assert name in REGISTRY
        assert set(REGISTRY[name].profiles) >= {"quick", "full"}


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_setup_is_the_same_in_every_study_of_a_profile(profile):
    setups = {
        name: {k: getattr(REGISTRY[name].config(profile), k) for k in StudyConfig.SETUP_FIELDS} for name in FAMILY
    }
    first = next(iter(setups.values()))
    assert all(s == first for s in setups.values())
    seeds = {REGISTRY[name].config(profile).seeds for name in FAMILY}
    assert seeds == ({QUICK_SETUP["seeds"]} if profile == "quick" else {3})


def test_full_profiles_are_the_spec_protocol():
    cfgs = {name: REGISTRY[name].config("full") for name in NEW}
    for cfg in cfgs.values():
        assert cfg.widths == (1024, 1024) and cfg.train_subset is None and cfg.test_subset is None
        assert cfg.init == "glorot" and cfg.epochs == SPEC_EPOCHS and cfg.seeds == 3
    grid = cfgs["distance-grid"]
    assert grid.lrs == (0.001, 0.01, 0.03, 0.1) and grid.batch_sizes == (64, 256, 1024)
    assert grid.long_epochs == 480
    assert cfgs["lr-compensation"].raised_lr == 0.1
    assert cfgs["adam-vs-sgd"].fit_start == 5
    # schedule-switch (a)-(e) with the protocol's epoch counts
    schedules = REGISTRY["schedule-switch"].schedules(cfgs["schedule-switch"])
    assert [s.epochs for s in schedules] == [30, 60, 31, 60, 60]
    c, d, e = (s.specs[0] for s in schedules[2:])
    assert c.batch_size == 1024 and c.batch_switch == ((1, 64),)
    assert d.batch_switch == ((30, 64),)
    assert e.lr_schedule.kind == "step" and e.lr_schedule.milestones == (30.0,) and e.lr_schedule.gamma == 10.0
    assert e.batch_size == 1024 and e.batch_switch == ()


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_shared_configurations_are_the_same_runs(profile):
    """Batch 64 at lr 0.01 is one set of runs for every study of the family (same keys)."""
    cfg = {name: REGISTRY[name].config(profile) for name in FAMILY}
    b64 = keys(REGISTRY["batch-size-sweep"].groups(cfg["batch-size-sweep"])["batch 64"])
    assert b64 == keys(REGISTRY["lr-compensation"].groups(cfg["lr-compensation"])["batch 64, lr 0.01"])
    assert b64 == keys(REGISTRY["schedule-switch"].schedules(cfg["schedule-switch"])[0].specs)
    assert b64 == keys(REGISTRY["adam-vs-sgd"].groups(cfg["adam-vs-sgd"])["SGD"])
    assert b64 <= keys(REGISTRY["distance-grid"].plan(cfg["distance-grid"]))
    b1024_raised = keys(REGISTRY["lr-compensation"].groups(cfg["lr-compensation"])["batch 1024, lr 0.1"])
    assert b1024_raised <= keys(REGISTRY["distance-grid"].plan(cfg["distance-grid"]))


def test_quick_epochs_are_scaled_consistently():
    e = QUICK_EPOCHS
    sched = REGISTRY["schedule-switch"]
    assert [s.epochs for s in sched.schedules(sched.config("quick"))] == [e, 2 * e, 1 + e, 2 * e, 2 * e]
    grid = REGISTRY["distance-grid"].config("quick")
    assert grid.long_epochs == 16 * e
    adam = REGISTRY["adam-vs-sgd"].config("quick")
    assert adam.fit_start == round(5 * e / SPEC_EPOCHS)  # the fit window starts at the same fraction of training


def test_quick_keeps_the_step_ratios_of_the_protocol():
    """The quick subset is a whole number of large batches: batch 1024 takes exactly 1/16 of batch 64's steps per
    epoch (full: 59 vs 938, ratio 15.9), and the long run evaluated every 16 epochs is measured every 64 steps,
    as often per step as batch 64 is per epoch."""
    n = QUICK_SETUP["train_subset"]
    assert n % 1024 == 0 and (n // 64) == 16 * (n // 1024)
    grid = REGISTRY["distance-grid"].config("quick")
    (long_run, *_) = grid.long_run()
    assert long_run.eval_every == grid.long_eval_epochs * (n // 1024) == n // 64
    assert REGISTRY["distance-grid"].config("full").long_run()[0].eval_every == 0  # every epoch, as recorded


# ------------------------------------------------------------------------------ end to end, quick


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dynamics")
    with pytest.MonkeyPatch.context() as mp:
        for name in FAMILY:
            study = REGISTRY[name]
            quick = study.profiles["quick"] | TEST_SETUP | {"epochs": E}
            if name == "adam-vs-sgd":
                quick["fit_start"] = 1
            mp.setattr(study, "profiles", study.profiles | {"quick": quick})
        done = {name: run_study(name, profile="quick", device="cpu", out=out) for name in [*NEW, "batch-size-sweep"]}
        yield out, done


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("name", FAMILY)
def test_report_figures_tables_claims(runs, name):
    out, done = runs
    run = done[name]
    html = run.report.read_text(encoding="utf-8")
    assert run.report == out / name / "report.html"
    for claim_id in CLAIMS[name]:
        assert claim_id in html
    assert [c.id for c in run.output.claims] == CLAIMS[name]
    for claim in run.output.claims:
        # every run a claim needs is there (2 seeds): an undecided verdict comes from the statistics, and says so
        assert claim.evidence and claim.why
        if claim.verdict == "inconclusive":
            assert any(w in claim.why for w in ("CI", "p =", "p-value")), claim.why
    for fig in FIGURES.get(name, ["accuracy_vs_epoch"]):
        for ext in ("png", "svg"):
            assert (out / name / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    for table in run.output.tables:
        rows = read_csv(out / name / "tables" / f"{table.name}.csv")
        assert len(rows) == len(table.rows) > 0
        for row, stored in zip(rows, table.rows):
            assert int(row["seeds"]) == 2 and int(row["diverged"]) == 0
            for split in ("train", "test"):  # the CSV holds the table's fractions at full precision
                assert float(row[f"{split}_acc mean"]) == stored[f"{split}_acc mean"] > 0.1  # above chance
            assert float(row["dist_init_w mean"]) > 0


def test_shared_runs_are_trained_once(runs):
    _, done = runs
    assert (done["lr-compensation"].trained, done["lr-compensation"].reused) == (6, 0)
    assert done["schedule-switch"].reused == 2  # (a) is batch 64 for E epochs
    assert done["schedule-switch"].trained == 8
    assert done["distance-grid"].reused == 6  # batch 64 and 1024 at lr 0.01, batch 1024 at lr 0.1
    assert done["adam-vs-sgd"].reused == 2 and done["adam-vs-sgd"].trained == 2
    assert done["batch-size-sweep"].trained == 0  # all three batch sizes were trained by the others


def test_schedules_take_the_right_steps(runs):
    _, done = runs
    rows = {r["configuration"][:3]: r for r in done["schedule-switch"].output.tables[0].rows}
    small, big = steps_per_epoch(64), steps_per_epoch(1024)
    assert rows["(a)"]["steps"] == E * small
    assert rows["(b)"]["steps"] == 2 * E * big
    assert rows["(c)"]["steps"] == big + E * small
    assert rows["(d)"]["steps"] == E * big + E * small
    assert rows["(e)"]["steps"] == 2 * E * big
    assert [rows[k]["epochs"] for k in ("(a)", "(b)", "(c)", "(d)", "(e)")] == [E, 2 * E, E + 1, 2 * E, 2 * E]


def test_long_run_has_sixteen_times_the_epochs(runs):
    _, done = runs
    grid = done["distance-grid"].output
    long_rows = {r["configuration"]: r for r in next(t for t in grid.tables if t.name == "long_run").rows}
    ref, short, long = long_rows.values()
    assert long["epochs"] == 16 * ref["epochs"] == 16 * E
    # evaluated every 16 epochs (and at the start): every 64 steps, as often as batch 64 (once per epoch)
    out, _ = runs
    grid_cfg = REGISTRY["distance-grid"].config("quick")
    long_key, small_key = grid_cfg.long_run()[0].key, grid_cfg.sgd(64)[0].key
    with Store(out) as store:
        records = store.runs([long_key, small_key])
    long_evals, small_evals = ([m["step"] for m in records[k].metrics] for k in (long_key, small_key))
    assert long_evals == [16 * i * steps_per_epoch(1024) for i in range(E + 1)] == small_evals
    assert abs(long["steps"] - ref["steps"]) / ref["steps"] < 0.05  # as many steps as batch 64
    assert long["dist_init_w mean"] > short["dist_init_w mean"]
    d5 = next(c for c in grid.claims if c.id == "D5")
    assert d5.evidence["steps long run"] == long["steps"]
    assert d5.evidence["W long run"] == pytest.approx(long["dist_init_w mean"])


def test_grid_table_and_d4(runs):
    _, done = runs
    grid = done["distance-grid"].output
    cells = next(t for t in grid.tables if t.name == "grid").rows
    assert {(r["batch size"], r["lr"]) for r in cells} == {(b, lr) for b in (64, 256, 1024) for lr in (0.01, 0.1)}
    d4 = next(c for c in grid.claims if c.id == "D4")
    assert d4.evidence["cells"] == 6
    # the rho of the claim is the rank correlation of the table's cell means (a brute-force recomputation)
    rho = scipy.stats.spearmanr([r["dist_init_w mean"] for r in cells], [r["test_acc mean"] for r in cells])[0]
    assert d4.evidence["Spearman rho(W, test accuracy)"] == pytest.approx(rho, abs=1e-12)


def test_adam_vs_sgd_numbers(runs):
    _, done = runs
    out = done["adam-vs-sgd"].output
    rows = {r["configuration"]: r for r in out.tables[0].rows}
    for layer in ("net.0", "net.2", "net.4"):  # Adam turns every layer farther from its init than SGD
        assert rows["Adam"][f"cos_init:{layer} mean"] < rows["SGD"][f"cos_init:{layer} mean"]
    assert rows["Adam"]["dist_init_w mean"] > rows["SGD"]["dist_init_w mean"]
    d8 = next(c for c in out.claims if c.id == "D8")
    assert d8.evidence["SGD cos net.0 (mean)"] == pytest.approx(rows["SGD"]["cos_init:net.0 mean"])
    assert d8.evidence["seeds"] == "2/2"


def test_report_recomputes_the_same_claims_from_the_store(runs):
    out, done = runs
    for name in NEW:
        _, output = write_report(name, out, profile="quick")
        assert [(c.id, c.verdict, c.evidence) for c in output.claims] == [
            (c.id, c.verdict, c.evidence) for c in done[name].output.claims
        ]
