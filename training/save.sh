#!/usr/bin/env bash
# Copy a background run's resumable state into training/NAME for a commit: training/save.sh NAME
# last.pt (with the optimizer state, its moments in bfloat16), best.pt slimmed to the model, history.jsonl, and a supernet's
# supernet.json and kd_weight.json. Run it at the end of every session; training/resume.sh NAME puts them back.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: training/save.sh NAME}"
here="training/$name"
run="${HWKD_HOME:-$HOME/.cache/hwkd}/runs/$name"
[ -f "$run/last.pt" ] || { echo "save.sh: $run has no last.pt yet" >&2; exit 2; }
# last.pt with Adam's moments in bfloat16 (hwkd.models.checkpoint.portable_checkpoint): half their bytes, the
# rest exact. git is no place for a large binary: a state over the limit is not saved (a machine reset loses it).
# The copy is made in the run folder (never in the tracked one, where an interrupted save would leave it).
limit_mib="${SAVE_LIMIT_MIB:-20}"
portable="$run/last.portable.pt"
trap 'rm -f "$portable"' EXIT
.venv/bin/python -c "import sys; from hwkd.models.checkpoint import portable_checkpoint; \
portable_checkpoint(sys.argv[1], sys.argv[2])" "$run/last.pt" "$portable"
size=$(stat -c %s "$portable")
if [ "$size" -gt $(( limit_mib * 1048576 )) ]; then
  echo "save.sh: $run/last.pt is $(( size / 1048576 )) MiB even with its optimizer moments in bfloat16, over the" \
       "$limit_mib MiB a commit may carry; last.pt not saved (it stays in $run and resumes from there; a machine" \
       "reset restarts the run)" >&2
  exit 2
fi
# a supernet's description first (its last.pt is refused without it); history.jsonl and best.pt come with the
# end of the first epoch. last.pt is written atomically by the trainer, so a copy taken while it trains is whole.
for f in supernet.json kd_weight.json history.jsonl; do
  if [ -f "$run/$f" ]; then cp "$run/$f" "$here/"; fi
done
mv "$portable" "$here/last.pt"
if [ -f "$run/best.pt" ]; then
  .venv/bin/python -c "import sys; from hwkd.models.checkpoint import slim_checkpoint; \
slim_checkpoint(sys.argv[1], sys.argv[2])" "$run/best.pt" "$here/best.pt"
fi
echo "saved $run (epoch, step of its last.pt: $(.venv/bin/python -c "import sys; from hwkd.models.checkpoint import \
read_checkpoint; t = read_checkpoint(sys.argv[1])['train']; print(t['epoch'], t['pos'])" "$here/last.pt")) into \
$here ($(du -sh "$here" | cut -f1)); commit them"
