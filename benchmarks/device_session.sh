#!/usr/bin/env bash
# One call on the GPU machine: the CUDA-only tests, then the resumable benchmarks in priority order,
# each time-boxed so that the call ends inside SECONDS (default 570; the device tool allows 600):
#   1. tests/test_gpu.py (whole-sampler CUDA graphs against eager sampling);
#   2. benchmarks/study.py --stage network --stage speed (issue 8's overhead tables);
#   3. benchmarks/study.py --stage psld --stage vp --stage lam --stage tune --stage seeds (issue 4's FD study), in
#      CUDA graphs with the fastest network configuration the network stage measured.
#
#   OUT=out/device [SKIP_TESTS=1 | TESTS_K=EXPR] bash benchmarks/device_session.sh [SECONDS] [NETWORK_AND_SPEED_SECONDS]
#
# (TESTS_K: run only the GPU tests pytest's -k selects; FD_STAGES: other --stage options for step 3.)
#
# (The 1000-step references, benchmarks/fmnist_fd.py, are complete in benchmarks/results/fmnist_fd.jsonl.)
# Every step appends to benchmarks/results/ and skips what is there, so calling this again (after
# copying the returned files back into benchmarks/results/) continues where the last call stopped.
# Needs Fashion-MNIST's idx files in .data/fmnist (Debian's dataset-fashion-mnist package) and runs
# from a plain checkout (PYTHONPATH=src: nothing is installed); the VP baselines need diffusers, carried
# as wheels in .whl (`pip download --no-deps diffusers importlib_metadata -d .whl` for Python 3.12).
# Results and one log go to $OUT.
set -uo pipefail
OUT=${OUT:-out/device}
BUDGET=${1:-570}
SPEED_SECONDS=${2:-300}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src NCCL_NVLS_ENABLE=0
if ls .whl/*.whl >/dev/null 2>&1; then  # diffusers (the VP baselines), carried as wheels (see above)
    python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
R=benchmarks/results
LOG="$OUT/session.log"
t0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - t0) )); }
minutes() { python -c "print(max(0.0, $1 / 60))"; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python -c "import torch; print('torch', torch.__version__)"; } 2>&1 | tee "$LOG"

if [ -z "${SKIP_TESTS:-}" ]; then
    timeout 150 python -m pytest -q -p no:cacheprovider tests/test_gpu.py ${TESTS_K:+-k "$TESTS_K"} 2>&1 | grep -v "^DEBUG" | tail -15 | tee -a "$LOG"
fi

python benchmarks/study.py --stage network --stage speed --minutes "$(minutes $(( SPEED_SECONDS < $(left) - 60 ? SPEED_SECONDS : $(left) - 60 )))" \
    --out $R/study 2>&1 | tee -a "$LOG"

timeout $(( $(left) - 10 )) python benchmarks/study.py ${FD_STAGES:---stage psld --stage vp --stage lam --stage tune --stage seeds} \
    --minutes "$(minutes $(( $(left) - 60 )))" --data-dir .data/fmnist --out $R/study 2>&1 | tee -a "$LOG"

for f in network speed psld vp lam tune seeds final; do [ -f $R/study/$f.jsonl ] && cp $R/study/$f.jsonl "$OUT/"; done
echo "session: $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
