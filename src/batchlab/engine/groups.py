"""Partition runs into groups that can step in lock-step (same group key), order preserved."""

from __future__ import annotations

from .spec import RunSpec, group_key


def partition(specs: list[RunSpec]) -> list[list[RunSpec]]:
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(group_key(spec), []).append(spec)
    return list(groups.values())
