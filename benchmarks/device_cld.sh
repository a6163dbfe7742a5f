#!/usr/bin/env bash
# One GPU call after the CLD model is shipped (issue 21), ending inside SECONDS (default 480):
#   1. study.py --stage frontier: accuracy at NFE 4-20 of the frontier cells not yet measured (seed 0 first: the
#      uniform-grid and lower_order_final cells on fmnist-vp and fmnist-psld, and every cell of the shipped CLD model);
#   2. the Gaussian warm start at full size with its FD (benchmarks/warmstart_fmnist.py --fd 10000): gddim-2m-c on the
#      uniform grid at NFE 10, 5, 8 on fmnist-psld, then fmnist-vp, with what is left.
#   OUT=out/device bash benchmarks/device_cld.sh [SECONDS]
# Carries only the test split (.data/fmnist/t10k-*: the FD reference); the statistics are the shipped ones.
# Results: benchmarks/results/study/frontier.jsonl, benchmarks/results/warmstart.jsonl, copied to $OUT.
set -uo pipefail
OUT=${OUT:-out/device}
BUDGET=${1:-480}
source benchmarks/device_setup.sh
timeout $(( $(left) * 45 / 100 )) python benchmarks/study.py --stage frontier --minutes "$(minutes $(( $(left) * 2 / 5 )))" \
    --out benchmarks/results/study 2>&1 | grep -v Warn | tee "$OUT/cld.log" | tail -n 3
for m in fmnist-psld fmnist-vp; do
    timeout $(( $(left) - 15 )) python benchmarks/warmstart_fmnist.py --model $m --data-dir .data/fmnist --sampler gddim-2m-c --stats shipped \
        --grid uniform --nfe 10 --nfe 5 --nfe 8 --fd 10000 --out benchmarks/results/warmstart.jsonl 2>&1 \
        | grep -v Warn | tee -a "$OUT/cld.log" | tail -n 4
done
for f in benchmarks/results/study/frontier.jsonl benchmarks/results/warmstart.jsonl; do [ -f $f ] && cp $f "$OUT/"; done
echo "session: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/cld.log"
