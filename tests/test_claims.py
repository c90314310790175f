"""Claims as declared data: what every study declares is what its analysis decides, `show` lists the claims
without analysing anything, and every source cites a text."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest

from batchlab import cli
from batchlab.claims import ClaimSpec, SeedRule
from batchlab.studies import REGISTRY, Results

NAN = float("nan")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_analyze_decides_exactly_the_declared_claims(name):
    """On no results every rule still names its claim: the declared specs, in order."""
    study = REGISTRY[name]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            output = study.analyze(study.config("quick"), Results({}, None))
        finally:
            plt.close("all")
    assert [ClaimSpec(c.id, c.statement, c.source) for c in output.claims] == list(study.claims)


def test_show_lists_the_claims_without_analysing(capsys, monkeypatch):
    study = REGISTRY["distance-grid"]

    def refuse(*args, **kwargs):
        raise AssertionError("show must not run analyze")

    monkeypatch.setattr(type(study), "analyze", refuse)
    assert cli.run_cli(["show", study.name]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = lines[lines.index("claims") + 1 : lines.index("claims") + 1 + len(study.claims)]
    assert [line.split()[0] for line in listed] == ["D4", "D5"]
    assert listed[1].endswith(study.claims[1].statement)


def test_claim_ids_are_unique_and_sources_cite_texts():
    specs = [spec for study in REGISTRY.values() for spec in study.claims]
    assert len({s.id for s in specs}) == len(specs)
    assert not [s.id for s in specs if "spec" in s.source.lower()], "a source cites a text, not this lab's spec"


def test_seed_rule_names_the_missing_sample_and_counts_the_diverged_seeds():
    seeds = SeedRule(ClaimSpec("X1", "s", "src"), "rule", {"a": np.array([0.9, NAN]), "b": np.array([NAN, NAN])})
    missing = seeds.unfinished()
    assert missing.verdict == "inconclusive" and missing.why == "no finished runs (missing or diverged) for: b"
    seeds = SeedRule(ClaimSpec("X1", "s", "src"), "rule", {"a": np.array([0.9, NAN]), "b": np.array([0.8, 0.7])})
    assert seeds.unfinished() is None
    claim = seeds.claim("supported", {"estimate": 1.0}, "why")
    assert claim.evidence == {"estimate": 1.0, "diverged runs left out": 1}
    assert (claim.id, claim.statement, claim.source, claim.rule) == ("X1", "s", "src", "rule")
