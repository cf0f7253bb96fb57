#!/usr/bin/env bash
# One pretraining try for the demo (issue 14, recipes/RESULTS.md "Making pretraining win on the demo"):
# the demo's pretraining with extra Hydra overrides, one thread, the in-training linear probe on a
# labelled split of the demo corpus (default: contour) every VALID updates; the probe records land in
# WORK/tries/NAME/checkpoints/probe.jsonl (summarise with recipes/dev/summarise_tries.py WORK/tries).
# Usage: bash recipes/dev/demo_try.sh WORK NAME [SPLIT [UPDATES [VALID]]] -- [hydra overrides...]
#        (WORK holds the demo's manifests/ and labels/: bash recipes/demo.sh --work WORK --stop-stage 2)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(cd "$1" && pwd)
NAME=$2
shift 2
SPLIT=contour UPDATES=750 VALID=250
if [ $# -gt 0 ] && [ "$1" != -- ]; then SPLIT=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" != -- ]; then UPDATES=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" != -- ]; then VALID=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" = -- ]; then shift; fi
run=$WORK/tries/$NAME
if [ -f "$run/done" ]; then echo "$run: done before"; exit 0; fi
rm -rf "$run" && mkdir -p "$run"
echo "$*" > "$run/overrides.txt"
t0=$SECONDS
(cd "$run" && OMP_NUM_THREADS=1 "$REPO/.venv/bin/fairseq-hydra-train" --config-dir "$REPO/recipes/pretrain" \
  --config-name emotion2vec_demo task.data="$WORK/manifests" common.user_dir="$REPO/emotion2vec_plugin" \
  task.probe_data="$WORK/labels" task.probe_split="$SPLIT" optimization.max_update="$UPDATES" \
  dataset.validate_interval_updates="$VALID" "$@" > log.txt 2>&1)
echo $((SECONDS - t0)) > "$run/seconds" && touch "$run/done"
