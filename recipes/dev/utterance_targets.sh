#!/usr/bin/env bash
# Which utterance target teaches the utterance? (issue 14, docs/design.md §8)
# The demo's pretraining (arch/small, demo corpus) with each model.utterance_target and two
# training seeds, 1000 updates, the in-training linear probe (leave-one-speaker-out) every 250
# updates; then recipes/dev/compare_utterance_targets.py summarises the probes.
# Usage: bash recipes/dev/utterance_targets.sh WORK   (WORK holds the demo's manifests/ and labels/:
#        bash recipes/demo.sh --work WORK --stage 1 --stop-stage 2)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(cd "$1" && pwd)
for seed in 1 2; do
  for target in instance_norm layer_norm raw; do
    run=$WORK/meas/$target.s$seed
    if [ -f "$run/done" ]; then continue; fi
    rm -rf "$run" && mkdir -p "$run"
    (cd "$run" && OMP_NUM_THREADS=1 "$REPO/.venv/bin/fairseq-hydra-train" --config-dir "$REPO/recipes/pretrain" \
      --config-name emotion2vec_demo task.data="$WORK/manifests" common.user_dir="$REPO/emotion2vec_plugin" \
      task.probe_data="$WORK/labels" task.probe_split=demo model.utterance_target=$target common.seed=$seed \
      optimization.max_update=1000 dataset.validate_interval_updates=250 > log.txt 2>&1 && touch done)
  done
done
"$REPO/.venv/bin/python" "$REPO/recipes/dev/compare_utterance_targets.py" "$WORK/meas"
