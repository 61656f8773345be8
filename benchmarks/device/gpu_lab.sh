#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE from the repository root (benchmarks/device/prepare.sh made device-kit/ here first):
# installs the kit beside the image's packages, runs benchmarks/gpu_lab.py, leaves its JSON and log in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 HWKD_HOME=/tmp/hwkd-home
out="${OUT:-/tmp/out}"; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site device-kit/whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site device-kit/whl/pesq-*.tar.gz \
  || echo "pesq did not build: the fp16 delta goes without PESQ-WB"
export PYTHONPATH="$PWD:/tmp/site"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv > "$out/nvidia-smi.csv" 2>&1
cd benchmarks
timeout 480 python3 gpu_lab.py --data ../device-kit/data/mono "$@" 2>&1 | tee "$out/gpu_lab.log"
cp results/gpu_lab*.json "$out/" 2>/dev/null
ls -la "$out"
