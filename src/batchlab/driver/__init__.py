"""The driver: config -> plan -> skip what the store has -> group -> execute -> store -> report.

One module per job, each depending only on those above it:

- `config.py`: `--set key=value` parsed and coerced, the study's config validated, its plan (`make_config`);
- `checks.py`: the output directory, the device, the store and the data checked before anything is written;
- `plan.py`: what a plan lacks in the store, runs before the tasks that start from them (`work_plan`);
- `reports.py`: a study's report from its record in the store (`write_report`, claims.json);
- `run.py`: `prepare` (every check, nothing written) and `execute` (the units the store lacks run through an
  executor, each stored as it arrives, the study recorded, its report written); `run_study` is both;
- `index.py`: `index.html` of `batchlab reproduce`.

The driver alone writes the store; where units run is an executor's business (`batchlab.executors`).
"""

from .checks import check_data, check_device, check_writable, open_store, store_hint
from .config import config_overrides, lookup, make_config, parse_sets, parse_value, study_units
from .index import select_studies, write_reproduction_index
from .plan import WorkPlan, kept_states, work_plan
from .reports import Recorded, diverged_table, keys_read, recorded_results, write_claims_json, write_report
from .run import Monitor, Prepared, StudyRun, execute, prepare, run_study, save_result, save_task

__all__ = [
    "Monitor",
    "Prepared",
    "Recorded",
    "StudyRun",
    "WorkPlan",
    "check_data",
    "check_device",
    "check_writable",
    "config_overrides",
    "diverged_table",
    "execute",
    "kept_states",
    "keys_read",
    "lookup",
    "make_config",
    "open_store",
    "parse_sets",
    "parse_value",
    "prepare",
    "recorded_results",
    "run_study",
    "save_result",
    "save_task",
    "store_hint",
    "study_units",
    "work_plan",
    "write_claims_json",
    "select_studies",
    "write_reproduction_index",
    "write_report",
]
