#!/usr/bin/env bash
# One call on the GPU machine for issue 19 (the consistency projection of ε), resumable, ending inside SECONDS
# (default 540):
#   1. the accuracy stage, cheap part first (every deterministic sampler on both shipped models, NFE <= 100, the
#      projection off and on; gddim-2m@2000 and its self-distance at 1000 computed once and cached);
#   2. the project stage: FD of every ε-form sampler on fmnist-psld with the projection on (NFE 50, 100) and
#      lam=auto again (bf16 network, CUDA graphs, as the FD study runs);
#   3. the accuracy stage again with what is left: the NFE-2000 cells (csps-d, euler, lambda-ddim-2, cse, rvv first).
#
#   OUT=out/device bash benchmarks/device_accuracy.sh [SECONDS] [ACCURACY_FIRST_SECONDS] [PROJECT_SECONDS]
#
# Setup as benchmarks/device_session.sh: Fashion-MNIST's idx files in .data/fmnist, diffusers (the VP baselines
# dpm-solver++ and unipc) as wheels in .whl, nothing installed (PYTHONPATH=src). Every stage appends to
# benchmarks/results/study/{accuracy,project}.jsonl and skips what is there: calling this again (after copying the
# returned files back) continues where the last call stopped.
set -uo pipefail
OUT=${OUT:-out/device}
BUDGET=${1:-540}
FIRST=${2:-120}
PROJECT=${3:-200}
source benchmarks/device_setup.sh
R=benchmarks/results/study
LOG="$OUT/accuracy.log"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$LOG"

timeout $(( $(left) - 20 )) python benchmarks/study.py --stage accuracy --minutes "$(minutes $FIRST)" --out $R 2>&1 | tee -a "$LOG"
timeout $(( $(left) - 20 )) python benchmarks/study.py --stage project --minutes "$(minutes $(( PROJECT < $(left) - 60 ? PROJECT : $(left) - 60 )))" \
    --data-dir .data/fmnist --out $R 2>&1 | tee -a "$LOG"
timeout $(( $(left) - 15 )) python benchmarks/study.py --stage accuracy --minutes "$(minutes $(( $(left) - 45 )))" --out $R 2>&1 | tee -a "$LOG"

for f in accuracy project; do [ -f $R/$f.jsonl ] && cp $R/$f.jsonl "$OUT/"; done
mkdir -p "$OUT/accuracy_refs" && cp $R/accuracy_refs/*.pt "$OUT/accuracy_refs/" 2>/dev/null
echo "session: $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
