"""Ctrl-C keeps finished epochs: an interrupted group chunk leaves its state at its last epoch end in the
store (whole or not at all), and training the same runs again continues from it to the numbers of a
run that was never interrupted, bit for bit."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from conftest import set_args

from batchlab import cli
from batchlab.driver import Monitor, parse_sets, run_study
from batchlab.engine import RunSpec, train_group
from batchlab.engine import train as engine_train
from batchlab.store import DB_NAME, Store

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = "batch-size-sweep"
SETS = ["epochs=3", "train_subset=512", "test_subset=128", "widths=32", "seeds=2", "batch_sizes=64,256"]
OVERRIDES = parse_sets(SETS)


class StopAfterEpochs(Monitor):
    """Raises KeyboardInterrupt (as Ctrl-C does) once `n` epochs of a chunk have finished."""

    def __init__(self, n: int):
        self.n, self.kept_states = n, []

    def epoch(self, runs: int, epochs: int) -> None:
        self.n -= epochs
        if self.n <= 0:
            raise KeyboardInterrupt

    def kept(self, runs: int, epoch: int, epochs: int) -> None:
        self.kept_states.append((runs, epoch, epochs))


def numbers(out) -> dict:
    """Every stored run's status, steps and metrics (not its timings)."""
    with Store(out) as store:
        records = store.runs(store.finished_at())
        return {
            k: (r.status, r.diverged_step, r.steps, json.dumps(r.metrics, sort_keys=True)) for k, r in records.items()
        }


def partial_rows(out) -> list:
    db = sqlite3.connect(out / DB_NAME)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'partial'").fetchone():
            return []
        return db.execute("SELECT keys, epoch FROM partial").fetchall()
    finally:
        db.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_study(STUDY, overrides=OVERRIDES, device="cpu", out=out)
    return numbers(out)


def test_runs_interrupted_after_epoch_1_of_3_resume_to_the_uninterrupted_numbers_bitwise(tmp_path, reference):
    out = tmp_path / "res"
    stop = StopAfterEpochs(1)
    with pytest.raises(KeyboardInterrupt):
        run_study(STUDY, overrides=OVERRIDES, device="cpu", out=out, monitor=stop)
    assert stop.kept_states == [(2, 1, 3)]
    (keys, epoch), *others = partial_rows(out)
    assert epoch == 1 and len(json.loads(keys)) == 2 and others == []
    assert numbers(out) == {}  # no run is finished: the kept epochs are not results

    class Resumed(Monitor):
        heard: list = []

        def resumed(self, runs, epoch, epochs):
            self.heard.append((runs, epoch, epochs))

        def start(self, study, runs, pending, run_epochs):
            self.heard.append(run_epochs)

    rerun = run_study(STUDY, overrides=OVERRIDES, device="cpu", out=out, monitor=Resumed())
    assert Resumed.heard == [4 * 3 - 2 * 1, (2, 1, 3)]  # the kept run-epochs are not counted again
    assert rerun.trained == 4
    assert numbers(out) == reference
    assert partial_rows(out) == [] and list((out / "partial").glob("*")) == []  # deleted once the runs are stored


@pytest.fixture
def mixed_specs():
    """A group whose optimizers keep state (momentum, Adam's moments and step count), evaluated every 3 steps."""
    base = dict(train_subset=256, test_subset=64, widths=(16,), epochs=3, batch_size=32, eval_every=3)
    return [
        RunSpec(**base, optimizer="sgd", momentum=0.9, lr=0.05, seed=0),
        RunSpec(**base, optimizer="adam", lr=0.003, seed=1),
        RunSpec(**base, optimizer="sgd", lr=0.1, seed=2),
    ]


def test_an_interrupt_inside_an_epoch_keeps_the_last_epoch_end_and_resumes_bitwise(mixed_specs, monkeypatch):
    monkeypatch.setattr(engine_train, "PROGRESS_EVERY_S", 0.0)  # a progress call after every step
    reference = train_group(mixed_specs, device="cpu", checkpoints={1, 3})
    kept = []

    def ctrl_c_in_epoch_2(runs, fraction):
        fractions.append(fraction)
        if len(fractions) > 8 + 4:  # 8 steps an epoch: the 5th step of the second epoch
            raise KeyboardInterrupt

    fractions: list[float] = []
    with pytest.raises(KeyboardInterrupt):
        train_group(
            mixed_specs, device="cpu", checkpoints={1, 3}, on_progress=ctrl_c_in_epoch_2, on_partial=kept.append
        )
    (state,) = kept
    assert state.epoch == 1 and state.meta["step"] == 8
    assert [r["step"] for r in state.meta["records"]] == [0, 3, 6]  # not 9 and 12, inside the second epoch
    assert state.has_checkpoints({1, 3}) and not any(k.startswith("checkpoint:3:") for k in state.arrays)
    state = type(state)(state.keys, state.epoch, json.loads(json.dumps(state.meta)), state.arrays)  # as stored
    resumed = train_group(mixed_specs, device="cpu", checkpoints={1, 3}, resume=[state])
    for a, b in zip(reference, resumed):
        assert (a.status, a.steps, json.dumps(a.metrics)) == (b.status, b.steps, json.dumps(b.metrics))
        for e in (1, 3):
            assert all((a.checkpoints[e][n] == b.checkpoints[e][n]).all() for n in a.checkpoints[e])


def test_a_kept_state_is_used_only_when_all_its_runs_are_trained_again(mixed_specs):
    kept = []

    def stop(runs, epochs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_group(mixed_specs[:2], device="cpu", on_epoch=stop, on_partial=kept.append)
    assert [s.epoch for s in kept] == [1]

    def metrics(results):
        return [(r.key, r.steps, json.dumps(r.metrics)) for r in results]

    # run 0 is not among these: the state is ignored, and the runs train from their start
    assert metrics(train_group(mixed_specs[1:], device="cpu", resume=kept)) == metrics(
        train_group(mixed_specs[1:], device="cpu")
    )
    # all of its runs are: they form their own chunk again and continue, the third run trains in another
    both = train_group(mixed_specs, device="cpu", resume=kept)
    assert metrics(both) == metrics(train_group(mixed_specs[:2], device="cpu")) + metrics(
        train_group(mixed_specs[2:], device="cpu")
    )


@pytest.mark.parametrize("where", ["in-transaction", "array-file"])
def test_a_second_interrupt_while_keeping_the_state_leaves_no_partial_behind(tmp_path, reference, monkeypatch, where):
    out = tmp_path / "res"
    save = Store.save_partial

    calls = []

    def interrupted_save(self, *args):
        calls.append(args[:2])
        real = self.db
        if where == "in-transaction":  # Ctrl-C again between the transaction's two statements

            class Connection:
                def __getattr__(self, name):
                    return getattr(real, name)

                def execute(self, sql, *a):
                    if sql.startswith("INSERT OR REPLACE INTO partial"):
                        raise KeyboardInterrupt
                    return real.execute(sql, *a)

            self.db = Connection()
        else:  # Ctrl-C again while the arrays' file is written
            monkeypatch.setattr("batchlab.files.os.replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            return save(self, *args)
        finally:
            self.db = real
            monkeypatch.undo()

    monkeypatch.setattr(Store, "save_partial", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        run_study(STUDY, overrides=OVERRIDES, device="cpu", out=out, monitor=StopAfterEpochs(1))
    assert [epoch for _, epoch in calls] == [1]  # the state was being kept when the second interrupt came
    assert partial_rows(out) == []
    assert sorted(p.name for p in (out / "partial").glob("*")) == []  # neither the file nor a temporary one
    db = sqlite3.connect(out / DB_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    run_study(STUDY, overrides=OVERRIDES, device="cpu", out=out)  # from the start, to the same numbers
    assert numbers(out) == reference


def test_ctrl_c_in_the_cli_says_how_many_epochs_were_kept_and_the_rerun_continues(
    tmp_path, reference, monkeypatch, capsys
):
    out = tmp_path / "res"
    args = ["run", STUDY, *set_args(SETS), "--device", "cpu", "--out", str(out)]
    epoch = cli.TrainingProgress.epoch

    def ctrl_c_after_first_epoch(self, runs, epochs):
        epoch(self, runs, epochs)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.TrainingProgress, "epoch", ctrl_c_after_first_epoch)
    assert cli.run_cli(args) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"error: interrupted; {STUDY}: 0 of 4 runs are in the store in {out}, and 2 more runs keep 1 of their "
        "3 epochs: run the same command again to resume"
    )
    monkeypatch.undo()
    assert cli.run_cli(args) == 0
    assert "  2 runs continue after epoch 1 of 3, kept when they were interrupted" in capsys.readouterr().err
    assert numbers(out) == reference


def test_a_kept_state_whose_file_is_not_its_sha256_is_named_and_its_runs_start_again(
    tmp_path, reference, monkeypatch, capsys
):
    """The kept state's file replaced by a valid .npz with every weight doubled (only the SHA-256 of its row tells
    it apart): the rerun says so in one line and trains its runs from the start, to the uninterrupted numbers."""
    out = tmp_path / "res"
    args = ["run", STUDY, *set_args(SETS), "--device", "cpu", "--out", str(out)]
    epoch = cli.TrainingProgress.epoch

    def ctrl_c_after_first_epoch(self, runs, epochs):
        epoch(self, runs, epochs)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.TrainingProgress, "epoch", ctrl_c_after_first_epoch)
    assert cli.run_cli(args) == 130
    monkeypatch.undo()
    (path,) = (out / "partial").glob("*.npz")
    with np.load(path) as npz:
        arrays = {k: 2 * npz[k] if k.startswith("param") else npz[k] for k in npz.files}
    assert any(k.startswith("param") for k in arrays)
    np.savez(path, **arrays)
    capsys.readouterr()
    assert cli.run_cli(args) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"{path} is damaged or unreadable: its 2 runs start again from epoch 0" in err
    assert not any("continue after epoch" in line for line in err)
    assert numbers(out) == reference
    assert partial_rows(out) == []
