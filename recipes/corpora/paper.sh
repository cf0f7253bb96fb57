#!/usr/bin/env bash
# The paper's five pretraining corpora (262 h: IEMOCAP, MELD, CMU-MOSEI, MSP-Podcast, MEAD), from their
# downloads to a 16 kHz mono mirror, pretraining manifests, the multi-corpus training command and the
# labelled official folds.
#
#   bash recipes/corpora/paper.sh --iemocap DIR --meld DIR --mosei DIR --msppodcast DIR --mead DIR \
#        --work DIR [--mosei-folds FILE] [--weights 1:1:1:1:1] [--workers N] [--stage N] [--stop-stage M]
#
#   --iemocap     IEMOCAP_full_release (Session1..5)
#   --meld        MELD.Raw with its train/dev/test tarballs extracted (mp4, 48 kHz, 2 or 6 channels)
#   --mosei       the CMU-MOSEI folder holding Raw/Audio/Full/WAV_16000 and CMU_MOSEI_Labels.csd
#   --msppodcast  the MSP-Podcast folder holding Audios/ (or Audio/) and Labels/
#   --mead        the folder of the MEAD actors, each audio.tar extracted (<SPK>/audio/<emotion>/level_<n>/*.m4a)
#   --mosei-folds the CMU-MultimodalSDK's cmu_mosei_std_folds.py (or a JSON {train, valid, test} of video ids);
#                 without it MOSEI's labels are written without folds
#   --weights     task.data_weights of the training command, in the order iemocap:meld:mosei:msppodcast:mead
#
# Stages (each re-runnable on its own; finished stages are skipped, marked by WORK/.done.<stage>):
#   1 mirror     every corpus's audio converted to 16 kHz mono wav under WORK/mirror/<corpus> (PyAV for mp4/m4a,
#                channels averaged, 16 kHz mono files symlinked, re-runs reuse what is there); MOSEI's labelled
#                spans of the full-video wavs are cut into WORK/mirror/mosei (e2v-labels mosei)
#   2 manifests  WORK/manifests/<corpus>/{train,valid}.tsv from the mirror, 1% valid, hours in WORK/manifests/hours.tsv
#   3 command    WORK/pretrain.sh: fairseq-hydra-train of emotion2vec_base on the five manifests with task.data_weights
#   4 folds      e2v-labels iemocap, meld and mosei into WORK/labels/<corpus>.{tsv,emo,group} and
#                WORK/labels/<corpus>.folds/fold_K (IEMOCAP's five sessions, MELD's train/dev/test, MOSEI's
#                standard fold with --mosei-folds); msppodcast and mead too when given
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$REPO/.venv/bin
WORK=
IEMOCAP= MELD= MOSEI= MSPPODCAST= MEAD= MOSEI_FOLDS=
WEIGHTS=1:1:1:1:1
WORKERS=$(nproc)
STAGE=1
STOP=4
while [ $# -gt 0 ]; do
  case "$1" in
    --iemocap) IEMOCAP=$2; shift 2 ;;
    --meld) MELD=$2; shift 2 ;;
    --mosei) MOSEI=$2; shift 2 ;;
    --msppodcast) MSPPODCAST=$2; shift 2 ;;
    --mead) MEAD=$2; shift 2 ;;
    --mosei-folds) MOSEI_FOLDS=$2; shift 2 ;;
    --weights) WEIGHTS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --stage) STAGE=$2; shift 2 ;;
    --stop-stage) STOP=$2; shift 2 ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
for pair in "iemocap:$IEMOCAP" "meld:$MELD" "mosei:$MOSEI" "msppodcast:$MSPPODCAST" "mead:$MEAD" "work:$WORK"; do
  if [ -z "${pair#*:}" ]; then echo "paper.sh: error: --${pair%%:*} DIR is required (see the header of $0)" >&2; exit 2; fi
done
for dir in "$IEMOCAP" "$MELD" "$MOSEI" "$MSPPODCAST" "$MEAD"; do
  if [ ! -d "$dir" ]; then echo "paper.sh: error: $dir is not a folder" >&2; exit 2; fi
done
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
CORPORA=(iemocap meld mosei msppodcast mead)

source "$REPO/recipes/stages.sh"

mosei_labels() {  # MOSEI's spans (default target: 2-class sentiment) cut into the mirror, with folds if given
  local folds=()
  if [ -n "$MOSEI_FOLDS" ]; then folds=(--folds-file "$MOSEI_FOLDS"); fi
  "$BIN/e2v-labels" mosei "$MOSEI" --dest "$WORK/labels" --split mosei --resample-to "$WORK/mirror/mosei" \
    --workers "$WORKERS" "${folds[@]}"
}

mirror() {
  # IEMOCAP: the utterances only (Session*/sentences/wav), not the whole dialogues of Session*/dialog/wav
  mkdir -p "$WORK/roots/iemocap"
  for s in "$IEMOCAP"/Session*; do ln -sfn "$(cd "$s/sentences/wav" && pwd)" "$WORK/roots/iemocap/$(basename "$s")"; done
  local audios=$MSPPODCAST/Audios
  if [ ! -d "$audios" ]; then audios=$MSPPODCAST/Audio; fi
  local -A roots=([iemocap]=$WORK/roots/iemocap [meld]=$MELD [msppodcast]=$audios [mead]=$MEAD)
  for c in iemocap meld msppodcast mead; do
    "$BIN/e2v-manifest" "${roots[$c]}" --dest "$WORK/mirror/.scan/$c" --resample-to "$WORK/mirror/$c" \
      --valid-percent 0 --workers "$WORKERS" --quiet
  done
  mosei_labels
}

manifests() {
  mkdir -p "$WORK/manifests"
  echo -e "corpus\tutterances\thours" > "$WORK/manifests/hours.tsv.tmp"
  for c in "${CORPORA[@]}"; do
    "$BIN/e2v-manifest" "$WORK/mirror/$c" --dest "$WORK/manifests/$c" --valid-percent 0.01 --seed 0 \
      --workers "$WORKERS" --quiet
    "$REPO/.venv/bin/python" - "$WORK/manifests/$c" "$c" >> "$WORK/manifests/hours.tsv.tmp" <<'EOF'
import sys
n, frames = 0, 0
for split in ("train", "valid"):
    for line in open(f"{sys.argv[1]}/{split}.tsv").read().splitlines()[1:]:
        n, frames = n + 1, frames + int(line.split("\t")[1])
print(f"{sys.argv[2]}\t{n}\t{frames / 16000 / 3600:.2f}")
EOF
  done
  mv "$WORK/manifests/hours.tsv.tmp" "$WORK/manifests/hours.tsv"
  column -t "$WORK/manifests/hours.tsv" 2>/dev/null || cat "$WORK/manifests/hours.tsv"
}

train_command() {
  local data
  data=$(printf "%s:" "${CORPORA[@]/#/$WORK/manifests/}")
  cat > "$WORK/pretrain.sh.tmp" <<EOF
#!/usr/bin/env bash
# emotion2vec_base on the paper's five corpora; task.data_weights in the order ${CORPORA[*]}
# (add model.init_from=/path/to/data2vec2_base.pt to start from data2vec 2.0, as the paper does)
cd "$REPO"
exec .venv/bin/fairseq-hydra-train --config-dir recipes/pretrain --config-name emotion2vec_base \\
  task.data=${data%:} task.data_weights=$WEIGHTS \\
  common.user_dir=$REPO/emotion2vec_plugin checkpoint.save_dir=$WORK/pretrain/checkpoints "\$@"
EOF
  mv "$WORK/pretrain.sh.tmp" "$WORK/pretrain.sh"
  chmod +x "$WORK/pretrain.sh"
  echo "wrote $WORK/pretrain.sh:"
  cat "$WORK/pretrain.sh"
}

folds() {
  "$BIN/e2v-labels" iemocap "$IEMOCAP" --dest "$WORK/labels" --split iemocap --workers "$WORKERS" --quiet
  "$BIN/e2v-labels" meld "$MELD" --dest "$WORK/labels" --split meld --resample-to "$WORK/mirror/meld" \
    --workers "$WORKERS" --quiet
  mosei_labels
  "$BIN/e2v-labels" msppodcast "$MSPPODCAST" --dest "$WORK/labels" --split msppodcast --workers "$WORKERS" --quiet
  "$BIN/e2v-labels" mead "$MEAD" --dest "$WORK/labels" --split mead --resample-to "$WORK/mirror/mead" \
    --workers "$WORKERS" --quiet
}

run_stage 1 mirror mirror
run_stage 2 manifests manifests
run_stage 3 command train_command
run_stage 4 folds folds
