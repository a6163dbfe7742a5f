#!/usr/bin/env bash
# One GPU call for issue 21's FD tables (and issue 19's csps-d grid), resumable, ending inside SECONDS (default 480):
#   1. csps-d's max |x| on the uniform grid at NFE 4-8 (its stable range there), accuracy rows;
#   2. study.py --stage frontier_fd: FD (shipped classifier, 10k samples) of csps-d on the uniform grid, then of
#      the frontier cells (every peer setting on fmnist-vp, the data-prediction samplers on both models), target
#      NFEs first.
#   OUT=out/device bash benchmarks/device_frontier.sh [SECONDS]
set -uo pipefail
OUT=${OUT:-out/device}
BUDGET=${1:-480}
source benchmarks/device_setup.sh
R=benchmarks/results/study
timeout 100 python - <<'PY' 2>&1 | grep -v Warn | tee "$OUT/frontier.log"
import torch, sys
sys.path.insert(0, "benchmarks")
from pathlib import Path
from study import prepared
from cosi.evaluation.accuracy import Reference, run_accuracy
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
m = prepared("fmnist-psld", "cuda", torch.float32, "nchw")
cells = [{"sampler": "csps-d", "nfe": k, "project": True, "options": {"grid": "uniform", "allow_unstable": True}}
         for k in (4, 5, 6, 8, 10)]
run_accuracy(m, "fmnist-psld", cells, Path("benchmarks/results/study/stability.jsonl"), minutes=1.0,
             cache_dir=Path("benchmarks/results/study/accuracy_refs"), extra={"device_name": torch.cuda.get_device_name()})
PY
timeout $(left) python benchmarks/study.py --stage frontier_fd --network nhwc+compile --minutes "$(python -c "print(($(left) - 25) / 60)")" \
    --data-dir .data/fmnist --out $R 2>&1 | grep -v Warn | tee -a "$OUT/frontier.log"
for f in $R/stability.jsonl $R/frontier_fd.jsonl; do [ -f $f ] && cp $f "$OUT/"; done
echo "session: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/frontier.log"
