#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE from the repository root, after training/gpu/prepare.sh made the kit here.
#   bash training/gpu/teachers.sh [foa] [hwkd train options]   carry ["teacher-kit"]: the Ambisonics teacher, its
#                                                               README recipe, from scratch (or teacher-kit/resume/)
#   bash training/gpu/teachers.sh stage                         carry ["teacher-kit-mono-a"]: the first half of the
#                                                               mono kit, left on the machine for the next call
#   bash training/gpu/teachers.sh mono [hwkd train options]     carry ["teacher-kit-mono"], right after `stage` (the
#                                                               machine keeps the first half ~30 s): the mono
#                                                               teacher's recipe (TEACHER_ARGS), from scratch (or
#                                                               teacher-kit-mono/resume/), e.g. with a larger --model
# Installs the kit's wheels, writes the carried corpus back as WAV (every clip's samples checked), trains on the GPU
# with batches mixed ahead by loader processes, and leaves best.pt, last.pt, history.jsonl and the log in $OUT. A run
# cut short by its time limit: put the returned three files into KIT/resume/ and call again (hwkd train resumes).
# Extra options go to `hwkd train` (e.g. --epochs 2 to try it).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
export PYTHONUNBUFFERED=1 HWKD_HOME=/tmp/hwkd-home
what=foa
case "${1:-}" in foa|mono|stage) what="$1"; shift ;; esac
out="${OUT:-/tmp/out}"; mkdir -p "$out"
if [ "$what" = stage ]; then
  [ -d teacher-kit-mono-a ] && du -sh teacher-kit-mono-a && echo "staged: make the 'mono' call now" && exit 0
  echo "teacher-kit-mono-a did not arrive: carry [\"teacher-kit-mono-a\"]"; exit 2
fi
py="${PYTHON:-python3}"
kit=teacher-kit; kits=(teacher-kit)
[ "$what" = mono ] && kit=teacher-kit-mono && kits=(teacher-kit-mono-a teacher-kit-mono)
if [ -z "${SKIP_WHEELS:-}" ] && ls "$kit"/whl/*.whl >/dev/null 2>&1; then   # SKIP_WHEELS=1: a try here
  $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$kit"/whl/*.whl || exit 1
  $py -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site "$kit"/whl/pesq-*.tar.gz \
    || echo "pesq did not build: validation without PESQ"
  export PYTHONPATH="/tmp/site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"      # hwkd from this checkout, for kit.py too
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/nvidia-smi.csv" 2>&1
corpus="${KIT_CORPUS:-/tmp/corpus}"
# the ambient loops go to $HWKD_SONIC_PI_DIR when set (a try here), else where Debian's package would put them
$py training/gpu/kit.py unpack "${kits[@]}" "$corpus" || exit 1
device="${DEVICE:-cuda}"
if [ "$what" = foa ]; then
  run="${RUN:-/tmp/runs/teacher-foa}"; log="$out/teacher-foa.log"
  # the README's Ambisonics recipe (hwkd.models.teacher.FOA_TEACHER_ARGS)
  recipe=$($py -c "from hwkd.models.teacher import FOA_TEACHER_ARGS; print(FOA_TEACHER_ARGS)") || exit 1
else
  run="${RUN:-/tmp/runs/teacher-mono}"; log="$out/teacher-mono.log"
  # the README's mono recipe (hwkd.models.teacher.TEACHER_ARGS; it trained on this CPU with 2 workers)
  recipe=$($py -c "from hwkd.models.teacher import TEACHER_ARGS; print(TEACHER_ARGS)") || exit 1
fi
if [ -f "$kit/resume/last.pt" ]; then           # a run cut short before: its returned files, put back
  { mkdir -p "$run" && cp "$kit"/resume/* "$run/" && echo "resuming from $kit/resume/"; } || exit 1
fi
timeout "${LIMIT_S:-480}" $py -m hwkd train $recipe --device "$device" --workers 1 --loader-workers "${LOADERS:-12}" \
  --data "$corpus/${what}" --out "$run" "$@" 2>&1 | tr '\r' '\n' | grep --line-buffered -v '%|' | tee "$log"
rc=${PIPESTATUS[0]}
echo "exit $rc (124: stopped by the time limit; resume with KIT/resume/)" | tee -a "$log"
cp "$run"/best.pt "$run"/last.pt "$run"/history.jsonl "$out/" 2>/dev/null
ls -la "$out"
exit "$rc"
