"""The bench's arithmetic and the README table it generates (timings themselves live in results)."""

from __future__ import annotations

import json

import pytest

from batchlab.bench import END, START, floors, performance_table, update_readme, workload

CEIL = {"fp32_flops_per_s": 50e12, "bandwidth_bytes_per_s": 3e12}


def test_floor_is_the_larger_of_flop_and_byte_time():
    f = floors(1_000_000, 64, 32, CEIL)
    assert f["flop_s"] == pytest.approx(6 * 1e6 * 64 * 32 / 50e12)
    assert f["byte_s"] == pytest.approx((24 * 1e6 + 4 * 785 * 64) * 32 / 3e12)
    assert f["floor_s"] == max(f["flop_s"], f["byte_s"]) and f["bound"] == "bytes"
    assert floors(1_000_000, 4096, 1, CEIL)["bound"] == "FLOPs"


def test_workload_scales_per_step_times():
    row = workload("w", 0.6, "epoch", 2e-3, 1e-3, floors(10, 1, 1, CEIL), 100)
    assert row["naive_s"] == pytest.approx(0.2) and row["engine_s"] == pytest.approx(0.1)
    assert row["speedup"] == pytest.approx(2) and row["meets_target"] is True


def test_readme_table_is_generated_from_recorded_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    row = workload("P1 demo", 0.6, "epoch", 2e-3, 1e-3, floors(1_000_000, 64, 32, CEIL), 938)
    (results / "bench-gpu-2026-01-01.json").write_text(
        json.dumps(
            {"date": "2026-01-01T00:00:00", "device": "Some GPU", "torch": "2.x", "quick": False, "workloads": [row]}
        )
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\nold\n{END}\ntail\n")
    assert update_readme(readme, results)
    text = readme.read_text()
    assert "old" not in text and "| Some GPU | P1 demo |" in text and text.endswith(f"{END}\ntail\n")
    assert "938.0 ms" in text and "missed" in text  # 1 ms x 938 steps against a 0.6 s target
    assert not update_readme(readme, results)  # idempotent
    assert "No GPU result" in performance_table(tmp_path / "empty")


def _recorded(directory, device="Some GPU"):
    directory.mkdir(parents=True, exist_ok=True)
    row = workload("P1 demo", 0.6, "epoch", 2e-3, 1e-3, floors(1_000_000, 64, 32, CEIL), 938)
    result = {"date": "2026-01-01T00:00:00", "device": device, "torch": "2.x", "quick": False, "workloads": [row]}
    (directory / f"bench-{device.lower().replace(' ', '-')}-2026-01-01.json").write_text(json.dumps(result))
    return result


def test_bench_without_table_never_edits_the_readme(tmp_path, monkeypatch, capsys):
    """`bench --out DIR` writes its JSON into DIR and leaves the README (and its recorded rows) alone."""
    from batchlab import bench, cli

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\n| recorded H100 row |\n{END}\n")
    before = readme.read_bytes()
    monkeypatch.setattr(bench, "run_bench", lambda dev, **kw: _recorded(tmp_path / "elsewhere", "Other CPU"))
    out = tmp_path / "out"
    assert cli.run_cli(["bench", "--device", "cpu", "--quick", "--out", str(out), "--readme", str(readme)]) == 0
    assert readme.read_bytes() == before
    assert [p.name for p in out.iterdir()] == ["bench-other-cpu-2026-01-01.json"]
    assert "README" not in capsys.readouterr().out


def test_bench_table_regenerates_the_readme_from_out_without_timing(tmp_path, monkeypatch, capsys):
    from batchlab import bench, cli

    def no_timing(*a, **kw):
        raise AssertionError("--table must not time anything")

    monkeypatch.setattr(bench, "run_bench", no_timing)
    _recorded(tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\nold\n{END}\n")
    args = ["bench", "--table", "--out", str(tmp_path / "results"), "--readme", str(readme)]
    assert cli.run_cli(args) == 0
    assert "| Some GPU | P1 demo |" in readme.read_text()
    assert capsys.readouterr().out.strip() == f"updated the performance table in {readme}"
    assert cli.run_cli(args) == 0 and capsys.readouterr().out.strip() == f"{readme}: the table is up to date"


def test_bench_table_with_a_missing_readme_is_one_line_exit_2(tmp_path, capsys):
    from batchlab import cli

    assert cli.run_cli(["bench", "--table", "--readme", str(tmp_path / "nope.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such file" in err and "Traceback" not in err


def test_a_quick_result_is_saved_beside_the_full_one_of_the_same_day(tmp_path):
    from batchlab.bench import save

    full = {"date": "2026-01-01T00:00:00", "device": "cpu (x, 2 threads)", "quick": False, "workloads": []}
    paths = [save(full, tmp_path), save(full | {"quick": True}, tmp_path)]
    assert [p.name for p in paths] == ["bench-cpu-2026-01-01.json", "bench-cpu-quick-2026-01-01.json"]
    assert json.loads(paths[0].read_text())["quick"] is False


def test_cpu_targets_are_ratios_to_the_textbook_loop_and_the_floor():
    from batchlab.bench import target_text, workload

    floor = {"floor_s": 1.0, "flop_s": 1.0, "byte_s": 0.5, "bound": "FLOPs"}
    # engine 1.25 s against the textbook's 2.5 s: 2x, and 80 % of a 1 s floor
    met = workload("P", None, "epoch", 2.5, 1.25, floor, 1, target_speedup=2.0, target_fraction=0.75)
    assert met["meets_target"] is True and target_text(met) == "≥ 2x textbook, ≥ 75% of floor met"
    slow = workload("P", None, "epoch", 2.5, 1.4, floor, 1, target_speedup=2.0)  # 1.79x
    assert slow["meets_target"] is False and target_text(slow) == "≥ 2x textbook missed"
    assert workload("P", None, "epoch", 2.5, 1.4, floor, 1)["meets_target"] is None
    assert target_text(workload("P", 0.6, "epoch", 2.5, 0.5, floor, 1)) == "≤ 600.0 ms met"


def test_the_peer_column_and_its_target(tmp_path):
    """PyTorch's own ensembling recipe (the peer) beside the textbook loop: a column of the table, and a target
    the generic path meets when it is at least as fast."""
    from batchlab.bench import target_text

    floor = {"floor_s": 1.0, "flop_s": 1.0, "byte_s": 0.5, "bound": "FLOPs"}
    met = workload("P3", None, "epoch", 2.5, 1.0, floor, 1, target_speedup=1.0, peer_s=1.2, target_peer=True)
    assert met["meets_target"] is True and met["peer_s"] == 1.2 and target_text(met) == "≥ 1x textbook, ≤ peer met"
    slow = workload("P3", None, "epoch", 2.5, 1.3, floor, 1, target_speedup=1.0, peer_s=1.2, target_peer=True)
    assert slow["meets_target"] is False
    results = tmp_path / "results"
    results.mkdir()
    old = workload("P1", None, "epoch", 2.5, 1.0, floor, 1)
    del old["peer_s"]  # a result recorded before the peer existed
    result = {"date": "2026-01-01T00:00:00", "device": "cpu", "torch": "2.x", "quick": True, "workloads": [met, old]}
    (results / "bench-cpu-quick-2026-01-01.json").write_text(json.dumps(result))
    table = performance_table(results)
    assert "| naive | peer | engine |" in table
    assert "| cpu, quick model | P3 | 2.50 s | 1.20 s | 1.00 s |" in table
    assert "| cpu, quick model | P1 | 2.50 s | — | 1.00 s |" in table


def test_the_peer_recipe_and_the_generic_path_time_a_few_steps(one_thread):
    import torch

    from batchlab.bench import generic_spec, generic_steps_time, peer_steps_time, reference_spec

    cpu = torch.device("cpu")
    specs = [reference_spec(32, seed=s, lr=0.01 * (1 + s), widths=(8,), train_subset=512) for s in range(3)]
    assert 0 < peer_steps_time(specs, cpu, 3) < 5
    generic = [generic_spec(32, (8,), seed=s, lr=0.01 * (1 + s), train_subset=512) for s in range(3)]
    seconds, why = generic_steps_time(generic, cpu, 3)
    assert why == "" and 0 < seconds < 5
