"""Shared test fixtures and helpers (`from conftest import store_dump`)."""

import json
from pathlib import Path

import pytest
import torch

from batchlab.store import Store


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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny workloads: one thread is as fast, and far faster on a CPU shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
