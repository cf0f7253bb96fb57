"""Reading extracted features (the formats ``e2v-extract`` writes).

* **stacked**: ``PREFIX.npy`` [sum T_i, D] (all frames of all utterances, manifest order) and
  ``PREFIX.lengths`` (one frame count per line), the emotion2vec probe format. A 2-D
  ``PREFIX.npy`` without a lengths file is read as one utterance-level vector per row.
* **directory**: ``DIR/index.tsv`` (``utt_id<TAB>relative .npy path`` per line) and one ``.npy``
  per utterance ([T, D] or [D]).

Both return a list of float32 arrays [T_i, D] (T_i = 1 for utterance-level vectors).
"""

import os
from typing import List

import numpy as np


class FeatureFormatError(ValueError):
    """Features that do not match their index; names the file, the line and the fix."""


def load_features(path: str) -> List[np.ndarray]:
    """``path``: a stacked prefix (with or without ``.npy``) or a directory with ``index.tsv``."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "index.tsv")):
            return _load_directory(path)
        stacked = [f for f in os.listdir(path) if f.endswith(".lengths")]
        if len(stacked) == 1:
            return _load_stacked(os.path.join(path, stacked[0][: -len(".lengths")]))
        raise FeatureFormatError(f"{path}: no index.tsv and not exactly one PREFIX.lengths; pass the stacked prefix")
    prefix = path[:-4] if path.endswith(".npy") else path
    return _load_stacked(prefix)


def _load_stacked(prefix: str) -> List[np.ndarray]:
    npy, lengths_path = prefix + ".npy", prefix + ".lengths"
    if not os.path.isfile(npy):
        raise FeatureFormatError(f"{npy} does not exist (expected stacked features written by e2v-extract)")
    feats = np.load(npy, mmap_mode="r")
    if not os.path.isfile(lengths_path):
        if feats.ndim == 2:
            return [np.asarray(row, dtype=np.float32)[None] for row in feats]
        raise FeatureFormatError(f"{lengths_path} missing: {npy} has shape {feats.shape}, frames need lengths")
    with open(lengths_path, encoding="utf-8") as f:
        lengths = []
        for lineno, line in enumerate(f, start=1):
            try:
                lengths.append(int(line))
            except ValueError:
                raise FeatureFormatError(f"{lengths_path}:{lineno}: {line.strip()!r} is not a frame count") from None
    if sum(lengths) != feats.shape[0]:
        raise FeatureFormatError(
            f"{lengths_path}: lengths sum to {sum(lengths)} frames but {npy} has {feats.shape[0]} rows; "
            f"the two files come from different extractions: re-run e2v-extract"
        )
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return [np.asarray(feats[a:b], dtype=np.float32) for a, b in zip(offsets[:-1], offsets[1:])]


def _load_directory(path: str) -> List[np.ndarray]:
    index = os.path.join(path, "index.tsv")
    out = []
    with open(index, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise FeatureFormatError(f"{index}:{lineno}: expected 'utt_id<TAB>file.npy', got {line.strip()!r}")
            file = os.path.join(path, parts[1])
            if not os.path.isfile(file):
                raise FeatureFormatError(
                    f"{index}:{lineno}: features of utterance {parts[0]!r} missing ({file}); "
                    f"re-run e2v-extract with the same --out to fill the gap"
                )
            a = np.load(file).astype(np.float32)
            out.append(a[None] if a.ndim == 1 else a)
    dims = {a.shape[1] for a in out}
    if len(dims) > 1:
        raise FeatureFormatError(f"{index}: utterances have different feature sizes {sorted(dims)}")
    return out
