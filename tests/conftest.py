"""Shared test fixtures and helpers (`from conftest import store_dump, cli_run, ...`), and the test tiers.

Tiers: a test is marked `slow` when it runs a study through the driver, starts a subprocess, drives a browser or
starts Ray (the kinds below). The marks are set here, from one table (`SLOW`: per test file, the tests and the
fixtures of each kind), so test files carry no tier markers. `make test-fast` runs `-m "not slow"` (the edit-test
loop); `make test` runs everything.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from batchlab.store import Store

# --- the tiers -------------------------------------------------------------------------------------------
# A test is `slow` when it (or a fixture it uses) does one of these; everything else is the fast tier:
STUDY = "study"  # runs a study through the driver: `batchlab run/reproduce/report`, run_study, write_report
SUBPROCESS = "subprocess"  # starts a process: `python -m batchlab`, a crash driver, torch.compile's C++ compiler
BROWSER = "browser"  # drives headless Chromium through selenium
RAY = "ray"  # starts Ray

# {test file: {test name (without parameters) or fixture name: kind}}
SLOW: dict[str, dict[str, str]] = {
    "test_adam_sqrt_scaling.py": {"test_the_sqrt_scaling_study_end_to_end": STUDY},
    "test_adam_halflife.py": {"test_the_beta2_halflife_study_end_to_end": STUDY},
    "test_bad_input.py": {
        "results_dir": STUDY,
        "arrays_dir": STUDY,
        "warm_dry_runs": STUDY,
        "test_a_damaged_kept_state_is_set_aside_and_its_runs_train_again": STUDY,
        "test_a_store_on_read_only_media_is_exported": SUBPROCESS,
        "test_a_read_only_folder_inside_out_is_refused_before_training": SUBPROCESS,
    },
    "test_cli.py": {
        "test_error_is_one_unwrapped_line_in_a_real_process": SUBPROCESS,
        "test_quick_profile_rerun_and_report": SUBPROCESS,
        "test_partial_plan_through_the_cli": STUDY,
        "test_interrupt_exits_130_and_resumes": STUDY,
        "test_reproduce": STUDY,
        "test_data_dir_finds_fashion_mnist": STUDY,
    },
    "test_cli_first_hour.py": {
        "results_dir": STUDY,
        "test_version_prints_batchlab_and_torch_versions_in_a_real_process": SUBPROCESS,
        "test_dry_run_then_the_real_run_trains_what_it_said": STUDY,
    },
    "test_adam_surge.py": {"test_the_lr_surge_study_end_to_end": STUDY},
    "test_critical_batch.py": {
        "test_the_staged_plan_runs_end_to_end_and_is_reused": STUDY,
        "test_the_api_takes_module_level_functions_and_answers_for_a_user_model": STUDY,
    },
    "test_curvature_studies.py": {
        "test_the_sharpness_study_end_to_end": STUDY,
        "test_the_edge_of_stability_study_end_to_end": STUDY,
    },
    "test_dynamics.py": {"runs": STUDY},
    "test_equivalence.py": {"test_study_end_to_end": STUDY},
    "test_explorer.py": {"results_dir": STUDY, "browser": BROWSER, "surge_dir": STUDY},
    "test_fast_path.py": {"test_compiled_step_matches_the_plain_step": SUBPROCESS},
    "test_progress.py": {"test_the_cli_log_ends_with_the_stored_mean_metrics": STUDY},
    "test_ray_executor.py": {"local_ray": RAY, "local_results": STUDY},
    "test_reliability.py": {
        "baseline": STUDY,
        "test_ctrl_c_stops_within_two_seconds_with_one_line_saying_what_was_saved": SUBPROCESS,
        "test_processes_that_train_one_run_for_different_checkpoints_all_finish_with_every_checkpoint": SUBPROCESS,
        "test_ctrl_c_while_starting_is_one_line_and_exit_130": SUBPROCESS,
        "test_a_second_ctrl_c_lets_the_first_one_keep_the_state_and_exit_130": SUBPROCESS,
        "test_out_of_memory_splits_the_group_and_gives_the_same_numbers": STUDY,
        "test_out_of_memory_for_a_single_run_is_one_line_exit_2": STUDY,
        "test_a_study_whose_runs_all_diverge_has_every_claim_inconclusive_with_the_reason": STUDY,
        "test_the_report_lists_diverged_runs_and_their_step": STUDY,
        "test_steps_to_target_draws_its_figure_when_nothing_can_go_on_a_log_axis": STUDY,
    },
    "test_resume.py": {
        "reference": STUDY,
        "test_ctrl_c_in_the_cli_says_how_many_epochs_were_kept_and_the_rerun_continues": STUDY,
    },
    "test_runner.py": {
        "test_partial_plan_trains_only_missing_runs": STUDY,
        "test_interrupted_study_resumes": STUDY,
        "test_rerun_and_report_do_not_train": STUDY,
    },
    "test_units.py": {
        "checkpoint_study": STUDY,
        "test_a_v1_store_is_migrated_and_reports_the_same_claims": STUDY,
        "test_rounding_check_reruns_seed_zero_alone_and_reports_it_in_every_claim": STUDY,
    },
    "test_user_cli.py": {"test_the_example_runs_end_to_end": STUDY},
    "test_variants_reports.py": {
        "two_runs": STUDY,
        "test_the_plain_report_hints_at_variants_when_only_they_were_run": STUDY,
        "test_index_lists_variants_apart_with_links_and_the_explorer_still_works": STUDY,
    },
    "test_workloads.py": {"test_the_cli_says_the_extra_is_missing_in_one_line_exit_2": STUDY},
}


def slow_kind(item: pytest.Item) -> str | None:
    """Why `item` is in the slow tier (STUDY, SUBPROCESS, BROWSER, RAY), or None."""
    rules = SLOW.get(Path(str(item.fspath)).name, {})
    name = getattr(item, "originalname", None) or item.name.split("[")[0]
    hits = [rules[n] for n in (name, *getattr(item, "fixturenames", ())) if n in rules]
    return hits[0] if hits else None


def pytest_collection_modifyitems(config, items):
    # the table must name what exists: a renamed file, test or fixture would silently move slow tests to the fast tier
    here = Path(__file__).parent
    stale = [f for f in SLOW if not (here / f).is_file()]
    for module in {item.module for item in items if getattr(item, "module", None) is not None}:
        stale += [f"{module.__name__}.py::{k}" for k in SLOW.get(f"{module.__name__}.py", {}) if not hasattr(module, k)]
    if stale:
        raise pytest.UsageError(f"tests/conftest.py SLOW names what no longer exists: {', '.join(sorted(stale))}")
    for item in items:
        if slow_kind(item) is not None:
            item.add_marker(pytest.mark.slow)


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_thread():
    """Tiny workloads: one thread is as fast, and far faster on a CPU shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- helpers ---------------------------------------------------------------------------------------------


def store_dump(out: Path) -> dict:
    """Every stored unit's numbers (not its timings, group size or environment): status, steps, metrics, array
    contents; two stores with equal dumps hold the same results."""
    with Store(out) as store:
        return {
            key: (
                r.status,
                r.diverged_step,
                r.steps,
                json.dumps(r.metrics, sort_keys=True),
                tuple((a.name, a.epoch, a.sha256) for a in r.artifacts),
            )
            for key, r in store.runs(list(store.finished_at())).items()
        }


def rel_diff(a, b) -> float:
    """||a - b|| / ||b|| in float64: numbers, tensors, or dicts of tensors (the norm over all of them)."""
    if isinstance(b, dict):
        num = math.fsum(float((a[k].double() - b[k].double()).square().sum()) for k in b)
        den = math.fsum(float(b[k].double().square().sum()) for k in b)
        return math.sqrt(num / den)
    if isinstance(b, torch.Tensor):
        return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))
    return abs(a - b) / abs(b)


def cli_run(capsys, *args) -> tuple[int, str, str]:
    """`batchlab ARGS` in this process: (exit code, stdout, stderr)."""
    from batchlab import cli

    code = cli.run_cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, out: str, err: str, *fragments: str) -> str:
    """The one error line of a refused command, without its "error: " (exit 2, nothing on stdout, no traceback),
    holding each of `fragments`."""
    assert code == 2, (code, out, err)
    assert out == "" and "Traceback" not in err, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0].removeprefix("error: ")


def set_args(sets) -> list[str]:
    """`--set` arguments for "key=value" strings or a {key: value} dict (a list or tuple joined by commas)."""
    if isinstance(sets, dict):
        sets = [f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in sets.items()]
    return [a for s in sets for a in ("--set", s)]


# The tiny batch-size sweep of the CLI and runner tests (2 seeds x 2 epochs of a 16-unit MLP on 1024 examples).
TINY_SWEEP = {"epochs": 2, "train_subset": 1024, "test_subset": 200, "widths": 16, "seeds": 2}

# A tiny lr-surge study: 4 batch sizes, 3 lrs per optimizer, 2 seeds, 2 steps from epoch 1 of an 8-unit MLP.
TINY_SURGE = {"dataset": "mnist", "train_subset": 1024, "test_subset": 128, "widths": (8,), "seeds": 2,
              "batch_sizes": (8, 16, 32, 64), "sgd_lrs": (0.03, 0.1, 0.3), "adam_lrs": (0.001, 0.003, 0.01),
              "sign_adam_lrs": (0.001, 0.003, 0.01), "window_steps": 2, "eval_examples": 256, "ref_epochs": 2,
              "target_loss": 5.0, "bootstrap": 20, "noise_examples": 32}  # fmt: skip

# A tiny training run: 256 MNIST examples, a 16-unit MLP, 8 steps per epoch, 2 epochs.
TINY_RUN = dict(train_subset=256, test_subset=64, widths=(16,), batch_size=32, epochs=2)


def tiny_run(**changes):
    """A RunSpec of TINY_RUN with `changes` (a seconds-long run)."""
    from batchlab.engine import RunSpec

    return RunSpec(**(TINY_RUN | changes))


def linear_regression_noise(x, y, w, b=0.0, *, population: int | None = None) -> tuple[float, float, float]:
    """(|G|², tr(Σ), B_simple) of the squared error (x.w + b - y)² over the n examples, by hand in float64.

    Example i's gradient is g_i = 2 r_i [x_i, 1] with r_i = x_i.w + b - y_i; tr(Σ) = Σ_i |g_i - ḡ|² / (n - 1),
    |G|² = |ḡ|² - (1 - n / population) tr(Σ) / n (unbiased; the examples drawn without replacement from
    `population`, by default an infinite one), B_simple = tr(Σ) / |G|² (McCandlish et al. 2018)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64).reshape(-1)
    w, b = np.asarray(w, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(())
    r = x @ w + b - y
    g = 2 * r[:, None] * np.concatenate([x, np.ones((len(r), 1))], axis=1)
    n, mean = len(r), g.mean(axis=0)
    trace = float(np.square(g - mean).sum() / (n - 1))
    grad_sq = float(mean @ mean) - (1 - (n / population if population else 0)) * trace / n
    return grad_sq, trace, trace / grad_sq


def local_fashion_mnist() -> Path | None:
    """The Fashion-MNIST folder batchlab itself would find without downloading ($BATCHLAB_DATA, the Debian
    package's folder, the user cache), or None: the tests that need the real files skip without one."""
    from batchlab.datasets import DataError, registry

    offline = os.environ.get("BATCHLAB_OFFLINE")
    os.environ["BATCHLAB_OFFLINE"] = "1"
    try:
        return registry.find_fashion_mnist()
    except DataError:
        return None
    finally:
        if offline is None:
            del os.environ["BATCHLAB_OFFLINE"]
        else:
            os.environ["BATCHLAB_OFFLINE"] = offline


def default_sigint() -> None:
    """preexec_fn of a child a test sends Ctrl-C to: SIGINT back to its default disposition. A test suite started
    as a background job (`make test &`) inherits SIGINT *ignored*, which its children would inherit too, so the
    user's Ctrl-C, the thing under test, would never arrive."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
