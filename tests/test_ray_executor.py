"""`--executor ray`: a study's work units as Ray tasks on a local Ray instance (2 CPUs) store exactly what
the local executor stores; a worker killed mid-study loses only its unit (Ray runs it again); a unit that
still fails is reported, everything else is stored, and the same command then computes only what is missing.

Ray is the optional extra `batchlab[ray]`: these tests skip without it, except under CI (set by .ci/run,
which installs it), where a missing Ray fails them. The option checks at the end need no Ray.
"""

from __future__ import annotations

import collections
import functools
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import set_args, store_dump

from batchlab import cli, driver
from batchlab.driver import Monitor, run_study
from batchlab.driver import run as driving
from batchlab.executors import local
from batchlab.executors.local import execute
from batchlab.store import Store

try:
    import ray
except ImportError:  # the optional extra is not installed
    ray = None

pytestmark = pytest.mark.usefixtures("one_thread")  # the local executor's runs: one thread, like each worker's

# three groups of runs (one Ray task each)
SWEEP = (
    "batch-size-sweep",
    {"epochs": 2, "train_subset": 1024, "test_subset": 200, "widths": 16, "seeds": 2, "batch_sizes": [64, 256, 1024]},
)
# two tasks that start from checkpoints (epochs 1 and 2) of one run: they are shipped after it, with its arrays
NOISE = (
    "noise-scale",
    {
        "train_subset": 1024,
        "test_subset": 200,
        "widths": 16,
        "early_epoch": 1,
        "late_epoch": 2,
        "examples": 128,
        "small_batch": 8,
        "big_batch": 64,
        "draws": 8,
        "bootstrap": 10,
    },
)


def cli_args(study: str, sets: dict) -> list[str]:
    return ["run", study, *set_args(sets), "--device", "cpu"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module, limited to 2 CPUs; RayExecutor joins it (and leaves it running)."""
    if ray is None:
        if os.environ.get("CI"):  # .ci/run installs batchlab[ray]: there a missing Ray is a failure
            pytest.fail("CI needs Ray for --executor ray; .ci/run installs it (pip install -e '.[ray]')")
        pytest.skip("needs Ray: pip install 'batchlab[ray]'")
    environ, sigterm = dict(os.environ), signal.getsignal(signal.SIGTERM)
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    # the workers call `die_once` below: ship it by value (this test module is not importable on a worker)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()
    os.environ.clear()  # ray.init sets a few variables (PYTHONBREAKPOINT...) and a SIGTERM handler: undo them
    os.environ.update(environ)
    signal.signal(signal.SIGTERM, sigterm)


@pytest.fixture(scope="module")
def local_results(tmp_path_factory):
    """Each study computed by the local executor, in this process."""
    out = {}
    for study, sets in (SWEEP, NOISE):
        path = tmp_path_factory.mktemp(f"local-{study}")
        run_study(study, overrides=sets, device="cpu", out=path)
        out[study] = store_dump(path)
    return out


@pytest.fixture
def no_local_compute(monkeypatch):
    """Training or computing a task in the driver process fails the test: with Ray, only workers compute."""

    def refuse(*args, **kwargs):
        raise AssertionError("a unit was computed in the driver, not on a Ray worker")

    monkeypatch.setattr(local, "train_group", refuse)
    monkeypatch.setattr(local, "run_task", refuse)


@pytest.fixture
def saves(monkeypatch):
    """How often the driver wrote each key to the store."""
    count = collections.Counter()
    for name in ("save_result", "save_task"):
        real = getattr(driving, name)

        def counted(store, result, *args, real=real, **kwargs):
            count[result.key] += 1
            return real(store, result, *args, **kwargs)

        monkeypatch.setattr(driving, name, counted)
    return count


class Recorder(Monitor):
    def __init__(self):
        self.run_epochs = self.saved_runs = self.tasks_done = 0
        self.planned = None

    def start(self, study, runs, pending, run_epochs):
        self.planned = run_epochs

    def epoch(self, runs, epochs):
        self.run_epochs += runs * epochs

    def saved(self, runs):
        self.saved_runs += runs

    def task_done(self):
        self.tasks_done += 1


def die_once(marker: Path, victim: str, unit, device, data_dir):
    """On a worker: compute the unit; the first time the unit holding `victim` is done, kill this worker
    process before its result goes back (SIGKILL: no cleanup, as when a node is lost). Every call is logged."""
    with open(marker.with_suffix(".log"), "a") as log:
        log.write(" ".join(unit.keys) + "\n")
    result = execute(unit, device, data_dir)
    if victim in unit.keys and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def attempts(marker: Path) -> collections.Counter:
    return collections.Counter(marker.with_suffix(".log").read_text().split())


# --- the same results as the local executor -----------------------------------------------------------------
def test_cli_run_with_ray_stores_what_the_local_executor_stores(
    local_ray, local_results, tmp_path, capsys, no_local_compute
):
    study, sets = SWEEP
    assert cli.run_cli([*cli_args(study, sets), "--out", str(tmp_path), "--executor", "ray"]) == 0
    out, err = capsys.readouterr()
    assert "trained 6 runs" in out and "100% (12/12 run-epochs, 6/6 runs saved)" in err
    assert store_dump(tmp_path) == local_results[study]  # same keys, same metrics, bit for bit
    assert local_ray.is_initialized()  # the executor joined the running instance and left it running


# --- a worker that dies --------------------------------------------------------------------------------------
def test_a_killed_worker_loses_only_its_unit_which_ray_runs_again(
    local_ray, local_results, tmp_path, saves, no_local_compute
):
    from batchlab.executors.ray import RayExecutor

    study, sets = SWEEP
    victim = driver.prepare(study, overrides=sets, device="cpu", out=tmp_path).specs[-1].key  # in the last group
    marker = tmp_path / "killed"
    fn = functools.partial(die_once, marker, victim)
    result = run_study(study, overrides=sets, device="cpu", out=tmp_path / "res", executor=RayExecutor(fn=fn))
    assert marker.exists()  # a worker process was killed after training the victim's unit...
    # ...and only that unit (the victim and the run trained beside it) was run twice
    assert attempts(marker)[victim] == 2 and sorted(attempts(marker).values()) == [1, 1, 1, 1, 2, 2]
    assert result.trained == 6
    assert dict(saves) == {key: 1 for key in local_results[study]}  # every unit stored exactly once
    assert store_dump(tmp_path / "res") == local_results[study]


def test_a_run_that_keeps_failing_holds_back_its_tasks_and_the_rerun_ships_them_with_its_checkpoints(
    local_ray, local_results, tmp_path, saves, no_local_compute
):
    from batchlab.executors import UnitsFailed
    from batchlab.executors.ray import RayExecutor

    study, sets = NOISE
    out = tmp_path / "res"
    specs = driver.prepare(study, overrides=sets, device="cpu", out=out).specs
    (run_key,) = {s.start.run.key for s in specs}  # every task starts from this run's checkpoints
    fn = functools.partial(die_once, tmp_path / "killed", run_key)
    with pytest.raises(UnitsFailed, match=r"1 of 3 work units could not be computed .* 2 tasks .* not shipped"):
        run_study(study, overrides=sets, device="cpu", out=out, executor=RayExecutor(max_retries=0, fn=fn))
    assert store_dump(out) == {}  # the run was lost, and the tasks that need it were not shipped
    with Store(out) as store:
        assert store.study(study) is None  # nor was the study recorded as done
    monitor = Recorder()
    result = run_study(study, overrides=sets, device="cpu", out=out, monitor=monitor, executor=RayExecutor())
    assert (result.trained, result.tasks) == (3, 2)
    assert store_dump(out) == local_results[study]  # the tasks got the checkpoints the local executor's got
    assert set(saves.values()) == {1} and len(saves) == 3
    # progress per finished unit: every planned run-epoch, run and task counted once
    assert (monitor.run_epochs, monitor.saved_runs, monitor.tasks_done) == (monitor.planned, 1, 2)


def test_cli_reports_failed_units_in_one_line_with_exit_1_and_a_rerun_trains_only_them(
    local_ray, local_results, tmp_path, capsys, monkeypatch
):
    from batchlab.executors import ray as ray_executor

    study, sets = SWEEP
    victim = driver.prepare(study, overrides=sets, device="cpu", out=tmp_path).specs[0].key
    real = ray_executor.RayExecutor

    def failing(*args, **kwargs):  # what the CLI makes, with a unit that fails once and no retries
        return real(*args, **kwargs, max_retries=0, fn=functools.partial(die_once, tmp_path / "killed", victim))

    monkeypatch.setattr(ray_executor, "RayExecutor", failing)
    args = [*cli_args(study, sets), "--out", str(tmp_path / "res"), "--executor", "ray"]
    code = cli.run_cli(args)
    out, err = capsys.readouterr()
    assert code == 1, err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "1 of 3 work units could not be computed" in line and "run the same command again" in line
    assert len(store_dump(tmp_path / "res")) == 4  # the two other groups
    monkeypatch.setattr(ray_executor, "RayExecutor", real)
    assert cli.run_cli(args) == 0
    assert "trained 2 runs, reused 4 from the store" in capsys.readouterr().out
    assert store_dump(tmp_path / "res") == local_results[study]


# --- options (no Ray needed) ---------------------------------------------------------------------------------
def one_line_error(capsys, args, code=2) -> str:
    assert cli.run_cli(args) == code
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_without_ray_the_option_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    err = one_line_error(capsys, [*cli_args(*SWEEP), "--out", str(tmp_path / "res"), "--executor", "ray"])
    assert "pip install 'batchlab[ray]'" in err
    err = one_line_error(capsys, ["reproduce", "--out", str(tmp_path / "res"), "--executor", "ray"])
    assert "pip install 'batchlab[ray]'" in err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--executor", "dask"], "--executor dask: choose local or ray"),
        (["--ray-address", "auto"], "--ray-address needs --executor ray"),
        (["--gpus-per-unit", "1"], "--gpus-per-unit needs --executor ray"),
        (["--executor", "ray", "--gpus-per-unit", "-1"], "--gpus-per-unit"),
    ],
)
def test_bad_executor_options(tmp_path, capsys, extra, fragment):
    err = one_line_error(capsys, [*cli_args(*SWEEP), "--out", str(tmp_path / "res"), *extra])
    assert fragment in err
    assert not (tmp_path / "res").exists()


def test_ray_option_conflicts(local_ray, tmp_path, capsys):
    base = [*cli_args(*SWEEP), "--out", str(tmp_path / "res"), "--executor", "ray"]
    err = one_line_error(capsys, [*base, "--gpus-per-unit", "1"])
    assert "--device cpu with --gpus-per-unit 1" in err
    no_device = [a for a in base if a not in ("--device", "cpu")]
    err = one_line_error(capsys, [*no_device, "--gpus-per-unit", "1"])  # the local instance has no GPU
    assert "--gpus-per-unit 1: no node of a local Ray instance has that many GPUs" in err
    err = one_line_error(capsys, [*base, "--cpus-per-unit", "3"])
    assert "--cpus-per-unit 3: no node" in err
    assert not (tmp_path / "res").exists()
