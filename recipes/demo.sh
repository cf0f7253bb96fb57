#!/usr/bin/env bash
# The main job: from nothing to a pretrained, probed emotion2vec on an embedded corpus, on CPU.
#
#   bash recipes/demo.sh [--work DIR] [--quick] [--force-fallback] [--stage N] [--stop-stage M]
#
# --force-fallback: the numpy corpus (tone bursts) even where espeak-ng is installed; without espeak-ng
# the corpus is that fallback anyway, and the report says so.
#
# Stages (each re-runnable on its own; finished stages are skipped, marked by WORK/.done.<stage>):
#   1 corpus    espeak-ng speech in 4 prosody classes x 6 voices, and a second labelled task of 4 pitch
#               contours (rise, fall, peak, dip) with matched global statistics x 8 voices (e2v-demo-corpus)
#   2 manifest  e2v-manifest (unlabelled part) and e2v-labels csv (labelled parts: splits demo, contour)
#   3 pretrain  fairseq-hydra-train with the plugin, recipes/pretrain/emotion2vec_demo.yaml, with the
#               linear emotion probe on the labelled set at every validation (task.probe_data)
#   4 export    e2v-export: the pretrained student, and the same architecture with random weights
#   5 extract   e2v-extract: last-layer features of both models, and log-mel filterbanks, for both tasks
#   6 probe     e2v-probe: leave-one-speaker-out probe on each feature set, several probe seeds,
#               raw and per-speaker normalised features, for both tasks (contour: WORK/probe/contour/)
#   7 finetune  the pretrained model fine-tuned on every speaker but one (recipes/finetune, demo config),
#               against the linear probe on that held-out speaker (emotion2vec_plugin/demo/finetune_stage.py)
#   8 report    e2v-demo-report: table, paired verdict, learning curves, t-SNE plot, stage timings
# --quick shrinks every stage (the CI test runs it); the full demo took 14 min 31 s on 2 cores (RESULTS.md).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=$REPO/.venv/bin
WORK=$REPO/demo_work
QUICK=0
FALLBACK=0
STAGE=1
STOP=8
while [ $# -gt 0 ]; do
  case "$1" in
    --work) WORK=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --force-fallback) FALLBACK=1; shift ;;
    --stage) STAGE=$2; shift 2 ;;
    --stop-stage) STOP=$2; shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

if [ "$QUICK" = 1 ]; then
  CORPUS_ARGS=(--speakers 3 --labelled-per-class 4 --unlabelled 60 --contour-speakers 2 --contour-per-class 2 --contour-unlabelled 20)
  TRAIN_ARGS=(optimization.max_update=20 lr_scheduler.warmup_updates=2 dataset.validate_interval_updates=10 checkpoint.save_interval_updates=10 common.log_interval=5)
  PROBE_ARGS=(--epochs 5 --patience 3 --threads 1 --seeds 0)
  CONTOUR_PROBE_ARGS=()
  FINETUNE_ARGS=(optimization.max_update=6 model.freeze_finetune_updates=2 optimizer.groups.default.lr_scheduler.warmup_updates=1 optimizer.groups.no_decay.lr_scheduler.warmup_updates=1 common.log_interval=2)
else
  CORPUS_ARGS=(--speakers 6 --labelled-per-class 12 --unlabelled 1200 --contour-speakers 8 --contour-per-class 8 --contour-unlabelled 600)
  TRAIN_ARGS=()
  PROBE_ARGS=(--epochs 100 --patience 10 --threads 1 --seeds 0 1 2)
  CONTOUR_PROBE_ARGS=(--seeds 0 1)  # the contour task: 8 speaker folds, 2 probe seeds (the demo's time budget)
  FINETUNE_ARGS=()
fi

source "$REPO/recipes/stages.sh"

if [ "$FALLBACK" = 1 ]; then CORPUS_ARGS+=(--force-fallback); fi

corpus() { "$BIN/e2v-demo-corpus" "$WORK/corpus" "${CORPUS_ARGS[@]}"; }

manifest() {
  "$BIN/e2v-manifest" "$WORK/corpus/unlabelled" --dest "$WORK/manifests" --valid-percent 0.03 --seed 0
  "$BIN/e2v-labels" csv "$WORK/corpus/labelled.csv" --dest "$WORK/labels" --split demo
  if [ -f "$WORK/corpus/contour.csv" ]; then
    "$BIN/e2v-labels" csv "$WORK/corpus/contour.csv" --dest "$WORK/labels" --split contour
  fi
}

tasks() {  # the labelled tasks of this corpus: demo (prosody classes), contour (pitch contours) if made
  echo demo
  if [ -f "$WORK/labels/contour.tsv" ]; then echo contour; fi
}

pretrain() {
  mkdir -p "$WORK/pretrain"
  (cd "$WORK/pretrain" && "$BIN/fairseq-hydra-train" --config-dir "$REPO/recipes/pretrain" \
    --config-name emotion2vec_demo task.data="$WORK/manifests" common.user_dir="$REPO/emotion2vec_plugin" \
    task.probe_data="$WORK/labels" task.probe_split=demo "${TRAIN_ARGS[@]}")
}

export_models() {
  local ckpt=$WORK/pretrain/checkpoints/checkpoint_last.pt
  "$BIN/e2v-export" "$ckpt" --out "$WORK/export/pretrained" --format plugin
  "$BIN/e2v-export" "$ckpt" --out "$WORK/export/random" --format plugin --random-init 0
}

extract() {
  for task in $(tasks); do
    for model in pretrained random; do
      "$BIN/e2v-extract" "$WORK/export/$model" "$WORK/labels/$task.tsv" --out "$WORK/features/$model" --prefix "$task"
    done
    "$BIN/e2v-extract" fbank "$WORK/labels/$task.tsv" --out "$WORK/features/fbank" --prefix "$task"
  done
}

in_slot() {  # in_slot CMD...: run CMD in the background, at most 2 at once (the 2 cores); failures are
  # collected in WORK/.failed and reported by slots_done (a status reaped by `wait -n` would be lost)
  while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n || true; done
  ( "$@" || { echo "exit $?: $*" >> "$WORK/.failed"; exit 1; } ) &
}

slots_done() {  # wait for every in_slot job; stop the demo if any failed
  wait || true
  if [ -f "$WORK/.failed" ]; then echo "failed:" >&2; cat "$WORK/.failed" >&2; rm -f "$WORK/.failed"; return 1; fi
}

probe() {  # 12 probe runs (2 tasks x 3 feature sets x raw / per-speaker normalised) and a curve, 2 at a time
  local task dir feats
  rm -f "$WORK/.failed"
  for task in $(tasks); do
    dir=$WORK/probe  # the first task's results stay where they were; the contour task's in probe/contour
    local args=("${PROBE_ARGS[@]}")
    if [ "$task" != demo ]; then dir=$WORK/probe/$task; args+=("${CONTOUR_PROBE_ARGS[@]}"); fi
    mkdir -p "$dir"
    for feats in pretrained random fbank; do
      local plot=()
      if [ "$feats" = pretrained ]; then plot=(--plot "$dir/tsne_pretrained.png" --confusion-plot "$dir/confusion_pretrained.png"); fi
      # raw and per-speaker normalised features (one speaker is at chance for every feature set without it)
      in_slot "$BIN/e2v-probe" "$WORK/features/$feats/$task" "$WORK/labels/$task.emo" --groups "$WORK/labels/$task.group" \
        --out "$dir/$feats.json" --quiet "${args[@]}" "${plot[@]}"
      in_slot "$BIN/e2v-probe" "$WORK/features/$feats/$task" "$WORK/labels/$task.emo" --groups "$WORK/labels/$task.group" \
        --out "$dir/$feats.spknorm.json" --normalize-per-group --quiet "${args[@]}"
    done
  done
  if [ -f "$WORK/labels/contour.tsv" ]; then
    # the contour task's learning curve: the linear probe on the kept checkpoints (the in-training
    # probe follows the first task), update 0 = the random weights of stage 4
    in_slot "$BIN/e2v-curves" "$WORK/pretrain" --probe-data "$WORK/labels" --split contour --layers last \
      --out "$WORK/curves_contour.png" --json "$WORK/probe/contour/curve.json" --title "contour task"
  fi
  slots_done
}

finetune() {  # split, fairseq-hydra-train, e2v-predict --labels and e2v-probe --probe linear: WORK/finetune/
  "$BIN/python" -m emotion2vec_plugin.demo.finetune_stage "$WORK" "${FINETUNE_ARGS[@]}"
}

report() { "$BIN/e2v-demo-report" "$WORK"; }

run_stage 1 corpus corpus
run_stage 2 manifest manifest
run_stage 3 pretrain pretrain
run_stage 4 export export_models
run_stage 5 extract extract
run_stage 6 probe probe
run_stage 7 finetune finetune
run_stage 8 report report
