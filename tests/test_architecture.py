"""docs/architecture.md draws the layers as the imports are, and the parts import each other one way only."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def layers():
    spec = importlib.util.spec_from_file_location("layers", ROOT / "scripts" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["layers"] = module
    spec.loader.exec_module(module)
    return module


def test_the_documented_layers_are_the_imports(layers):
    doc = layers.DOC.read_text()
    assert layers.current_block(doc) == layers.render(layers.graph()), "run: python scripts/layers.py --write"


def test_every_part_imports_only_lower_layers(layers):
    edges = layers.graph()
    depth = {p: i for i, layer in enumerate(layers.layers(edges)) for p in layer}
    assert all(depth[d] < depth[p] for p, deps in edges.items() for d in deps)
    # the store and the engine know nothing of reports, drivers or studies
    for low in ("store", "engine", "models", "analysis"):
        assert not edges[low] & {"report", "driver", "studies", "cli", "executors"}, low


def test_a_cycle_is_found(layers):
    with pytest.raises(layers.CycleError):
        layers.layers({"a": {"b"}, "b": {"c"}, "c": {"a"}})


def test_no_module_is_over_450_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "src" / "batchlab").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert not long, long


def test_relative_imports_resolve(layers, tmp_path):
    pkg = layers.PACKAGE
    found = layers.imports_of(pkg / "driver" / "run.py")
    assert "batchlab.store" in found and any(m.startswith("batchlab.executors") for m in found)
