"""The progress bar: labelled clocks, progress inside an epoch, the latest metrics of the runs in training;
and the engine's hooks behind it (`on_progress`, throttled; `on_metrics`, every evaluation)."""

from __future__ import annotations

import io
import re
import statistics

import pytest
from conftest import set_args
from rich.console import Console
from rich.text import Text

from batchlab import cli
from batchlab.cli import display
from batchlab.engine import RunSpec, train_group
from batchlab.engine import train as engine_train
from batchlab.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = "batch-size-sweep"
CLOCKS = r"elapsed \d:\d\d:\d\d · left (~\d:\d\d:\d\d|\?)"


def test_each_time_is_labelled_before_it():
    assert cli.clocks(62, 190) == "elapsed 0:01:02 · left ~0:03:10"
    assert cli.clocks(5.4, None) == "elapsed 0:00:05 · left ?"  # no rate yet


def test_the_metrics_are_the_mean_over_the_runs_with_finite_values():
    values = {"a": {"train_loss": 0.5, "test_acc": 0.9}, "b": {"train_loss": 0.3, "test_acc": 0.95}}
    assert cli.describe_metrics(values) == "mean of 2 runs: train loss 0.4 · test acc 92.5%"
    values["c"] = {"train_loss": None, "test_acc": None}  # diverged
    assert cli.describe_metrics(values) == "mean of 2 of 3 runs: train loss 0.4 · test acc 92.5%"
    assert cli.describe_metrics({"r": {"train_loss": 1.25, "test_loss": 2.5}}) == (
        "mean of 1 runs: train loss 1.25 · test loss 2.5"  # regression: no accuracy
    )


def test_the_live_bar_advances_inside_an_epoch_and_shows_the_metrics(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(display, "console", Console(file=screen, force_terminal=True, width=200))
    bar = cli.TrainingProgress(live=True)
    bar.start(STUDY, runs=4, pending=4, run_epochs=12)
    task = bar.bar.tasks[0]
    bar.progress(2, 0.5)
    assert task.completed == 1.0  # half an epoch of 2 runs, before the epoch ends
    bar.epoch(2, 1)
    bar.progress(2, 0.25)
    assert task.completed == 2.5
    bar.metrics(1, 8, {"a": {"train_loss": 0.5, "test_acc": 0.9}, "b": {"train_loss": 0.3, "test_acc": 0.95}})
    bar.close()
    bar_line, status_line = Text.from_ansi(screen.getvalue()).plain.splitlines()[-2:]
    assert re.fullmatch(rf"{STUDY} \S{{30}} +0/4 runs +2/12 run-epochs *", bar_line), bar_line
    assert re.fullmatch(rf"  {CLOCKS} · mean of 2 runs: train loss 0\.4 · test acc 92\.5%", status_line), status_line


def test_plain_lines_come_at_quarters_reached_inside_an_epoch_with_the_metrics(capsys):
    bar = cli.TrainingProgress(live=False)
    bar.start(STUDY, runs=2, pending=2, run_epochs=8)
    bar.metrics(0, 0, {"a": {"train_loss": 2.0, "test_acc": 0.1}, "b": {"train_loss": 2.5, "test_acc": 0.2}})
    bar.progress(2, 0.5)  # 1/8
    bar.progress(2, 1.0)  # 2/8: a quarter, before the epoch's end is heard
    bar.epoch(2, 1)
    for _ in range(3):
        bar.epoch(2, 1)
    bar.saved(2)
    bar.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"{STUDY}: training 2 runs (8 run-epochs)"
    metrics = "; mean of 2 runs: train loss 2.25 · test acc 15.0%"
    assert re.fullmatch(rf"  25% \(2/8 run-epochs, 0/2 runs saved\), {CLOCKS}{metrics}", lines[1]), lines[1]
    assert [ln.split("%")[0].strip() for ln in lines[1:]] == ["25", "50", "75", "100"]
    assert lines[-1].startswith("  100% (8/8 run-epochs, 2/2 runs saved) in ") and lines[-1].endswith(metrics)


@pytest.fixture
def specs():
    base = dict(train_subset=256, test_subset=64, widths=(16,), epochs=2, batch_size=32)
    return [RunSpec(**base, lr=0.05, seed=s) for s in range(2)]


def test_on_progress_reports_each_step_of_an_epoch_when_unthrottled(specs, monkeypatch):
    monkeypatch.setattr(engine_train, "PROGRESS_EVERY_S", 0.0)
    heard = []
    train_group(specs, device="cpu", on_progress=lambda runs, fraction: heard.append((runs, fraction)))
    assert heard == [(2, (k + 1) / 8) for k in range(8)] * 2  # 8 steps an epoch, 2 epochs


def test_on_progress_is_throttled(specs, monkeypatch):
    monkeypatch.setattr(engine_train, "PROGRESS_EVERY_S", 3600.0)
    heard = []
    train_group(specs, device="cpu", on_progress=lambda runs, fraction: heard.append(fraction))
    assert heard == []  # no call before PROGRESS_EVERY_S has passed


def test_on_metrics_hears_every_evaluation_with_the_numbers_of_the_results(specs):
    heard = []
    specs = [s.model_copy(update={"eval_every": 3}) for s in specs]
    results = train_group(specs, device="cpu", on_metrics=lambda *a: heard.append(a))
    assert [step for _, step, _ in heard] == [0, 3, 6, 9, 12, 15, 16]
    for r in results:
        assert [{"epoch": e, "step": s, **values[r.key]} for e, s, values in heard] == r.metrics


def test_the_cli_log_ends_with_the_stored_mean_metrics(tmp_path, capsys):
    out = tmp_path / "res"
    sets = ["epochs=2", "train_subset=512", "test_subset=128", "widths=16", "seeds=2", "batch_sizes=64,256"]
    args = ["run", STUDY, *set_args(sets), "--device", "cpu", "--out", str(out)]
    assert cli.run_cli(args) == 0
    last = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("  100%")][-1]
    with Store(out) as store:
        runs = store.runs(store.finished_at()).values()
        # the last group trained (batch 256: the groups go in the order of their plan)
        final = [r.metrics[-1] for r in runs if r.config["batch_size"] == 256]
    loss, acc = statistics.fmean(m["train_loss"] for m in final), statistics.fmean(m["test_acc"] for m in final)
    assert last.endswith(f"; mean of 2 runs: train loss {loss:.3g} · test acc {100 * acc:.1f}%"), last
