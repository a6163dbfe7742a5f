#!/usr/bin/env bash
# One GPU call for issues 19 and 21, resumable, ending inside SECONDS (default 560):
#   1. study.py --stage stability on fmnist-psld (256 draws): the samplers not yet scanned;
#   2. study.py --stage accuracy: the cells not yet measured (heun's, after csps-2m's);
#   3. study.py --stage autogrid: grid="auto" for AUTOGRID_SAMPLERS at NFE 10, 5, 8 on the three shipped models;
#   4. study.py --stage autogrid_fd --stage frontier_fd: FD (shipped classifier, 10k samples) of those tuned grids,
#      then of the frontier cells, NFE 10 and 5 first;
#   5. study.py --stage stability on fmnist-cld with what is left (16 draws, as its earlier rows).
#   OUT=out/device bash benchmarks/device_autogrid.sh [SECONDS]
# Setup as benchmarks/device_setup.sh; needs only the test split in .data/fmnist (t10k-*.gz) and diffusers' wheels
# in .whl. Results: benchmarks/results/study/{stability,accuracy,autogrid,autogrid_fd,frontier_fd}.jsonl, copied to
# $OUT.
set -uo pipefail
OUT=${OUT:-out/device}
BUDGET=${1:-560}
source benchmarks/device_setup.sh
R=benchmarks/results/study
LOG="$OUT/autogrid.log"
# study SECONDS ARGS...: one study.py call, killed after SECONDS (at least 1: `timeout 0` would never kill it)
study() { local t=$(( $1 > 1 ? $1 : 1 )); shift; timeout "$t" python benchmarks/study.py --out $R "$@" 2>&1 \
    | grep -v "^\s*$\|UserWarning\|warnings.warn" | tee -a "$LOG"; }
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$LOG"
study 110 --stage stability --model fmnist-psld --minutes 1.6
study 100 --stage accuracy --minutes 1.5
study $(( $(left) * 45 / 100 )) --stage autogrid --minutes "$(minutes $(( $(left) * 40 / 100 )))"
study $(( $(left) - 90 )) --stage autogrid_fd --stage frontier_fd --network nhwc+compile --data-dir .data/fmnist \
    --minutes "$(minutes $(( $(left) - 120 )))"
study $(( $(left) - 15 )) --stage stability --model fmnist-cld --accuracy-n 16 --accuracy-reference gddim-2m@400 \
    --minutes "$(minutes $(( $(left) - 40 )))"
for f in stability accuracy autogrid autogrid_fd frontier_fd; do [ -f $R/$f.jsonl ] && cp $R/$f.jsonl "$OUT/"; done
echo "session: $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
