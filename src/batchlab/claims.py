"""A claim from the literature and the verdict our own measurements give it.

Verdicts are always computed from stored results by a stated rule: never hard-coded, never tuned
until it passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

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


def inconclusive(id: str, statement: str, source: str, rule: str, why: str) -> Claim:
    """The verdict when the runs a rule needs are missing or too few."""
    return Claim(id, statement, source, rule, "inconclusive", {}, why)
