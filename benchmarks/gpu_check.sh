#!/usr/bin/env bash
# The GPU checks of issue 12, in one run of under 5 minutes on a lent H100/H200, so a session
# with a device spends its time measuring. Run from the repository root with the project's venv:
#
#   bash benchmarks/gpu_check.sh            # writes $OUT/gpu_check.log (OUT defaults to runs/gpu-check)
#
# 1. the CUDA tests (rotation kernels, precision on a GPU);
# 2. epoch speed on the GPU against the paper-style pipeline (aim: >= 5x), one round per net;
# 3. trials per hour with 1 and 4 workers sharing the GPU (aim: 4 workers >= 2.5x one).
# Each step has its own time limit, so one slow step cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
log="$OUT/gpu_check.log"
started=$SECONDS
{
    echo "# gpu_check $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
    uptime

    echo "## 1. CUDA tests"
    timeout 60 "$PY" -m pytest -q -p no:cacheprovider -k cuda tests/test_tensors.py

    echo "## 2. epoch speed on the GPU (224 px, batch 10)"
    timeout 150 "$PY" benchmarks/epoch_speed.py --device cuda --repeats 1 --per-class 30

    echo "## 3. worker scaling on one GPU (1 vs 4 workers)"
    timeout 120 "$PY" benchmarks/worker_scaling.py --device cuda --workers 1 4 --repeats 1 --n-trials 8 --epochs 3

    echo "# done in $((SECONDS - started)) s"
} 2>&1 | tee "$log"
