"""The driver: `--set` parsing, config validation, resuming from the store, interruption, reports."""

import os
import sys

import pytest
from conftest import TINY_SWEEP

from batchlab import driver
from batchlab.driver import check_writable, make_config, parse_sets, parse_value, run_study, write_report
from batchlab.errors import UsageError
from batchlab.executors import local
from batchlab.store import Store
from batchlab.studies import get_study

STUDY = "batch-size-sweep"
TINY = dict(TINY_SWEEP)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- parsing and validation (no training) ---------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, value",
    [
        ("0.1", 0.1),
        ("3", 3),
        ("1e-3", 1e-3),
        ("true", True),
        ("null", None),
        ("None", None),
        ("64,256", [64, 256]),
        ("64, 256 ,1024", [64, 256, 1024]),
        ("[64,256]", [64, 256]),
        ("sgd", "sgd"),
        ("sgd,adam", ["sgd", "adam"]),
        ("abc", "abc"),
        ("", ""),
    ],
)
def test_parse_value(raw, value):
    assert parse_value(raw) == value


def test_parse_sets():
    assert parse_sets(["lr=0.1", " epochs = 3 ", "widths=64,64", "dataset=a=b"]) == {
        "lr": 0.1,
        "epochs": 3,
        "widths": [64, 64],
        "dataset": "a=b",
    }
    for bad in ["lr", "=3"]:
        with pytest.raises(UsageError, match="expected key=value"):
            parse_sets([bad])


@pytest.mark.parametrize(
    "sets, key, value",
    [
        (["widths=32"], "widths", (32,)),
        (["widths=64,64"], "widths", (64, 64)),
        (["widths=[16, 8]"], "widths", (16, 8)),
        (["batch_sizes=64,256"], "batch_sizes", (64, 256)),
        (["train_subset=null"], "train_subset", None),
        (["lr=.5"], "lr", 0.5),
    ],
)
def test_make_config_parses_values(sets, key, value):
    cfg, specs = make_config(get_study(STUDY), "quick", parse_sets(sets))
    assert getattr(cfg, key) == value
    assert specs


@pytest.mark.parametrize(
    "sets, match",
    [
        (
            ["batch_size=0"],
            r"unknown key 'batch_size' for study batch-size-sweep \(did you mean 'batch_sizes'\?\); "
            r"valid keys: .*batch_sizes",
        ),
        (["nope=1"], r"unknown key 'nope' .*valid keys: "),
        (["batch_sizes=0"], r"invalid value for batch_sizes\[0\]: .*\(got 0\)"),
        (["batch_sizes=64,0"], r"invalid value for batch_sizes\[1\]: .*greater than or equal to 1 \(got 0\)"),
        (["lr=abc"], r"invalid value for lr: .*\(got 'abc'\)"),
        (["lr=-1"], r"invalid value for lr: .*greater than 0 \(got -1\)"),
        (["lr=NaN"], r"invalid value for lr"),
        (["lr=0.1,0.2"], r"invalid value for lr"),
        (["epochs=0"], r"invalid value for epochs"),
        (["widths=0"], r"widths"),
    ],
)
def test_make_config_rejects(sets, match):
    with pytest.raises(UsageError, match=match) as e:
        make_config(get_study(STUDY), "quick", parse_sets(sets))
    assert "\n" not in str(e.value)


def test_unknown_profile_and_study():
    with pytest.raises(UsageError, match="unknown profile 'huge' for batch-size-sweep; choose one of quick, full"):
        make_config(get_study(STUDY), "huge", {})
    with pytest.raises(UsageError, match="unknown study 'nope'; known studies: .*batch-size-sweep"):
        run_study("nope", out="unused")


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "deeper")  # creatable
    assert not (tmp_path / "new").exists()  # and checking created nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is not a directory"):
        check_writable(tmp_path / "file")
    with pytest.raises(UsageError, match="cannot be created: .* is not a directory"):
        check_writable(tmp_path / "file" / "res")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root may write into a read-only dir")
def test_check_writable_read_only(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="not writable"):
            check_writable(ro / "res")
    finally:
        ro.chmod(0o700)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_store_that_cannot_be_created_is_a_usage_error():
    """Even where access() says yes (root), a failing mkdir is one clean line, not a traceback."""
    with pytest.raises(UsageError, match="--out|cannot open the store"):
        run_study(STUDY, overrides=TINY, device="cpu", out="/proc/self/batchlab-res")


def test_device_errors(monkeypatch, tmp_path):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(UsageError, match="--device cuda: no CUDA device"):
        run_study(STUDY, overrides=TINY, device="cuda", out=tmp_path / "res")
    with pytest.raises(UsageError, match="--device gpu: not a device"):
        run_study(STUDY, overrides=TINY, device="gpu", out=tmp_path / "res")
    assert not (tmp_path / "res").exists()


def test_a_subset_larger_than_the_data_stops_before_writing(tmp_path):
    with pytest.raises(UsageError, match="train_subset 1000000 exceeds the 60000 examples"):
        run_study(STUDY, overrides=TINY | {"train_subset": 10**6}, device="cpu", out=tmp_path / "res")
    assert not (tmp_path / "res").exists()


# --- training, resuming, reports -----------------------------------------------------------------------
class Counting(driver.Monitor):
    def __init__(self):
        self.started, self.run_epochs, self.saved_runs, self.finished = None, 0, 0, False

    def start(self, study, runs, pending, run_epochs):
        self.started = (study, runs, pending, run_epochs)

    def epoch(self, runs, epochs):
        self.run_epochs += runs * epochs

    def saved(self, runs):
        self.saved_runs += runs

    def finish(self):
        self.finished = True


def test_partial_plan_trains_only_missing_runs(tmp_path):
    out = tmp_path / "res"
    first = run_study(STUDY, overrides=TINY | {"batch_sizes": [64, 256]}, device="cpu", out=out)
    assert (first.trained, first.reused) == (4, 0)  # 2 batch sizes x 2 seeds
    with Store(out) as store:
        before = store.finished_at()
    monitor = Counting()
    second = run_study(STUDY, overrides=TINY | {"batch_sizes": [64, 256, 1024]}, device="cpu", out=out, monitor=monitor)
    assert (second.trained, second.reused) == (2, 4)
    assert monitor.started == (STUDY, 6, 2, 2 * TINY["epochs"])
    assert monitor.run_epochs == 2 * TINY["epochs"] and monitor.saved_runs == 2 and monitor.finished
    with Store(out) as store:
        after = store.finished_at()
        record = store.study(STUDY)
    assert len(after) == 6
    assert {k: after[k] for k in before} == before  # the old rows were not rewritten
    assert record["config"]["batch_sizes"] == [64, 256, 1024] and len(record["run_keys"]) == 6
    assert second.report.is_file() and [c.id for c in second.output.claims] == ["D1"]


def test_interrupted_study_resumes(tmp_path, monkeypatch):
    """Ctrl-C after the first group: its runs are in the store, the rerun trains only the rest."""
    out = tmp_path / "res"
    real = local.train_group
    calls = []

    def interrupted(group, **kw):
        calls.append(len(group))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(group, **kw)

    monkeypatch.setattr(local, "train_group", interrupted)
    overrides = TINY | {"batch_sizes": [64, 256]}
    with pytest.raises(KeyboardInterrupt):
        run_study(STUDY, overrides=overrides, device="cpu", out=out)
    with Store(out) as store:
        assert store.count_runs() == 2  # the first group (batch 64, 2 seeds) was saved
        assert store.study(STUDY) is None
    assert not list(out.glob("*/report.html"))
    monkeypatch.setattr(local, "train_group", real)
    resumed = run_study(STUDY, overrides=overrides, device="cpu", out=out)
    assert (resumed.trained, resumed.reused) == (2, 2)


def test_rerun_and_report_do_not_train(tmp_path, monkeypatch):
    out = tmp_path / "res"
    first = run_study(STUDY, overrides=TINY | {"batch_sizes": [64, 256]}, device="cpu", out=out)
    with Store(out) as store:
        before = store.finished_at()

    def no_training(*a, **kw):
        raise AssertionError("trained")

    monkeypatch.setattr(local, "train_group", no_training)
    again = run_study(STUDY, overrides=TINY | {"batch_sizes": [64, 256]}, device="cpu", out=out)
    assert (again.trained, again.reused) == (0, 4)
    report = first.report
    assert report.parent.name.startswith(f"{STUDY}@")  # a run with overrides: a variant, its own directory
    report.unlink()
    path, output = write_report(STUDY, out)  # the latest record, whatever its overrides
    assert path == report and report.is_file()
    assert [c.verdict for c in output.claims] == [c.verdict for c in first.output.claims]
    assert (report.parent / "tables" / "final.csv").is_file()
    assert list((report.parent / "figures").glob("*.png"))
    with Store(out) as store:
        assert store.finished_at() == before
    with pytest.raises(UsageError, match="no recorded results with profile 'full'"):
        write_report(STUDY, out, profile="full")
    with pytest.raises(UsageError, match="unknown profile"):
        write_report(STUDY, out, profile="huge")


def test_report_without_results(tmp_path):
    with pytest.raises(UsageError, match="no results in"):
        write_report(STUDY, tmp_path / "res")
    assert not (tmp_path / "res").exists()
    Store(tmp_path / "res").close()  # a store, but not this study
    with pytest.raises(UsageError, match="has no recorded results"):
        write_report(STUDY, tmp_path / "res")
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["batchlab.sqlite"]
