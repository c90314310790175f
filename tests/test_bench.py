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
