#!/usr/bin/env bash
# Resume a long CPU training run of training/NAME in the background: training/resume.sh NAME
# NAME/command holds the hwkd command and its process settings (e.g. "train --workers 2 --threads 2"),
# NAME/args the recipe's options (training/gpu/teachers.sh runs the same args on a GPU). The run folder lives in
# $HWKD_HOME/runs/NAME; a machine reset loses it, so each session ends with training/save.sh NAME and a commit,
# and this script puts the committed files back when the run folder is missing or behind (its last.pt's epoch
# and step).
# Log: $HWKD_HOME/runs/NAME.log
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: training/resume.sh NAME (a folder of training/ with command and args)}"
here="training/$name"
[ -f "$here/command" ] && [ -f "$here/args" ] || { echo "resume.sh: $here has no command and args file" >&2; exit 2; }
home="${HWKD_HOME:-$HOME/.cache/hwkd}"
run="$home/runs/$name"
if pgrep -f -- "--out $run( |$)" > /dev/null; then
  echo "resume.sh: $run is already training (pgrep); leave it, or stop it first" >&2; exit 2
fi
# how far a last.pt has come: its (epoch, step within the epoch), as one sortable number
progress() {
  if [ -f "$1/last.pt" ]; then
    .venv/bin/python -c "import sys; from hwkd.models.checkpoint import read_checkpoint; \
t = read_checkpoint(sys.argv[1])['train']; print(t['epoch'] * 1000000 + t['pos'])" "$1/last.pt"
  else echo -1; fi
}
if [ -f "$here/last.pt" ] && [ "$(progress "$here")" -gt "$(progress "$run")" ]; then
  mkdir -p "$run"
  for f in "$here"/*; do
    [ -f "$f" ] || continue
    case "$(basename "$f")" in command|args|*.sh) ;; *) cp "$f" "$run/" ;; esac
  done
  echo "restored $here (ahead of $run) into $run"
fi
[ -d "$home/corpus/default/mono" ] || .venv/bin/hwkd data synth
mkdir -p "$home/runs"           # the log sits beside the run folder, which the trainer makes
cmd=$(<"$here/command")
args=$(<"$here/args")
# shellcheck disable=SC2086  # the two files hold whitespace-separated options
nohup nice -n 10 .venv/bin/hwkd $cmd $args --out "$run" >> "$home/runs/$name.log" 2>&1 &
echo "training in the background (pid $!); progress: $run/history.jsonl and $home/runs/$name.log"
