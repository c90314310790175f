#!/usr/bin/env bash
# What one device session runs: install the carried wheels, the CUDA tests, the bench, a full study.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
python3 -m pytest -q -x tests/test_engine_cuda.py 2>&1 | tail -15
python3 - <<'PY' 2>&1 | tee $OUT/bench.log
import json, torch
from pathlib import Path
from batchlab.bench import run_bench, save
r = run_bench(torch.device("cuda"))
print(json.dumps(r["ablation"], indent=1))
print(save(r, Path(__import__("os").environ["OUT"])))
PY
timeout 400 python3 -m batchlab.cli run batch-size-sweep --profile full --set batch_sizes=64,256,1024 --device cuda --out /tmp/res 2>&1 | tail -8
cp /tmp/res/batchlab.sqlite $OUT/ 2>/dev/null; cp /tmp/res/batch-size-sweep/report.html $OUT/ ; cp /tmp/res/batch-size-sweep/tables/final.csv $OUT/
