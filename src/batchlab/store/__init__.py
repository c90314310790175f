"""The store: SQLite rows of runs, tasks and their metrics, and their arrays as files; studies resume from it."""

from .export import SPEC_FIELDS, load_metrics, metrics_csv
from .schema import (
    DB_NAME,
    SCHEMA_VERSION,
    ArtifactRef,
    DamagedFileError,
    NotAStoreError,
    RunRecord,
    StoreCorruptError,
    StoreVersionError,
)
from .sqlite import Store

__all__ = [
    "load_metrics",
    "metrics_csv",
    "SPEC_FIELDS",
    "Store",
    "RunRecord",
    "ArtifactRef",
    "DB_NAME",
    "SCHEMA_VERSION",
    "StoreVersionError",
    "StoreCorruptError",
    "NotAStoreError",
    "DamagedFileError",
]
