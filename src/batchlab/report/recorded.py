"""Recorded verdicts of the full protocol, shipped with batchlab and shown beside a run's own verdicts.

The quick profile is a miniature of the published protocol (a data subset, a narrower network, fewer
epochs and seeds) that runs on a laptop; its verdicts may differ from the full protocol's. So that a
reader of a quick report sees what the full protocol gave, every ``recorded/*.json`` file in this
package holds the ``claims.json`` of a full run with its provenance::

    {"name": "full-h100-2026-11-23", "profile": "full", "device": "NVIDIA H100 80GB HBM3",
     "date": "2026-11-23", "torch": "...", "command": "...", "source": "benchmarks/results/.../claims.json",
     "claims": [{"id": "D1", "statement": ..., "verdict": "supported", "evidence": {...}, ...}, ...]}

To add a recording, copy a full run's ``claims.json`` here and add those provenance keys. When several
recordings hold the same claim, the latest date wins.
"""

from __future__ import annotations

import json
import numbers
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from ..claims import Claim

__all__ = ["Recording", "recordings", "recorded_claim", "key_numbers", "is_key_number", "MINIATURE_NOTE"]

MINIATURE_NOTE = (
    "The quick profile is a miniature of the full protocol (a subset of the data and a smaller network, in "
    "the same regime of training), so its verdict can differ, most often by a wider CI; the recorded "
    "full-protocol verdict is the reference (docs/profiles.md compares the two)."
)


@dataclass(frozen=True)
class Recording:
    """One recorded full run: where and when it ran, and its claims by id."""

    name: str
    profile: str
    device: str
    date: str
    source: str
    torch: str = ""
    command: str = ""
    claims: dict[str, Claim] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        """'full, NVIDIA H100 80GB HBM3, 2026-11-23'."""
        return ", ".join(x for x in (self.profile, self.device, self.date) if x)


def _claim(d: dict) -> Claim:
    keys = ("id", "statement", "source", "rule", "verdict", "evidence", "why")
    return Claim(**{k: d[k] for k in keys if k in d})


def parse_recording(doc: dict, name: str = "") -> Recording:
    """A Recording from a recorded claims.json document (see the module docstring)."""
    return Recording(
        name=str(doc.get("name") or name),
        profile=str(doc.get("profile", "")),
        device=str(doc.get("device", "")),
        date=str(doc.get("date", "")),
        source=str(doc.get("source", "")),
        torch=str(doc.get("torch", "")),
        command=str(doc.get("command", "")),
        claims={c["id"]: _claim(c) for c in doc.get("claims", [])},
    )


@lru_cache(maxsize=1)
def recordings() -> tuple[Recording, ...]:
    """Every recording shipped in ``batchlab/report/recorded/``, oldest first."""
    found = []
    folder = resources.files("batchlab.report") / "recorded"
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name.endswith(".json"):
                found.append(parse_recording(json.loads(entry.read_text(encoding="utf-8")), entry.name[:-5]))
    return tuple(sorted(found, key=lambda r: (r.date, r.name)))


def recorded_claim(claim_id: str) -> tuple[Recording, Claim] | None:
    """The latest recording that holds ``claim_id``, and its claim; None when none does."""
    for rec in reversed(recordings()):
        if claim_id in rec.claims:
            return rec, rec.claims[claim_id]
    return None


# evidence entries that are not "key numbers": test names, p-values, seed counts, remarks
_NOT_KEY = re.compile(r"(^|: )(p|Holm p|Spearman p|test|seeds)$|evidence only|rounding", re.IGNORECASE)


def is_key_number(name: str) -> bool:
    """Whether an evidence entry is a key number, not a p-value, a test's name, a seed count or a remark."""
    return not _NOT_KEY.search(name)


def _numeric(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def key_numbers(ours: dict, recorded: dict, limit: int = 6) -> list[tuple[str, object, object]]:
    """The numbers to put side by side when two verdicts differ: ``(name, ours, recorded)``.

    Entries present on both sides and numeric on at least one (estimates, accuracies, ratios), in the
    recorded order, leaving out p-values, test names and seed counts; when the two share none (the
    evidence names changed with the profile), the first numeric entries of each side, the other side
    None.
    """
    shared = [k for k in recorded if k in ours and not _NOT_KEY.search(k)]
    shared = [k for k in shared if _numeric(ours[k]) or _numeric(recorded[k])]
    if shared:
        return [(k, ours[k], recorded[k]) for k in shared[:limit]]
    half = max(limit // 2, 1)
    mine = [(k, v, None) for k, v in ours.items() if _numeric(v) and not _NOT_KEY.search(k)][:half]
    theirs = [(k, None, v) for k, v in recorded.items() if _numeric(v) and not _NOT_KEY.search(k)][:half]
    return mine + theirs
