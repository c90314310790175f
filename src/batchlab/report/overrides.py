"""`--set` overrides: the config keys that differ from the study's profile, as typed and as a label.

A run with `--set` overrides is recorded and reported under its study's name and the overrides' label,
`STUDY@<label>` (e.g. `batch-size-sweep@lr=0.05,seeds=5`), so it never replaces the report of the plain
profile (`STUDY/`). The label is a pure function of the two configs, so `batchlab report STUDY --set ...`
finds the same directory and record that `batchlab run` wrote. (Not to be confused with the
gradient-descent-variants study family, `studies/variants`.)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

#: Labels longer than this are cut and given a hash of the whole label (file names stay short).
MAX_LABEL = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


def format_set_value(value: Any) -> str:
    """A config value as it is written after `--set key=` (a list as `a,b`)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(format_set_value(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def overridden_values(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of `config` whose value differs from the profile's `defaults`, sorted by key."""
    return {k: config[k] for k in sorted(config) if k not in defaults or config[k] != defaults[k]}


def overrides_label(changed: Mapping[str, Any]) -> str:
    """A stable, readable, file-system-safe name for a set of overrides; "" for none.

    `key=value` pairs sorted by key, joined by `,`; a list's items joined by `+` (`batch_sizes=32+128`).
    A label that had characters other than letters, digits and `._=,+-`, or is longer than
    :data:`MAX_LABEL`, keeps a readable prefix and ends in `~` and 8 hex digits of the SHA-256 of the
    whole label, so two different configurations never share a name.
    """
    raw = ",".join(f"{k}={_label_value(v)}" for k, v in sorted(changed.items()))
    safe = _UNSAFE.sub("-", raw)
    if safe == raw and len(raw) <= MAX_LABEL:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{safe[: MAX_LABEL - 9].rstrip(',')}~{digest}"


def _label_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "+".join(_label_value(v) for v in value)
    return format_set_value(value)


def report_dir_name(study: str, label: str) -> str:
    """The directory (under `--out`) and store record name of a study's report: `STUDY` or `STUDY@label`."""
    return f"{study}@{label}" if label else study


def configuration_line(changed: Mapping[str, Any], profile: str) -> str:
    """One line for people: which configuration a page shows."""
    if not changed:
        return f"the {profile} profile's defaults"
    return f"the {profile} profile with " + ", ".join(f"{k}={format_set_value(v)}" for k, v in changed.items())
