"""A run with `--set` overrides is a variant: its own record in the store and its own report directory
(`STUDY@<overrides>`), which says which configuration it shows; the plain profile's report stays as it was."""

import json
import shutil

import pytest
import torch
from conftest import cli_run

from batchlab import driver, explorer
from batchlab.driver import reports
from batchlab.report.figure_checks import figure_problems
from batchlab.report.figure_files import missing_formats
from batchlab.report.overrides import MAX_LABEL, overrides_label, report_dir_name
from batchlab.store import Store
from batchlab.studies import get_study

STUDY = "batch-size-sweep"
TINY = {"epochs": 2, "train_subset": 512, "test_subset": 200, "widths": (16,), "seeds": 2, "batch_sizes": (64, 256)}
VARIANT = f"{STUDY}@lr=0.05"

pytestmark = pytest.mark.usefixtures("one_thread")


def shrink(monkeypatch) -> None:
    """The study's quick profile shrunk to seconds (a plain `run` is then the profile without overrides)."""
    study = get_study(STUDY)
    monkeypatch.setattr(study, "profiles", study.profiles | {"quick": study.profiles["quick"] | TINY})


@pytest.fixture()
def tiny_quick(monkeypatch):
    shrink(monkeypatch)


def final_acc(study_dir) -> list[str]:
    lines = (study_dir / "tables" / "final.csv").read_text().splitlines()
    return lines[1:]


def files(directory) -> dict:
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The plain profile, then the variant lr=0.05 (read only: a test that writes copies it first); the plain
    report's files as they were before the variant. Every figure is checked as it is saved (`figure_problems`:
    labels, legends off the data, print size)."""
    out = tmp_path_factory.mktemp("variants")
    problems, saved = {}, reports.save_figure

    def checked_save(fig, directory, name):
        problems[f"{directory.parent.name}/{name}"] = figure_problems(fig)
        return saved(fig, directory, name)

    with pytest.MonkeyPatch.context() as mp:
        shrink(mp)
        mp.setattr(reports, "save_figure", checked_save)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            plain = driver.run_study(STUDY, device="cpu", out=out)
            before = files(out / STUDY)
            variant = driver.run_study(STUDY, overrides={"lr": 0.05}, device="cpu", out=out)
        finally:
            torch.set_num_threads(threads)
    assert plain.report == out / STUDY / "report.html" and variant.report == out / VARIANT / "report.html"
    assert problems == {f"{STUDY}/accuracy_vs_epoch": [], f"{VARIANT}/accuracy_vs_epoch": []}
    return out, before


@pytest.fixture()
def copied(two_runs, tmp_path):
    """A copy of the two runs' results, for a test that writes."""
    shutil.copytree(two_runs[0], tmp_path / "res")
    return tmp_path / "res"


def test_a_variant_run_writes_its_own_report_and_leaves_the_plain_one_unchanged(two_runs):
    out, before = two_runs
    assert files(out / STUDY) == before
    assert {p.suffix for p in before} >= {".html", ".json", ".csv", ".png", ".svg", ".pdf"}
    assert missing_formats(out / STUDY / "figures") == [] and missing_formats(out / VARIANT / "figures") == []
    assert final_acc(out / VARIANT) != final_acc(out / STUDY)  # its own numbers: lr 0.05 trains farther
    claims = json.loads((out / VARIANT / "claims.json").read_text())
    assert claims["overrides"] == {"lr": 0.05} and claims["config"]["lr"] == 0.05
    assert json.loads((out / STUDY / "claims.json").read_text())["overrides"] == {}
    with Store(out) as store:
        plain, variant = store.study(STUDY, "quick", ""), store.study(STUDY, "quick", "lr=0.05")
        assert store.study(STUDY)["variant"] == "lr=0.05"  # the latest of any variant
    assert plain["config"]["lr"] == 0.01 and variant["config"]["lr"] == 0.05
    assert set(plain["run_keys"]).isdisjoint(variant["run_keys"])


def test_each_page_says_which_configuration_it_shows(two_runs):
    out, _ = two_runs
    page = (out / VARIANT / "report.html").read_text()
    assert '<span class="mono overrides">--set lr=0.05</span>' in page
    assert '<tr class="changed"><td class="mono">lr ★</td><td class="long">0.05</td></tr>' in page
    assert '<td class="mono">epochs</td><td class="long">2</td>' in page  # the full config, unmarked keys too
    plain = (out / STUDY / "report.html").read_text()
    assert 'profile <b class="mono">quick</b>' in plain and "with its default values" in plain
    assert 'class="changed"' not in plain and '<td class="long">0.01</td>' in plain
    # each figure's files beside the page, for a paper: PNG, SVG and PDF
    links = '<a href="figures/accuracy_vs_epoch.png">png</a> · <a href="figures/accuracy_vs_epoch.svg">svg</a> · '
    assert links + '<a href="figures/accuracy_vs_epoch.pdf">pdf</a>' in plain


def test_report_names_the_variant_with_the_same_set_values(copied, tiny_quick, capsys):
    out = copied
    code, stdout, err = cli_run(capsys, "run", STUDY, "--set", "lr=0.05", "--device", "cpu", "--out", out)
    assert code == 0 and "trained 0 runs, reused 4 from the store" in stdout, err
    assert stdout.splitlines()[-1] == f"report: {out / VARIANT / 'report.html'}"
    (out / VARIANT / "report.html").unlink()
    code, stdout, err = cli_run(capsys, "report", STUDY, "--set", "lr=0.05", "--out", out)
    assert code == 0, err
    assert stdout.splitlines()[-1] == f"report: {out / VARIANT / 'report.html'}"
    assert "--set lr=0.05" in (out / VARIANT / "report.html").read_text()
    code, stdout, err = cli_run(capsys, "report", STUDY, "--out", out)  # no --set: the plain profile
    assert code == 0 and stdout.splitlines()[-1] == f"report: {out / STUDY / 'report.html'}"
    # --set lr=0.01 is the profile's own value: the plain profile, not a variant
    code, stdout, err = cli_run(capsys, "report", STUDY, "--set", "lr=0.01", "--out", out)
    assert code == 0 and stdout.splitlines()[-1] == f"report: {out / STUDY / 'report.html'}"


def test_report_of_a_variant_that_was_not_run_is_one_line_and_writes_nothing(copied, tiny_quick, capsys):
    out = copied
    dirs = sorted(p.name for p in out.iterdir())
    code, stdout, err = cli_run(capsys, "report", STUDY, "--set", "lr=0.3", "--out", out)
    assert (code, stdout) == (2, "")
    assert err == (
        f"error: {STUDY} has no recorded results with these --set values in {out}; "
        f"run `batchlab run {STUDY} --out {out}` first\n"
    )
    code, _, err = cli_run(capsys, "report", STUDY, "--set", "lrr=0.3", "--out", out)
    assert code == 2 and err.startswith("error: unknown key 'lrr' for study batch-size-sweep (did you mean 'lr'?)")
    assert sorted(p.name for p in out.iterdir()) == dirs


def test_the_plain_report_hints_at_variants_when_only_they_were_run(tiny_quick, capsys, tmp_path):
    code, _, err = cli_run(capsys, "run", STUDY, "--set", "seeds=1", "--device", "cpu", "--out", tmp_path)
    assert code == 0, err
    code, _, err = cli_run(capsys, "report", STUDY, "--out", tmp_path)
    assert code == 2 and "(it has results with --set: seeds=1)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / STUDY).exists()


def test_index_lists_variants_apart_with_links_and_the_explorer_still_works(tiny_quick, capsys, tmp_path):
    prep = driver.prepare(STUDY, device="cpu", out=tmp_path)
    result = driver.execute(prep)
    driver.run_study(STUDY, overrides={"lr": 0.05, "seeds": 1}, device="cpu", out=tmp_path)
    index = driver.write_reproduction_index(
        tmp_path, profile="quick", device=torch.device("cpu"), done=[(prep, result, 1.0)], total_wall_s=1.0
    )
    html = index.read_text()
    assert f'href="{STUDY}/report.html"' in html
    head, overridden = html.split('<section id="overridden-runs">')
    assert f"{STUDY}@" not in head  # the claims and the studies above are the plain profile's
    assert f'<a href="{STUDY}@lr=0.05,seeds=1/report.html">lr=0.05, seeds=1</a>' in overridden
    page = (tmp_path / f"{STUDY}@lr=0.05,seeds=1" / "report.html").read_text()
    assert '<span class="mono overrides">--set lr=0.05 --set seeds=1</span>' in page
    code, _, err = cli_run(capsys, "explore", "--out", tmp_path)
    assert code == 0, err
    with Store(tmp_path) as store:
        keys = explorer.study_keys(store)[STUDY]
        records = store.study_records(STUDY)
    assert len(records) == 2 and keys >= {k for r in records for k in r["run_keys"]}


def test_overrides_labels_are_sorted_readable_safe_and_short():
    assert overrides_label({}) == "" and report_dir_name(STUDY, "") == STUDY
    assert overrides_label({"seeds": 5, "lr": 0.05}) == "lr=0.05,seeds=5"
    assert (
        overrides_label({"batch_sizes": [32, 128], "widths": [64], "x": None}) == "batch_sizes=32+128,widths=64,x=none"
    )
    unsafe = overrides_label({"dataset": "a/b c"})
    assert unsafe.startswith("dataset=a-b-c~") and len(unsafe) == len("dataset=a-b-c~") + 8
    assert unsafe != overrides_label({"dataset": "a-b-c"})  # the hash keeps the two apart
    long = {"batch_sizes": list(range(1, 40))}
    label = overrides_label(long)
    assert len(label) == MAX_LABEL and label.startswith("batch_sizes=1+2+3") and label[-9] == "~"
    assert label == overrides_label(dict(long)) and label != overrides_label({"batch_sizes": list(range(1, 41))})
