#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE from the repository root (training/gpu/prepare.sh made teacher-kit/ here first): installs
# the kit's wheels, writes the carried corpus back as WAV (samples checked), trains the Ambisonics teacher with its
# README recipe on the GPU (batches mixed ahead by loader processes), and leaves best.pt, last.pt, history.jsonl
# and the log in $OUT. A run cut short by its time limit leaves its last checkpoint there: put the returned
# best.pt, last.pt and history.jsonl into teacher-kit/resume/ and call again (hwkd train resumes).
# Arguments: extra `hwkd train` options (e.g. --epochs 2 to try it).
set -uo pipefail
export PYTHONUNBUFFERED=1 HWKD_HOME=/tmp/hwkd-home
out="${OUT:-/tmp/out}"; mkdir -p "$out"
py="${PYTHON:-python3}"
if [ -d teacher-kit/whl ] && ls teacher-kit/whl/*.whl >/dev/null 2>&1; then
  $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site teacher-kit/whl/*.whl || exit 1
  $py -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site teacher-kit/whl/pesq-*.tar.gz \
    || echo "pesq did not build: validation without PESQ"
  export PYTHONPATH="$PWD:/tmp/site"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/nvidia-smi.csv" 2>&1
corpus="${KIT_CORPUS:-/tmp/corpus}"
$py training/gpu/kit.py unpack teacher-kit "$corpus" ${SONIC_PI_DIR:+--sonic-pi-dir "$SONIC_PI_DIR"} || exit 1
device="${DEVICE:-cuda}"
run="${RUN:-/tmp/runs/teacher-foa}"
if [ -f teacher-kit/resume/last.pt ]; then        # a run cut short before: its returned files, put back
  mkdir -p "$run" && cp teacher-kit/resume/* "$run/" && echo "resuming from teacher-kit/resume/"
fi
# the README's Ambisonics recipe (hwkd.models.teacher.FOA_TEACHER_ARGS), on the device
recipe=$($py -c "from hwkd.models.teacher import FOA_TEACHER_ARGS; print(FOA_TEACHER_ARGS)") || exit 1
timeout "${LIMIT_S:-420}" $py -m hwkd train $recipe --device "$device" --loader-workers "${LOADERS:-12}" \
  --data "$corpus/foa" --out "$run" "$@" 2>&1 | tr '\r' '\n' | grep --line-buffered -v '%|' | tee "$out/teacher-foa.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/teacher-foa.log"
cp "$run"/best.pt "$run"/last.pt "$run"/history.jsonl "$out/" 2>/dev/null
ls -la "$out"
