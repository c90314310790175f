#!/usr/bin/env bash
# What a device session runs: install the carried wheels, then the CUDA tests, a kernel profile and
# the bench; `full` as first argument also runs the full profile of every study (P6 input).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
python3 -m pytest -q tests/test_engine_cuda.py 2>&1 | grep -E "^E  .*assert|passed|failed" | head -20
python3 benchmarks/profile_step.py > $OUT/profile.txt 2>&1; grep -A16 "===" $OUT/profile.txt | cut -c1-160
python3 -m batchlab bench --device cuda --out $OUT 2>&1 | tail -12
python3 -c "import json,glob; r=json.load(open(glob.glob('$OUT/bench-*.json')[0])); print(json.dumps(r['ablation'], indent=1))"
if [ "${1:-}" = full ]; then
  python3 -m batchlab reproduce --profile full --device cuda --out /tmp/res 2>&1 | tail -30
  cp /tmp/res/batchlab.sqlite $OUT/; (cd /tmp/res && tar czf $OUT/reports.tgz index.html */report.html */tables)
fi
