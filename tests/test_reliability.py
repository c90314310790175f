"""Reliability: a study killed at any point resumes to the same numbers; Ctrl-C stops cleanly; two
processes share a results directory; a device out of memory splits the work; diverged runs are
contained, left out of every claim, and shown in the report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import default_sigint, one_line_error, set_args, store_dump

from batchlab import cli
from batchlab.driver import make_config, run_study, study_units
from batchlab.engine import groups as engine_groups
from batchlab.store import DB_NAME, Store
from batchlab.studies import Results, get_study

pytestmark = pytest.mark.usefixtures("one_thread")

HERE = Path(__file__).parent
# two studies: training runs in three groups (batch-size-sweep), and tasks that store arrays (equivalence)
SWEEP = (
    "batch-size-sweep",
    ["epochs=2", "train_subset=1024", "test_subset=200", "widths=16", "seeds=2", "batch_sizes=64,256,1024"],
)
EQUIVALENCE = (
    "equivalence",
    ["batch_size=8", "train_subset=512", "test_subset=64", "models=cnn", "optimizers=sgd,adam"],
)
# a training run whose checkpoints (array files) tasks start from, and tasks that store arrays
COMPETITION = (
    "gradient-competition",
    [
        "train_subset=1024",
        "test_subset=200",
        "widths=16",
        "trials=3",
        "batch_sizes=1,8,64",
        "early_epoch=1",
        "late_epoch=2",
        "examples=128",
        "reductions=sum",
    ],
)
ENV = os.environ | {"OMP_NUM_THREADS": "1", "COLUMNS": "80"}


def batchlab_args(study, sets, out) -> list[str]:
    return ["run", study, *set_args(sets), "--device", "cpu", "--out", str(out)]


def tables(out: Path, study: str) -> dict[str, bytes]:
    (study_dir,) = out.glob(f"{study}@*")  # run with --set values: the variant's own directory
    files = sorted((study_dir / "tables").glob("*.csv")) + [study_dir / "claims.json"]
    return {f.name: f.read_bytes() if f.suffix == ".csv" else json.loads(f.read_text())["claims"] for f in files}


def integrity(out: Path) -> str:
    db = sqlite3.connect(out / DB_NAME)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """Each study run once, uninterrupted, in this process."""
    out = {}
    for study, sets in (SWEEP, EQUIVALENCE, COMPETITION):
        path = tmp_path_factory.mktemp(study)
        assert cli.run_cli(batchlab_args(study, sets, path)) == 0
        out[study] = (path, store_dump(path), tables(path, study))
    return out


KILLS = [
    (SWEEP, "epoch", 3),  # during training: the first group has done 1.5 of its 2 epochs
    (SWEEP, "stored", 3),  # between two stored units (inside the second group)
    (SWEEP, "in-transaction", 4),  # inside a unit's transaction
    (SWEEP, "report", 2),  # every unit stored, the report half written
    (EQUIVALENCE, "artifact-file", 1),  # an array file written under its temporary name
    (EQUIVALENCE, "artifact-rows", 2),  # a unit's array files in place, its transaction not begun
    (EQUIVALENCE, "in-transaction", 3),
    (EQUIVALENCE, "report", 3),
    (COMPETITION, "epoch", 1),  # training the run whose checkpoints the tasks need
    (COMPETITION, "artifact-file", 5),  # one of the run's checkpoint tensors half-stored
    (COMPETITION, "artifact-rows", 1),  # the run's checkpoint files in place, its transaction not begun
    (COMPETITION, "stored", 4),  # between two tasks
]


@pytest.mark.parametrize("case, point, n", KILLS, ids=[f"{c[0]}-{p}-{n}" for c, p, n in KILLS])
def test_sigkill_at_any_point_resumes_to_the_uninterrupted_numbers(tmp_path, baseline, case, point, n):
    study, sets = case
    out = tmp_path / "res"
    killed = subprocess.run(
        [sys.executable, str(HERE / "crash_driver.py"), point, str(n), "--", *batchlab_args(study, sets, out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial, _ = resumes_to_the_baseline(out, baseline, study, sets)
    assert set(partial) < set(baseline[study][1]) or point == "report"


def resumes_to_the_baseline(out: Path, baseline, study: str, sets: list[str]) -> tuple[dict, object]:
    """What a stopped process left is sound and the same command completes it: the store passes its integrity
    check, every stored unit is whole and equal to the uninterrupted one (nothing half-written counts as
    finished), and a rerun computes only what is missing, to the uninterrupted numbers and tables. Returns the
    units found stored, and the rerun."""
    assert integrity(out) == "ok"
    _, reference, reference_tables = baseline[study]
    partial = store_dump(out)
    assert {k: reference[k] for k in partial} == partial
    rerun = run_study(study, overrides=_overrides(sets), device="cpu", out=out)
    assert rerun.trained == len(reference) - len(partial)  # only what was missing was computed
    planned = {u.key for u in make_config(get_study(study), "quick", _overrides(sets))[1]}
    assert rerun.reused == len(set(partial) & planned)  # a task's start run is stored but not planned
    assert integrity(out) == "ok"
    assert store_dump(out) == reference
    assert tables(out, study) == reference_tables
    # an array file that never got its row is harmless: every referenced file exists and loads
    with Store(out) as store:
        for record in store.runs(store.finished_at()).values():
            for ref in record.artifacts:
                assert store.load_array(ref).shape == ref.shape
    return partial, rerun


FAULTS = [  # (study, fault, at, what the one line says): see tests/crash_driver.py
    (COMPETITION, "full-array", "1", "no space left on the device"),  # the run's first checkpoint file
    (COMPETITION, "full-array", "12", "no space left on the device"),  # an array of a task
    (SWEEP, "full-db", "3", "database or disk is full"),  # the second unit's transaction
    (EQUIVALENCE, "full-report", "2", "no space left on the device"),  # every unit stored, the report half written
    (COMPETITION, "read-only", "artifacts", "Permission denied for"),
    (SWEEP, "read-only", "batch-size-sweep@", "Permission denied for"),  # the study's report folder
]


@pytest.mark.parametrize("case, fault, at, says", FAULTS, ids=[f"{c[0]}-{f}-{a}" for c, f, a, _ in FAULTS])
def test_a_full_disk_or_a_read_only_folder_is_one_line_exit_2_and_the_same_command_completes(
    tmp_path, baseline, case, fault, at, says
):
    study, sets = case
    out = tmp_path / "res"
    failed = subprocess.run(
        [sys.executable, str(HERE / "crash_driver.py"), fault, at, "--", *batchlab_args(study, sets, out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    line = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
    assert line.startswith("error: ") and says in line and "run the same command again" in line, line
    resumes_to_the_baseline(out, baseline, study, sets)


def files_match_their_names(out: Path) -> bool:
    """Whether every array file a stored unit refers to exists and holds the bytes of its SHA-256 name."""
    with Store(out) as store:
        refs = [a for r in store.runs(store.finished_at()).values() for a in r.artifacts]
        paths = [store.artifact_path(a.sha256) for a in refs]
    return all(p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == p.stem for p in paths)


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def values_x2(path: Path) -> None:
    """A valid .npy of the same shape and dtype, every value doubled: only its hash tells it from the original."""
    np.save(path, 2 * np.load(path))


# (which array of the competition study, how it is damaged, whether its report reads it)
DAMAGES = [("task", values_x2, True), ("param:", flip_a_bit, False)]


@pytest.mark.parametrize("which, damage, read", DAMAGES, ids=["task-array-x2", "checkpoint-bit-flip"])
def test_a_damaged_array_file_is_named_and_its_unit_computed_again(tmp_path, baseline, capsys, which, damage, read):
    """An array file whose bytes are not its SHA-256 name: a report that reads it is refused in one line naming
    it (no numbers from it); export (which reads no array) is unchanged; `run` says which file it found damaged,
    computes that unit again in the place of its row, and the store ends as the undamaged one."""
    study, sets = COMPETITION
    reference_path, reference, reference_tables = baseline[study]
    out = tmp_path / "res"
    shutil.copytree(reference_path, out)
    with Store(out) as store:
        records = store.runs(store.finished_at())
        key, ref = next(
            (k, a)
            for k, r in sorted(records.items())
            for a in r.artifacts
            if (r.kind.startswith("task") if which == "task" else a.name.startswith(which))
        )
        path = store.artifact_path(ref.sha256)
    damage(path)
    db = (out / DB_NAME).read_bytes()

    report = ["report", study, *set_args(sets), "--out", str(out)]
    if read:
        one_line_error(cli.run_cli(report), *capsys.readouterr(), str(path), "is damaged", "run the study again")
        assert (out / DB_NAME).read_bytes() == db
    export = ["export", "--tasks", "--out", str(out)]
    assert cli.run_cli([*export[:-1], str(reference_path)]) == 0
    expected_csv = capsys.readouterr().out
    assert cli.run_cli(export) == 0 and capsys.readouterr().out == expected_csv

    assert cli.run_cli(batchlab_args(study, sets, out)) == 0
    err = capsys.readouterr().err
    assert f"{path} is damaged or missing: unit {key} is computed again" in err.splitlines()
    assert store_dump(out) == reference
    assert tables(out, study) == reference_tables
    assert files_match_their_names(out) and integrity(out) == "ok"


def _overrides(sets: list[str]) -> dict:
    from batchlab.driver import parse_sets

    return parse_sets(sets)


def test_ctrl_c_stops_within_two_seconds_with_one_line_saying_what_was_saved(tmp_path):
    out = tmp_path / "res"
    sets = ["epochs=200", "train_subset=2048", "test_subset=200", "widths=32", "batch_sizes=16,32", "seeds=2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchlab", *batchlab_args("batch-size-sweep", sets, out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=default_sigint,
    )
    first = proc.stderr.readline()  # the plain progress line: training has started
    assert first.startswith("batch-size-sweep: training 4 runs"), first
    time.sleep(1.0)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    stopped_after = time.perf_counter() - sent
    assert proc.returncode == 130
    assert stopped_after < 2.0
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and stdout == ""
    # the group in training keeps its epochs done (unless Ctrl-C came inside its first)
    assert re.fullmatch(
        f"error: interrupted; batch-size-sweep: 0 of 4 runs are in the store in {re.escape(str(out))}"
        r"(, and 2 more runs keep [1-9]\d* of their 200 epochs)?: run the same command again to resume",
        lines[-1],
    ), lines[-1]
    assert integrity(out) == "ok"


@pytest.mark.parametrize("after", [0.3, 1.0, 2.0])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(tmp_path, after):
    """Importing torch and the rest takes seconds: a Ctrl-C then ends as one later does, in one line, exit 130."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchlab", *batchlab_args(*SWEEP, tmp_path / "res")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=default_sigint,
    )
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr and stdout == "", stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted"), stderr


SHUTDOWN = """
import atexit, sys, time
from batchlab.interrupts import exit_with, stop_once_on_ctrl_c
stop_once_on_ctrl_c()
atexit.register(lambda: (print("shutting down", flush=True), time.sleep(1.5)))  # as torch's modules take a moment
exit_with(int(sys.argv[1]))
"""


@pytest.mark.parametrize("code", [0, 130])
def test_ctrl_c_while_the_process_shuts_down_keeps_its_exit_code(code):
    """The work is done and said: a Ctrl-C while the interpreter exits used to end a finished run by SIGINT (-2)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SHUTDOWN, str(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=default_sigint,
    )
    assert proc.stdout.readline() == "shutting down\n"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code and stderr == "", stderr


def test_a_second_ctrl_c_lets_the_first_one_keep_the_state_and_exit_130(tmp_path):
    """Keeping the state of the runs in training takes a while (2 s here); Ctrl-C again meanwhile changes nothing."""
    out, mark = tmp_path / "res", tmp_path / "keeping"
    sets = ["epochs=40", "train_subset=2048", "test_subset=200", "widths=32", "batch_sizes=16,32", "seeds=2"]
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crash_driver.py"), "slow-keep", "0", "--", *batchlab_args(SWEEP[0], sets, out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV | {"BATCHLAB_MARK": str(mark)},
        preexec_fn=default_sigint,
    )
    while not (line := proc.stderr.readline()).startswith("  25%"):  # 10 epochs done, 30 to go
        assert line, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 30
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # while the state is being kept
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr and stdout == "", stderr
    assert re.fullmatch(
        f"error: interrupted; batch-size-sweep: 0 of 4 runs are in the store in {re.escape(str(out))}, and 2 more "
        r"runs keep [1-9]\d* of their 40 epochs: run the same command again to resume",
        stderr.strip().splitlines()[-1],
    ), stderr
    assert integrity(out) == "ok"


def test_two_processes_on_one_store_finish_without_locks_or_double_numbers(tmp_path, baseline):
    """The same study twice at once, and beside it a study sharing its runs: no "database is locked",
    no corruption, each unit stored once, with the numbers of a run made alone."""
    out = tmp_path / "res"
    study, sets = SWEEP
    # a second plan sharing the batch-256 and batch-1024 runs with the first
    overlapping = [s if not s.startswith("batch_sizes") else "batch_sizes=256,1024" for s in sets]
    commands = [
        batchlab_args(study, sets, out),
        batchlab_args(study, sets, out),
        batchlab_args(study, overlapping, out),
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "batchlab", *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
        )
        for c in commands
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr.decode()
        assert b"locked" not in stderr and b"Traceback" not in stderr
    assert integrity(out) == "ok"
    _, reference, reference_tables = baseline[study]
    assert store_dump(out) == reference  # the same keys, each once, with the numbers of the uninterrupted run
    with Store(out) as store:
        assert store.count_runs() == len(reference)


# three studies whose tasks start from different checkpoints (epochs 0 to 3) of one shared reference run
REFERENCE = ["train_subset=1024", "test_subset=200", "widths=16", "late_epoch=3", "examples=128"]
SHARING = [
    ("noise-scale", [*REFERENCE, "early_epoch=1", "draws=4", "bootstrap=10", "small_batch=8", "big_batch=64"]),
    ("gradient-variance", [*REFERENCE, "early_epoch=2", "draws=4", "batch_sizes=1,4", "regression_n=256"]),
    ("gradient-competition", [*REFERENCE, "early_epoch=0", "trials=2", "batch_sizes=1,8,64", "reductions=sum"]),
]


def test_processes_that_train_one_run_for_different_checkpoints_all_finish_with_every_checkpoint(tmp_path):
    """Each process trains the shared run, and they wait for one another before storing it: whichever copy
    wins the key, the checkpoints only the others kept are added to it, and every task finds its start."""
    out, race = tmp_path / "res", tmp_path / "race"
    race.mkdir()
    env = ENV | {"BATCHLAB_RACE": str(race), "BATCHLAB_RACE_PROCESSES": str(len(SHARING))}
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "crash_driver.py"), "race", "1", "--", *batchlab_args(study, sets, out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for study, sets in SHARING
    ]
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0 and "Traceback" not in stderr, stderr
    assert integrity(out) == "ok"
    for study, sets in SHARING:  # one after the other, in this process: what the store must hold
        run_study(study, overrides=_overrides(sets), device="cpu", out=tmp_path / "alone")
    assert store_dump(out) == store_dump(tmp_path / "alone")
    with Store(out) as store:
        reference = get_study("noise-scale").Config(**store.study("noise-scale")["config"]).reference_run()
        assert store.checkpoint_epochs(reference.key) == {0, 1, 2, 3}


def test_out_of_memory_splits_the_group_and_gives_the_same_numbers(tmp_path, monkeypatch):
    """A device that cannot hold more than two runs at once: the group is halved until it fits."""
    study, sets = SWEEP
    sets = [*sets[:-1], "batch_sizes=64,256", "seeds=4"]
    reference = run_study(study, overrides=_overrides(sets), device="cpu", out=tmp_path / "ref")
    sizes = []
    real = engine_groups.GroupTrainer

    class SmallDevice(real):
        def __init__(self, specs, *a, **kw):
            sizes.append(len(specs))
            if len(specs) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            super().__init__(specs, *a, **kw)

    monkeypatch.setattr(engine_groups, "GroupTrainer", SmallDevice)
    split = run_study(study, overrides=_overrides(sets), device="cpu", out=tmp_path / "split")
    assert sizes == [4, 2, 2, 4, 2, 2]  # each group of 4 seeds tried whole, then in halves
    assert store_dump(tmp_path / "split") == store_dump(tmp_path / "ref")
    assert split.trained == reference.trained == 8


def test_out_of_memory_for_a_single_run_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    class NoMemory(engine_groups.GroupTrainer):
        def __init__(self, specs, *a, **kw):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(engine_groups, "GroupTrainer", NoMemory)
    study, sets = SWEEP
    code = cli.run_cli(batchlab_args(study, sets, tmp_path / "res"))
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err
    assert lines[-1].startswith("error: out of memory on cpu for a single run (mlp [16], batch 64, float32)")
    assert "use a smaller batch_size" in lines[-1]


DYNAMICS = ["batch-size-sweep", "lr-compensation", "schedule-switch", "distance-grid", "adam-vs-sgd"]
TINY = {"train_subset": 1024, "test_subset": 200, "widths": [16], "seeds": 2, "epochs": 3}


@pytest.mark.parametrize("name", DYNAMICS)
def test_a_study_whose_runs_all_diverge_has_every_claim_inconclusive_with_the_reason(tmp_path, name):
    """The same stored runs, marked diverged at step 0: every claim rule leaves them out (their measured
    accuracies of NaN weights are not results) and says why it cannot decide."""
    study = get_study(name)
    overrides = TINY | ({"fit_start": 1} if name == "adam-vs-sgd" else {})  # the fit needs 3 epochs
    run_study(name, overrides=overrides, device="cpu", out=tmp_path)
    with Store(tmp_path) as store:
        cfg = study.Config(**store.study(name)["config"])
        specs = study_units(study, cfg)
        records = store.runs(s.key for s in specs)
        diverged = {k: dataclasses.replace(r, status="diverged", diverged_step=0) for k, r in records.items()}
        output = study.analyze(cfg, Results(diverged, store.load_array))
    for claim in output.claims:
        assert claim.verdict == "inconclusive", (claim.id, claim.why)
        assert "finished" in claim.why or "diverged" in claim.why, (claim.id, claim.why)


def test_the_report_lists_diverged_runs_and_their_step(tmp_path):
    """lr 1e4 makes the small-batch runs diverge; the others of their groups train on."""
    result = run_study("batch-size-sweep", overrides=TINY | {"lr": 1e4, "epochs": 2}, device="cpu", out=tmp_path)
    with Store(tmp_path) as store:
        records = list(store.runs(store.finished_at()).values())
    diverged = {r.key: r.diverged_step for r in records if r.status == "diverged"}
    assert diverged and len(diverged) < len(records)
    table = (result.report.parent / "tables" / "diverged_runs.csv").read_text().splitlines()
    assert table[0].split(",")[-3:] == ["diverged at step", "epoch", "key"]
    assert {row.split(",")[-1]: int(row.split(",")[-3]) for row in table[1:]} == diverged
    assert "diverged (NaN or infinite loss)" in result.report.read_text()
    claim = result.output.claims[0]
    assert claim.verdict == "inconclusive" and "diverged runs left out" in claim.evidence
    assert np.isfinite(claim.evidence["test accuracy batch 1024 (%)"])


STEPS = ["train_subset=1024", "test_subset=200", "widths=16", "early_epoch=1", "late_epoch=2", "batch_sizes=32,64,128"]
STEPS += ["noise_examples=128", "noise_draws=4", "noise_bootstrap=10", "max_steps=40", "evaluations=10"]
NOTHING_TO_LOG = {
    "every-run-diverges": ["lrs=1e5,1e6", "checkpoint_lr=1e6"],  # the reference run too
    "every-run-reaches-the-target-at-step-0": ["lrs=1e3,1e4", "target=0.01"],
}


@pytest.mark.filterwarnings("error:Data has no positive values")
@pytest.mark.parametrize("sets", NOTHING_TO_LOG.values(), ids=NOTHING_TO_LOG)
def test_steps_to_target_draws_its_figure_when_nothing_can_go_on_a_log_axis(tmp_path, capsys, sets):
    assert cli.run_cli(batchlab_args("steps-to-target", [*STEPS, *sets], tmp_path)) == 0, capsys.readouterr().err
    (figures,) = tmp_path.glob("steps-to-target@*/figures")
    assert {p.suffix for p in figures.glob("steps_to_target.*")} == {".png", ".svg", ".pdf"}
