"""The `batchlab` command: one-line errors with exit code 2 that write nothing, resuming runs,
`report` without training, progress output, and `reproduce`.

Most cases call the real entry point in-process (`cli.run_cli`, what `main` exits with); a few run
`python -m batchlab` in a subprocess to check the real process: exit code, stderr, files.
"""

import json
import os
import re
import sqlite3
import subprocess
import sys

import pytest
import torch
from conftest import TINY_SURGE, TINY_SWEEP, cli_run, local_fashion_mnist, set_args
from conftest import one_line_error as assert_one_line_error

from batchlab import cli
from batchlab.driver import parse_sets, prepare, reports
from batchlab.executors import local
from batchlab.store import DB_NAME, Store
from batchlab.studies import REGISTRY

STUDY = "batch-size-sweep"
TINY = set_args(TINY_SWEEP)
CLAIM_LINE = re.compile(r"^  (\S+) \[(supported|not supported|inconclusive)\] (.+)$")


pytestmark = pytest.mark.usefixtures("one_thread")


def subprocess_cli(*args, **env):
    full_env = os.environ | {"OMP_NUM_THREADS": "1", "COLUMNS": "60"} | env
    return subprocess.run(
        [sys.executable, "-m", "batchlab", *map(str, args)], capture_output=True, text=True, env=full_env, timeout=120
    )


def finished_at(out):
    db = sqlite3.connect(out / DB_NAME)
    try:
        return dict(db.execute("SELECT key, finished_at FROM runs"))
    finally:
        db.close()


# --- bad input: one line, exit 2, nothing written -----------------------------------------------------
BAD_RUNS = [
    (["--set", "batch_size=0"], ["unknown key 'batch_size'", "did you mean 'batch_sizes'", "valid keys:", "lr"]),
    (["--set", "nope=1"], ["unknown key 'nope'", "valid keys:"]),
    (["--set", "batch_sizes=0"], ["invalid value for batch_sizes"]),
    (["--set", "batch_sizes=64,0"], ["invalid", "batch_size"]),
    (["--set", "lr=abc"], ["invalid value for lr", "'abc'"]),
    (["--set", "lr=-1"], ["invalid value for lr", "greater than 0"]),
    (["--set", "lr"], ["expected key=value"]),
    (["--set", "train_subset=1000000"], ["train_subset 1000000 exceeds the 60000 examples of mnist"]),
    (["--profile", "huge"], ["unknown profile 'huge'", "quick, full"]),
    (["--device", "gpu"], ["--device gpu"]),
]


@pytest.mark.parametrize("args, fragments", BAD_RUNS, ids=[" ".join(a) for a, _ in BAD_RUNS])
def test_bad_run_input(capsys, tmp_path, args, fragments):
    out = tmp_path / "res"
    assert_one_line_error(*cli_run(capsys, "run", STUDY, *TINY, *args, "--out", out), *fragments)
    assert not out.exists()


def test_unknown_study(capsys, tmp_path):
    assert_one_line_error(*cli_run(capsys, "run", "nope", "--out", tmp_path / "res"), "unknown study 'nope'", STUDY)
    assert_one_line_error(*cli_run(capsys, "report", "nope", "--out", tmp_path / "res"), "unknown study 'nope'")
    assert list(tmp_path.iterdir()) == []


def test_no_cuda(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "res"
    assert_one_line_error(
        *cli_run(capsys, "run", STUDY, *TINY, "--device", "cuda", "--out", out), "--device cuda", "no CUDA device"
    )
    assert_one_line_error(*cli_run(capsys, "reproduce", "--device", "cuda", "--out", out), "no CUDA device")
    assert not out.exists()


def test_unwritable_out(capsys, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(*cli_run(capsys, "run", STUDY, *TINY, "--out", afile / "res"), "not a directory")
    assert_one_line_error(*cli_run(capsys, "run", STUDY, *TINY, "--out", afile), "not a directory")
    assert_one_line_error(*cli_run(capsys, "reproduce", "--out", afile / "res"), "not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and afile.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert_one_line_error(*cli_run(capsys, "run", STUDY, *TINY, "--out", ro / "res"), "not writable")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_out_where_nothing_can_be_created(capsys):
    code, out, err = cli_run(capsys, "run", STUDY, *TINY, "--out", "/proc/self/batchlab-res")
    assert_one_line_error(code, out, err)


def test_report_without_results(capsys, tmp_path):
    out = tmp_path / "res"
    assert_one_line_error(*cli_run(capsys, "report", STUDY, "--out", out), "no results in")
    assert not out.exists()
    Store(out).close()  # a results directory whose store lacks this study
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert_one_line_error(*cli_run(capsys, "report", STUDY, "--out", out), "has no recorded results")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_parser_errors(capsys, tmp_path):
    assert_one_line_error(*cli_run(capsys, "run"), "Missing argument")
    assert_one_line_error(*cli_run(capsys, "run", STUDY, "--bogus", "--out", tmp_path / "res"), "--bogus")
    assert_one_line_error(
        *cli_run(capsys, "reproduce", "--profile", "huge", "--out", tmp_path / "res"), "unknown profile 'huge'"
    )
    assert list(tmp_path.iterdir()) == []


def test_error_is_one_unwrapped_line_in_a_real_process(tmp_path):
    """A long message in a narrow terminal (COLUMNS=60): still one line, exit code 2, no files."""
    out = tmp_path / "res"
    proc = subprocess_cli("run", STUDY, "--set", "batch_size=0", "--out", out)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "unknown key 'batch_size'", "epochs")
    assert len(proc.stderr.strip()) > 60
    assert not out.exists()


# --- running, resuming, reporting ---------------------------------------------------------------------
def test_quick_profile_rerun_and_report(tmp_path):
    """`run --profile quick` trains; the same command again trains nothing; `report` recomputes."""
    out = tmp_path / "res"
    sets = [*TINY, "--set", "batch_sizes=64,256"]
    args = ["run", STUDY, "--profile", "quick", *sets, "--device", "cpu", "--out", out]
    # a run with --set is a variant of the study: its report has a directory of its own
    variant = prepare(STUDY, overrides=parse_sets(sets[1::2]), out=out, check_data_now=False).variant
    report = out / f"{STUDY}@{variant}" / "report.html"
    first = subprocess_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "trained 4 runs, reused 0 from the store" in first.stdout
    # progress on a pipe: a handful of plain lines, no carriage returns or escape codes
    assert "\r" not in first.stderr and "\x1b" not in first.stderr
    progress = first.stderr.splitlines()
    assert 2 <= len(progress) <= 6, first.stderr
    assert progress[0] == f"{STUDY}: training 4 runs (8 run-epochs)"
    assert progress[-1].startswith("  100% (8/8 run-epochs, 4/4 runs saved)")
    # the summary: every claim on one line, with its verdict, not wrapped at COLUMNS
    claims = [m for m in map(CLAIM_LINE.match, first.stdout.splitlines()) if m]
    assert [m[1] for m in claims] == ["D1"]
    assert claims[0][3] == "At fixed lr and epochs, a larger batch gives lower final test accuracy."
    assert first.stdout.splitlines()[-1] == f"report: {report}"
    rows = finished_at(out)
    assert len(rows) == 4

    again = subprocess_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "trained 0 runs, reused 4 from the store" in again.stdout
    assert again.stderr.strip() == f"{STUDY}: all 4 runs are in the store, nothing to train"
    assert finished_at(out) == rows

    report.unlink()
    rep = subprocess_cli("report", STUDY, *sets, "--out", out)
    assert rep.returncode == 0, rep.stderr
    assert report.is_file() and "D1" in report.read_text()
    assert [m[1] for m in map(CLAIM_LINE.match, rep.stdout.splitlines()) if m] == ["D1"]
    assert finished_at(out) == rows  # no training


def test_partial_plan_through_the_cli(capsys, tmp_path):
    out = tmp_path / "res"
    code, stdout, _ = cli_run(
        capsys, "run", STUDY, *TINY, "--set", "batch_sizes=64,256", "--device", "cpu", "--out", out
    )
    assert code == 0 and "trained 4 runs, reused 0" in stdout
    before = finished_at(out)
    code, stdout, _ = cli_run(
        capsys, "run", STUDY, *TINY, "--set", "batch_sizes=64,256,1024", "--device", "cpu", "--out", out
    )
    assert code == 0 and "trained 2 runs, reused 4 from the store" in stdout
    after = finished_at(out)
    assert len(after) == 6 and {k: after[k] for k in before} == before


def test_interrupt_exits_130_and_resumes(capsys, tmp_path, monkeypatch):
    out = tmp_path / "res"

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "train_group", interrupt)
    code, stdout, err = cli_run(capsys, "run", STUDY, *TINY, "--device", "cpu", "--out", out)
    assert code == 130 and stdout == ""
    assert "Traceback" not in err and "run the same command again to resume" in err.splitlines()[-1]


def test_progress_without_a_terminal_does_not_spam(capsys):
    bar = cli.TrainingProgress(live=False)
    bar.start(STUDY, runs=40, pending=32, run_epochs=32 * 30)
    for _ in range(30):
        bar.epoch(32, 1)
        bar.saved(1)
    bar.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"{STUDY}: training 32 runs (960 run-epochs), 8 already in the store"
    assert [ln.split("%")[0].strip() for ln in lines[1:]] == ["25", "50", "75", "100"]
    assert all("left" in ln for ln in lines[1:4])


def test_list(capsys):
    code, out, _ = cli_run(capsys, "list")
    assert code == 0 and all(name in out for name in REGISTRY)
    code, out, _ = cli_run(capsys, "--help")
    assert code == 0 and "reproduce" in out


def test_list_study_shows_its_config_keys_with_help(capsys):
    code = cli.run_cli(["list", STUDY])
    out, err = capsys.readouterr()
    assert code == 0 and err == "", err
    study = REGISTRY[STUDY]
    assert study.title in out and "profiles: quick" in out and "full" in out
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith("batch_sizes "))
    assert row.split() == ["batch_sizes", "list", "of", "int", "64,256,1024", "64,256,1024"], row
    assert lines[lines.index(row) + 1].strip() == study.Config.model_fields["batch_sizes"].description
    epochs = next(line for line in lines if line.startswith("epochs "))
    assert epochs.split()[-2:] == ["30", "45"], epochs  # default, then the quick profile's value
    assert "SGD learning rate, the same for every batch size." in out
    assert "Independent runs (seeds 0..N-1) per configuration." in out  # a field every study shares


def test_list_unknown_study_is_one_line_exit_2(capsys):
    assert_one_line_error(*cli_run(capsys, "list", "nope"), "unknown study 'nope'", STUDY)


# --- reproduce ----------------------------------------------------------------------------------------
def tiny_profiles(monkeypatch):
    """Every registered study's quick profile, on a sliver of MNIST with a 16-unit MLP."""
    for study in REGISTRY.values():
        small = {
            k: v
            for k, v in {"train_subset": 1024, "test_subset": 200, "widths": (16,)}.items()
            if k in study.Config.model_fields
        }
        if type(study).__module__.startswith("batchlab.studies.dynamics"):
            dynamics = {"seeds": 2, "epochs": 3, "fit_start": 1}  # adam-vs-sgd's fit needs 3 epochs
            small |= {k: v for k, v in dynamics.items() if k in study.Config.model_fields}
        if type(study).__module__.startswith("batchlab.studies.gradients"):
            gradients = {"trials": 4, "draws": 16, "bootstrap": 20, "early_epoch": 1, "late_epoch": 2}
            gradients |= {"regression_n": 512, "examples": 512, "big_batch": 256, "noise_examples": 512}
            gradients |= {"noise_draws": 16, "noise_bootstrap": 20, "lrs": (0.1, 0.3), "target": 0.5}
            gradients |= {"max_steps": 60, "evaluations": 10, "batch_sizes": (16, 64, 256)}
            small |= {k: v for k, v in gradients.items() if k in study.Config.model_fields}
        if type(study).__module__.startswith("batchlab.studies.equivalence"):
            # the CNN's single-example passes dominate: fewer examples per batch, fewer batches
            equivalence = {"batch_size": 8, "ks": (1, 2), "micro_batch": 4, "steps": 1}
            small |= {k: v for k, v in equivalence.items() if k in study.Config.model_fields}
        if type(study).__module__.startswith("batchlab.studies.variants"):
            variants = {"lrs": (0.01, 0.1), "epochs": 2, "batch_sizes": (64, 256), "lars_lrs": (10.0,)}
            variants |= {"lamb_lrs": (0.01,), "n": 200, "contour_epochs": 1, "warmup_epochs": 1, "seeds": 2}
            variants |= {"steps": 20, "timed_steps": 2}
            small |= {k: v for k, v in variants.items() if k in study.Config.model_fields}
        if type(study).__module__.startswith("batchlab.studies.critical"):
            critical = {"seeds": 2, "multipliers": (1, 2, 4), "checkpoints": (0.0, 0.5), "window": 512, "evals": 3}
            small |= critical | {"lrs": (0.1,), "lr_grid": (1.0,), "noise_examples": 32, "noise_draws": 4}
        if type(study).__module__.startswith("batchlab.studies.curvature"):
            curvature = {"seeds": 2, "batch_sizes": (16, 32, 64), "examples": 128, "max_iter": 30, "plane_points": 5}
            curvature |= {"target_train_acc": 0.3, "steps": 40, "every": 10, "lrs": (0.1,), "adam_lrs": (0.01,)}
            curvature |= {"train_subset": 256, "test_subset": 100, "sgd_lr": 0.1, "draws": 4}
            small |= {k: v for k, v in curvature.items() if k in study.Config.model_fields}
        if type(study).__module__.startswith("batchlab.studies.adam"):
            adam = {"seeds": 2, "batch_sizes": (8, 32, 128), "lrs": (0.001, 0.01, 0.1), "half_lives": (1e2, 1e3, 1e4)}
            adam |= {"ks": (1, 2), "epochs": 1, "noise_examples": 64, "noise_bootstrap": 20}
            small |= {k: v for k, v in adam.items() if k in study.Config.model_fields}
        if study.name == "lr-surge":
            small |= TINY_SURGE
        quick = study.profiles["quick"] | small
        if "epochs" in study.Config.model_fields:
            try:
                study.plan(study.Config(**(quick | {"epochs": 2})))
                quick["epochs"] = 2
            except ValueError:  # this study needs more epochs (e.g. for a fit over them)
                pass
        monkeypatch.setattr(study, "profiles", study.profiles | {"quick": quick})


def test_reproduce(capsys, tmp_path, monkeypatch):
    tiny_profiles(monkeypatch)
    # every figure of every study is checked as it is saved: title, axis labels, legend, colour-bar label, and
    # for print: at most 7 in wide, no text under 8 pt, no legend over the data
    from batchlab.report.figure_checks import figure_problems
    from batchlab.report.figure_files import missing_formats

    problems, saved = {}, reports.save_figure

    def checked_save(fig, directory, name):
        problems[f"{directory.parent.name}/{name}"] = figure_problems(fig)
        return saved(fig, directory, name)

    monkeypatch.setattr(reports, "save_figure", checked_save)
    out = tmp_path / "res"
    code, stdout, err = cli_run(capsys, "reproduce", "--profile", "quick", "--device", "cpu", "--out", out)
    assert code == 0, err
    assert len(problems) >= len(REGISTRY)
    assert {k: v for k, v in problems.items() if v} == {}
    index = out / "index.html"
    assert stdout.splitlines()[-1].startswith(f"reproduced {len(REGISTRY)} studies in ")
    assert stdout.splitlines()[-1].endswith(str(index))
    html = index.read_text()
    for name in REGISTRY:
        assert (out / name / "report.html").is_file()
        assert missing_formats(out / name / "figures") == []  # a PDF and an SVG beside every PNG
        assert f'href="{name}/report.html"' in html
    ids = [m[1] for m in map(CLAIM_LINE.match, stdout.splitlines()) if m]
    assert len(ids) >= len(REGISTRY) and len(set(ids)) == len(ids)
    for claim_id in ids:
        assert re.search(rf">\s*{re.escape(claim_id)}\s*<", html), claim_id
    # each claim's ID links to its row in its study's report
    links = dict((cid, href) for href, cid in re.findall(r'<td class="id"><a href="([^"]+)">([^<]+)</a>', html))
    assert sorted(links) == sorted(ids)
    for cid, href in links.items():
        page, anchor = href.split("#")
        assert f'<tr id="{anchor}"' in (out / page).read_text(), cid
    assert "Full protocol (recorded)" in html and "NVIDIA H100 80GB HBM3" in html  # D1-D8 were recorded
    recorded = json.loads((out / "claims.json").read_text())  # the whole claims table as data, with provenance
    assert [c["id"] for c in recorded["claims"]] == ids and set(recorded["studies"]) == set(REGISTRY)
    for label in ("Device", "Torch", "Git commit", "Date", "Tasks", "Training runs"):
        assert f"<dt>{label}</dt>" in html, label
    # resuming: a second reproduce trains nothing
    before = finished_at(out)
    code, stdout, err = cli_run(capsys, "reproduce", "--profile", "quick", "--device", "cpu", "--out", out)
    assert code == 0 and finished_at(out) == before
    assert err.count("nothing to train") == len(REGISTRY)


FASHION_DIR = local_fashion_mnist()  # where batchlab finds it offline ($BATCHLAB_DATA, ...), or None


def test_data_dir_missing_fashion_mnist_is_one_line_and_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLAB_OFFLINE", "1")
    monkeypatch.delenv("BATCHLAB_DATA", raising=False)  # --data-dir sets it; restored after the test
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("batchlab.datasets.registry.SYSTEM_DATA_DIR", tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    code, o, e = cli_run(
        capsys, "run", STUDY, *TINY, "--set", "dataset=fashion-mnist", "--data-dir", str(empty), "--out", str(out)
    )
    assert_one_line_error(code, o, e, "train-images-idx3-ubyte.gz", "--data-dir")
    assert not out.exists()
    code, o, e = cli_run(capsys, "run", STUDY, "--data-dir", str(tmp_path / "no-such-dir"), "--out", str(out))
    assert_one_line_error(code, o, e, "--data-dir", "not a directory")


@pytest.mark.skipif(FASHION_DIR is None, reason="no local Fashion-MNIST copy (set BATCHLAB_DATA)")
def test_data_dir_finds_fashion_mnist(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLAB_OFFLINE", "1")
    monkeypatch.delenv("BATCHLAB_DATA", raising=False)
    code, o, e = cli_run(
        capsys,
        "run",
        STUDY,
        *TINY,
        "--set",
        "dataset=fashion-mnist",
        "--data-dir",
        str(FASHION_DIR),
        "--out",
        str(tmp_path),
    )
    assert code == 0, e
    with Store(tmp_path) as store:
        configs = [r.config for r in store.runs(k for (k,) in store.db.execute("SELECT key FROM runs")).values()]
    assert configs and all(c["dataset"] == "fashion-mnist" for c in configs)
