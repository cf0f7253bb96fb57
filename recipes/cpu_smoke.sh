#!/usr/bin/env bash
# CPU smoke pretraining: synthesise a small corpus, then pretrain the tiny emotion2vec with
# fairseq-hydra-train and the plugin. About a minute on 2 cores.
#   bash recipes/cpu_smoke.sh [WORKDIR]   (default: work/smoke)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mkdir -p "${1:-$REPO/work/smoke}" && cd "${1:-$REPO/work/smoke}" && pwd)
BIN=$REPO/.venv/bin

[ -f "$WORK/data/train.tsv" ] || "$BIN/e2v-synth-corpus" "$WORK/data" --train 200 --valid 20
mkdir -p "$WORK/run" && cd "$WORK/run"
"$BIN/fairseq-hydra-train" \
  --config-dir "$REPO/recipes/pretrain" --config-name emotion2vec_tiny \
  task.data="$WORK/data" common.user_dir="$REPO/emotion2vec_plugin" \
  optimization.max_update=200 checkpoint.save_interval_updates=100 common.log_interval=20
echo "checkpoints: $WORK/run/checkpoints   TensorBoard: tensorboard --logdir $WORK/run/tb"
