#!/usr/bin/env bash
# Copy a background run's resumable state into training/NAME for a commit: training/save.sh NAME
# last.pt (with the optimizer state), best.pt slimmed to the model, history.jsonl, and a supernet's
# supernet.json and kd_weight.json. Run it at the end of every session; training/resume.sh NAME puts them back.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:?usage: training/save.sh NAME}"
here="training/$name"
run="${HWKD_HOME:-$HOME/.cache/hwkd}/runs/$name"
[ -f "$run/last.pt" ] || { echo "save.sh: $run has no last.pt yet" >&2; exit 2; }
# last.pt is written atomically by the trainer, so a copy taken while it trains is a whole checkpoint
cp "$run/last.pt" "$run/history.jsonl" "$here/"
for f in supernet.json kd_weight.json; do [ -f "$run/$f" ] && cp "$run/$f" "$here/"; done
[ -f "$run/best.pt" ] && .venv/bin/python -c "import sys; from hwkd.models.checkpoint import slim_checkpoint; \
slim_checkpoint(sys.argv[1], sys.argv[2])" "$run/best.pt" "$here/best.pt"
echo "saved $(wc -l < "$here/history.jsonl") history lines of $run into $here ($(du -sh "$here" | cut -f1)); commit them"
