#!/usr/bin/env bash
# Run HERE (PyPI reachable) before a GPU session's device call. It fills device-kit/ (git ignores it; the device tool
# carries it: carry ["device-kit"]) with what the device machine lacks:
#   device-kit/whl/         packages for its Python 3.12. Its image has torch (CUDA), numpy, scipy, pandas, onnx,
#                           onnxruntime (CPU provider only), tqdm, PyYAML, nvidia-ml-py, Cython; not soundfile, fvcore,
#                           pystoi, pesq or openvino. OpenVINO's wheel (57 MB) does not fit the 64 MiB a call carries,
#                           so the device's CPU column is ONNX Runtime alone; pesq has no cp312 wheel and is built
#                           there from its sdist (Cython and a compiler are there).
#   device-kit/data/mono/val/  the first N val clips of the embedded corpus and their manifest lines (fp16 delta).
# Then: device run with command "bash benchmarks/device/gpu_lab.sh", carry ["device-kit"], timeout_s 540.
set -euo pipefail
cd "$(dirname "$0")/../.."
clips="${1:-20}"
kit=device-kit
grep -qxF "/$kit/" .git/info/exclude 2>/dev/null || echo "/$kit/" >> .git/info/exclude
rm -rf "$kit" && mkdir -p "$kit/whl" "$kit/data/mono/val/clean" "$kit/data/mono/val/noisy"
pip=".venv/bin/pip"
$pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$kit/whl" soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 yacs==0.1.8 termcolor==3.3.0 pystoi==0.4.1
# pure-Python sdists become wheels here; pesq (C) stays an sdist for the device to build
$pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$kit/whl" fvcore==0.1.5.post20221221 \
  iopath==0.1.10 pesq==0.0.4
for s in fvcore iopath; do
  $pip wheel -q --no-deps --no-build-isolation -w "$kit/whl" "$kit/whl/$s"-*.tar.gz && rm "$kit/whl/$s"-*.tar.gz
done
src="${HWKD_HOME:-$HOME/.cache/hwkd}/corpus/default/mono/val"
[ -f "$src/manifest.jsonl" ] || .venv/bin/hwkd data synth
head -n "$clips" "$src/manifest.jsonl" > "$kit/data/mono/val/manifest.jsonl"
.venv/bin/python - "$src" "$kit/data/mono/val" <<'PY'
import json, shutil, sys
src, dst = sys.argv[1:]
for line in open(f"{dst}/manifest.jsonl"):
    r = json.loads(line)
    for k in ("noisy", "clean"):
        shutil.copy(f"{src}/{r[k]}", f"{dst}/{r[k]}")
PY
du -sh "$kit"/*
