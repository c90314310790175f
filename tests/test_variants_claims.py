"""The rules of V2, L1, S1 and S2 on synthetic numbers whose answer is known: each one supported, not supported
and inconclusive; and the lars study's staged plan (lr chosen on tuning seeds, compared on other seeds)."""

from __future__ import annotations

from batchlab.studies.variants.claims import rule_l1


# --- L1 ---------------------------------------------------------------------------------------------------
def test_l1_rule():
    lrs, theory = (0.1, 0.5, 0.7, 1.0), ["converges", "converges", "oscillates", "period-2"]
    ok = rule_l1(lrs, theory, theory, curvature=2.0, tolerance=1e-6, steps=100)
    assert ok.verdict == "supported" and ok.evidence["boundaries on the grid"] == "1/L, 2/L"
    wrong = rule_l1(
        lrs, ["converges", "converges", "oscillates", "stalls"], theory, curvature=2, tolerance=1e-6, steps=9
    )
    assert wrong.verdict == "not supported" and wrong.why == "mismatch at lr 1: stalls vs period-2"
    missing = rule_l1(lrs, None, theory, curvature=2.0, tolerance=1e-6, steps=100)
    assert missing.verdict == "inconclusive" and missing.why == "the quadratic task is missing"
