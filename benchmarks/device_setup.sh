# Sourced by the benchmarks/device_*.sh scripts after they set OUT and BUDGET: the environment of a bare device
# machine (nothing installed; PYTHONPATH=src, diffusers from the wheels carried in .whl), the clock, and
#   left            seconds left of BUDGET (at least 1, so `timeout $(left)` never gets a bad value)
#   minutes SECONDS  a --minutes value (never negative)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src NCCL_NVLS_ENABLE=0
if ls .whl/*.whl >/dev/null 2>&1; then
    python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
t0=$(date +%s)
left() { local l=$(( BUDGET - ($(date +%s) - t0) )); echo $(( l > 1 ? l : 1 )); }
minutes() { python -c "print(max(0.0, $1 / 60))"; }
