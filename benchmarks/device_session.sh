#!/usr/bin/env bash
# One session on the GPU machine, in priority order, each step time-boxed so that the later ones
# still run: the CUDA-only tests, the FD rows of issue 7 still missing, the overhead study
# (issue 8), then as many cells of the FD study (issue 4) as the time left allows.
#
#   OUT=out/device bash benchmarks/device_session.sh [SECONDS_FOR_FD_STUDY]
#
# Needs Fashion-MNIST's idx files in .data/fmnist (Debian's dataset-fashion-mnist package has them)
# and runs from a plain checkout (PYTHONPATH=src: nothing is installed). Results are appended to
# benchmarks/results/ (every script resumes) and copied with the logs to $OUT.
set -uo pipefail
OUT=${OUT:-out/device}
STUDY_SECONDS=${1:-60}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src NCCL_NVLS_ENABLE=0
R=benchmarks/results
t0=$(date +%s)
left() { echo $(( $1 - ($(date +%s) - t0) )); }

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } | tee "$OUT/gpu.txt"

GRAPH=""
if timeout 180 python -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"; then
    GRAPH=--graph
fi
echo "graph mode: ${GRAPH:-off}" | tee -a "$OUT/gpu.txt"

timeout 240 python benchmarks/fmnist_fd.py --no-extra $GRAPH --data-dir .data/fmnist --out $R/fmnist_fd.jsonl \
    2>&1 | tee "$OUT/fmnist_fd.log"
cp $R/fmnist_fd.jsonl "$OUT/"

minutes=$(python -c "print(max(0.0, ($(left 560) - $STUDY_SECONDS) / 60))")
python benchmarks/study.py --stage speed --minutes "$minutes" --out $R/study 2>&1 | tee "$OUT/speed.log"
cp $R/study/speed.jsonl "$OUT/" 2>/dev/null

minutes=$(python -c "print(max(0.0, ($(left 585)) / 60 - 0.5))")
timeout $(left 590) python benchmarks/study.py --stage psld $GRAPH --no-compile --minutes "$minutes" \
    --data-dir .data/fmnist --out $R/study 2>&1 | tee "$OUT/study.log"
cp $R/study/psld.jsonl $R/study/vp.jsonl "$OUT/" 2>/dev/null
echo "session: $(( $(date +%s) - t0 )) s"
