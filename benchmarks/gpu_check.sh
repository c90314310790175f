#!/usr/bin/env bash
# What a device session runs (wheels for packages the device lacks are carried in .whl/):
#   bash benchmarks/gpu_check.sh bench   CUDA tests, `batchlab bench`, the folded-update ablation, kernel profile
#   bash benchmarks/gpu_check.sh full    `batchlab reproduce --profile full`, then P6 against its store
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
export PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp/out}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ "${1:-bench}" = bench ]; then
  python3 -m pytest -q tests/test_engine_cuda.py tests/test_fold.py tests/test_fast_path.py 2>&1 | tail -5
  python3 -m batchlab bench --device cuda --out $OUT 2>&1 | grep -v Warn | tail -12
  python3 benchmarks/fold_ablation.py --out $OUT 2>&1 | grep -v Warn
  python3 benchmarks/profile_step.py > $OUT/profile.txt 2>&1; grep -A22 "===" $OUT/profile.txt | cut -c1-70,150-175
else
  python3 benchmarks/small_batch.py 2>&1 | grep -v -i warn | tee $OUT/small_batch.txt
  # keep the multiply-sum layers only if they won at 3 runs (what the batch-2 group of the studies is)
  best=$(python3 -c "
import re; t={int(m[0]): float(m[1]) for m in re.findall(r'matvec_max_batch=(\d+) runs=3 batch 2: ([\d.]+)', open('$OUT/small_batch.txt').read())}
print(min(t, key=t.get) if t else 4)")
  export BATCHLAB_MATVEC_MAX_BATCH=$best; echo "BATCHLAB_MATVEC_MAX_BATCH=$best"
  python3 -m pytest -q tests/test_engine_cuda.py 2>&1 | tail -3
  python3 -m batchlab reproduce --profile full --device cuda --out /tmp/res 2>&1 | tee $OUT/reproduce.log | tail -40
  python3 - <<'PY' 2>&1 | grep -v Warn
import json, os, torch
from pathlib import Path
from batchlab.bench import p6_from_store
p6 = p6_from_store(Path("/tmp/res"), torch.device("cuda"))
Path(os.environ["OUT"], "p6.json").write_text(json.dumps(p6, indent=1))
PY
  cp /tmp/res/batchlab.sqlite $OUT/
  (cd /tmp/res && tar czf $OUT/reports.tgz index.html */report.html */tables */figures/*.png)
fi
