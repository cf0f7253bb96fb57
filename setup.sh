#!/usr/bin/env bash
# Set up emotion2vec_plugin in ./.venv: torch 2.9.1, torchaudio 2.9.1, a fairseq that works on
# Python 3.11 (ve-fairseq 0.12.3, a prebuilt wheel of fairseq main), and this project (editable,
# with its console scripts). Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

# espeak-ng speaks the demo's corpus; without root or apt the demo falls back to numpy tones
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
      || echo "setup.sh: could not install espeak-ng; the demo will use its numpy fallback" >&2
  else
    echo "setup.sh: espeak-ng missing (apt-get install espeak-ng); the demo will use its numpy fallback" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchaudio/fairseq first and pinned: fairseq's own requirements would otherwise pick
# whatever torch pip resolves.
.venv/bin/python -m pip install -q "torch==2.9.1" "torchaudio==2.9.1" "ve-fairseq==0.12.3"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import av, h5py, onnx, onnxruntime, fairseq, torch, emotion2vec_plugin; print(f'emotion2vec_plugin ready: torch {torch.__version__}, fairseq {fairseq.__version__}')"
