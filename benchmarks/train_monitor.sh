#!/usr/bin/env bash
# Progress of benchmarks/fmnist_pipeline.sh running detached on the device (see docs/models.md);
# with $OUT set, copies the latest EMA weights (fp16), logs and summary there.
R=${RUN_DIR:-out/train-fmnist}
tail -n 5 out/pipeline.log 2>/dev/null
for m in psld vp; do echo "== $m"; tail -n 2 "$R/$m/log.jsonl" 2>/dev/null; tail -n 3 "$R/$m.out" 2>/dev/null; done
echo "== classifier"; tail -n 4 "$R/classifier.out" 2>/dev/null
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  for m in psld vp; do
    for f in model.safetensors model.json log.jsonl; do cp "$R/$m/$f" "$OUT/$m-$f" 2>/dev/null; done
  done
  cp "$R/summary.txt" "$OUT/" 2>/dev/null
fi
ls -la "$R/weights" 2>/dev/null
