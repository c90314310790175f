"""The store: SQLite rows of runs and their per-epoch metrics; studies resume from it."""
from .sqlite import DB_NAME, RunRecord, Store

__all__ = ["Store", "RunRecord", "DB_NAME"]
