#!/usr/bin/env bash
# GPU calls for issues 19, 21 and 22, resumable, each ending inside SECONDS (default 560). Every step skips what
# its results file already holds, so calling this again (after copying the returned files back) continues:
#   1. study.py --stage stability: every sampler of fmnist-psld (and fmnist-vp's ε-form ones) climbing NFE from 4
#      with its stable range ignored (the data of cosi.core.integrators.stability.MIN_NFE);
#   2. csps-d's accuracy on the uniform and logsnr grids, NFE 10-2000, and at 4000 on its default grid (issue 19's
#      0.01 target at NFE 2000);
#   3. the projection's cost in the CUDA-graph speed benchmark (benchmarks/projection_overhead.py);
#   4. diffusers' per-step scheduler overhead (benchmarks/diffusers_scheduler_overhead.py);
#   5. study.py --stage frontier with what is left (issue 21's NFE 4-20 accuracy, every peer setting).
#
#   OUT=out/device bash benchmarks/device_stability.sh [SECONDS] [STABILITY_SECONDS]
#
# Setup as benchmarks/device_accuracy.sh (.data/fmnist, .whl). Results land in benchmarks/results/ and are copied
# to $OUT.
set -uo pipefail
OUT=${OUT:-out/device}
BUDGET=${1:-560}
STAB=${2:-220}
source benchmarks/device_setup.sh
R=benchmarks/results/study
LOG="$OUT/stability.log"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$LOG"

timeout $(left) python benchmarks/study.py --stage stability --minutes "$(minutes $STAB)" --out $R 2>&1 \
    | grep -v Warning | grep -v 'return spec' | tee -a "$LOG"
timeout $(left) python - <<'PY' 2>&1 | tee -a "$LOG"
import torch, sys
sys.path.insert(0, "benchmarks")
from pathlib import Path
from study import prepared
from cosi.evaluation.accuracy import Reference, run_accuracy
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
m = prepared("fmnist-psld", "cuda", torch.float32, "nchw+compile")
cells = [{"sampler": "csps-d", "nfe": k, "project": True, "options": {"grid": g}}
         for g in ("uniform", "logsnr") for k in (10, 12, 15, 20, 50, 100, 200, 500, 1000)]
cells += [{"sampler": "csps-d", "nfe": 4000, "project": True, "options": {}}]
run_accuracy(m, "fmnist-psld", cells, Path("benchmarks/results/study/accuracy.jsonl"), minutes=1.5,
             cache_dir=Path("benchmarks/results/study/accuracy_refs"), extra={"device_name": torch.cuda.get_device_name()})
PY
[ -s benchmarks/results/projection_overhead.jsonl ] || \
    timeout $(left) python benchmarks/projection_overhead.py --rounds 2 2>&1 | tail -12 | tee -a "$LOG"
[ -s benchmarks/results/diffusers_scheduler_overhead.jsonl ] || \
    timeout 60 python benchmarks/diffusers_scheduler_overhead.py 2>>"$LOG" | grep '^{' \
    | tee benchmarks/results/diffusers_scheduler_overhead.jsonl | tee -a "$LOG"
timeout $(left) python benchmarks/study.py --stage frontier --minutes "$(minutes $(( $(left) - 30 )))" --out $R 2>&1 \
    | tee -a "$LOG"

for f in $R/stability.jsonl $R/frontier.jsonl $R/accuracy.jsonl benchmarks/results/projection_overhead.jsonl \
         benchmarks/results/diffusers_scheduler_overhead.jsonl; do [ -f $f ] && cp $f "$OUT/"; done
echo "session: $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
