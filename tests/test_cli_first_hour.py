"""A new user's first hour: `--version`, `show`, `--dry-run`, `export`, and bad values refused in one line.

Dry runs and refused values are checked to write nothing: the results directory does not appear, or an
existing store keeps every byte.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import math
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli_run, set_args
from conftest import one_line_error as refused

import batchlab
from batchlab import cli
from batchlab.driver import parse_sets, prepare
from batchlab.preview import dry_run
from batchlab.report.overrides import format_set_value
from batchlab.store import DB_NAME, load_metrics
from batchlab.store.export import metrics_columns
from batchlab.studies import REGISTRY
from batchlab.studies.gradients.claims import rule_g3

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = "batch-size-sweep"
TINY = ["epochs=2", "train_subset=512", "test_subset=100", "widths=8", "batch_sizes=64,128"]


def sets(*extra: str) -> list[str]:
    return set_args([*TINY, *extra])


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """A store holding the tiny sweep with 2 seeds (4 runs)."""
    out = tmp_path_factory.mktemp("first-hour")
    assert cli.run_cli(["run", STUDY, *sets("seeds=2"), "--device", "cpu", "--out", str(out)]) == 0
    return out


# --- --version, show ---------------------------------------------------------------------------------
def test_version_prints_batchlab_and_torch_versions_in_a_real_process():
    proc = subprocess.run(
        [sys.executable, "-m", "batchlab", "--version"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"batchlab {batchlab.__version__} (torch {torch.__version__})\n"


def test_show_prints_every_key_with_default_quick_value_help_and_the_claims(capsys):
    code, out, err = cli_run(capsys, "show", "adam-vs-sgd")
    assert code == 0 and err == "", err
    study = REGISTRY["adam-vs-sgd"]
    lines = out.splitlines()
    quick = study.config("quick")
    for key, field in study.Config.model_fields.items():
        row = next(line for line in lines if line.startswith(f"{key} "))
        assert row.split()[-1] == format_set_value(getattr(quick, key)), row  # the quick column
        at = lines.index(row) + 1
        help_lines = lines[at : next(i for i in range(at, len(lines)) if not lines[i].startswith("    "))]
        assert " ".join(h.strip() for h in help_lines) == field.description  # wrapped to the terminal
    words = " ".join(out.split())
    assert "profiles: quick (the default of `run`; its values are in the quick column); full (the defaults)" in words
    claims = lines[lines.index("claims") + 1 : lines.index("claims") + 4]
    assert [c.split()[0] for c in claims] == ["D6", "D7", "D8"]
    assert claims[1].endswith("Adam travels much farther from the initialisation than SGD and generalises worse here.")


def test_show_names_the_file_that_defines_the_study(capsys):
    code, out, _ = cli_run(capsys, "show", "batch-size-sweep")
    line = next(line for line in out.splitlines() if line.startswith("defined in "))
    path = line.removeprefix("defined in ")
    assert path.startswith(("src/batchlab/studies/", "batchlab/studies/")) and path.endswith(".py"), line
    source = Path(inspect.getsourcefile(type(REGISTRY["batch-size-sweep"])))
    assert source.as_posix().endswith(path)


def test_list_study_prints_the_same_as_show(capsys):
    assert cli_run(capsys, "list", "lars") == cli_run(capsys, "show", "lars")


def test_show_unknown_study_is_one_line_exit_2(capsys):
    line = refused(*cli_run(capsys, "show", "nope"))
    assert line.startswith("unknown study 'nope'; known studies: batch-size-sweep,")


def test_every_claim_of_the_readme_is_listed_by_exactly_one_study():
    ids = [claim.id for study in REGISTRY.values() for claim in study.claims]
    expected = [f"D{i}" for i in range(1, 9)] + [f"E{i}" for i in range(1, 9)] + ["A1", "A2"]
    expected += ["G1", "G2", "G3", "G4", "V1", "N1", "N2", "V2", "L1", "S1", "S2"] + [f"C{i}" for i in range(1, 6)]
    expected += ["K1", "K2", "K3", "ES1", "ES2", "ES3"] + [f"AS{i}" for i in range(1, 7)]
    assert sorted(ids) == sorted(expected)


def test_g3_with_a_missing_task_is_inconclusive_and_says_missing():
    kurtosis = np.array([[3.0, 3.1, 3.2], [np.nan] * 3, [5.0, 5.1, 5.2]])
    claim = rule_g3([16, 64, 256], {"early": {"mean": kurtosis}})
    assert claim.verdict == "inconclusive"
    assert claim.evidence["early, mean: mean kurtosis by B"] == "3.1, nan, 5.1"


# --- --dry-run ---------------------------------------------------------------------------------------
def test_dry_run_without_a_store_counts_the_plan_and_creates_nothing(capsys, tmp_path):
    out = tmp_path / "never-created"
    code, stdout, err = cli_run(capsys, "run", STUDY, *sets("seeds=3"), "--device", "cpu", "--out", out, "--dry-run")
    assert code == 0, err
    lines = stdout.splitlines()
    # 3 seeds x (512/64 + 512/128 steps per epoch) x 2 epochs = 72 steps
    assert lines[0] == (
        f"{STUDY} (quick): 6 runs and 0 tasks planned, 0 runs and 0 tasks already in {out}; "
        "would train 6 runs (12 run-epochs, 72 steps)"
    )
    assert "6 runs with no comparable timing in the store:" in lines[1]
    assert "GFLOP/s, this device's float32 matmul rate measured now" in lines[1]
    assert lines[-1] == "dry run: nothing was computed or written"
    assert not out.exists()


def test_dry_run_counts_stored_runs_estimates_from_their_timings_and_leaves_the_store_alone(capsys, results_dir):
    before = snapshot(results_dir)
    code, stdout, err = cli_run(capsys, "run", STUDY, *sets("seeds=3"), "--out", results_dir, "--dry-run")
    assert code == 0, err
    assert snapshot(results_dir) == before
    head, estimate = stdout.splitlines()[:2]
    assert head.endswith(
        f"6 runs and 0 tasks planned, 4 runs and 0 tasks already in {results_dir}; would train 2 runs "
        "(4 run-epochs, 24 steps)"
    )
    assert "2 units from stored timings of comparable units on this device" in estimate
    # the estimate is the stored mean wall time per run-epoch (each run's share of its group) of the same batch size
    prep = prepare(STUDY, overrides=parse_sets([*TINY, "seeds=3"]), device="cpu", out=results_dir)
    plan = dry_run(prep)
    db = sqlite3.connect(results_dir / DB_NAME)
    per_epoch = {}
    for config, wall_s, group_size in db.execute("SELECT config, wall_s, group_size FROM runs"):
        per_epoch.setdefault(json.loads(config)["batch_size"], []).append(wall_s / group_size / 2)
    db.close()
    expected = sum(2 * np.mean(per_epoch[spec.batch_size]) for spec in plan.train)
    assert math.isclose(plan.estimate.seconds, expected, rel_tol=1e-9)
    assert sorted(s.seed for s in plan.train) == [2, 2]


def test_dry_run_then_the_real_run_trains_what_it_said(capsys, results_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(results_dir, out)
    code, stdout, _ = cli_run(capsys, "run", STUDY, *sets("seeds=3"), "--out", out, "--dry-run")
    assert code == 0 and "4 runs and 0 tasks already in" in stdout and "would train 2 runs" in stdout
    code, stdout, err = cli_run(capsys, "run", STUDY, *sets("seeds=3"), "--device", "cpu", "--out", out)
    assert code == 0, err
    assert stdout.startswith(f"{STUDY}: trained 2 runs, reused 4 from the store")


def test_reproduce_dry_run_lists_every_study_and_creates_nothing(capsys, tmp_path):
    out = tmp_path / "never"
    code, stdout, err = cli_run(capsys, "reproduce", "--profile", "quick", "--device", "cpu", "--out", out, "--dry-run")
    assert code == 0, err
    heads = [line for line in stdout.splitlines() if not line.startswith(" ")]
    assert [h.split(" ")[0] for h in heads[: len(REGISTRY)]] == list(REGISTRY)
    planned = [re.search(r": (\d+) runs and (\d+) tasks planned", h) for h in heads]
    total = re.match(rf"all {len(REGISTRY)} studies: (\d+) runs and (\d+) tasks planned", heads[len(REGISTRY)])
    assert total, heads[len(REGISTRY)]
    # a unit two studies share is computed once, and counted once in the total: the four gradient studies
    # share one reference run
    assert int(total[1]) <= sum(int(m[1]) for m in planned[: len(REGISTRY)]) - 3
    assert int(total[2]) <= sum(int(m[2]) for m in planned[: len(REGISTRY)])
    assert heads[-1] == "dry run: nothing was computed or written"
    assert not out.exists()


def test_reproduce_studies_selects_some_in_catalogue_order_and_refuses_an_unknown_one(capsys, tmp_path):
    out = tmp_path / "never"
    args = ["reproduce", "--profile", "full", "--device", "cpu", "--out", out, "--dry-run"]
    code, stdout, err = cli_run(capsys, *args, "--studies", "noise-scale, gd-variants")
    assert code == 0, err
    heads = [line.split(" ")[0] for line in stdout.splitlines() if not line.startswith(" ")]
    assert heads[:2] == ["noise-scale", "gd-variants"] and heads[2] == "all"
    refused(*cli_run(capsys, *args, "--studies", "gd-variants,nope"), "unknown study 'nope'")
    assert not out.exists()


def test_dry_run_refuses_a_bad_value_like_a_real_run(capsys, tmp_path):
    out = tmp_path / "never"
    line = refused(*cli_run(capsys, "run", STUDY, "--set", "batch_sizes=64,1e6", "--out", out, "--dry-run"))
    assert line == "invalid config: batch_sizes 1000000 exceeds the 4096 training examples (train_subset=4096)"
    assert not out.exists()


# --- export ------------------------------------------------------------------------------------------
TEXT_COLUMNS = {"key", "kind", "status", "dataset", "model", "optimizer", "loss_reduction", "precision"}


def parse_cell(column: str, value: str):
    if value == "" or column in TEXT_COLUMNS:
        return value or None
    if value.startswith("["):
        return json.loads(value)
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def test_export_csv_read_back_equals_load_metrics(capsys, results_dir, tmp_path):
    target = tmp_path / "metrics.csv"
    code, stdout, err = cli_run(capsys, "export", "--out", results_dir, "--to", target)
    assert code == 0 and stdout == "", err
    rows = load_metrics(results_dir)
    assert err.strip() == f"wrote {len(rows)} rows to {target}"
    with open(target, newline="") as fh:
        reader = csv.DictReader(fh)
        back = [{k: parse_cell(k, v) for k, v in row.items()} for row in reader]
        assert reader.fieldnames == metrics_columns(rows)
    assert len(back) == len(rows) == 4 * 3  # 4 runs, evaluated at epochs 0, 1, 2
    for mine, theirs in zip(back, rows):
        mine, theirs = ({k: v for k, v in r.items() if v is not None} for r in (mine, theirs))
        assert mine.keys() == theirs.keys()
        for k, v in theirs.items():  # floats are written at full precision: equal, not just close
            assert mine[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(mine[k])), (k, mine[k], v)
    # to stdout when no --to: the same bytes
    code, stdout, _ = cli_run(capsys, "export", "--out", results_dir)
    assert code == 0 and stdout == target.read_text()


def test_export_study_keeps_only_its_runs(capsys, results_dir):
    code, stdout, _ = cli_run(capsys, "export", "--out", results_dir, "--study", STUDY)
    assert code == 0
    keys = {row["key"] for row in csv.DictReader(io.StringIO(stdout))}
    assert keys == {row["key"] for row in load_metrics(results_dir, study=STUDY)} and len(keys) == 4
    line = refused(*cli_run(capsys, "export", "--out", results_dir, "--study", "lars"))
    assert line == f"no recorded execution of study 'lars' in {results_dir}"


def test_export_without_a_store_is_one_line_exit_2_and_creates_nothing(capsys, tmp_path):
    out, target = tmp_path / "none", tmp_path / "m.csv"
    line = refused(*cli_run(capsys, "export", "--out", out, "--to", target))
    assert line == f"no batchlab store in {out} (expected {out / DB_NAME})"
    assert not out.exists() and not target.exists()


# --- bad values ----------------------------------------------------------------------------------------
BAD = [
    (
        STUDY,
        "batch_sizes=64,1e6",
        "invalid config: batch_sizes 1000000 exceeds the 4096 training examples (train_subset=4096)",
    ),
    (
        STUDY,
        "batch_sizes=64,4097",
        "invalid config: batch_sizes 4097 exceeds the 4096 training examples (train_subset=4096)",
    ),
    (STUDY, "widths=", "invalid value for widths: Tuple should have at least 1 item after validation, not 0 (got '')"),
    (
        STUDY,
        "widths=[]",
        "invalid value for widths: Tuple should have at least 1 item after validation, not 0 (got [])",
    ),
    (STUDY, "lr=-0.1", "invalid value for lr: Input should be greater than 0 (got -0.1)"),
    ("adam-vs-sgd", "batch_size=0", "invalid value for batch_size: Input should be greater than or equal to 1 (got 0)"),
    (
        "noise-scale",
        "big_batch=20000",
        "invalid config: big_batch 20000 exceeds the 10000 training examples (train_subset=10000)",
    ),
    (
        "equivalence",
        "train_subset=70000",
        "invalid config: train_subset 70000 exceeds the 60000 examples of mnist",
    ),
    (
        "accumulation",
        "batch_size=40000",
        "invalid config: 2 steps of batch_size 40000 need more than the 60000 training images",
    ),
    (
        "gd-variants",
        "minibatch=1001",
        "invalid config: minibatch 1001 exceeds the 1000 examples of the regression problem (n=1000)",
    ),
]


@pytest.mark.parametrize(("study", "value", "message"), BAD, ids=[f"{s}:{v}" for s, v, _ in BAD])
def test_a_value_beyond_the_data_or_empty_is_refused_in_one_line_before_anything_is_written(
    capsys, tmp_path, results_dir, study, value, message
):
    before = snapshot(results_dir)
    for out in (tmp_path / "never", results_dir):
        assert refused(*cli_run(capsys, "run", study, "--set", value, "--out", out)) == message
    assert not (tmp_path / "never").exists()
    assert snapshot(results_dir) == before


def test_the_training_set_size_is_the_configs_own(capsys, tmp_path):
    """A batch of 1024 fits the whole of MNIST but not train_subset=512."""
    out = tmp_path / "never"
    line = refused(*cli_run(capsys, "run", STUDY, *sets("batch_sizes=64,1024"), "--out", out, "--dry-run"))
    assert line == "invalid config: batch_sizes 1024 exceeds the 512 training examples (train_subset=512)"
    code, stdout, _ = cli_run(
        capsys, "run", STUDY, *sets("batch_sizes=64,1024", "train_subset=1024"), "--out", out, "--dry-run"
    )
    assert code == 0 and "would train 6 runs" in stdout and not out.exists()
