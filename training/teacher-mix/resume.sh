#!/usr/bin/env bash
# Resume the successor mono teacher's CPU training (issue "Teachers that generalise") in the background.
# The run folder lives in $HWKD_HOME/runs/teacher-mix; a machine reset loses it, so each session ends by
# committing its resumable checkpoint here (last.pt with optimizer state, best.pt slimmed, history.jsonl),
# and this script puts them back when the run folder is missing or older. Log: $HWKD_HOME/runs/teacher-mix.log
set -euo pipefail
cd "$(dirname "$0")/../.."
home="${HWKD_HOME:-$HOME/.cache/hwkd}"
run="$home/runs/teacher-mix"
here="training/teacher-mix"
steps() { [ -f "$1/history.jsonl" ] && wc -l < "$1/history.jsonl" || echo 0; }
if [ -f "$here/last.pt" ] && [ "$(steps "$here")" -gt "$(steps "$run")" ]; then
  mkdir -p "$run"
  cp "$here/last.pt" "$here/best.pt" "$here/history.jsonl" "$run/"
  echo "restored epoch $(steps "$here") from $here into $run"
fi
[ -d "$home/corpus/default/mono" ] || .venv/bin/hwkd data synth
# the recipe's options live in args (training/gpu/teachers.sh mono runs the same on a GPU)
args=$(<"$here/args")
nohup nice -n 10 .venv/bin/hwkd train $args --workers 2 --threads 2 --out "$run" \
  >> "$home/runs/teacher-mix.log" 2>&1 &
echo "training in the background (pid $!); progress: $run/history.jsonl and $home/runs/teacher-mix.log"
