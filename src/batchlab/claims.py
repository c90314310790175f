"""A claim from the literature and the verdict our own measurements give it.

A study declares its claims as data (`ClaimSpec`: id, statement, source) before anything is measured, so
`batchlab show` lists them without results; its rules turn stored numbers into a `Claim` (the spec with
the rule, the verdict, the evidence and why). Verdicts are always computed from stored results by a
stated rule: never hard-coded, never tuned until it passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from .analysis.decisions import ALPHA, holm_evidence, monotone
from .analysis.stats import finite, nonfinite, pp, without_finite

Verdict = Literal["supported", "not supported", "inconclusive"]
VERDICTS: tuple[str, ...] = ("supported", "not supported", "inconclusive")


@dataclass(frozen=True)
class Claim:
    """One row of the claims table: the statement, its source, the rule, the verdict and its numbers."""

    id: str
    statement: str
    source: str
    rule: str
    verdict: Verdict
    evidence: dict[str, float | int | str] = field(default_factory=dict)
    why: str = ""  # one sentence explaining the verdict, especially when not supported

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClaimSpec:
    """What a study claims before it measures anything: the id, the statement and the paper or text it comes
    from. The rule is not part of it: its thresholds are the study's config (a `--set` may change them)."""

    id: str
    statement: str
    source: str

    def claim(self, rule: str, verdict: Verdict, evidence: dict, why: str) -> Claim:
        return Claim(self.id, self.statement, self.source, rule, verdict, evidence, why)

    def inconclusive(self, rule: str, why: str, evidence: dict | None = None) -> Claim:
        """The verdict when the runs a rule needs are missing or too few; `why` names what is missing."""
        return self.claim(rule, "inconclusive", evidence or {}, why)


@dataclass(frozen=True)
class SeedRule:
    """A rule over samples of seeds (label -> the seeds' values; NaN where a run diverged or is missing): the
    skeleton such rules share, so each states only its test.

    A label without a single finished seed leaves nothing to test: `unfinished()` is then the inconclusive
    claim naming it. Otherwise a diverged seed is left out of the tests, and `claim()` counts it in the
    evidence ("diverged runs left out"), so a verdict never rests silently on fewer seeds than planned.
    """

    spec: ClaimSpec
    rule: str
    samples: Mapping[str, Any]

    def unfinished(self) -> Claim | None:
        """The inconclusive claim when some sample has no finished seed, else None."""
        if missing := without_finite(self.samples):
            return self.inconclusive(f"no finished runs (missing or diverged) for: {', '.join(missing)}")
        return None

    def inconclusive(self, why: str) -> Claim:
        return self.spec.inconclusive(self.rule, why)

    def claim(self, verdict: Verdict, evidence: dict, why: str) -> Claim:
        if diverged := sum(nonfinite(self.samples).values()):
            evidence = {**evidence, "diverged runs left out": diverged}
        return self.spec.claim(self.rule, verdict, evidence, why)


def monotone_decrease_claim(
    spec: ClaimSpec, labels: Sequence, samples: Sequence[np.ndarray], what: str, *, name: str = ""
) -> Claim:
    """Each step along `labels` is a significant decrease (one-sided paired t, Holm-corrected over the steps).

    `samples[i]` are the seeds' final values for `labels[i]`, fractions (accuracies) in seed order, compared in
    percentage points; a diverged seed (NaN) is left out of the steps it takes part in and counted per label.
    """
    rule = (
        f"each step {' -> '.join(f'{name}{x}' for x in labels)} is a significant decrease of the mean final "
        f"{what} (one-sided t, paired by seed, Holm-corrected, alpha {ALPHA:g})"
    )
    if len(labels) < 2:
        return spec.inconclusive(rule, "needs at least 2 configurations to compare")
    verdict, steps, adjusted = monotone([100 * np.asarray(s, dtype=float) for s in samples], direction="decreasing")
    hops = [f"{name}{x} -> {name}{y}" for x, y in zip(labels, labels[1:])]
    evidence = holm_evidence(dict(zip(hops, steps)), adjusted, unit="pp")
    evidence |= {f"{what} {name}{label} (%)": pp(finite(s)) for label, s in zip(labels, samples) if finite(s).size}
    if diverged := nonfinite({f"{name}{label}": s for label, s in zip(labels, samples)}):
        evidence["diverged runs left out"] = ", ".join(f"{k}: {v}" for k, v in diverged.items())
    if verdict == "supported":
        why = "every step is a significant decrease after Holm correction"
    elif verdict == "not supported":
        up = [h for h, d in zip(hops, steps) if d.verdict == "not supported"]
        why = f"significantly not a decrease at {', '.join(up)}"
    else:
        undecided = [f"{h}: {d.why}" for h, d in zip(hops, steps) if d.verdict != "supported"]
        why = "; ".join(undecided or ["Holm-adjusted p-values not all below alpha"])
    return spec.claim(rule, verdict, evidence, why)


def inconclusive(id: str, statement: str, source: str, rule: str, why: str) -> Claim:
    """An inconclusive claim from loose fields (tests and recorded claims; a study uses its ClaimSpec)."""
    return ClaimSpec(id, statement, source).inconclusive(rule, why)
