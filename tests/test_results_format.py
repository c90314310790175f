"""Results leave batchlab: `load_metrics` gives a store's metrics as flat records (what pandas reads), equal to
the stored rows; docs/results-format.md documents claims.json and the tables."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import batchlab
from batchlab.engine import RunSpec
from batchlab.store import DB_NAME, SPEC_FIELDS, Store, load_metrics

ROOT = Path(__file__).resolve().parents[1]


def _metrics(spec: RunSpec, acc0: float, diverged_at: int | None = None) -> list[dict]:
    rows = []
    for epoch in range(3):
        step = 10 * epoch
        bad = diverged_at is not None and step >= diverged_at
        rows.append(
            {
                "epoch": epoch,
                "step": step,
                "train_acc": float("nan") if bad else acc0 + 0.1 * epoch,
                "test_loss": float("inf") if bad else 2.0 - epoch,
            }
        )
    return rows


@pytest.fixture()
def store_dir(tmp_path):
    runs = {
        RunSpec(batch_size=64, lr=0.1, epochs=2, seed=0): _metrics(RunSpec(), 0.5),
        RunSpec(batch_size=256, lr=0.4, epochs=2, seed=1, optimizer="adam"): _metrics(RunSpec(), 0.3, diverged_at=20),
    }
    with Store(tmp_path) as store:
        for spec, metrics in runs.items():
            store.save_run(
                key=spec.key,
                config=spec.full_dict(),
                seed=spec.seed,
                status="diverged" if spec.batch_size == 256 else "finished",
                diverged_step=20 if spec.batch_size == 256 else None,
                steps=20,
                wall_s=1.0,
                group_size=1,
                env={"device": "cpu"},
                metrics=metrics,
            )
        store.save_run(
            key="task-1",
            config={"kind": "rerun-alone", "args": {}, "seed": 0, "start": None},
            seed=0,
            status="finished",
            diverged_step=None,
            steps=0,
            wall_s=0.1,
            group_size=1,
            env={},
            metrics=[{"epoch": 0, "step": 0, "test_acc": 0.9}],
            kind="task:rerun-alone",
        )
        first = next(iter(runs)).key
        store.save_study(name="s", profile="quick", config={}, run_keys=[first], wall_s=1.0, meta={})
    return tmp_path, runs


def test_load_metrics_rows_equal_the_stored_metrics(store_dir):
    path, runs = store_dir
    rows = load_metrics(path)
    with Store(path) as store:
        stored = store.runs([s.key for s in runs])
    expected = [
        (key, {k: (math.nan if v is None else v) for k, v in m.items()})
        for key in sorted(stored)
        for m in stored[key].metrics
    ]
    assert len(rows) == len(expected) == 6
    for row, (key, m) in zip(rows, expected):
        assert row["key"] == key and row["epoch"] == m["epoch"] and row["step"] == m["step"]
        for name in ("train_acc", "test_loss"):
            assert row[name] == pytest.approx(m[name], nan_ok=True)
    # a non-finite value (stored as NULL) comes back as NaN
    bad = [r for r in rows if r["status"] == "diverged" and r["step"] >= 20]
    assert bad and all(math.isnan(r["train_acc"]) and math.isnan(r["test_loss"]) for r in bad)


def test_load_metrics_rows_carry_the_spec_fields(store_dir):
    path, runs = store_dir
    rows = load_metrics(path)
    for spec in runs:
        mine = [r for r in rows if r["key"] == spec.key]
        assert len(mine) == 3
        for r in mine:
            assert r["kind"] == "train" and r["seed"] == spec.seed
            for f in SPEC_FIELDS:
                value = getattr(spec, f)
                assert r[f] == (list(value) if isinstance(value, tuple) else value), f
    assert list(rows[0])[:4] == ["key", "kind", "status", "seed"]


def test_load_metrics_tasks_study_filter_and_fields(store_dir):
    path, runs = store_dir
    assert all(r["kind"] == "train" for r in load_metrics(path))
    with_tasks = load_metrics(path, tasks=True)
    task_rows = [r for r in with_tasks if r["key"] == "task-1"]
    assert len(task_rows) == 1 and task_rows[0]["test_acc"] == 0.9 and task_rows[0]["batch_size"] is None
    first = next(iter(runs)).key
    assert {r["key"] for r in load_metrics(path, study="s")} == {first}
    narrow = load_metrics(path / DB_NAME, fields=("lr",))  # the database file works as well as its folder
    assert set(narrow[0]) == {"key", "kind", "status", "seed", "lr", "epoch", "step", "train_acc", "test_loss"}
    with pytest.raises(KeyError, match="no recorded execution of study 'nope'"):
        load_metrics(path, study="nope")


def test_load_metrics_refuses_a_missing_store_and_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no batchlab store"):
        load_metrics(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_load_metrics_is_the_top_level_one_liner(store_dir):
    path, _ = store_dir
    assert batchlab.load_metrics is load_metrics
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(batchlab.load_metrics(path))
    assert len(df) == 6 and {"batch_size", "lr", "optimizer", "epoch", "test_loss"} <= set(df.columns)


def test_results_format_doc_names_every_claims_field_and_the_one_liner():
    doc = (ROOT / "docs" / "results-format.md").read_text(encoding="utf-8")
    for field in ("study", "profile", "device", "git_commit", "code_version", "library versions", "claims"):
        assert f"`{field}`" in doc, field
    for field in ("id", "statement", "source", "rule", "verdict", "evidence", "why"):
        assert f"`{field}`" in doc, field
    assert 'pd.DataFrame(batchlab.load_metrics("batchlab-results"))' in doc
    for f in SPEC_FIELDS:
        assert f"`{f}`" in doc, f
