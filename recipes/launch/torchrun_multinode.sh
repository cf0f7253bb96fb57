#!/usr/bin/env bash
# emotion2vec base pretraining on N nodes x G GPUs with torchrun (run this on every node).
#   NNODES=2 NODE_RANK=0 MASTER=node0:29500 GPUS=8 DATA=/data/manifests INIT=/ckpt/d2v2.pt \
#     bash recipes/launch/torchrun_multinode.sh [extra hydra overrides]
# fairseq reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK and skips its own process spawning.
# The global batch stays the paper's (16 x 1e6 samples) when update_freq = 16 / (NNODES * GPUS).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
: "${NNODES:?}" "${NODE_RANK:?}" "${MASTER:?host:port of node 0}" "${DATA:?manifest folder}"
GPUS=${GPUS:-8}
WORLD=$((NNODES * GPUS))
UPDATE_FREQ=$(( (16 + WORLD - 1) / WORLD ))
exec "$REPO/.venv/bin/torchrun" --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS" \
  --rdzv_backend c10d --rdzv_endpoint "$MASTER" \
  -m fairseq_cli.hydra_train \
  --config-dir "$REPO/recipes/pretrain" --config-name emotion2vec_base run=4gpu \
  task.data="$DATA" model.init_from="${INIT:-null}" common.user_dir="$REPO/emotion2vec_plugin" \
  distributed_training.distributed_world_size="$WORLD" "optimization.update_freq=[$UPDATE_FREQ]" "$@"
