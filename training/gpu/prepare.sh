#!/usr/bin/env bash
# Run HERE (PyPI reachable, the corpus built) before a GPU session's device calls for the teachers (ignored by git;
# the device tool carries the kit folders named below). The wheels the device image lacks: soundfile and cffi,
# pyroomacoustics (the Ambisonics rooms), pystoi; pesq as its sdist, built there.
#   bash training/gpu/prepare.sh [foa]   teacher-kit/: the Ambisonics set's train clean clips and val split as FLAC
#       (training/gpu/kit.py), 40 MiB. One device call: "bash training/gpu/teachers.sh foa", carry ["teacher-kit"],
#       timeout_s 580.
#   bash training/gpu/prepare.sh mono    the mono set, in two halves (its 600 train clips alone are 36 MiB):
#       teacher-kit-mono-a/ (train clean clips, ambient loops) and teacher-kit-mono/ (val, wheels, digests). Two
#       device calls back to back: "bash training/gpu/teachers.sh stage", carry ["teacher-kit-mono-a"]; then at
#       once "bash training/gpu/teachers.sh mono", carry ["teacher-kit-mono"], timeout_s 580.
set -euo pipefail
cd "$(dirname "$0")/../.."
what="${1:-foa}"
if [ "$what" = mono ]; then kit=teacher-kit-mono; split=--split; else kit=teacher-kit; split=; fi
exclude="$(git rev-parse --git-path info/exclude)"; mkdir -p "$(dirname "$exclude")"
for k in teacher-kit teacher-kit-mono teacher-kit-mono-a; do
  grep -qxF "/$k/" "$exclude" 2>/dev/null || echo "/$k/" >> "$exclude"
done
.venv/bin/python training/gpu/kit.py build --sets "$what" --out "$kit" $split
mkdir -p "$kit/whl"
pip=".venv/bin/pip"
$pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
  -d "$kit/whl" soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 pystoi==0.4.1 pyroomacoustics==0.10.1
$pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$kit/whl" pesq==0.0.4
# each folder with the working tree must fit one device call
if [ "$what" = mono ]; then .venv/bin/python training/gpu/kit.py size "$kit-a" "$kit"
else .venv/bin/python training/gpu/kit.py size "$kit"; fi
