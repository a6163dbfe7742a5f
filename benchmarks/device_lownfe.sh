#!/usr/bin/env bash
# One GPU call for issue 21's tuned grids and warm start at full size, ending inside SECONDS (default 560):
#   1. the Gaussian warm start (benchmarks/warmstart_fmnist.py): gddim-2m and gddim-3m-c at NFE 5, 8, 10 on both
#      shipped models, t_skip on a probe of 64, 256 held-out draws against gddim-2m@2000;
#   2. study.py --stage autogrid with what is left (grid="auto" for the same samplers and NFEs).
#   OUT=out/device bash benchmarks/device_lownfe.sh [SECONDS]
# Setup as benchmarks/device_accuracy.sh (.data/fmnist). Results: benchmarks/results/warmstart.jsonl and
# benchmarks/results/study/autogrid.jsonl, copied to $OUT.
set -uo pipefail
OUT=${OUT:-out/device}
BUDGET=${1:-560}
source benchmarks/device_setup.sh
for m in fmnist-psld fmnist-vp; do
    timeout $(( $(left) / 3 )) python benchmarks/warmstart_fmnist.py --model $m --data-dir .data/fmnist \
        --sampler gddim-3m-c --sampler gddim-2m --nfe 10 --nfe 5 --nfe 8 --out benchmarks/results/warmstart.jsonl \
        2>&1 | tee -a "$OUT/lownfe.log"
done
timeout $(left) python benchmarks/study.py --stage autogrid --minutes "$(python -c "print(($(left) - 30) / 60)")" \
    --out benchmarks/results/study 2>&1 | tee -a "$OUT/lownfe.log"
for f in benchmarks/results/warmstart.jsonl benchmarks/results/study/autogrid.jsonl; do [ -f $f ] && cp $f "$OUT/"; done
echo "session: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/lownfe.log"
