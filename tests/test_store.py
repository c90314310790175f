"""The SQLite store: round trips, NULL for non-finite metrics, replacement, study records, WAL."""

import math
import sqlite3

import numpy as np
import pytest

from batchlab.store import DB_NAME, Store

CONFIG = {"batch_size": 64, "lr": 0.1, "widths": [32, 32], "lr_schedule": {"kind": "constant"}}
ENV = {"device": "cpu (test)", "torch": "x.y", "cuda": None, "git_commit": None}


def metrics(n=3, **override):
    rows = [{"epoch": e, "step": 10 * e, "train_acc": 0.1 * e, "test_loss": 2.0 - 0.1 * e} for e in range(n)]
    for e, values in override.items():
        rows[int(e[1:])].update(values)
    return rows


def save(store, key="k1", **kw):
    args = dict(
        key=key,
        config=CONFIG,
        seed=3,
        status="finished",
        diverged_step=None,
        steps=20,
        wall_s=1.5,
        group_size=4,
        env=ENV,
        metrics=metrics(),
    )
    return store.save_run(**(args | kw))


def test_round_trip(tmp_path):
    with Store(tmp_path / "res") as store:
        save(store)
    assert (tmp_path / "res" / DB_NAME).is_file()
    with Store(tmp_path / "res") as store:  # a fresh connection reads what the first wrote
        rec = store.runs(["k1", "absent"])
    assert list(rec) == ["k1"]
    r = rec["k1"]
    assert r.config == CONFIG and r.env == ENV
    assert (r.seed, r.status, r.diverged_step, r.steps, r.wall_s, r.group_size) == (3, "finished", None, 20, 1.5, 4)
    assert r.metrics == metrics()
    assert [m["epoch"] for m in r.metrics] == [0, 1, 2]
    assert r.finished_at


def test_nonfinite_metrics_are_null(tmp_path):
    rows = metrics(
        e1={"train_acc": float("nan"), "test_loss": float("inf")},
        e2={"train_acc": np.float32("nan"), "test_loss": None},
    )
    with Store(tmp_path) as store:
        save(store, status="diverged", diverged_step=12, metrics=rows)
        raw = store.db.execute("SELECT epoch, name, value FROM metrics WHERE epoch > 0 ORDER BY epoch, name").fetchall()
        r = store.runs(["k1"])["k1"]
    assert raw == [(1, "test_loss", None), (1, "train_acc", None), (2, "test_loss", None), (2, "train_acc", None)]
    assert (r.status, r.diverged_step) == ("diverged", 12)
    assert r.metrics[1]["train_acc"] is None and r.metrics[2]["test_loss"] is None
    assert r.metrics[0]["train_acc"] == 0.0 and math.isclose(r.metrics[0]["test_loss"], 2.0)


def test_done(tmp_path):
    with Store(tmp_path) as store:
        assert store.done([]) == set()
        assert store.done(["a", "b"]) == set()
        save(store, "a")
        save(store, "c", status="diverged", diverged_step=1)
        assert store.done(["a", "b", "c"]) == {"a", "c"}
        assert store.done(iter(["a"])) == {"a"}  # any iterable
        keys = [f"x{i}" for i in range(1200)] + ["a"]  # more than one IN (...) chunk
        assert store.done(keys) == {"a"}
        assert store.count_runs() == 2


def test_replacing_a_run_replaces_its_metrics(tmp_path):
    with Store(tmp_path) as store:
        save(store, metrics=metrics(5))
        assert save(store, seed=4, metrics=metrics(2)) is False  # the first copy of a key wins
        save(store, seed=4, metrics=metrics(2), wall_s=9.0, replace=True)
        r = store.runs(["k1"])["k1"]
        n_metric_rows = store.db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        assert store.count_runs() == 1
    assert (r.seed, r.wall_s, len(r.metrics)) == (4, 9.0, 2)
    assert n_metric_rows == 2 * 2  # two epochs x two metrics: the old five epochs are gone


def test_a_failed_write_leaves_no_trace(tmp_path):
    """A run is one transaction: if its metrics cannot be written, the run row is rolled back too."""
    bad = metrics() + [{"epoch": 0, "step": 0, "train_acc": 0.5}]  # duplicate (key, epoch, name)
    with Store(tmp_path) as store:
        with pytest.raises(sqlite3.IntegrityError):
            save(store, metrics=bad)
        assert store.count_runs() == 0
        assert store.db.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0
        save(store)  # the store is still usable
        assert store.done(["k1"]) == {"k1"}


def test_study_records(tmp_path):
    with Store(tmp_path) as store:
        assert store.study("s") is None
        store.save_study(
            name="s",
            profile="quick",
            config={"lr": 0.1, "widths": [32]},
            run_keys=["a", "b"],
            wall_s=2.0,
            meta={"device": "cpu"},
        )
        store.save_study(name="s", profile="full", config={"lr": 0.2}, run_keys=["c"], wall_s=3.0, meta={})
        store.save_study(name="other", profile="quick", config={}, run_keys=[], wall_s=0.0, meta={})
        latest = store.study("s")  # both written within one second: the latest write still wins
        assert (latest["profile"], latest["config"], latest["run_keys"]) == ("full", {"lr": 0.2}, ["c"])
        quick = store.study("s", "quick")
        assert quick["config"] == {"lr": 0.1, "widths": [32]} and quick["meta"] == {"device": "cpu"}
        assert quick["wall_s"] == 2.0 and quick["updated_at"]
        store.save_study(name="s", profile="quick", config={"lr": 0.3}, run_keys=[], wall_s=1.0, meta={})
        assert store.study("s")["config"] == {"lr": 0.3}  # re-recording quick makes it the latest
        assert store.study("s", "missing") is None
        assert store.db.execute("SELECT COUNT(*) FROM studies").fetchone()[0] == 3


def test_wal_mode_and_foreign_keys(tmp_path):
    with Store(tmp_path) as store:
        assert store.journal_mode() == "wal"
        assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.db.execute("PRAGMA user_version").fetchone()[0] >= 1
    db = sqlite3.connect(tmp_path / DB_NAME)  # WAL is a property of the file, not of the connection
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_two_connections(tmp_path):
    """A reader sees a run as soon as the writer's transaction commits (resume from another process)."""
    with Store(tmp_path) as writer, Store(tmp_path) as reader:
        assert reader.done(["k1"]) == set()
        save(writer)
        assert reader.done(["k1"]) == {"k1"}
        assert reader.finished_at() == writer.finished_at()


def test_exists_creates_nothing(tmp_path):
    assert not Store.exists(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    Store(tmp_path / "nope").close()
    assert Store.exists(tmp_path / "nope")


# --- damage: array files checked against their SHA-256, foreign files never written, read-only opening ---------
def tamper(path, array) -> None:
    """Replace a stored file by a valid .npy (or .npz, given a dict) of other values, keeping its name."""
    path.chmod(0o644)
    with open(path, "wb") as fh:
        np.savez(fh, **array) if isinstance(array, dict) else np.save(fh, array)


def test_an_array_file_that_is_not_its_sha256_is_damaged_and_named(tmp_path):
    a, b = np.arange(12.0).reshape(3, 4), np.ones(5, dtype=np.float32)
    with Store(tmp_path) as store:
        save(store, "k1", arrays={("x", -1): a})
        save(store, "k2", arrays={("param:w", 1): b})
        (ref1,), (ref2,) = store.artifacts("k1"), store.artifacts("k2")
        path1, path2 = store.artifact_path(ref1.sha256), store.artifact_path(ref2.sha256)
        tamper(path1, 2 * a)  # a valid .npy, values x2
        data = bytearray(path2.read_bytes())
        data[-1] ^= 0x01  # one flipped bit
        path2.write_bytes(bytes(data))
        for ref, path in ((ref1, path1), (ref2, path2)):
            with pytest.raises(OSError, match=f"{path.name} is damaged"):
                store.load_array(ref)
        assert store.damaged(["k1", "k2", "absent"]) == {"k1": path1, "k2": path2}
        path2.unlink()
        with pytest.raises(OSError, match=f"{path2.name} is missing"):
            store.checkpoint("k2", 1)
        assert store.damaged(["k2"]) == {"k2": path2}
        # writing the same array again repairs its file (equal content, equal name: the file is rewritten)
        store.put_array(a)
        np.testing.assert_array_equal(store.load_array(ref1), a)


def test_a_kept_state_that_is_not_its_sha256_is_refused_and_forgotten(tmp_path):
    from batchlab.driver import kept_states
    from batchlab.engine import RunSpec

    spec = RunSpec(batch_size=64, epochs=2, train_subset=64, test_subset=64, widths=(4,))
    weights = {"w": np.arange(4.0)}
    with Store(tmp_path) as store:
        store.save_partial([spec.key], 1, {"steps": 1}, weights)
        (record,) = store.partials()
        np.testing.assert_array_equal(store.load_partial(record)["w"], weights["w"])
        path = store.partial_path(record.sha256)
        tamper(path, {"w": 2 * weights["w"]})  # a valid .npz, weights x2
        with pytest.raises(OSError, match=f"{path.name} is damaged"):
            store.load_partial(record)
        said = []
        assert kept_states(store, [spec], said.append) == []  # not resumed from: the runs start again
        assert len(said) == 1 and str(path) in said[0] and "\n" not in said[0]
        assert store.partials() == []  # forgotten, so the next run does not say it again


def foreign_db(path) -> bytes:
    """Another program's SQLite file (rollback journal, its own table): batchlab must never write it."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('keep me')")
    db.commit()
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize("readonly", [False, True])
def test_a_foreign_sqlite_file_is_refused_and_never_written(tmp_path, readonly):
    from batchlab.store import StoreCorruptError

    before = foreign_db(tmp_path / DB_NAME)
    with pytest.raises(StoreCorruptError, match="not a batchlab store"):
        Store(tmp_path, **({"readonly": True} if readonly else {}))
    assert (tmp_path / DB_NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME]  # no -wal, no -journal left


def test_a_read_only_store_never_writes_its_file(tmp_path):
    with Store(tmp_path) as store:
        save(store, arrays={("x", -1): np.arange(3.0)})
    before = (tmp_path / DB_NAME).read_bytes()
    with Store(tmp_path, readonly=True, check=True) as store:
        assert store.done(["k1"]) == {"k1"}
        np.testing.assert_array_equal(store.load_array(store.artifacts("k1")[0]), np.arange(3.0))
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            save(store, "k2")
    assert (tmp_path / DB_NAME).read_bytes() == before
    with pytest.raises(FileNotFoundError):
        Store(tmp_path / "none", readonly=True)
    assert not (tmp_path / "none").exists()


def test_a_read_only_store_in_a_directory_it_cannot_write_is_read_immutable(tmp_path, monkeypatch):
    """Read-only media: no -shm can be made beside the file, so SQLite is told the file cannot change."""
    from batchlab.store import connection as store_module

    with Store(tmp_path) as store:
        save(store)
    monkeypatch.setattr(store_module, "writable_dir", lambda path: False)
    with Store(tmp_path, readonly=True, check=True) as store:
        assert store.done(["k1"]) == {"k1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME]  # nothing created beside it


def test_a_store_damaged_inside_is_refused_when_checked(tmp_path):
    from batchlab.store import StoreCorruptError

    with Store(tmp_path) as store:
        for i in range(50):
            save(store, f"k{i}")
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("PRAGMA writable_schema=ON")  # make the metrics index disagree with its table, as a flipped byte can
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_metrics_1'").fetchone()
    db.close()
    data = bytearray((tmp_path / DB_NAME).read_bytes())
    page = 4096 * (root - 1)
    data[page + 3 : page + 5] = b"\x00\x00"  # the index's root page says it holds no cells
    (tmp_path / DB_NAME).write_bytes(bytes(data))
    for readonly in (False, True):
        with pytest.raises(StoreCorruptError, match="damaged"):
            Store(tmp_path, readonly=readonly, check=True)
    assert (tmp_path / DB_NAME).read_bytes() == bytes(data)


def test_reading_a_v1_store_leaves_its_file_as_it_was(tmp_path):
    """A read-only command on a store of an older schema reads it migrated in memory; the file keeps every byte
    (and gives the numbers that migrating it in place gives)."""
    import shutil
    from pathlib import Path

    from batchlab.store import load_metrics

    v1 = Path(__file__).parent.parent / "benchmarks" / "results" / "spec02-full-h100-2026-11-23" / DB_NAME
    for name in ("read", "migrated"):
        (tmp_path / name).mkdir()
        shutil.copy(v1, tmp_path / name / DB_NAME)
    rows = load_metrics(tmp_path / "read", tasks=True)
    assert (tmp_path / "read" / DB_NAME).read_bytes() == v1.read_bytes()
    assert sorted(p.name for p in (tmp_path / "read").iterdir()) == [DB_NAME]
    Store(tmp_path / "migrated").close()  # migrated in place
    assert len({r["key"] for r in rows}) == 57 and rows == load_metrics(tmp_path / "migrated", tasks=True)
