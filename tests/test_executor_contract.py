"""The executor contract: any class with the members of `Executor` runs a study; the driver gives it only the
hooks its `Capabilities` declare; its failures are stored around. And a report reads the keys its study
record stored, naming the ones the current code plans that the record lacks."""

from __future__ import annotations

import json

import pytest

from batchlab import cli
from batchlab.driver import Monitor, parse_sets, run_study, write_report
from batchlab.executors import Capabilities, Executor, LocalExecutor, TrainUnit, UnitFailure, UnitsFailed, execute
from batchlab.executors.ray import RayExecutor
from batchlab.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = "batch-size-sweep"
SETS = ["epochs=2", "train_subset=512", "test_subset=128", "widths=16", "seeds=2", "batch_sizes=64,256"]
OVERRIDES = parse_sets(SETS)


class Shipping:
    """An executor that runs units out of the driver's reach: finished units only, no hooks, no resume. Its
    `map` takes no other hooks, so the driver passing one fails the test. `fail` names a unit to lose."""

    name = "shipping"
    where = "on the shipping workers"
    capabilities = Capabilities()

    def __init__(self, fail: int | None = None):
        self.units, self.fail = [], fail

    def __enter__(self) -> Shipping:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def device_type(self, device) -> str:
        return "cpu"

    def map(self, units, device, data_dir=None, *, on_epoch=None, on_chunk=None):
        for unit in units:
            self.units.append(unit)
            if len(self.units) - 1 == self.fail:
                yield unit, UnitFailure(unit, "RuntimeError: the worker was lost")
                continue
            result = execute(unit, "cpu", data_dir)
            if isinstance(unit, TrainUnit):
                on_epoch(len(unit.specs), unit.specs[0].epochs)
                on_chunk(result)
            yield unit, result


class StopAfterEpochs(Monitor):
    """Ctrl-C once `n` epochs of a chunk have finished (a local executor then keeps the chunk's state)."""

    def __init__(self, n: int):
        self.n = n

    def epoch(self, runs: int, epochs: int) -> None:
        self.n -= epochs
        if self.n <= 0:
            raise KeyboardInterrupt


class Heard(Monitor):
    def __init__(self):
        self.resumed_runs, self.progress_calls = [], 0

    def resumed(self, runs, epoch, epochs):
        self.resumed_runs.append((runs, epoch, epochs))

    def progress(self, runs, fraction):
        self.progress_calls += 1


def stored(out) -> dict:
    """Every stored unit's status, steps and metrics (not its timings)."""
    with Store(out) as store:
        return {k: (r.status, r.steps, json.dumps(r.metrics)) for k, r in store.runs(store.keys()).items()}


def test_both_executors_and_a_new_one_have_the_members_of_the_protocol():
    assert isinstance(LocalExecutor(), Executor) and isinstance(Shipping(), Executor)
    members = ("name", "where", "capabilities", "__enter__", "__exit__", "device_type", "map")
    assert all(hasattr(RayExecutor, m) for m in members)  # made without Ray installed: its class only
    assert LocalExecutor.capabilities == Capabilities(live=True, partial=True, resume=True)
    assert RayExecutor.capabilities == Capabilities(resume=True)


def test_an_executor_without_hooks_or_resume_stores_what_the_local_one_stores(tmp_path):
    reference = tmp_path / "local"
    run_study(STUDY, overrides=OVERRIDES, device="cpu", out=reference)
    out = tmp_path / "res"
    with pytest.raises(KeyboardInterrupt):  # a state kept by the local executor, which this one cannot resume
        run_study(STUDY, overrides=OVERRIDES, device="cpu", out=out, monitor=StopAfterEpochs(1))
    with Store(out) as store:
        assert len(store.partials()) == 1
    heard, shipping = Heard(), Shipping()
    result = run_study(STUDY, overrides=OVERRIDES, device="cpu", out=out, monitor=heard, executor=shipping)
    assert (result.trained, result.reused) == (4, 0)
    assert heard.resumed_runs == [] and heard.progress_calls == 0
    assert [u.resume for u in shipping.units] == [(), ()]  # started again: the same numbers, later
    assert stored(out) == stored(reference)
    with Store(out) as store:
        assert store.partials() == []  # its runs are stored: the kept state is gone


def test_a_lost_unit_is_named_with_where_it_ran_and_the_rest_is_stored(tmp_path):
    out = tmp_path / "res"
    with pytest.raises(UnitsFailed) as failed:
        run_study(STUDY, overrides=OVERRIDES, device="cpu", out=out, executor=Shipping(fail=0))
    assert str(failed.value).startswith(
        "1 of 2 work units could not be computed on the shipping workers (first: "
    ) and str(failed.value).endswith(
        ": RuntimeError: the worker was lost); every other unit is in the store "
        f"in {out}: run the same command again to compute only what is missing"
    )
    with Store(out) as store:
        assert len(store.keys()) == 2 and store.study(STUDY) is None  # the other group; no record yet
    again = run_study(STUDY, overrides=OVERRIDES, device="cpu", out=out, executor=Shipping())
    assert (again.trained, again.reused) == (2, 2)


def test_a_report_reads_the_recorded_keys_and_names_planned_keys_the_record_lacks(tmp_path, capsys):
    out = tmp_path / "res"
    first = run_study(STUDY, overrides=OVERRIDES, device="cpu", out=out)
    claims_before = json.loads((first.report.parent / "claims.json").read_text())
    assert "unrecorded_keys" not in claims_before
    with Store(out) as store:  # as if the code now planned one more unit than the study ran with
        record = store.study_records(STUDY)[0]
        missing = record["run_keys"][-1]
        store.save_study(
            name=STUDY,
            profile=record["profile"],
            config=record["config"],
            run_keys=record["run_keys"][:-1],
            wall_s=record["wall_s"],
            meta=record["meta"],
            variant=record["variant"],
        )
    said = []
    path, output = write_report(STUDY, out, say=said.append)
    note = (
        f"{STUDY}: the current code plans 1 unit that its record lacks (first: {missing}); the report shows the 3 "
        "recorded ones: run the study again to compute the others"
    )
    assert said == [note]
    claims = json.loads((path.parent / "claims.json").read_text())
    assert claims["unrecorded_keys"] == [missing]
    assert missing in path.read_text()  # report.html names it too
    assert claims["claims"][0]["evidence"] != claims_before["claims"][0]["evidence"]  # one run fewer was read
    assert cli.run_cli(["report", STUDY, "--out", str(out), *(a for s in SETS for a in ("--set", s))]) == 0
    assert note in " ".join(capsys.readouterr().err.split())
