#!/usr/bin/env bash
# The whole Fashion-MNIST job of docs/models.md on one GPU, meant to run detached on the device:
#   1. benchmarks/train_fmnist.sh (PSLD and VP U-Nets side by side, the classifier beside them);
#   2. benchmarks/fmnist_fd.py (FD of the 1000-step references, then a few samplers, 10k samples);
#   3. packs what should come back into $RUN_DIR/final/ and touches $RUN_DIR/final/DONE.
# Same environment as train_fmnist.sh, plus FD_MINUTES (default 5): no new FD cell starts after it,
# and FD_ARGS: more arguments for fmnist_fd.py (e.g. "--n 8 --no-extra" for a quick check).
#   setsid nohup bash benchmarks/fmnist_pipeline.sh > out/pipeline.log 2>&1 < /dev/null &
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
RUN="${RUN_DIR:-out/train-fmnist}"
PY="${PYTHON:-python3}"
mkdir -p "$RUN/final"
unset OUT  # a detached run outlives the device call whose $OUT it inherited

bash benchmarks/train_fmnist.sh
echo "training finished with exit code $?"
"$PY" benchmarks/fmnist_fd.py --weights "$RUN/weights" --data-dir "$COSI_DATA" --out "$RUN/fd.jsonl" \
    --samples "$RUN/samples" --minutes "${FD_MINUTES:-5}" ${FD_ARGS:-}
echo "FD finished with exit code $?"

cp "$RUN"/weights/fmnist-psld.safetensors "$RUN"/weights/fmnist-vp.safetensors "$RUN/final/"
tar -czf "$RUN/final/results.tar.gz" -C "$RUN" weights/fmnist-classifier.safetensors \
    $(cd "$RUN" && ls -d weights/*.json fd.jsonl summary.txt psld/log.jsonl vp/log.jsonl ./*.out samples 2>/dev/null)
touch "$RUN/final/DONE"
