"""Bad input, generated: every study's `--set` values, damaged stores and damaged dataset files.

Whatever hypothesis makes up, the CLI answers with one line on stderr, exit code 2, and writes nothing:
no results directory appears, and an existing one keeps every byte. Damaged stores are refused by every command
that opens one (run, its dry run, report, export, explore), and another program's SQLite file is never written.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import string
import subprocess
import sys
import tracemalloc
import types
import typing
from pathlib import Path

import annotated_types as at
import pytest
from conftest import local_fashion_mnist, set_args, store_dump
from conftest import one_line_error as assert_refused
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from batchlab import cli
from batchlab.cli import commands
from batchlab.driver import make_config, parse_sets
from batchlab.engine.spec import TaskSpec
from batchlab.store import DB_NAME, Store
from batchlab.store.schema import ARTIFACT_DIR
from batchlab.studies import REGISTRY, get_study

pytestmark = pytest.mark.usefixtures("one_thread")

FASHION_DIR = local_fashion_mnist()  # where batchlab finds it offline ($BATCHLAB_DATA, ...), or None
SMALL_SWEEP = ["epochs=1", "train_subset=512", "test_subset=100", "widths=8", "batch_sizes=64,128", "seeds=2"]
NONFINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "1e999"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


# --- what a config field accepts -----------------------------------------------------------------------
def _bounds(metadata) -> tuple[object | None, object | None]:
    low = high = None
    for m in metadata:
        if isinstance(m, (at.Ge, at.Gt)):
            low = m
        elif isinstance(m, (at.Le, at.Lt)):
            high = m
        elif hasattr(m, "metadata"):  # a FieldInfo inside Annotated
            inner = _bounds(m.metadata)
            low, high = low or inner[0], high or inner[1]
    return low, high


def _min_length(metadata) -> int:
    return max([m.min_length for m in metadata if isinstance(m, at.MinLen)] or [0])


def describe(annotation, metadata=()) -> dict:
    """A field's type as plain data: {"type": int|float|bool|literal|list, bounds, choices, item, ...}."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return describe(args[0], (*metadata, *args[1:]))
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return describe(inner, metadata) | {"optional": True}
    if origin in (tuple, list):
        variadic = len(args) == 2 and args[1] is Ellipsis
        return {
            "type": "list",
            "item": describe(args[0]),
            "length": None if variadic else len(args),
            "min_length": _min_length(metadata),
        }
    if origin is typing.Literal:
        return {"type": "literal", "choices": [str(a) for a in args]}
    low, high = _bounds(metadata)
    return {"type": annotation.__name__, "low": low, "high": high}


FIELDS = [
    (name, key, describe(field.annotation, field.metadata))
    for name, entry in REGISTRY.items()
    for key, field in entry.Config.model_fields.items()
]


def test_every_numeric_config_field_has_a_lower_bound():
    """So that the out-of-range strategy below covers every number a user can set."""

    def unbounded(d):
        if d["type"] == "list":
            return unbounded(d["item"])
        return d["type"] in ("int", "float") and d["low"] is None

    assert [(s, k) for s, k, d in FIELDS if unbounded(d)] == []


def test_every_list_field_needs_at_least_one_value():
    assert [(s, k) for s, k, d in FIELDS if d["type"] == "list" and not (d["min_length"] or d["length"])] == []


def _number(x) -> str:
    return repr(x)


def invalid_scalar(d: dict) -> st.SearchStrategy[str]:
    """Strings that no value of this type accepts (never 'none', which an optional field takes)."""
    kind = d["type"]
    if kind == "literal":
        return st.text(string.ascii_letters + "-_", min_size=1, max_size=12).filter(
            lambda s: s not in d["choices"] and s.lower() not in ("none", "null")
        )
    if kind == "bool":
        return st.sampled_from(["maybe", "2", "-1", "nan", "1.5", "truth"])
    junk = st.sampled_from([*NONFINITE, "abc", "1,2,x", "0x10", "[[1]]", '{"a": 1}'])
    low, high = d["low"], d["high"]
    outside = []
    if isinstance(low, at.Ge):
        outside.append(
            st.integers(max_value=low.ge - 1).map(str)
            if kind == "int"
            else st.floats(max_value=low.ge, exclude_max=True, allow_nan=False, allow_infinity=False).map(_number)
        )
    if isinstance(low, at.Gt):
        outside.append(
            st.integers(max_value=low.gt).map(str)
            if kind == "int"
            else st.floats(max_value=low.gt, allow_nan=False, allow_infinity=False).map(_number)
        )
    if isinstance(high, at.Le):
        outside.append(st.integers(min_value=high.le + 1, max_value=10**12).map(str))
    if isinstance(high, at.Lt):
        outside.append(st.floats(min_value=high.lt, max_value=1e12, allow_nan=False).map(_number))
    if kind == "int":
        outside.append(st.sampled_from(["1.5", "2.25", "-0.5"]))
    return st.one_of(junk, *outside)


def invalid_value(d: dict) -> st.SearchStrategy[str]:
    if d["type"] != "list":
        return st.one_of(st.just(""), invalid_scalar(d))
    item = invalid_scalar(d["item"]).filter(lambda s: "," not in s and not s.startswith(("[", "{")))
    bad_lists = [st.just("[]"), st.just(""), item.map(lambda s: f"[{s!r}]".replace("'", '"'))]
    bad_lists.append(item.map(lambda s: f"{s},{s}"))
    return st.one_of(*bad_lists)


@st.composite
def bad_sets(draw) -> tuple[str, list[str]]:
    """(study, --set arguments) with one invalid value or one unknown key."""
    name, key, d = draw(st.sampled_from(FIELDS))
    if draw(st.integers(0, 5)) == 0:
        fields = REGISTRY[name].Config.model_fields
        key = draw(st.from_regex(r"[a-z][a-z_]{0,14}", fullmatch=True).filter(lambda k: k not in fields))
        return name, [f"{key}=1"]
    return name, [f"{key}={draw(invalid_value(d))}"]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """A results directory holding one small study, to check that bad input leaves it byte for byte."""
    out = tmp_path_factory.mktemp("existing")
    assert cli.run_cli(["run", "batch-size-sweep", *set_args(SMALL_SWEEP), "--out", str(out)]) == 0
    return out


@pytest.fixture()
def no_training(monkeypatch):
    def trained(prep, *executor):
        raise AssertionError(f"accepted and trained: {prep.name} {prep.config}")

    monkeypatch.setattr(commands, "_train", trained)


@SETTINGS
@given(case=bad_sets())
def test_a_bad_set_value_is_one_line_exit_2_and_writes_nothing(
    case, results_dir, tmp_path_factory, capsys, no_training
):
    name, sets = case
    before = snapshot(results_dir)
    fresh = tmp_path_factory.getbasetemp() / "never-created"
    for out in (fresh, results_dir):
        args = ["run", name, *set_args(sets), "--device", "cpu", "--out", str(out)]
        code = cli.run_cli(args)
        line = assert_refused(code, *capsys.readouterr())
        assert sets[0].split("=")[0] in line or "invalid config" in line, line
    assert not fresh.exists()
    assert snapshot(results_dir) == before


# --- damaged stores ------------------------------------------------------------------------------------
def _commands(out: Path) -> list[list[str]]:
    """Every command that opens a store."""
    run = ["run", "batch-size-sweep", *set_args(SMALL_SWEEP), "--out", str(out)]
    return [
        run,
        [*run, "--dry-run"],
        ["report", "batch-size-sweep", "--out", str(out)],
        ["export", "--out", str(out)],
        ["explore", "--out", str(out)],
    ]


def _refuses_and_keeps(out: Path, capsys, *fragments: str) -> None:
    before = snapshot(out)
    for args in _commands(out):
        line = assert_refused(cli.run_cli(args), *capsys.readouterr())
        for fragment in fragments:
            assert fragment in line, line
    assert snapshot(out) == before


@SETTINGS
@given(data=st.binary(min_size=1, max_size=4096))
def test_a_store_of_random_bytes_is_refused_and_left_alone(data, tmp_path_factory, capsys, no_training):
    out = tmp_path_factory.mktemp("random")
    (out / DB_NAME).write_bytes(data)
    _refuses_and_keeps(out, capsys, str(out / DB_NAME), "move it aside")


@SETTINGS
@given(cut=st.floats(min_value=0.0, max_value=0.999))
def test_a_truncated_store_is_refused_and_left_alone(cut, results_dir, tmp_path_factory, capsys, no_training):
    out = tmp_path_factory.mktemp("truncated")
    whole = (results_dir / DB_NAME).read_bytes()
    (out / DB_NAME).write_bytes(whole[: int(cut * len(whole))] or b"\x00")
    _refuses_and_keeps(out, capsys, "move it aside")


def integrity(data: bytes, tmp: Path) -> str:
    """What SQLite's own integrity check says of a database file's bytes (read immutable: nothing is written)."""
    (tmp / "check.sqlite").write_bytes(data)
    db = sqlite3.connect(f"{(tmp / 'check.sqlite').as_uri()}?immutable=1", uri=True)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as e:
        return str(e)
    finally:
        db.close()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(where=st.floats(min_value=0.0, max_value=0.999), bit=st.integers(0, 7))
def test_a_store_damaged_inside_its_pages_is_refused_by_every_command_and_left_alone(
    where, bit, results_dir, tmp_path_factory, capsys, no_training
):
    """A flipped bit past the header that SQLite's integrity check sees (most do; one inside a stored value
    cannot be seen by any check) is refused in one line: no report from wrong numbers, no study record written."""
    whole = (results_dir / DB_NAME).read_bytes()
    at_byte = 100 + int(where * (len(whole) - 100))  # the header is checked apart
    data = bytearray(whole)
    data[at_byte] ^= 1 << bit
    assume(integrity(bytes(data), tmp_path_factory.mktemp("check")) != "ok")
    out = tmp_path_factory.mktemp("flipped")
    (out / DB_NAME).write_bytes(bytes(data))
    _refuses_and_keeps(out, capsys, str(out))


@pytest.mark.parametrize("version", [0, 2, 99])
def test_another_programs_sqlite_file_is_refused_by_every_command_and_never_written(
    tmp_path, capsys, no_training, version
):
    """An SQLite file without batchlab's tables (whatever its user_version says) is refused before SQLite writes
    anything: no tables added, no switch to WAL, no -wal or -journal file left beside it."""
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('another program wrote this')")
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()
    _refuses_and_keeps(tmp_path, capsys, str(tmp_path / DB_NAME), "not a batchlab store")
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME]


def read_only_media(path: Path, command: list[str]) -> list[str]:
    """`command` run where `path` cannot be written: for root (whom permissions do not stop), in a mount namespace
    where `path` is a read-only bind mount; for anyone else, after taking away every write permission."""
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        return command
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("root, and no mount namespace (unshare -m) to make a read-only directory in")
    remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", remount, str(path), *command]


def test_a_store_on_read_only_media_is_exported(results_dir, tmp_path):
    """A results directory nobody can write (read-only media): `export` reads the store with SQLite's immutable
    mode, as no -shm file can be made beside it, and gives what it gives elsewhere."""
    out = tmp_path / "ro"
    shutil.copytree(results_dir, out)
    export = [sys.executable, "-m", "batchlab", "export", "--out", str(out)]
    expected = subprocess.run(export, capture_output=True, text=True)
    assert expected.returncode == 0 and len(expected.stdout.splitlines()) > 1, expected.stderr
    try:
        got = subprocess.run(read_only_media(out, export), capture_output=True, text=True)
    finally:
        for p in [out, *out.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert (got.returncode, got.stderr, got.stdout) == (0, "", expected.stdout)


def test_a_read_only_folder_inside_out_is_refused_before_training(results_dir, tmp_path):
    """The arrays' folder (or a report's) that cannot be written used to be met after training, when the first
    result was stored: it is refused at the start, in one line, exit 2, with the store as it was."""
    out = tmp_path / "inner"
    shutil.copytree(results_dir, out)
    (out / ARTIFACT_DIR).mkdir(exist_ok=True)  # there after any study that stores arrays
    before = (out / DB_NAME).read_bytes()
    run = [sys.executable, "-m", "batchlab", "run", "batch-size-sweep", *set_args(SMALL_SWEEP), "--set", "seeds=3"]
    try:
        got = subprocess.run(
            read_only_media(out / ARTIFACT_DIR, [*run, "--out", str(out)]), capture_output=True, text=True
        )
    finally:
        for p in [out, *out.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert got.returncode == 2 and got.stdout == "", got.stderr
    line = got.stderr.strip()
    assert "\n" not in line and line.startswith("error: --out") and str(out / ARTIFACT_DIR) in line, line
    assert "does not allow writing" in line and (out / DB_NAME).read_bytes() == before


def test_a_store_from_a_newer_batchlab_is_refused_with_the_upgrade_hint(results_dir, tmp_path, capsys, no_training):
    out = tmp_path / "newer"
    shutil.copytree(results_dir, out)
    db = sqlite3.connect(out / DB_NAME)
    db.execute("PRAGMA user_version=99")
    db.close()
    _refuses_and_keeps(out, capsys, "schema version 99", "upgrade batchlab")


# --- damaged array files -------------------------------------------------------------------------------
# noise-scale's reference run (checkpoints after epochs 1 and 2) and its two tasks, which store arrays
NOISE = ["train_subset=1024", "test_subset=200", "widths=16", "early_epoch=1", "late_epoch=2", "examples=128"]
NOISE_TASKS = [*NOISE, "draws=4", "bootstrap=10", "small_batch=8", "big_batch=64"]
# gradient-variance on the same run: its checkpoint task starts from the stored weights after epoch 1
VARIANCE = [*NOISE, "draws=4", "batch_sizes=1,4", "regression_n=256"]
DAMAGE = {
    "empty": lambda data: b"",
    "cut": lambda data: data[: len(data) // 2],
    "flipped": lambda data: data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:],
    "garbage": lambda data: b"x" * len(data),
}


@pytest.fixture(scope="module")
def arrays_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("arrays")
    assert cli.run_cli(["run", "noise-scale", *set_args(NOISE_TASKS), "--device", "cpu", "--out", str(out)]) == 0
    return out


def damage(out: Path, unit, name: str, how: str) -> Path:
    """Damage the file of `unit`'s array `name` (a task's result, or a checkpoint's "param:..." array)."""
    epoch = -1 if isinstance(unit, TaskSpec) else 1
    with Store(out) as store:
        (ref,) = [a for a in store.artifacts(unit.key) if (a.name, a.epoch) == (name, epoch)]
        path = store.artifact_path(ref.sha256)
    path.write_bytes(DAMAGE[how](path.read_bytes()))
    return path


@pytest.mark.parametrize("how", ["empty", "cut", "garbage"])
def test_a_damaged_array_file_is_one_line_exit_2_and_nothing_is_written(arrays_dir, tmp_path, capsys, how):
    _, (early, _) = make_config(get_study("noise-scale"), "quick", parse_sets(NOISE_TASKS))
    cases = [
        (["report", "noise-scale", *set_args(NOISE_TASKS)], early, "bootstrap_trace_sigma"),  # a task's result
        (["run", "gradient-variance", *set_args(VARIANCE)], early.start.run, "param:net.0.weight"),  # a task's start
    ]
    for i, (args, unit, name) in enumerate(cases):
        out = tmp_path / str(i)
        shutil.copytree(arrays_dir, out)
        path = damage(out, unit, name, how)
        before = snapshot(out)
        code = cli.run_cli([*args, "--out", str(out)])
        stdout, err = capsys.readouterr()
        if args[0] == "run":  # `run` computes a damaged unit again (with a note naming the file) rather than stop
            assert code == 0 and f"{path} is damaged or missing" in err and "Traceback" not in err, err
            continue
        line = err.splitlines()[-1]  # after the plan's progress lines
        assert code == 2 and stdout == "" and "Traceback" not in err and line.startswith("error: "), err
        assert "damaged: move it aside" in line, line
        assert path.name in line or f"the checkpoint after epoch 1 of run {unit.key}" in line, line
        assert snapshot(out) == before


@pytest.mark.parametrize("how", ["cut", "flipped", "empty"])
def test_a_damaged_kept_state_is_set_aside_and_its_runs_train_again(tmp_path, capsys, monkeypatch, how):
    """The state Ctrl-C kept (partial/*.npz) is no result: damaged, it is not resumed from, and the runs train
    again from the start to the numbers of an uninterrupted run."""
    sets = [*SMALL_SWEEP, "epochs=2"]
    reference = tmp_path / "reference"
    assert cli.run_cli(["run", "batch-size-sweep", *set_args(sets), "--out", str(reference)]) == 0
    args = ["run", "batch-size-sweep", *set_args(sets), "--out", str(tmp_path / "res")]
    epoch = cli.TrainingProgress.epoch

    def ctrl_c_after_the_first_epoch(self, runs, epochs):
        epoch(self, runs, epochs)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.TrainingProgress, "epoch", ctrl_c_after_the_first_epoch)
    assert cli.run_cli(args) == 130
    monkeypatch.undo()
    (kept,) = (tmp_path / "res" / "partial").glob("*.npz")
    kept.write_bytes(DAMAGE[how](kept.read_bytes()))
    capsys.readouterr()
    assert cli.run_cli(args) == 0
    assert "continue after epoch" not in capsys.readouterr().err
    assert store_dump(tmp_path / "res") == store_dump(reference)


# --- damaged dataset files ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fashion_copy(tmp_path_factory):
    if FASHION_DIR is None:
        pytest.skip("no local Fashion-MNIST copy (set BATCHLAB_DATA, or apt-get install dataset-fashion-mnist)")
    root = tmp_path_factory.mktemp("fashion")
    for path in FASHION_DIR.iterdir():
        shutil.copy(path, root / path.name)
    return root


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(where=st.floats(min_value=0.0, max_value=0.999), truncate=st.booleans())
def test_a_damaged_dataset_file_is_named_in_one_line_and_nothing_is_written(
    where, truncate, fashion_copy, tmp_path_factory, capsys, monkeypatch
):
    monkeypatch.setenv("BATCHLAB_OFFLINE", "1")
    damaged = fashion_copy / "t10k-labels-idx1-ubyte.gz"
    good = (FASHION_DIR / damaged.name).read_bytes()
    at_byte = int(where * len(good))
    data = good[:at_byte] if truncate else good[:at_byte] + bytes([good[at_byte] ^ 0xFF]) + good[at_byte + 1 :]
    damaged.write_bytes(data)
    out = tmp_path_factory.getbasetemp() / "never-created-by-data"
    try:
        sets = ["dataset=fashion-mnist", "epochs=1", "train_subset=512", "widths=8", "batch_sizes=64,128"]
        args = ["run", "batch-size-sweep", *set_args(sets), "--out", str(out)]
        line = assert_refused(cli.run_cli([*args, "--data-dir", str(fashion_copy)]), *capsys.readouterr())
    finally:
        damaged.write_bytes(good)
    assert str(damaged) in line and "sha256 mismatch" in line
    assert not out.exists()


# --- huge and odd numbers ------------------------------------------------------------------------------
def _numeric(d: dict) -> bool:
    return _numeric(d["item"]) if d["type"] == "list" else d["type"] in ("int", "float")


NUMERIC = [(s, k, d) for s, k, d in FIELDS if _numeric(d)]


def test_every_numeric_config_field_has_an_upper_bound():
    """So that no number makes the work infinite or unrepresentable (batchlab/bounds.py)."""

    def unbounded(d):
        return unbounded(d["item"]) if d["type"] == "list" else d["high"] is None

    assert [(s, k) for s, k, d in NUMERIC if unbounded(d)] == []


DIGITS_5000 = "9" * 5000  # int() of more than 4300 digits raises ValueError
HUGE = [DIGITS_5000, "-" + DIGITS_5000, "0." + "0" * 4999 + "1", "9" * 4300, "1e999", "-1e999", "1e308", "4.9e-324"]
HUGE += [str(2**63), str(2**64), str(-(2**63)), "1e8", "1e12", "100000000", str(2**20 + 1), str(2**31), "1e6", "-0"]


@st.composite
def huge_sets(draw) -> tuple[str, str]:
    """(study, one --set argument): a huge, tiny or odd number for one of its numeric keys (alone, or in a list)."""
    name, key, d = draw(st.sampled_from(NUMERIC))
    value = draw(
        st.one_of(
            st.sampled_from(HUGE),
            st.integers(min_value=-(10**40), max_value=10**40).map(str),
            st.floats(allow_nan=False).map(repr),
            st.integers(min_value=4290, max_value=4310).map(lambda n: "8" * n),
        )
    )
    if d["type"] == "list" and draw(st.booleans()):
        value = f"{value},{value}"
    return name, f"{key}={value}"


@pytest.fixture(scope="module")
def warm_dry_runs():
    """Every study's dry run once (the data loaded and cached, the device's matmul rate measured), so that the
    memory measured below is what the plan takes."""
    for name in REGISTRY:
        assert cli.run_cli(["run", name, "--dry-run", "--device", "cpu", "--out", "/nonexistent/never"]) == 0


DRY_RUN_PEAK_MB = 32  # the Python heap a dry run may take (epochs=1e12 once took 23.8 GB)
DRY_RUN_RSS_MB = 256  # and the process's memory, tensors included (widths=2^20 built a 3.3 GB model to count FLOPs)


def _rss_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def dry_run_with_peaks(args: list[str]) -> tuple[int, int, int]:
    """(exit code, peak Python heap in MB, peak growth of the resident memory in MB) of one in-process command."""
    Path("/proc/self/clear_refs").write_text("5")  # resets the resident high-water mark (Linux)
    before = _rss_kb("VmRSS")
    tracemalloc.start()
    try:
        code = cli.run_cli(args)
        heap = tracemalloc.get_traced_memory()[1] >> 20
    finally:
        tracemalloc.stop()
    return code, heap, (_rss_kb("VmHWM") - before) >> 10


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=huge_sets())
def test_a_huge_or_odd_number_is_one_line_exit_2_or_a_dry_run_in_little_memory(
    case, warm_dry_runs, tmp_path_factory, capsys
):
    name, arg = case
    out = tmp_path_factory.getbasetemp() / "never-created-by-dry-runs"
    code, heap, rss = dry_run_with_peaks(["run", name, "--set", arg, "--dry-run", "--device", "cpu", "--out", str(out)])
    stdout, err = capsys.readouterr()
    if code == 0:
        assert heap < DRY_RUN_PEAK_MB and rss < DRY_RUN_RSS_MB, (arg, heap, rss)
    else:
        line = assert_refused(code, stdout, err)
        assert len(line) < 300, line  # the number is not echoed whole
    assert not out.exists()


def test_a_5000_digit_number_and_a_trillion_epochs_are_one_line_each(capsys):
    for arg, fragment in (
        (f"lr={DIGITS_5000}", "lr"),
        ("epochs=1e12", "epochs"),
        (f"widths=8,{DIGITS_5000}", "widths"),
    ):
        code = cli.run_cli(["run", "batch-size-sweep", "--set", arg, "--dry-run", "--device", "cpu"])
        line = assert_refused(code, *capsys.readouterr(), fragment)
        assert len(line) < 300, line


def test_a_million_epochs_are_counted_without_being_listed(warm_dry_runs, capsys):
    """The dry run counts steps from the batch schedule's segments: no list of a million epochs."""
    sets = ["epochs=1000000", "batch_sizes=64,1000", "train_subset=1000", "seeds=2"]
    code, heap, rss = dry_run_with_peaks(["run", "batch-size-sweep", *set_args(sets), "--dry-run", "--device", "cpu"])
    stdout, _ = capsys.readouterr()
    assert code == 0 and heap < DRY_RUN_PEAK_MB and rss < DRY_RUN_RSS_MB, (heap, rss)
    assert "(4000000 run-epochs, 34000000 steps)" in stdout, stdout  # 1000 examples: 16 + 1 steps per epoch


def test_the_widest_layers_are_estimated_without_being_built(warm_dry_runs, capsys):
    """FLOPs are counted on the meta device: two layers of 2^20 units would be 4 TB of weights."""
    args = ["run", "batch-size-sweep", "--set", "widths=1048576,1048576", "--dry-run", "--device", "cpu"]
    code, heap, rss = dry_run_with_peaks(args)
    stdout, _ = capsys.readouterr()
    assert code == 0 and heap < DRY_RUN_PEAK_MB and rss < DRY_RUN_RSS_MB, (heap, rss)
    assert "FLOPs" in stdout
