"""Bad input, generated: every study's `--set` values, damaged stores and damaged dataset files.

Whatever hypothesis makes up, the CLI answers with one line on stderr, exit code 2, and writes nothing:
no results directory appears, and an existing one keeps every byte.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import string
import tracemalloc
import types
import typing
from pathlib import Path

import annotated_types as at
import pytest
from conftest import local_fashion_mnist, set_args
from conftest import one_line_error as assert_refused
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchlab import cli
from batchlab.cli import commands
from batchlab.store import DB_NAME
from batchlab.studies import REGISTRY

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
    def trained(prep):
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
    run = ["run", "batch-size-sweep", *set_args(SMALL_SWEEP), "--out", str(out)]
    return [run, ["report", "batch-size-sweep", "--out", str(out)]]


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


def test_a_store_from_a_newer_batchlab_is_refused_with_the_upgrade_hint(results_dir, tmp_path, capsys, no_training):
    out = tmp_path / "newer"
    shutil.copytree(results_dir, out)
    db = sqlite3.connect(out / DB_NAME)
    db.execute("PRAGMA user_version=99")
    db.close()
    _refuses_and_keeps(out, capsys, "schema version 99", "upgrade batchlab")


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
