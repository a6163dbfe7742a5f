#!/usr/bin/env bash
# One GPU call for issues 19 and 21, resumable, ending inside SECONDS (default 560):
#   1. study.py --stage accuracy: the cells not yet measured;
#   2. the Gaussian warm start (benchmarks/warmstart_fmnist.py, gddim-2m-c) at NFE 10, 5, 8 with its FD: on the
#      uniform grid on fmnist-cld, then with grid=auto (times tuned from t_skip) on fmnist-psld, fmnist-cld, fmnist-vp;
#   3. csps-d on power grids between the quadratic and the uniform one (benchmarks/cspsd_grid.py, issue 19);
#   4. study.py --stage autogrid: grid="auto" (AUTOGRID_PLAN) on the three shipped models, NFE 10 first;
#   5. study.py --stage frontier_fd --stage autogrid_fd --stage project: FD (shipped classifier, 10k samples) of the
#      frontier (fmnist-cld's), of the tuned grids, and csps-d's λ curve with the projection on;
#   6. the warm start on the frontier's seed-1 draws (accuracy only) on the three models;
#   7. study.py --stage stability on fmnist-cld with what is left (16 draws, as its earlier rows).
#   OUT=out/device bash benchmarks/device_autogrid.sh [SECONDS]
# Setup as benchmarks/device_setup.sh; needs the test split in .data/fmnist (t10k-*.gz), diffusers' wheels in .whl,
# and for the project stage's lam=auto by FD the train split's feature statistics in
# benchmarks/results/study/train_stats (written by study.py --train-stats DIR where the train split is at hand; the
# split itself does not fit the carry). Results: benchmarks/results/study/{stability,accuracy,autogrid,autogrid_fd,
# frontier_fd,project}.jsonl, benchmarks/results/warmstart.jsonl and benchmarks/results/cspsd_grid.jsonl, copied to
# $OUT with the references (accuracy_refs.tgz).
set -uo pipefail
OUT=${OUT:-out/device}
BUDGET=${1:-560}
source benchmarks/device_setup.sh
R=benchmarks/results/study
LOG="$OUT/autogrid.log"
# study SECONDS ARGS...: one study.py call, killed after SECONDS (at least 1: `timeout 0` would never kill it)
study() { local t=$(( $1 > 1 ? $1 : 1 )); shift; timeout "$t" python benchmarks/study.py --out $R "$@" 2>&1 \
    | grep -v "^\s*$\|UserWarning\|warnings.warn" | tee -a "$LOG"; }
# warm SECONDS ARGS...: warmstart_fmnist.py (gddim-2m-c, shipped statistics), killed after SECONDS
warm() { local t=$(( $1 > 1 ? $1 : 1 )); shift; timeout "$t" python benchmarks/warmstart_fmnist.py --stats shipped \
    --sampler gddim-2m-c --data-dir .data/fmnist --out benchmarks/results/warmstart.jsonl "$@" 2>&1 \
    | grep -v "^\s*$\|UserWarning\|warnings.warn" | tee -a "$LOG"; }
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$LOG"
study 100 --stage accuracy --minutes 1.5
warm 150 --model fmnist-cld --grid uniform --nfe 10 --nfe 5 --nfe 8 --fd 10000
for m in fmnist-psld fmnist-cld fmnist-vp; do
    warm $(( $(left) / 4 )) --model $m --grid auto --nfe 10 --nfe 5 --nfe 8 --fd 10000
done
timeout $(( $(left) / 3 )) python benchmarks/cspsd_grid.py --data-dir .data/fmnist \
    --out benchmarks/results/cspsd_grid.jsonl 2>&1 | grep -v "^\s*$\|UserWarning\|warnings.warn" | tee -a "$LOG"
study $(( $(left) * 35 / 100 )) --stage autogrid --minutes "$(minutes $(( $(left) * 30 / 100 )))"
study $(( $(left) - 140 )) --stage frontier_fd --stage autogrid_fd --stage project --network nhwc+compile \
    --data-dir .data/fmnist --train-stats $R/train_stats --minutes "$(minutes $(( $(left) - 170 )))"
for m in fmnist-psld fmnist-cld fmnist-vp; do
    warm $(( $(left) - 60 )) --model $m --grid uniform --seed 1 --nfe 10 --nfe 5 --nfe 8
done
study $(( $(left) - 15 )) --stage stability --model fmnist-cld --accuracy-n 16 --accuracy-reference gddim-2m@400 \
    --minutes "$(minutes $(( $(left) - 40 )))"
for f in stability accuracy autogrid autogrid_fd frontier_fd project; do
    [ -f $R/$f.jsonl ] && cp $R/$f.jsonl "$OUT/"
done
cp benchmarks/results/warmstart.jsonl "$OUT/"
[ -f benchmarks/results/cspsd_grid.jsonl ] && cp benchmarks/results/cspsd_grid.jsonl "$OUT/"
# the references, as one archive (their names hold '@', which the device's copy-back refuses); unpack it into
# benchmarks/results/study/accuracy_refs and carry that folder to spare a later call computing them again
tar -czf "$OUT/accuracy_refs.tgz" -C $R accuracy_refs
echo "session: $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
