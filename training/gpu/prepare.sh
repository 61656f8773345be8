#!/usr/bin/env bash
# Run HERE (PyPI reachable, the corpus built) before a GPU session's device call for the teachers. Fills teacher-kit/
# (ignored by git; the device tool carries it: carry ["teacher-kit"]) with the wheels the device image lacks
# (soundfile and cffi, pyroomacoustics for the Ambisonics rooms, pystoi; pesq as its sdist, built there) and the
# Ambisonics set's train clean clips and val split as FLAC (training/gpu/kit.py). Then one device call:
#   command "bash training/gpu/teachers.sh", carry ["teacher-kit"], timeout_s 560
set -euo pipefail
cd "$(dirname "$0")/../.."
kit=teacher-kit
grep -qxF "/$kit/" .git/info/exclude 2>/dev/null || echo "/$kit/" >> .git/info/exclude
.venv/bin/python training/gpu/kit.py build --sets "${1:-foa}" --out "$kit"
mkdir -p "$kit/whl"
pip=".venv/bin/pip"
$pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$kit/whl" soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 pystoi==0.4.1 pyroomacoustics==0.10.1
$pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$kit/whl" pesq==0.0.4
du -sh "$kit" "$kit"/*
